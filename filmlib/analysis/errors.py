"""Where a model's errors are: by the reasoning each question needs, and by what the
perception CNN got right in each scene.

* :func:`accuracy_by_reasoning`: accuracy by question type and by the kind of step its program
  takes (:func:`filmlib.data.clevr.reasoning_kind`: filters only, a spatial relation, two or
  more, a ``same_*`` step, an ``and``/``or`` of two sets).
* :func:`accuracy_by_perception`: answers split by whether the perception CNN's heads got the
  scene exactly right (:func:`filmlib.perception.scene_errors`). A scene with more objects is
  both harder to perceive and harder to reason about, so the split is also made at each number
  of objects: if answers on perfectly perceived scenes are no better than on the others *with
  as many objects*, perception is not what the model lacks.

    rows = read_predictions("results/film_cpu/predictions_val.jsonl", keys=("image_index", "type"))
    table = accuracy_by_perception(rows, perception.scene_errors(net, images, targets))

CLI: ``python -m filmlib errors --run results/film_cpu ... [--perception results/perception_cpu]``
writes both as ``errors_<split>.json`` and ``.md`` beside the run's predictions.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from filmlib.data.clevr import QUESTION_TYPES, REASONING_KINDS, reasoning_kind


def _accuracy(rows) -> dict:
    right = sum(r["prediction"] == r["answer"] for r in rows)
    return {"accuracy": right / len(rows) if rows else None, "questions": len(rows)}


def _split(rows, perfect) -> dict:
    """{"perfect": {"accuracy", "questions"}, "imperfect": {...}} over ``rows``."""
    return {"perfect": _accuracy([r for r in rows if perfect[r["image_index"]]]),
            "imperfect": _accuracy([r for r in rows if not perfect[r["image_index"]]])}


def scored(rows: list[dict]) -> list[dict]:
    """The rows that can be scored: with an answer and a question type (a question without a
    program has type -1), as :func:`filmlib.evaluate.accuracy_report` counts them."""
    return [r for r in rows if r.get("answer") is not None and r.get("type", 0) >= 0]


def _by_type(rows) -> dict[str, list]:
    groups = defaultdict(list)
    for r in rows:
        groups[QUESTION_TYPES[r["type"]]].append(r)
    return groups


def accuracy_by_reasoning(rows: list[dict], questions: list[dict]) -> dict:
    """Accuracy by question type × :func:`~filmlib.data.clevr.reasoning_kind` of its program
    (``rows``: predictions with ``question_index``, ``type``, ``prediction``, ``answer``;
    ``questions``: the split's records, in file order, which ``question_index`` indexes), and over
    all types. Rows without an answer or a type are left out."""
    rows = scored(rows)
    bad = [r["question_index"] for r in rows if not 0 <= r["question_index"] < len(questions)]
    if bad:
        raise ValueError(f"predictions name question {bad[0]}, but the questions file holds "
                         f"{len(questions)}: are they of the same split?")
    kinds = {}
    for r in rows:
        program = questions[r["question_index"]].get("program")
        if not program:
            raise ValueError(f"question {r['question_index']} of the questions file has no program, so "
                             f"the reasoning it needs is unknown")
        kinds[r["question_index"]] = reasoning_kind(program)

    def table(subset):
        groups = defaultdict(list)
        for r in subset:
            groups[kinds[r["question_index"]]].append(r)
        return {k: _accuracy(groups[k]) for k in REASONING_KINDS if groups.get(k)}

    by_type = _by_type(rows)
    return {"all": table(rows), **{t: table(by_type[t]) for t in QUESTION_TYPES if by_type.get(t)}}


def accuracy_by_perception(rows: list[dict], errors: dict[str, np.ndarray]) -> dict:
    """A model's answers (``rows``: predictions with ``image_index``, ``type`` (index into
    ``QUESTION_TYPES``), ``prediction``, ``answer``) split by whether the perception heads got
    their scene exactly right (``errors``: :func:`filmlib.perception.scene_errors` of the same
    split): overall, by question type, and by the scene's number of objects (all questions and
    counting questions); and how counting answers err (under, over, right) by what the heads got wrong in
    the scene (objects missed only, false objects only, both, neither)."""
    rows = scored(rows)
    perfect, objects = np.asarray(errors["perfect"], bool), np.asarray(errors["objects"])
    bad = [r["image_index"] for r in rows if not 0 <= r["image_index"] < len(perfect)]
    if bad:
        raise ValueError(f"predictions name image {bad[0]}, but the perception errors cover "
                         f"{len(perfect)} images: are they of the same split?")
    by_type = _by_type(rows)

    def by_objects(subset):
        groups = defaultdict(list)
        for r in subset:
            groups[int(objects[r["image_index"]])].append(r)
        return {n: _split(groups[n], perfect) for n in sorted(groups)}

    counting = by_type.get("count", [])
    direction = {k: {"under": 0, "right": 0, "over": 0} for k in ("missed only", "false only", "both", "neither")}
    for r in counting:
        if not (str(r["prediction"]).isdigit() and str(r["answer"]).isdigit()):
            continue
        i = r["image_index"]
        missed, false = errors["missed"][i] > 0, errors["false"][i] > 0
        key = ("both" if missed and false else "missed only" if missed else "false only" if false else "neither")
        diff = int(r["prediction"]) - int(r["answer"])
        direction[key]["under" if diff < 0 else "over" if diff > 0 else "right"] += 1
    n = len(perfect)
    return {"scenes": n, "perfect_scenes": float(perfect.mean()) if n else None,
            "scenes_with": {k: float((np.asarray(errors[k]) > 0).mean()) if n else None
                            for k in ("missed", "false", "wrong", "merged")},
            "all": _split(rows, perfect),
            "by_type": {t: _split(by_type[t], perfect) for t in QUESTION_TYPES if by_type.get(t)},
            "by_objects": {"all": by_objects(rows), "count": by_objects(counting)},
            "count_errors": direction}


def _pct(cell: dict | None) -> str:
    if not cell or cell["accuracy"] is None:
        return "—"
    return f"{100 * cell['accuracy']:.1f} ({cell['questions']:,})"


def markdown(reasoning: dict | None = None, perception: dict | None = None) -> str:
    """:func:`accuracy_by_reasoning` and the by-objects split of :func:`accuracy_by_perception`
    as Markdown tables (either may be left out)."""
    lines = []
    if reasoning:
        kinds = [k for k in REASONING_KINDS if k in reasoning["all"]]
        lines += ["Accuracy % (questions) by question type and by the kind of step its program takes:", "",
                  "| type | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
        for t, row in reasoning.items():
            lines.append(f"| {t} | " + " | ".join(_pct(row.get(k)) for k in kinds) + " |")
        lines.append("")
    if perception and perception["scenes"]:
        lines += [f"Scenes the perception heads get exactly right: {100 * perception['perfect_scenes']:.1f}% of "
                  f"{perception['scenes']:,}. Accuracy % (questions), perfectly perceived scenes / the others:", "",
                  "| objects | all questions: perfect | the others | counting: perfect | the others |",
                  "|---|---|---|---|---|"]
        for n, cell in perception["by_objects"]["all"].items():
            count = perception["by_objects"]["count"].get(n, {})
            lines.append(f"| {n} | {_pct(cell['perfect'])} | {_pct(cell['imperfect'])} | "
                         f"{_pct(count.get('perfect'))} | {_pct(count.get('imperfect'))} |")
        lines.append("")
    return "\n".join(lines)
