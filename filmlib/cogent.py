"""CLEVR-CoGenT: the paper's Figure 9 (and its table) and Figure 10's zero-shot method.

In condition A cubes and cylinders take disjoint colour sets, and condition B swaps them
(spheres take every colour in both). A model trained on A is scored on A and on B, then
fine-tuned on some of B's questions and scored on both again: how much of B it recovers and
how much of A it forgets (Fig 9's curve: against the share of B's data used).

The splits are the real ``CLEVR_CoGenT_v1.0`` release's that carry answers: ``trainA``
(training), ``valA`` (the curve, early stopping and A's score) and ``valB``, whose first
``finetune_images`` images' questions are the fine-tuning pool and whose other images' questions
score B. SynthCLEVR writes the same three splits (:func:`generate`), so one path serves both.
Runs go to ``<results>/cogent_<scale>/``: ``<model>_A`` (trained on A), ``<model>_B<percent>``
(fine-tuned on that share of the pool, from ``<model>_A``'s best checkpoint, every weight
trained); each finished run is kept and an interrupted one resumes.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from .config import load_scale
from .data import clevr
from .data.datasets import make_loader
from .data.vocab import Vocab
from .evaluate import predict, write_predictions
from .experiment import (_budget_kwargs, _written_since, batch_fn_for, film_train_kwargs, load_run, run_features,
                         split_for, train_baseline, train_film)
from .io import atomic_write_text
from .models.baselines import LABELS
from .synth.generate import generate_dataset

#: The splits used, as the real release names them.
SPLITS = ("trainA", "valA", "valB")
#: Shares of the fine-tuning pool of Fig 9's curve.
FRACTIONS = (0.01, 0.03, 0.1, 0.3, 1.0)
#: The paper's Figure 9 table (%): train A -> A, B; fine-tune on B -> A, B.
PAPER_FIG9 = {"CNN+LSTM+SA": (80.3, 68.7, 75.7, 75.8), "PG+EE (18K prog.)": (96.6, 73.7, 76.1, 92.7),
              "CNN+GRU+FiLM": (98.3, 75.6, 80.8, 96.9), "CNN+GRU+FiLM 0-Shot": (98.3, 78.8, 81.1, 96.9)}
KINDS = ("film", "cnn_lstm_sa")


def cogent_root(root, source: str = "synth") -> Path:
    """Where a scale's CoGenT data is: beside its SynthCLEVR (``<root>-cogent``), or the real
    release beside CLEVR (``CLEVR_CoGenT_v1.0``, ``python -m filmlib download cogent``)."""
    root = Path(root)
    return root.parent / "CLEVR_CoGenT_v1.0" if source == "clevr" else root.with_name(root.name + "-cogent")


def generate(root, scale: str, *, seed: int = 0, workers: int = 1, progress: bool = True) -> dict:
    """SynthCLEVR's trainA, valA and valB at the scale's ``cogent.data`` sizes (kept when current;
    ``questions_per_image`` may differ by split: :func:`~filmlib.synth.generate.questions_per_image`)."""
    data = load_scale(scale)["cogent"]["data"]
    out = {}
    for name, n in data["splits"].items():
        if name not in SPLITS:
            raise ValueError(f"cogent.data.splits: {name!r} is not one of {SPLITS}")
        out.update(generate_dataset(root, {**data, "splits": {name[:-1]: n}}, seed=seed, workers=workers,
                                    cogent=name[-1], progress=progress,
                                    where=f"filmlib/scales/{scale}.yaml: cogent.data"))
    return out


def pool_and_eval_rows(data_dir, finetune_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of valB's questions on its first ``finetune_images`` images (the fine-tuning pool) and
    on the others (B's score). Raises if either is empty."""
    from .data.datasets import ClevrQuestionsDataset
    images = np.asarray(ClevrQuestionsDataset(Path(data_dir) / "valB_questions.h5", None).image_idxs)
    pool, rest = np.flatnonzero(images < finetune_images), np.flatnonzero(images >= finetune_images)
    if not len(pool) or not len(rest):
        raise ValueError(f"{data_dir}: valB has {images.max() + 1} images; finetune_images={finetune_images} "
                         f"must leave some on each side")
    return pool, rest


