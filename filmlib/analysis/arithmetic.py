"""Zero-shot answers by FiLM parameter arithmetic (Figure 10), as a function.

CLEVR-CoGenT's condition A gives cubes and cylinders disjoint colour sets, and condition B
swaps them, so a model trained on A meets colour–shape pairs it has never seen ("blue
cylinder"). The paper answers such a question with the FiLM parameters of three questions that
are seen in A, changed only in that pair:

    (γ, β)(blue cylinder) := (γ, β)(blue sphere) + (γ, β)(green cylinder) − (γ, β)(green sphere)

(swap shape: spheres take every colour; swap colour: a colour the shape takes in A; swap both).
:func:`swap_questions` builds the three questions from a question's text and program;
:func:`zero_shot` answers every question of a split it applies to both ways and reports the
share it applies to and the accuracy before and after (the paper: about a third of B; 71.5% →
80.7% on those questions).
"""
from __future__ import annotations

import torch

from ..data.datasets import collate
from ..data.vocab import encode_tokens, tokenize
from ..evaluate import mcnemar_p
from ..synth.attributes import COGENT, MATERIALS, SIZES

#: The words the templates use for each shape (singular; the plural adds "s").
SHAPE_WORDS = {"cube": ("cube", "block"), "sphere": ("sphere", "ball"), "cylinder": ("cylinder",)}
#: The sphere word that replaces each shape word (the same register: cube -> sphere, block -> ball).
_TO_SPHERE = {"cube": "sphere", "block": "ball", "cylinder": "sphere", "sphere": "sphere", "ball": "ball"}
#: Words that may stand between a colour and its shape word ("red shiny cube"): materials.
_BETWEEN = {"rubber", "metal", "matte", "shiny", "metallic"} | set(MATERIALS) | set(SIZES) | {"tiny", "big"}


def _shape_of(word: str) -> tuple[str, str, bool] | None:
    """(shape, singular word, plural?) of a shape word, else None."""
    w = word.lower()
    for shape, words in SHAPE_WORDS.items():
        for singular in words:
            if w in (singular, singular + "s"):
                return shape, singular, w != singular
    return None


def filter_pairs(program: list[dict]) -> list[tuple[str, str]]:
    """The (colour, shape) pairs the program's filter chains name: consecutive ``filter_*``
    nodes narrow one set of objects, so a chain with a colour and a shape names that pair."""
    chains: list[dict | None] = []
    for node in program:
        fn = node.get("function", node.get("type", ""))
        inputs = node.get("inputs", [])
        if fn.startswith("filter_"):
            prev = chains[inputs[0]] if inputs and chains[inputs[0]] is not None else {}
            values = node.get("value_inputs", node.get("side_inputs", []))
            chains.append({**prev, fn[len("filter_"):]: values[0] if values else None})
        else:
            chains.append(None)
    consumed = {i for node in program for i in node.get("inputs", [])
                if node.get("function", node.get("type", "")).startswith("filter_")}
    return [(c["color"], c["shape"]) for i, c in enumerate(chains)
            if c is not None and i not in consumed and c.get("color") and c.get("shape")]


def unseen_pair(program: list[dict], condition: str = "A") -> tuple[str, str] | None:
    """The colour–shape pair the program names that ``condition`` never shows (None when it
    names none, or more than one different one)."""
    unseen = {(c, s) for c, s in filter_pairs(program) if c not in COGENT[condition][s]}
    return unseen.pop() if len(unseen) == 1 else None


def seen_color(color: str, shape: str, condition: str = "A") -> str:
    """The colour that replaces ``color`` on ``shape`` in the swap-colour question: the one at
    the same place in the shape's colour list of ``condition`` as ``color`` is in the other
    condition's (CoGenT B's cylinders gray, blue, brown, yellow -> A's red, green, purple, cyan:
    blue -> green, the paper's example)."""
    other = "B" if condition == "A" else "A"
    return COGENT[condition][shape][COGENT[other][shape].index(color)]


def _replace_pair(tokens: list[str], pair: tuple[str, str], color: str | None, to_sphere: bool) -> list[str] | None:
    """``tokens`` with every "<colour> [material/size words] <shape word>" of ``pair`` changed
    (colour to ``color``; shape word to its sphere word), or None when the text never names it."""
    c, s = pair
    out, found = list(tokens), False
    for i, tok in enumerate(tokens):
        if tok.lower() != c:
            continue
        j = i + 1
        while j < len(tokens) and tokens[j].lower() in _BETWEEN:
            j += 1
        shape = _shape_of(tokens[j]) if j < len(tokens) else None
        if shape is None or shape[0] != s:
            continue
        found = True
        if color is not None:
            out[i] = color
        if to_sphere:
            out[j] = _TO_SPHERE[shape[1]] + ("s" if shape[2] else "")
    return out if found else None


