"""Summaries of a CLEVR-format question set: what the data notebook plots and tests check."""
from __future__ import annotations

from collections import Counter, defaultdict

from .clevr import question_type


def program_to_string(program: list[dict]) -> str:
    """A compact one-line program: ``count(filter_color[red](scene()))``."""
    def node(i):
        n = program[i]
        args = ",".join(node(j) for j in n["inputs"])
        vals = f"[{','.join(n.get('value_inputs', []))}]" if n.get("value_inputs") else ""
        return f"{n['function']}{vals}({args})"
    return node(len(program) - 1) if program else ""


def answer_balance(questions: list[dict]) -> dict[int, float]:
    """Per family: how many times more often its top answer occurs than its second.

    ``inf`` for a family with a single answer."""
    by_family: dict[int, Counter] = defaultdict(Counter)
    for q in questions:
        by_family[q["question_family_index"]][q["answer"]] += 1
    out = {}
    for fam, c in sorted(by_family.items()):
        top = c.most_common(2)
        out[fam] = top[0][1] / top[1][1] if len(top) > 1 else float("inf")
    return out


def question_summary(questions: list[dict]) -> dict:
    """Counts by family, type, answer and program length, and the answer balance."""
    fams, types, answers, lengths = Counter(), Counter(), Counter(), Counter()
    for q in questions:
        answers[q.get("answer")] += 1
        if "program" in q:
            types[question_type(q["program"])] += 1
            lengths[len(q["program"])] += 1
        if q.get("question_family_index") is not None:
            fams[q["question_family_index"]] += 1
    balance = answer_balance([q for q in questions if "question_family_index" in q]) if fams else {}
    return {"questions": len(questions), "images": len({q["image_index"] for q in questions}),
            "families": dict(sorted(fams.items())), "types": dict(types),
            "answers": dict(answers.most_common()), "program_lengths": dict(sorted(lengths.items())),
            "answer_balance": balance,
            "worst_balance": max(balance.values()) if balance else None}
