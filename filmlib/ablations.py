"""Tables 2 and 3: every architecture variant of the paper trained the same way, then compared.

One FiLM run per variant (``FiLMConfig.ablation(name)`` for Table 2, ``variant(num_blocks=d)``
for Table 3) into ``<results>/ablations_<scale>/<name>/``, with the scale's FiLM recipe
(section ``film``: data, stem, batch, optimiser, schedule), one seed (``run_ablations(seed=)``)
and one question budget for every row (section ``ablations``: ``max_samples``, the schedule's
horizon too; a row its ``minutes`` guard stops sees fewer, which its ``samples`` say). A finished run is
kept and an interrupted one resumes from its ``last.pt``. Each run is then scored on the whole
val split (``metrics.json``, ``predictions_val.jsonl``) and compared with the best model's run
by McNemar's test on the same questions.

Table 3's depth 4 is the best model itself (the same run); extra seeds (``seeds``, e.g. the best
model's second seed) go to ``<name>_seed<k>``.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import load_scale
from .evaluate import mcnemar, read_correct
from .experiment import film_train_kwargs, run_in_lanes, run_spent, train_film, val_metrics
from .io import atomic_write_text
from .models.config import ABLATIONS, DEPTHS
from .train import TrainingDiverged, load_checkpoint

#: The paper's Table 2 (CLEVR val, %); "best" is the best architecture (97.4 ± 0.4).
PAPER_TABLE2 = {"best": 97.4, "beta=0": 96.9, "gamma=1": 95.9, "gamma=sigmoid": 95.9, "gamma=tanh": 96.3,
                "gamma=exp": 96.3, "film_after_residual": 96.6, "film_after_relu2": 97.7,
                "film_after_conv2": 97.1, "film_before_conv1": 95.0, "no_film_block4": 96.8,
                "no_film_blocks3-4": 96.5, "no_film_blocks2-4": 97.3, "no_film_blocks1-4": 21.4,
                "1x1_no_coords": 95.3, "no_residual": 94.0, "no_batchnorm": 93.7, "raw_pixels": 97.6}
#: The paper's Table 3: val accuracy (%) by the number of FiLM-ed ResBlocks.
PAPER_TABLE3 = {1: 93.5, 2: 97.1, 3: 96.7, 4: 97.4, 5: 97.4, 6: 97.7, 7: 97.4, 8: 97.6, 12: 96.9}
#: Table 2's row names, as the paper writes them.
TABLE2_LABELS = {"best": "Best architecture", "beta=0": "β := 0", "gamma=1": "γ := 1",
                 "gamma=sigmoid": "γ := σ(γ)", "gamma=tanh": "γ := tanh(γ)", "gamma=exp": "γ := exp(γ)",
                 "film_after_residual": "FiLM after residual connection",
                 "film_after_relu2": "FiLM after ResBlock ReLU-2", "film_after_conv2": "FiLM after ResBlock Conv-2",
                 "film_before_conv1": "FiLM before ResBlock Conv-1", "no_film_block4": "No FiLM in ResBlock 4",
                 "no_film_blocks3-4": "No FiLM in ResBlocks 3–4", "no_film_blocks2-4": "No FiLM in ResBlocks 2–4",
                 "no_film_blocks1-4": "No FiLM in ResBlocks 1–4",
                 "1x1_no_coords": "1×1 conv only, no coordinate maps", "no_residual": "No residual connection",
                 "no_batchnorm": "No batch normalization", "raw_pixels": "Raw pixels instead of image features"}
BEST_DEPTH = 4


@dataclass(frozen=True)
class Variant:
    """One row: ``name`` (its run directory), ``label`` (the paper's row name), ``table``
    ("table2" or "table3"), the Table 2 ``ablation`` or the config ``changes`` that make it,
    the ``paper``'s number and the ``seed``."""
    name: str
    label: str
    table: str
    ablation: str | None = None
    changes: dict = field(default_factory=dict, hash=False)
    paper: float | None = None
    seed: int = 0


def variants(seeds: dict[str, list[int]] | None = None, base_seed: int = 0) -> list[Variant]:
    """Table 2's 18 rows (the best model first) and Table 3's depths other than the best's (its
    row is the best model's run), then each extra seed of ``seeds`` ({row name: [seed, ...]})
    as ``<name>_seed<k>``."""
    rows = [Variant("best", TABLE2_LABELS["best"], "table2", paper=PAPER_TABLE2["best"], seed=base_seed)]
    rows += [Variant(a, TABLE2_LABELS[a], "table2", ablation=a, paper=PAPER_TABLE2[a], seed=base_seed)
             for a in ABLATIONS]
    rows += [Variant(f"depth_{d}", f"{d} ResBlock" + ("s" if d > 1 else ""), "table3", changes={"num_blocks": d}, paper=PAPER_TABLE3[d],
                     seed=base_seed) for d in DEPTHS if d != BEST_DEPTH]
    by_name = {v.name: v for v in rows}
    for name, extra in (seeds or {}).items():
        if name not in by_name:
            raise ValueError(f"seeds: unknown row {name!r}; expected one of {', '.join(by_name)}")
        for s in extra:
            if s != base_seed:
                v = by_name[name]
                rows.append(Variant(f"{name}_seed{s}", v.label, v.table, v.ablation, v.changes, v.paper, s))
    return rows


def _config(scale: str) -> tuple[dict, dict]:
    cfg = load_scale(scale)
    if "ablations" not in cfg:
        raise ValueError(f"scale {scale!r} has no `ablations` section (filmlib/scales/{scale}.yaml)")
    return cfg["film"], cfg["ablations"]


def train_kwargs(scale: str, threads: int | None = None) -> dict:
    """``train_film`` keyword arguments every row shares: the scale's FiLM recipe with the
    ablations' question budget (also the schedule's horizon), guard and curve spacing, and the
    section's own ``model`` changes (over ``film.model``, e.g. narrower rows at ``cpu``) and peak
    ``lr`` where it sets them."""
    film, ab = _config(scale)
    model = ab.get("model") or {}
    if not isinstance(model, dict):
        raise ValueError(f"filmlib/scales/{scale}.yaml: ablations.model must be a mapping of FiLMConfig "
                         f"fields, not {model!r}")
    return film_train_kwargs({**film, "max_samples": ab.get("max_samples"), "time_limit_minutes": ab.get("minutes"),
                              "eval_every": ab.get("eval_every", film.get("eval_every")),
                              "threads": threads or ab.get("threads") or film.get("threads"),
                              "lr": ab.get("lr") or film.get("lr"),
                              "model": {**(film.get("model") or {}), **model}})


def cost(v: Variant) -> float:
    """A row's training cost relative to the best model's (its FiLM-ed blocks; raw pixels about
    twice: docs/performance.md), to start the longest rows first."""
    return v.changes.get("num_blocks", BEST_DEPTH) / BEST_DEPTH * (2.0 if v.ablation == "raw_pixels" else 1.0)


def diverged(run_dir) -> dict | None:
    """The record a row left when its loss stopped being finite (``diverged.json``), else None."""
    path = Path(run_dir) / "diverged.json"
    return json.loads(path.read_text()) if path.is_file() else None


def train_variant(variant: dict, data_dir, out_dir, train_kw: dict, device: str = "auto",
                  progress: bool = False) -> dict:
    """Train (or resume) one row; ``variant`` is a :class:`Variant` as a dict (picklable for a
    lane process). A row whose loss stops being finite is recorded (``diverged.json``: where and
    why; the tables say "diverged") instead of stopping the other rows: on the CPU a re-run would
    diverge again at the same step. Delete the file to try the row again."""
    train_kw = dict(train_kw)
    changes = {**train_kw.pop("model_changes", {}), **variant["changes"]}    # the row's own win
    try:
        return train_film(data_dir, out_dir, ablation=variant["ablation"], model_changes=changes,
                          seed=variant["seed"], device=device, progress=progress, **train_kw)
    except TrainingDiverged as e:
        last = Path(out_dir) / "last.pt"
        samples = load_checkpoint(last).get("samples", 0) if last.is_file() else 0
        record = {"row": variant["name"], "error": str(e), "last_checkpoint_samples": samples}
        atomic_write_text(Path(out_dir) / "diverged.json", json.dumps(record, indent=1) + "\n")
        return record


def trained(run_dir, budget: int | None, minutes: float | None) -> bool:
    """Has this run spent its question budget (or its time guard) and closed its last epoch
    (``best.pt`` written)? Without a budget (the recipe's own epochs and early stopping decide)
    only the Trainer knows: False."""
    if diverged(run_dir) is not None:
        return True                          # nothing more to train: its record stands
    return run_spent(run_dir, budget, minutes)


def run_ablations(scale: str, data_dir, results_dir, *, names=None, seed: int = 0, lanes: int | None = None,
                  device: str = "auto", progress: bool = True) -> dict[str, dict]:
    """Train every row of the scale's Tables 2 and 3 (or those ``names`` lists) that has not spent
    its budget, ``lanes`` at a time (default: the section's), then score each unscored one on
    val. Returns {row name: metrics}."""
    film, ab = _config(scale)
    out_root = Path(results_dir) / f"ablations_{scale}"
    rows = variants(ab.get("seeds"), seed)
    if names is not None:
        unknown = set(names) - {v.name for v in rows}
        if unknown:
            raise ValueError(f"unknown ablation rows: {', '.join(sorted(unknown))}")
        rows = [v for v in rows if v.name in names]
    lanes = max(1, int(lanes or ab.get("lanes") or 1))
    threads = ab.get("threads") or film.get("threads") or (lanes if lanes > 1 else None)
    kw = train_kwargs(scale, threads=None if threads is None else max(1, threads // lanes))
    todo = [v for v in rows if not trained(out_root / v.name, ab.get("max_samples"), ab.get("minutes"))]
    if lanes > 1:                            # longest first, so no lane idles at the end
        todo.sort(key=cost, reverse=True)
    jobs = [(v.name, dict(variant=asdict(v), data_dir=str(data_dir), out_dir=str(out_root / v.name),
                          train_kw=kw, device=device)) for v in todo]
    if lanes == 1:
        for _, job in jobs:
            train_variant(**job, progress=progress)
    elif jobs:
        run_in_lanes(jobs, lanes, progress=progress, target=train_variant)
    out = {}
    for v in rows:
        run = out_root / v.name
        gone = diverged(run)
        if gone is not None:
            out[v.name] = {"diverged": gone}
            continue
        out[v.name] = val_metrics(run, data_dir, device=device, label=v.label)
    return out


def table_rows(scale: str, results_dir, table: str, seed: int = 0) -> list[dict]:
    """The rows of ``table`` ("table2" or "table3") with a scored run: ours (val %), the paper's,
    each one's difference from its best model, and McNemar's test against our best model's run
    (``p_value``; ``only_row``/``only_best``: questions only one of the two answers right).
    Extra seeds appear as their own rows (``seed``); ``seed``: the one ``run_ablations`` used."""
    if table not in ("table2", "table3"):
        raise ValueError(f"table={table!r}: expected 'table2' or 'table3'")
    _, ab = _config(scale)
    out_root = Path(results_dir) / f"ablations_{scale}"
    best_dir = out_root / "best"
    best = None if diverged(best_dir) is not None else _metrics(best_dir)
    best_correct = read_correct(best_dir / "predictions_val.jsonl") if best else None
    rows = []
    members = [v for v in variants(ab.get("seeds"), seed) if v.table == table or v.name.startswith("best")]
    if table == "table3":   # depth order, the best model's row(s) at its depth
        members.sort(key=lambda v: v.changes.get("num_blocks", BEST_DEPTH))
    for v in members:
        label = f"{BEST_DEPTH} ResBlocks (best)" if table == "table3" and v.name.startswith("best") else v.label
        paper = PAPER_TABLE3[BEST_DEPTH] if table == "table3" and v.name.startswith("best") else v.paper
        paper_gap = None if paper is None else round(paper - PAPER_TABLE2["best"], 1)
        gone = diverged(out_root / v.name)   # read first, as run_ablations does: it supersedes old scores
        if gone is not None:                 # a row, without accuracy: its loss stopped being finite
            rows.append({"name": v.name, "row": label, "seed": v.seed, "ours": None, "paper": paper,
                         "ours_minus_best": None, "paper_minus_best": paper_gap,
                         "samples": gone["last_checkpoint_samples"], "train_minutes": None, "diverged": True})
            continue
        m = _metrics(out_root / v.name)
        if m is None:
            continue
        acc = 100 * m["val_accuracy"]
        row = {"name": v.name, "row": label, "seed": v.seed, "ours": round(acc, 1), "paper": paper,
               "ours_minus_best": None if best is None else round(acc - 100 * best["val_accuracy"], 1),
               "paper_minus_best": paper_gap, "samples": m.get("samples"), "train_minutes": m.get("train_minutes")}
        if best_correct is not None and v.name != "best":
            t = mcnemar(read_correct(out_root / v.name / "predictions_val.jsonl"), best_correct)
            row.update(only_row=t["only_a"], only_best=t["only_b"], p_value=t["p_value"])
        rows.append(row)
    return rows


def _metrics(run_dir: Path) -> dict | None:
    """The run's val metrics (None before it is scored on val)."""
    path = run_dir / "metrics.json"
    m = json.loads(path.read_text()) if path.is_file() else None
    return m if m is not None and "val_accuracy" in m else None


COLUMNS = ("row", "seed", "ours", "paper", "ours_minus_best", "paper_minus_best", "p_value", "only_row",
           "only_best", "samples", "train_minutes")


def write_tables(scale: str, results_dir, seed: int = 0) -> dict[str, list[dict]]:
    """``table2_<scale>.md/.csv`` and ``table3_<scale>.md/.csv`` in ``results_dir`` (written
    atomically): our column beside the paper's, labelled, and the questions each row saw.
    ``seed``: the one ``run_ablations`` used. Returns the rows."""
    _, ab = _config(scale)
    budget = (f"for the same {ab['max_samples']:,} questions" if ab.get("max_samples")
              else "with the same stopping rule")
    results_dir = Path(results_dir)
    out = {}
    for table, title in (("table2", "Table 2: ablations"), ("table3", "Table 3: number of FiLM-ed ResBlocks")):
        rows = out[table] = table_rows(scale, results_dir, table, seed)
        md = [f"# {title}, val accuracy (%)", "",
              f"Ours: val at scale `{scale}`, every row trained {budget} with the same recipe and seed "
              "(`filmlib.ablations`; extra seeds as their own rows; a row stopped by its time guard saw the "
              "questions its column says). The paper's: "
              "CLEVR val (Perez et al. 2017; quoted, not run here). p: McNemar's test of the row against our "
              "best model on the same questions.", "",
              "| Variant | seed | ours | paper | ours − best | paper − best | McNemar p | questions |",
              "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            ours = "diverged" if r.get("diverged") else f"{r['ours']:.1f}"
            cells = [r["row"], r["seed"], ours, _num(r["paper"]), _num(r["ours_minus_best"], "+.1f"),
                     _num(r["paper_minus_best"], "+.1f"), _num(r.get("p_value"), ".2g"),
                     "–" if r["samples"] is None else f"{r['samples']:,}"]
            md.append("| " + " | ".join(map(str, cells)) + " |")
        atomic_write_text(results_dir / f"{table}_{scale}.md", "\n".join(md) + "\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(results_dir / f"{table}_{scale}.csv", buf.getvalue())
    return out


def _num(x, fmt: str = ".1f") -> str:
    return "–" if x is None else format(x, fmt)


def plot_table(rows: list[dict], ax=None, title: str = ""):
    """Ours beside the paper's, each as the difference from its best model (points)."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1))
    y = range(len(rows))
    nan = float("nan")                       # a diverged row: no point of ours
    ax.scatter([nan if r["ours_minus_best"] is None else r["ours_minus_best"] for r in rows], y, label="ours",
               zorder=3)
    ax.scatter([nan if r["paper_minus_best"] is None else r["paper_minus_best"] for r in rows], y, marker="x",
               label="paper", zorder=3)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(list(y), [r["row"] + (f" (seed {r['seed']})" if "_seed" in r["name"] else "") for r in rows])
    ax.invert_yaxis()
    ax.set(xlabel="accuracy − best model's (points)", title=title)
    ax.legend()
    return ax


#: How close to the question-only level counts as "about" it (points).
ABOUT_QUESTION_ONLY = 3.0


def verdicts(table2: list[dict], table3: list[dict], question_only: float | None = None) -> list[dict]:
    """The paper's findings on Tables 2 and 3, checked on our rows (:func:`table_rows`, first seed):
    each ``{"claim", "holds", "numbers"}``, ``holds`` None when a row (or ``question_only``, the
    question-only level in %, e.g. the LSTM's Table 1 accuracy) is missing."""
    first = [r for r in table2 + table3 if "_seed" not in r["name"]]
    acc = {r["name"]: r["ours"] for r in first if r["ours"] is not None}
    gone = {r["name"] for r in first if r.get("diverged")}
    out = []

    def check(claim, names, test, numbers):
        missing = [n for n in names if n not in acc]
        if missing:
            said = [f"{what}: {', '.join(ns)}" for what, ns in
                    (("not trained yet", [n for n in missing if n not in gone]),
                     ("diverged", [n for n in missing if n in gone])) if ns]
            out.append({"claim": claim, "holds": None, "numbers": "; ".join(said)})
        else:
            out.append({"claim": claim, "holds": bool(test()), "numbers": numbers()})

    filmed = [n for n in ["best", *ABLATIONS] if n != "no_film_blocks1-4"]
    if question_only is None:
        out.append({"claim": "no model with FiLM in some block falls to about the question-only level",
                    "holds": None, "numbers": "the question-only level is unknown (notebook 03's LSTM)"})
        out.append({"claim": "without FiLM in any block the model falls to about the question-only level or "
                             "below (paper: 21.4%)", "holds": None, "numbers": "the question-only level is unknown"})
    else:
        present = [n for n in filmed if n in acc]
        worst = min(present, key=acc.get) if present else None
        check("no model with FiLM in some block falls to about the question-only level",
              [worst] if worst else filmed, lambda: acc[worst] > question_only + ABOUT_QUESTION_ONLY,
              lambda: f"lowest: {TABLE2_LABELS[worst]} {acc[worst]:.1f}% vs question-only {question_only:.1f}%")
        check("without FiLM in any block the model falls to about the question-only level or below (paper: 21.4%)",
              ["no_film_blocks1-4"], lambda: acc["no_film_blocks1-4"] <= question_only + ABOUT_QUESTION_ONLY,
              lambda: f"{acc['no_film_blocks1-4']:.1f}% vs question-only {question_only:.1f}%")
    check("γ := 1 costs more than β := 0 (paper: 95.9 vs 96.9)", ["gamma=1", "beta=0"],
          lambda: acc["gamma=1"] < acc["beta=0"], lambda: f"{acc['gamma=1']:.1f} vs {acc['beta=0']:.1f}")
    depths = {d: ("best" if d == BEST_DEPTH else f"depth_{d}") for d in DEPTHS}
    check("one FiLM-ed block is the worst depth (paper: 93.5)", list(depths.values()),
          lambda: acc[depths[1]] < min(acc[n] for d, n in depths.items() if d != 1),
          lambda: ", ".join(f"{d}: {acc[n]:.1f}" for d, n in depths.items()))
    return out