def score(run_dir, data_dir, eval_rows, *, which: str = "best", device: str = "cpu") -> dict:
    """A run's accuracy on valA (``A``) and on valB's scoring questions (``B``); writes
    ``scores.json`` and the two predictions files into the run. A run already scored from its
    present checkpoint, on the same B questions, is not scored again (a resumed notebook)."""
    run_dir = Path(run_dir)
    done = run_dir / "scores.json"
    if _written_since(done, run_dir / f"{which}.pt") and all(
            (run_dir / f"predictions_{split}.jsonl").is_file() for split in ("valA", "valB")):
        kept = json.loads(done.read_text())
        if kept.get("checkpoint") == which and kept.get("B_questions") == len(eval_rows):
            return kept
    model, ckpt = load_run(run_dir, which, device)
    answers = Vocab.load(Path(data_dir) / "vocab.json").answer_idx_to_token
    out = {"checkpoint": which, "samples": ckpt.get("samples"), "train_minutes": round(ckpt["train_seconds"] / 60, 2),
           "B_questions": len(eval_rows)}
    for name, split, rows in (("A", "valA", None), ("B", "valB", eval_rows)):
        dataset = split_for(model, data_dir, split, features=run_features(ckpt), indices=rows)
        pred = predict(model, make_loader(dataset, 256), batch_fn=batch_fn_for(dataset), device=device)
        out[name] = float((pred["prediction"] == pred["answer"]).mean())
        write_predictions(Path(run_dir) / f"predictions_{split}.jsonl", pred, answers)
    atomic_write_text(Path(run_dir) / "scores.json", json.dumps(out, indent=1) + "\n")
    return out


def _train(kind: str, data_dir, out_dir, scale: str, *, max_samples: int | None, device: str, progress: bool,
           seed: int, lr: float | None = None, minutes: float | None = None, **extra) -> dict:
    """Train (or resume) one CoGenT run: FiLM with the scale's recipe, a baseline with FiLM's
    batch and schedule (as in Table 1) and its own ``lr``, for ``max_samples`` questions, or
    until ``minutes`` of training (a guard; None: none)."""
    cfg = load_scale(scale)
    film = {**cfg["film"], "max_samples": max_samples, "time_limit_minutes": minutes}
    if kind == "film":
        kw = film_train_kwargs({**film, **({"lr": lr} if lr else {})})
        return train_film(data_dir, out_dir, seed=seed, device=device, progress=progress, **{**kw, **extra})
    kw = _budget_kwargs(film, {**(cfg.get("baselines") or {}), "minutes": {kind: minutes}}, kind)
    if lr:
        kw["lr"] = lr                                   # else the authors' lr for the baseline
    return train_baseline(data_dir, out_dir, kind, preset_name=scale, stem=film["stem"], features=film.get("features"),
                          max_samples=max_samples, seed=seed, device=device, progress=progress, **{**kw, **extra})


def train_samples(cfg: dict, kind: str, scale: str) -> int | None:
    """The questions a ``kind`` trains on A: ``cogent.train_samples`` is one number (or null: the
    recipe's own budget) for every model, or a mapping {kind: number} (a cheaper baseline)."""
    value = cfg["train_samples"]
    if isinstance(value, dict):
        if kind not in value:
            raise ValueError(f"filmlib/scales/{scale}.yaml: cogent.train_samples gives no budget for {kind!r} "
                             f"(it gives {sorted(value)})")
        value = value[kind]
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"filmlib/scales/{scale}.yaml: cogent.train_samples for {kind!r} must be a positive "
                         f"integer or null (got {value!r})")
    return value


def table1_lr(results_dir, kind: str, scale: str) -> float | None:
    """The peak learning rate notebook 03 picked for a baseline on val (None before it has)."""
    path = Path(results_dir) / f"{kind}_{scale}" / "lr_grid.json"
    return float(json.loads(path.read_text())["chosen"]) if path.is_file() else None


def _started_lr(run_dir: Path) -> float | None:
    """The learning rate a run already started with (its resume must keep it)."""
    from .train import load_checkpoint
    last = run_dir / "last.pt"
    return float(load_checkpoint(last)["train_config"]["lr"]) if last.is_file() else None