def swap_questions(text: str, program: list[dict], condition: str = "A") -> dict | None:
    """The three questions the method reads, as token lists, for a question with one unseen
    colour–shape pair named in its text: ``swap_shape`` (the shape made a sphere),
    ``swap_color`` (the colour made one the shape takes in ``condition``), ``swap_both``; with
    ``pair`` and ``color`` (the replacement colour). None when the method does not apply."""
    pair = unseen_pair(program, condition)
    if pair is None or pair[1] == "sphere":
        return None
    tokens = tokenize(text)
    color = seen_color(*pair, condition)
    swaps = {"swap_shape": _replace_pair(tokens, pair, None, True),
             "swap_color": _replace_pair(tokens, pair, color, False),
             "swap_both": _replace_pair(tokens, pair, color, True)}
    if any(v is None for v in swaps.values()):
        return None
    return {"pair": pair, "color": color, "tokens": tokens, **swaps}


@torch.no_grad()
def zero_shot(model, dataset, records: dict[int, dict], vocab, *, condition: str = "A",
              batch_size: int = 128, examples: int = 5, rows=None) -> dict:
    """Answer every question of ``dataset`` (a split, e.g. CoGenT's valB; ``rows``: only these
    of its rows) that :func:`swap_questions` applies to, with its own FiLM parameters and with
    the arithmetic's.

    ``records``: {question_index: the question's JSON record (``question``, ``program``)};
    ``vocab``: the model's. Returns the number of questions, how many the method applies to and
    their share, the accuracy on those before and after, how many answers it ``fixed`` (wrong to
    right) and ``broke`` (right to wrong) with McNemar's ``p_value`` of that split, and ``examples``
    worked examples (texts, answers, its ``effect``; :func:`_worked_examples` picks them)."""
    model.eval()
    candidates = range(len(dataset)) if rows is None else [int(i) for i in rows]
    total = len(candidates)
    rows, swaps = [], []
    for i in candidates:
        q = records[int(dataset.orig_idxs[i])]
        s = swap_questions(q["question"], q["program"], condition)
        if s is not None:
            rows.append(i)
            swaps.append(s)
    answers = vocab.answer_idx_to_token
    out = {"questions": total, "applies_to": len(rows), "share": len(rows) / max(total, 1),
           "condition": condition}
    if not rows:
        return out | {"accuracy_before": None, "accuracy_after": None, "fixed": 0, "broke": 0, "p_value": None,
                      "examples": []}
    before = after = fixed = broke = 0
    shown = {"fixed": [], "broke": [], "unchanged": []}

    def encode(tokens):
        return torch.tensor(encode_tokens(tokens, vocab.question_token_to_idx))

    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        batch = collate([dataset[i] for i in part])
        g, b = model.film_params(batch["questions"])
        params = {}
        for key in ("swap_shape", "swap_color", "swap_both"):
            qs = collate([{"questions": encode(s[key])} for s in swaps[start:start + batch_size]])["questions"]
            params[key] = model.film_params(qs)
        g0 = params["swap_shape"][0] + params["swap_color"][0] - params["swap_both"][0]
        b0 = params["swap_shape"][1] + params["swap_color"][1] - params["swap_both"][1]
        p_before = model(batch["visual"], gammas=g, betas=b).argmax(1)
        p_after = model(batch["visual"], gammas=g0, betas=b0).argmax(1)
        truth = batch["answers"]
        right_before, right_after = p_before == truth, p_after == truth
        fixes, breaks = right_after & ~right_before, right_before & ~right_after
        before += int(right_before.sum())
        after += int(right_after.sum())
        fixed += int(fixes.sum())
        broke += int(breaks.sum())
        for k, (f, b) in enumerate(zip(fixes.tolist(), breaks.tolist())):
            effect = "fixed" if f else "broke" if b else "unchanged"
            if len(shown[effect]) < examples:
                s = swaps[start + k]
                shown[effect].append({"question": " ".join(s["tokens"]), "pair": list(s["pair"]),
                                      **{key: " ".join(s[key]) for key in ("swap_shape", "swap_color", "swap_both")},
                                      "before": answers[int(p_before[k])], "after": answers[int(p_after[k])],
                                      "answer": answers[int(truth[k])], "effect": effect})
    n = len(rows)
    return out | {"accuracy_before": before / n, "accuracy_after": after / n, "fixed": fixed, "broke": broke,
                  "p_value": mcnemar_p(fixed, broke), "examples": _worked_examples(shown, examples)}


def _worked_examples(shown: dict[str, list], n: int) -> list[dict]:
    """``n`` examples that show what the method does: answers it fixed, with up to a third of
    ``n`` (more where it fixed too few) answers it broke, then unchanged ones to fill."""
    broke = shown["broke"][:max(n // 3, n - len(shown["fixed"]))]
    fixed = shown["fixed"][:n - len(broke)]
    return fixed + broke + shown["unchanged"][:n - len(fixed) - len(broke)]


__all__ = ["SHAPE_WORDS", "filter_pairs", "seen_color", "swap_questions", "unseen_pair", "zero_shot"]
