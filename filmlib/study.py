"""The time-to-accuracy study: how fast FiLM leaves the question-only plateau, by recipe.

A *recipe* is a stem (what the model sees), an optimiser (learning rate, warm-up and decay,
batch size) and widths; every recipe trains the ``cpu`` preset's FiLM with the same seed on
the same data for a budget of questions, and scores a fixed val subset every
``eval_every`` questions (``curve.jsonl``: questions seen, training minutes, val accuracy,
train accuracy since the last point, learning rate). Runs resume from their last curve
point, and a finished run is kept, so a study spreads over several sessions.

Stems:
    ``oracle``      maps drawn from the scene graphs (perfect perception; the upper bound)
    ``perception``  the pre-trained perception CNN's frozen maps (:mod:`filmlib.perception`)
    ``finetune``    raw pixels through a pixel stem initialised from the perception trunk
    ``pixels``      raw pixels, stem learnt from scratch (the paper's "raw pixels" row)

    from filmlib import study
    study.run_recipe(study.RECIPES["oracle-paper"], "data/cache/synthclevr-80", "results/study_cpu")
    print(study.table("results/study_cpu"))

CLI: ``python -m filmlib study --data DIR --out DIR --recipe NAME [...]``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .io import atomic_write_text

STEMS = ("oracle", "perception", "finetune", "pixels")
THRESHOLDS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True)
class Recipe:
    name: str
    stem: str = "oracle"
    lr: float = 3e-4
    schedule: str = "constant"
    warmup_samples: int = 0
    min_lr_ratio: float = 0.0
    batch_size: int = 64
    weight_decay: float = 1e-5
    grad_clip: float | None = None
    max_samples: int = 2_000_000
    model: dict = field(default_factory=dict)   # FiLMConfig changes, e.g. {"rnn_dim": 1024}
    curriculum: str | None = None      # easy first: a measure of filmlib.experiment.CURRICULA
    curriculum_samples: int = 0        # ... over this many questions
    note: str = ""

    def __post_init__(self):
        if self.stem not in STEMS:
            raise ValueError(f"recipe {self.name!r}: stem must be one of {STEMS}, not {self.stem!r}")
        from .experiment import CURRICULA
        from .models.config import FiLMConfig
        FiLMConfig.check_fields(self.model, f"recipe {self.name!r}: model names ")   # a typo fails here, not hours in
        if self.curriculum is not None and self.curriculum not in CURRICULA:
            raise ValueError(f"recipe {self.name!r}: curriculum must be one of {CURRICULA}, not {self.curriculum!r}")
        if self.curriculum and not self.curriculum_samples:
            raise ValueError(f"recipe {self.name!r}: a curriculum needs curriculum_samples > 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def optimiser(self) -> str:
        """A short label: ``Adam 3e-4 flat`` or ``Adam 1e-3, warm-up 50k, cosine``."""
        text = f"Adam {self.lr:g}"
        if self.schedule == "constant":
            return text + " flat"
        parts = [text]
        if self.warmup_samples:
            parts.append(f"warm-up {self.warmup_samples // 1000}k")
        parts.append(self.schedule.removeprefix("warmup_"))
        return ", ".join(parts)

    @property
    def order(self) -> str:
        return "random" if not self.curriculum else f"{self.curriculum.replace('_', ' ')} first {self.curriculum_samples // 1000}k"


def _r(name, **kw) -> Recipe:
    return Recipe(name=name, **kw)


#: the cpu recipe (perception maps, warm-up and cosine, max+mean) at notebook 05's 600k-question horizon
_SHORT = dict(stem="perception", lr=1e-3, schedule="warmup_cosine", warmup_samples=50_000, min_lr_ratio=0.05,
              max_samples=600_000, model={"classifier_pool": "max+mean"})


def _narrow(max_samples: int, **changes) -> dict:
    """The short recipe at 32 channels (about half a question's cost) for ``max_samples``."""
    return {**_SHORT, "max_samples": max_samples, "model": {**_SHORT["model"], "channels": 32}, **changes}


#: The recipes of the study, in the order they were tried (see docs/time-to-accuracy.md).
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    _r("oracle-paper", note="the paper's optimiser: Adam 3e-4, no schedule, batch 64"),
    _r("oracle-warmup-1e-3", lr=1e-3, schedule="warmup_cosine", warmup_samples=50_000,
       min_lr_ratio=0.05, note="warm-up to a higher peak, cosine decay over the budget"),
    _r("oracle-warmup-1e-3-b256", lr=1e-3, schedule="warmup_cosine", warmup_samples=50_000,
       min_lr_ratio=0.05, batch_size=256, note="the same with 4x the batch"),
    _r("oracle-warmup-2e-3-b256", lr=2e-3, schedule="warmup_cosine", warmup_samples=100_000,
       min_lr_ratio=0.05, batch_size=256, note="larger batch, higher peak"),
    _r("oracle-warmup-1e-3-gru1024", lr=1e-3, schedule="warmup_cosine", warmup_samples=50_000,
       min_lr_ratio=0.05, model={"rnn_dim": 1024}, note="a 4x wider GRU"),
    _r("oracle-warmup-1e-3-c128", lr=1e-3, schedule="warmup_cosine", warmup_samples=50_000,
       min_lr_ratio=0.05, model={"channels": 128, "classifier_channels": 512, "classifier_hidden": 512},
       note="twice the channels"),
    _r("oracle-warmup-1e-3-curriculum", lr=1e-3, schedule="warmup_cosine", warmup_samples=50_000,
       min_lr_ratio=0.05, curriculum="program_length", curriculum_samples=500_000,
       note="short programs first, all programs after 500k questions"),
    _r("oracle-warmup-1e-3-maxmean", lr=1e-3, schedule="warmup_cosine", warmup_samples=50_000,
       min_lr_ratio=0.05, max_samples=3_000_000, model={"classifier_pool": "max+mean"},
       note="the classifier reads the global mean beside the max (counting is FiLM's weak skill; "
       "compare with oracle-warmup-1e-3, run to a 3M horizon)"),
    _r("perception-6M-maxmean", stem="perception", lr=1e-3, schedule="warmup_cosine", warmup_samples=50_000,
       min_lr_ratio=0.05, max_samples=6_000_000, model={"classifier_pool": "max+mean"},
       note="notebook 02's cpu recipe (perception maps, 6M-question horizon) with the classifier reading "
       "the global mean beside the max: the candidate for the cpu preset's classifier"),
    # notebook 05 trains ~27 rows within 6 hours on 2 cores, so ~600k questions a row: which
    # recipe is furthest from the plateau (~46-50%) at that budget? The cpu recipe at a 600k
    # horizon, a higher peak, short programs first, and a narrower network given twice the questions
    _r("ablations-600k", **_SHORT, note="the cpu recipe (notebook 02's) with a 600k-question horizon: "
       "notebook 05's rows as they are"),
    _r("ablations-600k-2e-3", **{**_SHORT, "lr": 2e-3}, note="the same with twice the peak learning rate"),
    _r("ablations-600k-curriculum", **_SHORT, curriculum="program_length", curriculum_samples=300_000,
       note="the same with short programs first, all programs after 300k questions"),
    _r("ablations-1.2M-c32", **_narrow(1_200_000),
       note="half the channels (about half the cost of a question), given twice the questions"),
    # none of the four above leaves the plateau (49-53% val at the end): rows that reason need
    # longer, so the cheaper narrow network at 2M questions, at the cpu recipe's peak and twice it
    _r("ablations-2M-c32", **_narrow(2_000_000),
       note="half the channels, 2M questions"),
    _r("ablations-2M-c32-2e-3", **_narrow(2_000_000, lr=2e-3),
       note="half the channels, 2M questions, twice the peak learning rate"),
    _r("perception-paper", stem="perception"),
    _r("perception-warmup-1e-3", stem="perception", lr=1e-3, schedule="warmup_cosine",
       warmup_samples=50_000, min_lr_ratio=0.05),
    _r("pixels-warmup-1e-3", stem="pixels", lr=1e-3, schedule="warmup_cosine",
       warmup_samples=50_000, min_lr_ratio=0.05),
    _r("finetune-warmup-1e-3", stem="finetune", lr=1e-3, schedule="warmup_cosine",
       warmup_samples=50_000, min_lr_ratio=0.05),
)}