def run_cogent(scale: str, data_dir, results_dir, *, kinds=KINDS, seed: int = 0, device: str = "auto",
               progress: bool = True) -> dict[str, dict]:
    """Figure 9 for each model of ``kinds``: trained on A (its :func:`train_samples` questions),
    then fine-tuned from it on each share of the pool (``FRACTIONS``; ``finetune_*`` settings),
    every run scored on A and B. Returns {row name: {"kind", "trained_on_A": scores,
    "finetuned": {fraction: scores}}}."""
    from .train import resolve_device
    cfg = load_scale(scale)["cogent"]
    dev = str(resolve_device(device))
    out_root = Path(results_dir) / f"cogent_{scale}"
    pool, rest = pool_and_eval_rows(data_dir, cfg["finetune_images"])
    out = {}
    for kind in kinds:
        base = out_root / f"{kind}_A"
        lr = None if kind == "film" else (_started_lr(base) or table1_lr(results_dir, kind, scale))
        _train(kind, data_dir, base, scale, max_samples=train_samples(cfg, kind, scale), device=dev,
               progress=progress, seed=seed, lr=lr, minutes=cfg.get("train_minutes"), splits=("trainA", "valA"))
        row = {"kind": kind, "trained_on_A": score(base, data_dir, rest, device=dev), "finetuned": {}}
        for fraction in FRACTIONS:
            rows = pool[:max(2, round(fraction * len(pool)))]      # batch norm trains on 2 or more
            ft = out_root / f"{kind}_B{100 * fraction:g}"
            # a share smaller than a batch is one batch of it (the Trainer drops a last partial batch)
            batch = min(load_scale(scale)["film"]["batch_size"], len(rows))
            budget = min(cfg["finetune_epochs"] * len(rows), cfg["finetune_max_samples"])
            # valA is scored each epoch (the forgetting), but neither picks the checkpoint nor stops the run
            _train(kind, data_dir, ft, scale, max_samples=budget, device=dev, progress=progress, seed=seed,
                   lr=cfg["finetune_lr"], splits=("valB", "valA"), train_indices=rows, init_from=base / "best.pt",
                   schedule="constant", warmup_samples=0, schedule_samples=None, epochs=cfg["finetune_epochs"],
                   batch_size=batch, patience=None, val_samples=cfg.get("finetune_val_samples"),
                   curve_samples=None, eval_every_samples=None)
            row["finetuned"][fraction] = score(ft, data_dir, rest, which="last", device=dev) | {"questions": len(rows)}
        out[LABELS.get(kind, "CNN+GRU+FiLM")] = row
    return out


def zero_shot_row(scale: str, data_dir, root, results_dir, *, device: str = "cpu", examples: int = 5) -> dict:
    """Figure 10's method on the FiLM model trained on A, over B's scoring questions: how many it
    applies to, the accuracy on those before and after, and B's overall accuracy with it."""
    from .analysis import zero_shot
    cfg = load_scale(scale)["cogent"]
    _, rest = pool_and_eval_rows(data_dir, cfg["finetune_images"])
    model, ckpt = load_run(Path(results_dir) / f"cogent_{scale}" / "film_A", "best", device)
    dataset = split_for(model, data_dir, "valB", features=run_features(ckpt))
    records = {q["question_index"]: q for q in clevr.load_questions(clevr.questions_path(root, "valB"))}
    got = zero_shot(model.cpu(), dataset, records, Vocab.load(Path(data_dir) / "vocab.json"), rows=rest,
                    examples=examples)
    return got


def _whole_pool(row: dict) -> dict:
    """The scores after fine-tuning on the whole pool (the largest share)."""
    return row["finetuned"][max(row["finetuned"])]


