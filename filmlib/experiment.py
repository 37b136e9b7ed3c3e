"""Glue between data, models and the trainer: what ``python -m filmlib train | evaluate`` and
notebook 02 call. A *run directory* holds a training run: ``last.pt`` / ``best.pt``,
``metrics.jsonl`` / ``metrics.csv``, and after evaluation ``metrics.json``,
``predictions_<split>.jsonl`` and ``table1.md``.
"""
from __future__ import annotations

import json
from pathlib import Path


from .data.datasets import ClevrQuestionsDataset, collate, make_loader
from .data.vocab import Vocab
from .io import atomic_write_text
from .evaluate import accuracy_report, predict, table1_markdown, write_predictions
from .models import FiLMConfig, FiLMModel, param_count, preset
from .train import Trainer, TrainConfig, default_batch, load_checkpoint, resolve_device


def visual_file(data_dir, split: str, stem: str) -> Path:
    name = f"{split}_features.h5" if stem == "features" else f"{split}_images.h5"
    path = Path(data_dir) / name
    if not path.exists():
        hint = "--features" if stem == "features" else "--image-size"
        raise FileNotFoundError(f"{path} is missing: run `python -m filmlib preprocess` "
                                f"({hint}) for split {split!r}")
    return path


def load_split(data_dir, split: str, stem: str = "pixels", *, max_samples: int | None = None,
               humans: bool = False) -> ClevrQuestionsDataset:
    """One preprocessed split (questions + images or features)."""
    q = Path(data_dir) / (f"{split}_humans_questions.h5" if humans else f"{split}_questions.h5")
    if not q.exists():
        raise FileNotFoundError(f"{q} is missing: run `python -m filmlib preprocess` first")
    return ClevrQuestionsDataset(q, visual_file(data_dir, split, stem), max_samples=max_samples)


def build_model(data_dir, preset_name: str, stem: str | None = None, *, ablation: str | None = None,
                **changes) -> FiLMModel:
    """A FiLM model sized for the vocabulary of ``data_dir``: a preset, optionally a Table 2
    ablation, then any config field changed (``num_blocks=6``, ``image_size=64``...)."""
    vocab = Vocab.load(Path(data_dir) / "vocab.json")
    cfg = preset(preset_name, len(vocab.question_token_to_idx), len(vocab.answer_token_to_idx), stem)
    if ablation:
        cfg = cfg.ablation(ablation)
    return FiLMModel(cfg.variant(**changes) if changes else cfg)


def train_film(data_dir, out_dir, *, preset_name: str = "cpu", stem: str | None = None,
               ablation: str | None = None, model_changes: dict | None = None,
               val_samples: int | None = None, train_samples: int | None = None, **train_kw) -> dict:
    """Train FiLM on a preprocessed dataset; returns the trainer's summary (plus parameters)."""
    model = build_model(data_dir, preset_name, stem, ablation=ablation, **(model_changes or {}))
    stem = model.cfg.stem
    train_set = load_split(data_dir, "train", stem, max_samples=train_samples)
    val_set = load_split(data_dir, "val", stem, max_samples=val_samples)
    _check_input(model.cfg, train_set)
    cfg = TrainConfig(out_dir=str(out_dir), **train_kw)
    cfg.extra.update(preset=preset_name, data_dir=str(data_dir))
    trainer = Trainer(model, train_set, val_set, cfg, collate_fn=collate, model_config=model.cfg.to_dict())
    summary = trainer.fit()
    summary["parameters"] = param_count(model)
    return summary


def _check_input(cfg: FiLMConfig, dataset: ClevrQuestionsDataset):
    shape = tuple(dataset.visual_shape)
    if cfg.stem == "pixels" and shape[-1] != cfg.image_size:
        raise ValueError(f"{dataset.visual_h5}: images are {shape[-2]}x{shape[-1]} but the model "
                         f"expects {cfg.image_size}x{cfg.image_size}; preprocess with "
                         f"--image-size {cfg.image_size}")


def load_run(run_dir, which: str = "best", device="cpu") -> tuple[FiLMModel, dict]:
    """The model of a run directory (``best.pt`` or ``last.pt``) and its checkpoint."""
    ckpt = load_checkpoint(Path(run_dir) / f"{which}.pt", map_location=device)
    model = FiLMModel(FiLMConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def evaluate_run(run_dir, data_dir, split: str = "val", *, which: str = "best", device: str = "auto",
                 label: str = "CNN+GRU+FiLM", data_label: str = "SynthCLEVR", batch_size: int = 256) -> dict:
    """Score a run on a split; writes metrics.json, predictions_<split>.jsonl and table1.md."""
    device = resolve_device(device)
    model, ckpt = load_run(run_dir, which, device)
    dataset = load_split(data_dir, split, model.cfg.stem)
    vocab = Vocab.load(Path(data_dir) / "vocab.json")
    pred = predict(model, make_loader(dataset, batch_size), batch_fn=default_batch, device=device)
    answers = vocab.answer_idx_to_token
    report = accuracy_report(pred, answers)
    run_dir = Path(run_dir)
    write_predictions(run_dir / f"predictions_{split}.jsonl", pred, answers)
    history = ckpt["history"]
    metrics = {"split": split, "checkpoint": which, "epoch": ckpt["epoch"],
               f"{split}_accuracy": report["overall"], "by_type": report.get("by_type"),
               "by_final_function": report.get("by_final_function"),
               "by_family": report.get("by_family"), "count_off_by_one": report.get("count_off_by_one"),
               "train_minutes": round(ckpt["train_seconds"] / 60, 2),
               "best_epoch": ckpt["best_epoch"], "epochs_trained": len(history),
               "parameters": param_count(model), "preset": ckpt["train_config"]["extra"].get("preset")}
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    (run_dir / "table1.md").write_text(table1_markdown({label: report}, data_label=data_label))
    return metrics


__all__ = ["build_model", "evaluate_run", "load_run", "load_split", "train_film", "visual_file"]