def _stem_args(recipe: Recipe, data_dir: Path, perception_checkpoint) -> dict:
    if recipe.stem in ("oracle", "perception"):
        return {"stem": "features", "features": recipe.stem}
    if recipe.stem == "finetune":
        if perception_checkpoint is None:
            raise ValueError(f"recipe {recipe.name!r} fine-tunes the perception trunk: pass perception_checkpoint")
        return {"stem": "pixels", "init_stem": perception_checkpoint}
    return {"stem": "pixels"}


def run_recipe(recipe: Recipe, data_dir, out_root, *, eval_every: int = 50_000,
               curve_samples: int = 5_000, threads: int | None = None, seed: int = 0,
               max_samples: int | None = None, perception_checkpoint=None, progress: bool = True,
               preset_name: str = "cpu", compile: bool = False) -> dict:
    """Train one recipe into ``out_root/<name>`` (resuming if it was interrupted) and write its
    ``summary.json``; returns the summary. ``max_samples`` overrides the recipe's budget;
    ``compile``: ``torch.compile`` the FiLM-ed network (the same training, faster: the
    minutes and samples/s columns of :func:`table` say "(compiled)")."""
    from .experiment import train_film
    run = Path(out_root) / recipe.name
    budget = max_samples or recipe.max_samples
    summary_path = run / "summary.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if done.get("samples", 0) >= budget:
            return done
    result = train_film(
        data_dir, run, preset_name=preset_name, model_changes=dict(recipe.model),
        curve_samples=curve_samples, val_samples=None, epochs=10_000, patience=None,
        batch_size=recipe.batch_size, lr=recipe.lr, weight_decay=recipe.weight_decay,
        schedule=recipe.schedule, warmup_samples=recipe.warmup_samples, min_lr_ratio=recipe.min_lr_ratio,
        schedule_samples=budget, max_samples=budget, grad_clip=recipe.grad_clip,
        eval_every_samples=eval_every, threads=threads, seed=seed, progress=progress, compile=compile,
        curriculum=recipe.curriculum, curriculum_samples=recipe.curriculum_samples or None,
        **_stem_args(recipe, Path(data_dir), perception_checkpoint))
    curve = result["curve"]
    summary = {"recipe": recipe.to_dict(), "finished": result["samples"] >= budget, "samples": result["samples"],
               "train_minutes": round(result["train_minutes"], 2), "parameters": result["parameters"],
               "final_val_accuracy": result["history"][-1].get("val_accuracy") if result["history"] else None,
               "best_curve_accuracy": max((p["val_accuracy"] for p in curve), default=None),
               "curve_samples": curve_samples, "eval_every": eval_every, "threads": threads, "seed": seed,
               "compiled": bool(result.get("compiled")),
               "samples_per_s": _rate(curve), "reached": reached(curve)}
    atomic_write_text(summary_path, json.dumps(summary, indent=1))
    return summary