def fig9_rows(results: dict[str, dict], zero: dict | None = None) -> list[dict]:
    """The Figure 9 table (%): ours (fine-tuned on the whole pool) beside the paper's; with
    ``zero`` (:func:`zero_shot_row`) a FiLM 0-shot row (B with the method; A unchanged)."""
    rows = []
    for name, r in results.items():
        a, full = r["trained_on_A"], _whole_pool(r)
        rows.append({"model": name, "train_A_on_A": 100 * a["A"], "train_A_on_B": 100 * a["B"],
                     "finetune_B_on_A": 100 * full["A"], "finetune_B_on_B": 100 * full["B"]})
        if zero and name == "CNN+GRU+FiLM" and zero.get("accuracy_after") is not None:
            gain = (zero["accuracy_after"] - zero["accuracy_before"]) * zero["share"]
            rows.append({"model": "CNN+GRU+FiLM 0-Shot", "train_A_on_A": 100 * a["A"],
                         "train_A_on_B": 100 * (a["B"] + gain), "finetune_B_on_A": None, "finetune_B_on_B": None})
    for row in rows:
        paper = PAPER_FIG9.get(row["model"])
        row.update({f"paper_{k}": v for k, v in zip(("train_A_on_A", "train_A_on_B", "finetune_B_on_A",
                                                      "finetune_B_on_B"), paper or (None,) * 4)})
        row.update({k: None if v is None else round(v, 1) for k, v in row.items() if k != "model"})
    return rows


def write_fig9(results: dict[str, dict], out_dir, name: str, zero: dict | None = None,
               data_label: str = "SynthCLEVR CoGenT") -> list[dict]:
    """``<name>.md`` and ``.csv``: the Figure 9 table, ours beside the paper's, atomically."""
    rows = fig9_rows(results, zero)

    def cell(v):
        return "–" if v is None else f"{v:.1f}"
    md = ["# CLEVR-CoGenT (Figure 9's table): accuracy (%)", "",
          f"Ours: {data_label} (A: valA; B: the valB questions not used for fine-tuning), fine-tuned on the whole "
          "pool. The paper's: CLEVR-CoGenT (Perez et al. 2017; quoted, not run here).", "",
          "| Model | train A → A | train A → B | fine-tune B → A | fine-tune B → B | paper: A | paper: B "
          "| paper: ft A | paper: ft B |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append("| " + " | ".join([r["model"]] + [cell(r[k]) for k in (
            "train_A_on_A", "train_A_on_B", "finetune_B_on_A", "finetune_B_on_B", "paper_train_A_on_A",
            "paper_train_A_on_B", "paper_finetune_B_on_A", "paper_finetune_B_on_B")]) + " |")
    atomic_write_text(Path(out_dir) / f"{name}.md", "\n".join(md) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(out_dir) / f"{name}.csv", buf.getvalue())
    return rows


def verdicts(results: dict[str, dict], zero: dict | None = None) -> list[dict]:
    """The paper's CoGenT findings on ours: A to B drops; fine-tuning on B recovers B and forgets
    some of A; the zero-shot method improves the questions it applies to."""
    out = []
    for name, r in results.items():
        a, full = r["trained_on_A"], _whole_pool(r)
        out.append({"claim": f"{name}: accuracy drops from A to B", "holds": a["B"] < a["A"],
                    "numbers": f"A {100 * a['A']:.1f}, B {100 * a['B']:.1f}"})
        out.append({"claim": f"{name}: fine-tuning on B recovers B and forgets some of A",
                    "holds": full["B"] > a["B"] and full["A"] < a["A"],
                    "numbers": f"B {100 * a['B']:.1f} → {100 * full['B']:.1f}, A {100 * a['A']:.1f} → {100 * full['A']:.1f}"})
    if zero is not None:
        ok = zero.get("accuracy_after") is not None
        out.append({"claim": "the zero-shot method improves the B questions it applies to (paper: 71.5 → 80.7); "
                             "McNemar p < 0.05",
                    "holds": ok and zero["accuracy_after"] > zero["accuracy_before"] and zero["p_value"] < 0.05,
                    "numbers": (f"{100 * zero['accuracy_before']:.1f} → {100 * zero['accuracy_after']:.1f} on "
                                f"{zero['applies_to']:,} questions ({100 * zero['share']:.0f}% of B): "
                                f"{zero['fixed']:,} answers fixed, {zero['broke']:,} broken, p = {zero['p_value']:.1e}")
                    if ok else "it applies to no question"})
    return out
