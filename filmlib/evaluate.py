"""Scoring a model: accuracy overall, by the paper's 5 question types, by the 13 final
functions and by the 90 families; the off-by-one share of counting errors; a predictions
file; and a Markdown Table 1 with the paper's numbers beside ours, labelled.

Everything here returns data (dicts of numbers); notebooks and the CLI decide how to show it.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .data.clevr import FINAL_FUNCTIONS, QUESTION_TYPES, TYPE_NAMES
from .io import atomic_write_text

#: The paper's Table 1 (CLEVR test accuracy, %), for printing beside our numbers.
PAPER_TABLE1 = {
    "Human": (92.6, 86.7, 96.6, 86.5, 95.0, 96.0),
    "Q-type baseline": (41.8, 34.6, 50.2, 51.0, 36.0, 51.3),
    "LSTM": (46.8, 41.7, 61.1, 69.8, 36.8, 51.8),
    "CNN+LSTM": (52.3, 43.7, 65.2, 67.1, 49.3, 53.0),
    "CNN+LSTM+SA": (76.6, 64.4, 82.7, 77.4, 82.6, 75.4),
    "CNN+GRU+FiLM": (97.7, 94.3, 99.1, 96.8, 99.1, 99.1),
    "CNN+GRU+FiLM (raw pixels)": (97.6, 94.3, 99.3, 93.4, 99.3, 99.3),
}
TABLE1_COLUMNS = ("overall",) + QUESTION_TYPES

#: Metadata a batch may carry, and the name each gets in the predictions.
META_KEYS = {"families": "family", "types": "type", "final_functions": "final_function",
             "image_indices": "image_index", "question_indices": "question_index"}


@torch.no_grad()
def predict(model, loader, *, batch_fn: Callable, device="cpu", meta_keys=META_KEYS) -> dict:
    """Run ``model`` over ``loader``: arrays ``prediction``, ``answer`` and any metadata."""
    model.eval()
    out = defaultdict(list)
    for batch in loader:
        visual, questions, answers = batch_fn(batch)
        logits = model(visual.to(device), questions.to(device))
        out["prediction"].append(logits.argmax(1).cpu().numpy())
        out["answer"].append(np.asarray(answers))
        for key, name in meta_keys.items():
            if key in batch:
                out[name].append(np.asarray(batch[key]))
    return {k: np.concatenate(v) for k, v in out.items()}


@torch.no_grad()
def image_reliance(model, loader, *, batch_fn: Callable, device="cpu", seed: int = 0) -> dict:
    """How much the answers depend on the image: accuracy with each question's own image, and
    with every image of a batch swapped for another scene's (a derangement over the batch's
    distinct ``image_indices``, so no question keeps its scene; over positions when a batch has
    no image indices). A model that ignores the image scores the same on both."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    own = swapped = n = 0
    for batch in loader:
        visual, questions, answers = batch_fn(batch)
        visual, questions, answers = visual.to(device), questions.to(device), torch.as_tensor(answers).to(device)
        keys = torch.as_tensor(batch["image_indices"]) if "image_indices" in batch else torch.arange(len(answers))
        uniq, inverse = torch.unique(keys, return_inverse=True)
        if len(uniq) < 2:
            continue                                   # one scene only: nothing to swap with
        first = torch.full((len(uniq),), len(keys)).scatter_reduce(0, inverse, torch.arange(len(keys)), "amin")
        order = torch.randperm(len(uniq), generator=g)
        partner = torch.empty_like(order)
        partner[order] = order.roll(1)                 # scene order[k] -> scene order[k-1], never itself
        other = visual[first[partner[inverse]].to(device)]
        own += (model(visual, questions).argmax(1) == answers).sum().item()
        swapped += (model(other, questions).argmax(1) == answers).sum().item()
        n += len(answers)
    if n == 0:
        raise ValueError("image_reliance needs batches with at least two different scenes")
    return {"own_images": own / n, "other_images": swapped / n, "questions": n}


def _acc(mask, correct) -> float | None:
    n = int(mask.sum())
    return float(correct[mask].mean()) if n else None


def accuracy_report(pred: dict, answer_tokens: list[str] | None = None) -> dict:
    """Accuracies from :func:`predict`'s arrays. Questions without an answer (``answer < 0``,
    e.g. CLEVR's test split) are left out. ``type`` and ``final_function`` are indices into
    :data:`QUESTION_TYPES` and :data:`FINAL_FUNCTIONS`."""
    keep = pred["answer"] >= 0
    p = {k: np.asarray(v)[keep] for k, v in pred.items()}
    correct = p["prediction"] == p["answer"]
    report = {"questions": int(keep.sum()), "overall": float(correct.mean()) if keep.any() else None}
    if "type" in p:
        report["by_type"] = {t: _acc(p["type"] == i, correct) for i, t in enumerate(QUESTION_TYPES)}
    if "final_function" in p:
        report["by_final_function"] = {f: _acc(p["final_function"] == i, correct)
                                       for i, f in enumerate(FINAL_FUNCTIONS)}
    if "family" in p:
        fams = sorted(int(f) for f in np.unique(p["family"]) if f >= 0)
        report["by_family"] = {f: _acc(p["family"] == f, correct) for f in fams}
    if answer_tokens is not None and "type" in p:
        report["count_off_by_one"] = count_off_by_one(p, answer_tokens)
    return report