def run_scale(scale: str, data_dir, results_dir, *, seed: int = 0, perception_checkpoint=None,
              progress: bool = True) -> dict[str, dict]:
    """Every recipe a scale's ``study`` section lists, into ``results_dir/study_<scale>`` (finished
    ones are kept; unfinished ones resume); returns {recipe: summary}."""
    from .config import load_scale
    cfg = load_scale(scale).get("study") or {}
    preset_name = load_scale(scale)["film"]["preset"]
    out = {}
    for name in cfg.get("recipes") or []:
        if name not in RECIPES:
            raise ValueError(f"scale {scale!r} lists an unknown study recipe {name!r}")
        out[name] = run_recipe(RECIPES[name], data_dir, Path(results_dir) / f"study_{scale}",
                               eval_every=cfg.get("eval_every", 50_000), curve_samples=cfg.get("curve_samples", 5_000),
                               threads=cfg.get("threads"), seed=seed, max_samples=cfg.get("max_samples"),
                               perception_checkpoint=perception_checkpoint, progress=progress,
                               preset_name=preset_name)
    return out


def _rate(curve: list[dict]) -> float | None:
    if len(curve) < 2 or curve[-1]["train_minutes"] <= curve[0]["train_minutes"]:
        return None
    return round((curve[-1]["samples"] - curve[0]["samples"]) /
                 (60 * (curve[-1]["train_minutes"] - curve[0]["train_minutes"])), 1)


