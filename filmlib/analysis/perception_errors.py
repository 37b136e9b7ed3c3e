"""How much of a model's error comes from perception: its answers split by whether the
perception CNN's heads got each scene exactly right (:func:`filmlib.perception.scene_errors`).

A scene with more objects is both harder to perceive and harder to reason about, so the split
is also made at each number of objects: if answers on perfectly perceived scenes are no better
than on the others *with as many objects*, perception is not what the model lacks.

    rows = read_predictions("results/film_cpu/predictions_val.jsonl", keys=("image_index", "type"))
    table = accuracy_by_perception(rows, perception.scene_errors(net, images, targets))

CLI: ``python -m filmlib perception-errors --run results/film_cpu ...`` writes the table as
``perception_errors_<split>.json`` beside the run's predictions.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from filmlib.data.clevr import QUESTION_TYPES


def _split(rows, perfect) -> dict:
    """{"perfect": {"accuracy", "questions"}, "imperfect": {...}} over ``rows``."""
    tally = {True: [0, 0], False: [0, 0]}
    for r in rows:
        t = tally[bool(perfect[r["image_index"]])]
        t[0] += r["prediction"] == r["answer"]
        t[1] += 1
    return {("perfect" if k else "imperfect"): {"accuracy": (v[0] / v[1]) if v[1] else None, "questions": v[1]}
            for k, v in tally.items()}


def accuracy_by_perception(rows: list[dict], errors: dict[str, np.ndarray]) -> dict:
    """A model's answers (``rows``: predictions with ``image_index``, ``type`` (index into
    ``QUESTION_TYPES``), ``prediction``, ``answer``) split by whether the perception heads got
    their scene exactly right (``errors``: :func:`filmlib.perception.scene_errors` of the same
    split): overall, by question type, and by number of objects (all questions and counting
    questions); and how counting answers err (under, over, right) by what the heads got wrong in
    the scene (objects missed only, false objects only, both, neither)."""
    perfect, objects = np.asarray(errors["perfect"], bool), np.asarray(errors["objects"])
    bad = [r["image_index"] for r in rows if not 0 <= r["image_index"] < len(perfect)]
    if bad:
        raise ValueError(f"predictions name image {bad[0]}, but the perception errors cover "
                         f"{len(perfect)} images: are they of the same split?")
    by_type = defaultdict(list)
    for r in rows:
        by_type[QUESTION_TYPES[r["type"]]].append(r)

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
                            for k in ("missed", "false", "wrong")},
            "all": _split(rows, perfect),
            "by_type": {t: _split(by_type[t], perfect) for t in QUESTION_TYPES if by_type.get(t)},
            "by_objects": {"all": by_objects(rows), "count": by_objects(counting)},
            "count_errors": direction}


def _pct(cell: dict) -> str:
    return "—" if cell["accuracy"] is None else f"{100 * cell['accuracy']:.1f} ({cell['questions']:,})"


def markdown(table: dict) -> str:
    """The by-objects split of :func:`accuracy_by_perception` as a Markdown table."""
    lines = [f"Scenes the perception heads get exactly right: {100 * table['perfect_scenes']:.1f}% of "
             f"{table['scenes']:,}. Accuracy % (questions), perfectly perceived scenes / the others:", "",
             "| objects (occupied cells) | all questions: perfect | the others | counting: perfect | the others |",
             "|---|---|---|---|---|"]
    for n, cell in table["by_objects"]["all"].items():
        count = table["by_objects"]["count"].get(n, {"perfect": {"accuracy": None}, "imperfect": {"accuracy": None}})
        lines.append(f"| {n} | {_pct(cell['perfect'])} | {_pct(cell['imperfect'])} | "
                     f"{_pct(count['perfect'])} | {_pct(count['imperfect'])} |")
    return "\n".join(lines) + "\n"