def count_off_by_one(pred: dict, answer_tokens: list[str]) -> float | None:
    """Among wrong answers to Count questions, the share that missed by exactly one."""
    is_count = pred["type"] == QUESTION_TYPES.index("count")
    wrong = is_count & (pred["prediction"] != pred["answer"])
    if not wrong.any():
        return None
    off = 0
    for y, t in zip(pred["prediction"][wrong], pred["answer"][wrong]):
        a, b = answer_tokens[y], answer_tokens[t]
        off += a.isdigit() and b.isdigit() and abs(int(a) - int(b)) == 1
    return off / int(wrong.sum())


def write_predictions(path, pred: dict, answer_tokens: list[str]) -> Path:
    """One JSON line per question: predicted and true answers as words, plus metadata."""
    names = [k for k in pred if k not in ("prediction", "answer")]
    lines = []
    for i in range(len(pred["prediction"])):
        row = {"prediction": answer_tokens[int(pred["prediction"][i])],
               "answer": answer_tokens[int(pred["answer"][i])] if pred["answer"][i] >= 0 else None}
        row.update({k: int(pred[k][i]) for k in names})
        lines.append(json.dumps(row) + "\n")
    return atomic_write_text(path, "".join(lines))


def read_predictions(path, keys=("question_index",)) -> list[dict]:
    """The rows of a predictions file of ``write_predictions``, each checked to hold
    ``prediction``, ``answer`` and the integer ``keys``; a bad line is named."""
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                missing = [k for k in ("prediction", "answer") if k not in row]
                if missing:
                    raise KeyError(missing[0])
                for k in keys:
                    row[k] = int(row[k])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}, line {n}: not a predictions row ({e})") from None
            rows.append(row)
    return rows


def read_correct(path) -> dict[int, bool]:
    """{question_index: answered correctly} from a predictions file of ``write_predictions``."""
    return {row["question_index"]: row["prediction"] == row["answer"] for row in read_predictions(path)}


def mcnemar(a: dict[int, bool], b: dict[int, bool]) -> dict:
    """McNemar's test of two models scored on the same questions (keys: question indices):
    ``only_a``/``only_b`` count the questions one answers right and the other wrong; ``p_value``
    is the two-sided exact binomial p-value of that split under "equally accurate"."""
    common = a.keys() & b.keys()
    if not common:
        raise ValueError("the two models share no scored question")
    only_a = sum(a[q] and not b[q] for q in common)
    only_b = sum(b[q] and not a[q] for q in common)
    return {"questions": len(common), "only_a": only_a, "only_b": only_b, "p_value": mcnemar_p(only_a, only_b)}