def reached(curve: list[dict], thresholds=THRESHOLDS) -> dict[str, dict | None]:
    """For each accuracy threshold, the first curve point at or above it (questions, minutes)."""
    out = {}
    for t in thresholds:
        hit = next((p for p in curve if p["val_accuracy"] is not None and p["val_accuracy"] >= t), None)
        out[f"{t:.2f}"] = None if hit is None else {"samples": hit["samples"], "minutes": hit["train_minutes"]}
    return out


def load_curve(run_dir) -> list[dict]:
    """The curve points of a run directory (empty when none were written yet)."""
    path = Path(run_dir) / "curve.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_study(out_root) -> dict[str, dict]:
    """{recipe name: {"summary": summary or None (unfinished), "curve": points}} under out_root."""
    out = {}
    for run in sorted(p for p in Path(out_root).iterdir() if p.is_dir()) if Path(out_root).is_dir() else []:
        curve = load_curve(run)
        summary_path = run / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        if curve or summary:
            out[run.name] = {"summary": summary, "curve": curve}
    return out


def table(out_root, thresholds=(0.6, 0.8, 0.85, 0.9)) -> str:
    """The study's Markdown table: one row per recipe run under ``out_root``."""
    head = ["recipe", "stem", "optimiser", "batch", "order", "widths", "questions seen", "minutes", "best val",
            *[f"to {t:.0%}" for t in thresholds], "samples/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, run in load_study(out_root).items():
        curve, summary = run["curve"], run["summary"]
        if summary:
            recipe = Recipe(**summary["recipe"])
        elif name in RECIPES:
            recipe = RECIPES[name]
        else:
            continue
        last = curve[-1] if curve else {"samples": 0, "train_minutes": 0}
        best = max((p["val_accuracy"] for p in curve if p["val_accuracy"] is not None), default=None)
        hits = reached(curve, thresholds)
        unfinished = not summary or summary.get("finished") is False      # no summary, or a paused run's
        cells = [name + (" (unfinished)" if unfinished else ""), recipe.stem, recipe.optimiser, str(recipe.batch_size),
                 recipe.order,
                 ", ".join(f"{k} {v}" for k, v in recipe.model.items()) or "cpu preset",
                 f"{last['samples']:,}", f"{last['train_minutes']:.0f}",
                 "–" if best is None else f"{100 * best:.1f}"]
        for t in thresholds:
            h = hits[f"{t:.2f}"]
            cells.append("–" if h is None else f"{h['samples'] / 1e6:.2f}M / {h['minutes']:.0f} min")
        rate = _rate(curve)
        compiled = " (compiled)" if (summary or {}).get("compiled") else ""
        cells.append("–" if rate is None else f"{rate:.0f}{compiled}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["RECIPES", "Recipe", "STEMS", "load_curve", "load_study", "reached", "run_recipe", "run_scale", "table"]