def mcnemar_p(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p-value from the discordant counts: the questions only one of
    two answer sets gets right, ``only_a`` and ``only_b``."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    # P(X <= k) for X ~ Binomial(n, 1/2), doubled; summed in log space (n can be thousands)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(k + 1)]
    top = max(logs)
    return min(1.0, 2 * math.exp(top) * sum(math.exp(x - top) for x in logs))


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def table1_markdown(ours: dict[str, dict], paper_rows=("CNN+GRU+FiLM", "CNN+GRU+FiLM (raw pixels)"),
                    data_label: str = "SynthCLEVR") -> str:
    """Table 1 layout: our rows (labelled with their data) and the paper's rows (labelled)."""
    head = ["Model", "Data", "Overall"] + [TYPE_NAMES[t] for t in QUESTION_TYPES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in ours.items():
        cells = [_pct(r.get("overall"))] + [_pct(r.get("by_type", {}).get(t)) for t in QUESTION_TYPES]
        lines.append(f"| {name} (ours) | {data_label} | " + " | ".join(cells) + " |")
    for name in paper_rows:
        lines.append(f"| {name} (paper) | CLEVR v1.0 test | "
                     + " | ".join(f"{v:.1f}" for v in PAPER_TABLE1[name]) + " |")
    return "\n".join(lines) + "\n"


#: Table 1's models from the weakest to the strongest, as the paper orders them (ours are
#: labelled with these names; FiLM either stem).
TABLE1_ORDER = ("Q-type baseline", "LSTM", "CNN+LSTM", "CNN+LSTM+SA", "CNN+GRU+FiLM")


def table1_rows(ours: dict[str, dict], data_label: str) -> list[dict]:
    """One flat row per model (accuracies in %), ours first (source "ours") then the paper's
    rows for the same models (source "paper", CLEVR v1.0 test)."""
    rows = []
    for name, r in ours.items():
        row = {"source": "ours", "model": name, "data": data_label}
        row["overall"] = None if r.get("overall") is None else round(100 * r["overall"], 1)
        for t in QUESTION_TYPES:
            v = (r.get("by_type") or {}).get(t)
            row[t] = None if v is None else round(100 * v, 1)
        rows.append(row)
    for name in [n for n in PAPER_TABLE1 if n != "Human"]:
        rows.append({"source": "paper", "model": name, "data": "CLEVR v1.0 test",
                     **dict(zip(TABLE1_COLUMNS, PAPER_TABLE1[name]))})
    return rows


def table1_checks(ours: dict[str, dict], correct: dict[str, dict[int, bool]] | None = None) -> dict:
    """Does our Table 1 show the paper's message? ``ordering``: each consecutive pair of
    TABLE1_ORDER present in ``ours`` with whether the stronger model scored higher overall;
    ``film_error_ratio``: FiLM's error over CNN+LSTM+SA's (the paper: 2.3 / 23.4 = 0.10; the
    claim is that it is at most 0.5). With ``correct`` ({model: read_correct(...)}) each pair
    also gets McNemar's test on the questions both answered (``mcnemar``: is the gap more than chance?)."""
    acc = {name: r["overall"] for name, r in ours.items() if r.get("overall") is not None}
    # the FiLM row that reads the same stem as the baselines; the raw-pixels row when it is the only one
    film = "CNN+GRU+FiLM" if "CNN+GRU+FiLM" in acc else next((n for n in acc if n.startswith("CNN+GRU+FiLM")), None)
    chain = [n for n in TABLE1_ORDER[:-1] if n in acc] + ([film] if film else [])
    pairs = [{"weaker": a, "stronger": b, "weaker_acc": acc[a], "stronger_acc": acc[b], "holds": acc[b] > acc[a]}
             for a, b in zip(chain, chain[1:])]
    for p in pairs:
        if correct and p["weaker"] in correct and p["stronger"] in correct:
            t = mcnemar(correct[p["weaker"]], correct[p["stronger"]])
            p.update(only_weaker_right=t["only_a"], only_stronger_right=t["only_b"], p_value=t["p_value"])
    ratio = None
    if film and "CNN+LSTM+SA" in acc and acc["CNN+LSTM+SA"] < 1:
        ratio = (1 - acc[film]) / (1 - acc["CNN+LSTM+SA"])
    return {"ordering": pairs, "ordering_holds": all(p["holds"] for p in pairs),
            "film_error_ratio": ratio, "film_halves_error": None if ratio is None else ratio <= 0.5}


def write_table1(ours: dict[str, dict], out_dir, data_label: str = "SynthCLEVR val", name: str = "table1",
                 correct: dict[str, dict[int, bool]] | None = None) -> dict:
    """``<name>.md`` (our rows; below them, in their own labelled block, the paper's) and
    ``<name>.csv`` (both, with a ``source`` column), written atomically. Returns the checks."""
    out_dir = Path(out_dir)
    rows = table1_rows(ours, data_label)
    checks = table1_checks(ours, correct)
    head = ["Model", "Data", "Overall"] + [TYPE_NAMES[t] for t in QUESTION_TYPES]

    def block(source):
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in (r for r in rows if r["source"] == source):
            cells = ["–" if r[c] is None else f"{r[c]:.1f}" for c in TABLE1_COLUMNS]
            lines.append(f"| {r['model']} | {r['data']} | " + " | ".join(cells) + " |")
        return lines

    md = ["# Table 1: accuracy (%) by question type", "", f"## Ours ({data_label})", "", *block("ours"), "",
          "## The paper's numbers (Perez et al. 2017, Table 1; CLEVR v1.0 test; quoted, not run here)", "",
          *block("paper"), "", "## Does ours show the paper's ordering?", ""]
    for p in checks["ordering"]:
        line = (f"- {p['weaker']} {100 * p['weaker_acc']:.1f} < {p['stronger']} {100 * p['stronger_acc']:.1f}: "
                + ("holds" if p["holds"] else "**breaks**"))
        if "p_value" in p:
            line += (f" (questions only the first answers right: {p['only_weaker_right']:,}; only the second: "
                     f"{p['only_stronger_right']:,}; McNemar p = {p['p_value']:.2g})")
        md.append(line)
    if checks["film_error_ratio"] is not None:
        md.append(f"- FiLM's error / CNN+LSTM+SA's error = {checks['film_error_ratio']:.2f} "
                  f"(the paper: 0.10; the claim: at most 0.5): "
                  + ("holds" if checks["film_halves_error"] else "**breaks**"))
    atomic_write_text(out_dir / f"{name}.md", "\n".join(md) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["source", "model", "data", *TABLE1_COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / f"{name}.csv", buf.getvalue())
    return checks
