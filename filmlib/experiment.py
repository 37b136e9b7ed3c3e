"""Glue between data, models and the trainer: what ``python -m filmlib train | evaluate`` and
notebooks 02-03 call. A *run directory* holds a training run: ``last.pt`` / ``best.pt``,
``metrics.jsonl`` / ``metrics.csv``, and after evaluation ``metrics.json``,
``predictions_<split>.jsonl`` and ``table1.md``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .config import load_scale
from .data.datasets import ClevrQuestionsDataset, collate, make_loader
from .data.preprocess import DataFileError
from .data.vocab import UNK_IDX, Vocab
from .io import atomic_path, atomic_write_text
from .evaluate import PAPER_TABLE1, accuracy_report, image_reliance, predict, table1_markdown, write_predictions
from .models import FiLMConfig, FiLMModel, param_count, preset
from .models.baselines import LABELS, BaselineConfig, QTypeBaseline, baseline_preset, build_baseline
from .train import Trainer, TrainConfig, atomic_save, default_batch, load_checkpoint, resolve_device, seed_everything


#: Features files a features stem can read, by name: ``<split>_<name>.h5`` in the data folder.
FEATURE_SOURCES = {
    "features": "`python -m filmlib preprocess --features` (ResNet-101 conv4)",
    "perception": "`python -m filmlib perception` (the pre-trained perception CNN's maps)",
    "oracle": "`python -m filmlib scene-maps` (maps drawn from the scene graphs)",
}


def visual_file(data_dir, split: str, stem: str, features: str | None = None) -> Path:
    """The images file (pixels stem) or the features file ``features`` names (features stem:
    ``"features"`` = ResNet-101, the default; ``"perception"``; ``"oracle"``) of a split."""
    features = features or "features"
    name = f"{split}_{features}.h5" if stem == "features" else f"{split}_images.h5"
    path = Path(data_dir) / name
    if not path.exists():
        how = (FEATURE_SOURCES.get(features, f"the step that writes {split}_{features}.h5")
               if stem == "features" else "`python -m filmlib preprocess --image-size`")
        raise FileNotFoundError(f"{path} is missing: run {how} for split {split!r}")
    return path


def load_split(data_dir, split: str, stem: str = "pixels", *, max_samples: int | None = None,
               humans: bool = False, features: str | None = None, indices=None) -> ClevrQuestionsDataset:
    """One preprocessed split (questions + images or features)."""
    q = Path(data_dir) / (f"{split}_humans_questions.h5" if humans else f"{split}_questions.h5")
    if not q.exists():
        raise FileNotFoundError(f"{q} is missing: run `python -m filmlib preprocess` first")
    return ClevrQuestionsDataset(q, visual_file(data_dir, split, stem, features), max_samples=max_samples,
                                 indices=indices)


def feature_shape(data_dir, features: str | None = None, split: str = "train") -> dict:
    """``feature_channels`` and ``feature_size`` of a features file (for ``build_model``)."""
    import h5py
    with h5py.File(visual_file(data_dir, split, "features", features), "r") as f:
        _, c, h, w = f["features"].shape
    if h != w:
        raise ValueError(f"{visual_file(data_dir, split, 'features', features)}: maps are {h}x{w}, not square")
    return {"feature_channels": int(c), "feature_size": int(h)}


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
               val_samples: int | None = None, train_samples: int | None = None,
               features: str | None = None, curve_samples: int | None = None,
               init_stem=None, train_indices=None, curriculum: str | None = None,
               splits: tuple[str, str] = ("train", "val"), init_from=None, **train_kw) -> dict:
    """Train FiLM on a preprocessed dataset; returns the trainer's summary (plus parameters).

    ``features`` names the features file a features stem reads (``"features"``, ResNet-101, by
    default; ``"perception"``; ``"oracle"``); the stem's input width and map size follow the
    file. ``curve_samples``: the first that many val questions score the curve points
    (``eval_every_samples``). ``init_stem``: a perception checkpoint whose trunk initialises the
    pixel stem (pre-trained, then fine-tuned). ``train_indices``: train on these question rows only.
    ``curriculum``: a difficulty measure (:func:`question_difficulty`) for the Trainer's
    easy-first phase (``curriculum_samples`` questions). ``splits``: the train and val splits'
    names (CoGenT: ``("trainA", "valA")``). ``init_from``: a checkpoint of a run of the same
    architecture whose weights this run starts from (fine-tuning; a resume still wins)."""
    changes = dict(model_changes or {})
    if (stem or "") == "features" or (stem is None and preset(preset_name, 1, 1).stem == "features"):
        changes = {**feature_shape(data_dir, features, splits[0]), **changes}
    seed_everything(train_kw.get("seed", 0))      # the initial weights: the same seed, the same model
    model = build_model(data_dir, preset_name, stem, ablation=ablation, **changes)
    stem = model.cfg.stem
    if init_stem is not None:
        _load_stem(model, init_stem)
    if init_from is not None:
        _load_weights(model, init_from)
    feats = features if stem == "features" else None
    train_split, val_split = splits
    train_set = load_split(data_dir, train_split, stem, max_samples=train_samples, features=feats,
                           indices=train_indices)
    val_set = load_split(data_dir, val_split, stem, max_samples=val_samples, features=feats)
    curve_set = (load_split(data_dir, val_split, stem, max_samples=curve_samples, features=feats)
                 if curve_samples else None)
    _check_input(model.cfg, train_set)
    cfg = TrainConfig(out_dir=str(out_dir), **train_kw)
    cfg.extra.update(preset=preset_name, data_dir=str(data_dir), features=feats,
                     init_stem=None if init_stem is None else str(init_stem),
                     init_from=None if init_from is None else str(init_from), splits=list(splits))
    difficulty = question_difficulty(train_set, curriculum) if curriculum else None
    cfg.extra.update(curriculum=curriculum)
    trainer = Trainer(model, train_set, val_set, cfg, collate_fn=collate, model_config=model.cfg.to_dict(),
                      curve_set=curve_set, difficulty=difficulty)
    summary = trainer.fit()
    summary["parameters"] = param_count(model)
    return summary


TRAIN_KEYS = ("batch_size", "lr", "weight_decay", "schedule", "warmup_samples", "min_lr_ratio", "max_samples",
              "epochs", "max_steps_per_epoch", "time_limit_minutes", "patience", "threads", "compile",
              "bf16")


def film_train_kwargs(film: dict) -> dict:
    """``train_film`` keyword arguments from a scale's ``film`` section (its ``model``: changes to
    the preset's ``FiLMConfig``, e.g. ``{classifier_pool: max+mean}``)."""
    kw = {k: film[k] for k in TRAIN_KEYS if k in film}
    kw.update(stem=film["stem"], features=film.get("features"), val_samples=film.get("val_samples"),
              eval_every_samples=film.get("eval_every"), curve_samples=film.get("curve_samples"),
              preset_name=film["preset"])
    changes = film.get("model") or {}
    if not isinstance(changes, dict):
        raise ValueError(f"the scale's film.model must be a mapping of FiLMConfig fields, not {changes!r}")
    FiLMConfig.check_fields(changes, "the scale's film.model names ")
    if changes:
        kw["model_changes"] = dict(changes)
    if kw.get("schedule", "constant") != "constant" and kw.get("max_samples"):
        kw["schedule_samples"] = kw["max_samples"]
    return kw


def perception_config(preset_name: str):
    """The perception CNN that matches a preset's pixel stem (so its trunk can also seed it)."""
    from .models.perception import PerceptionConfig
    cfg = preset(preset_name, 1, 1, "pixels")
    return PerceptionConfig(image_size=cfg.image_size, in_channels=cfg.in_channels, channels=cfg.channels,
                            stem_layers=cfg.stem_layers)


#: torchvision's ImageNet ResNet-101 (IMAGENET1K_V1), where the README's one command puts it
RESNET101_FILE = "resnet101-63fe2227.pth"


def resnet101_weights() -> Path:
    """The ResNet-101 weights file the paper's features are computed with: ``$FILMLIB_RESNET101``,
    else ``data/resnet101-63fe2227.pth``."""
    from .config import repo_root
    return Path(os.environ.get("FILMLIB_RESNET101") or repo_root() / "data" / RESNET101_FILE)


def _need_resnet101_weights() -> Path:
    """:func:`resnet101_weights`, or a FileNotFoundError saying how to fetch them."""
    weights = resnet101_weights()
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no ResNet-101 weights for the paper's features; on a machine "
                                f"with internet: `curl -L -o {weights} https://download.pytorch.org/models/"
                                f"{RESNET101_FILE}` (or set FILMLIB_RESNET101 to the file)")
    return weights


def prepare_data(scale: str, root=None, results_dir=None, *, splits=("train", "val", "test"), seed: int = 0,
                 workers: int = 1, device: str = "auto", progress: bool = True) -> dict:
    """The data notebooks 02-06 and 08 read at a scale, made in one call (``python -m filmlib
    data``, ``make data``): SynthCLEVR generated at the scale's size (notebook 00's step), its
    ``splits`` preprocessed to the HDF5 cache of FiLM's image size, and, where FiLM reads maps,
    those maps (notebook 02's step; the perception CNN is pre-trained into
    ``results_dir/perception_<scale>`` only if its checkpoint is missing; ResNet-101 features on
    ``device``). Notebook 07's CoGenT data and the study's scene-graph maps are made by their
    notebooks. Finished steps are kept, so running it again takes seconds. Returns {"root",
    "cache", "generated", "preprocessed", "maps"}."""
    from .config import default_cache_dir, default_data_root, repo_root
    from .data.preprocess import preprocess_root
    from .synth.generate import generate_dataset
    cfg = load_scale(scale)
    root = Path(root) if root else default_data_root(scale, "synth")
    results_dir = Path(results_dir) if results_dir else repo_root() / "results"
    size = cfg["film"]["image_size"]
    cache = default_cache_dir(root, size)
    if cfg["film"]["stem"] == "features" and cfg["film"].get("features", "features") == "features":
        _need_resnet101_weights()             # checked before hours of generating, not after
    made = generate_dataset(root, cfg["data"], seed=seed, workers=workers, progress=progress,
                            where=f"filmlib/scales/{scale}.yaml: data")
    splits = tuple(s for s in splits if s in cfg["data"]["splits"])
    pre = preprocess_root(root, cache, splits=splits, image_size=(size, size), workers=workers,
                          progress=progress)["report"]
    maps = (prepare_maps(scale, root, cache, results_dir, splits=splits, seed=seed, progress=progress,
                         device=device, workers=workers) if cfg["film"]["stem"] == "features" else {})
    perception_val = (maps.pop("pretrain", None) or {}).get("val")
    return {"root": str(root), "cache": str(cache),
            "generated": {k: v if v == "kept" else "made" for k, v in made.items()},
            "preprocessed": {k: "kept" if v["skipped"] else f"{v['seconds']} s" for k, v in pre.items()},
            "maps": maps, **({"perception_val": perception_val} if perception_val else {})}


def prepare_maps(scale: str, root, cache, results_dir, *, features: str | None = None,
                 splits=("train", "val"), seed: int = 0, progress: bool = True, device: str = "auto",
                 workers: int = 1, pretrain_splits: tuple[str, str] = ("train", "val")) -> dict:
    """Make the features files a features stem of this scale reads, if missing: ``oracle``
    (scene-graph maps, seconds), ``perception`` (pre-train the perception CNN into
    ``results_dir/perception_<scale>``, then cache its maps) or ``features`` (the paper's
    ResNet-101 conv4 features, from :func:`resnet101_weights`, on ``device``, stored as float16;
    resumable). ``splits``: the splits to make maps for; ``pretrain_splits``: the train and val
    splits the perception CNN learns from and is scored on. Returns what was done, with the
    perception net's val scores."""
    from . import perception
    from .data.scene_maps import write_scene_maps
    cfg = load_scale(scale)
    if features is None and cfg["film"]["stem"] == "features":
        features = cfg["film"].get("features")
    cache, out = Path(cache), {}
    if features == "oracle":
        for split in splits:
            path = cache / f"{split}_oracle.h5"
            if not path.exists():
                write_scene_maps(root, split, path)
            out[split] = str(path)
    elif features == "perception":
        pc = cfg.get("perception") or {}
        run = Path(results_dir) / f"perception_{scale}"
        out["pretrain"] = perception.pretrain(
            cache, root, run, cfg=perception_config(cfg["film"]["preset"]), epochs=pc.get("epochs", 6),
            batch_size=pc.get("batch_size", 64), lr=pc.get("lr", 1e-3), time_limit_minutes=pc.get("minutes"),
            threads=pc.get("threads"), seed=seed, progress=progress, splits=tuple(pretrain_splits))
        for split in splits:
            path = cache / f"{split}_perception.h5"
            if not path.exists() or path.stat().st_mtime < (run / perception.CHECKPOINT).stat().st_mtime:
                perception.extract(run / perception.CHECKPOINT, cache, split)
            out[split] = str(path)
    elif features == "features":
        from .data.features import extract_features
        from .train import resolve_device
        weights = _need_resnet101_weights()
        import h5py

        from .data.preprocess import split_image_paths
        for split in splits:
            path = cache / f"{split}_features.h5"
            source = str(split_image_paths(root, split)[0].parent.resolve())
            if path.exists():                 # kept only if made from these weights and these images
                with h5py.File(path, "r") as f:
                    made_from = (f.attrs.get("weights"), f.attrs.get("source"))
                if made_from != (str(weights.resolve()), source) or path.stat().st_mtime < max(
                        weights.stat().st_mtime, Path(source).stat().st_mtime):
                    path.unlink()
            if not path.exists():
                extract_features(root, path, split=split, weights=weights, dtype="float16",
                                 device=resolve_device(device), workers=workers, progress=progress)
            out[split] = str(path)
    return out


CURRICULA = ("program_length",)


def question_difficulty(dataset: ClevrQuestionsDataset, measure: str = "program_length") -> np.ndarray:
    """A difficulty level for every question of a dataset: ``program_length`` (the number of
    functions in its program: "How many cubes?" is 3, a two-hop comparison 15 or more)."""
    if measure not in CURRICULA:
        raise ValueError(f"unknown curriculum measure {measure!r}; expected one of {CURRICULA}")
    import h5py
    with h5py.File(dataset.questions_h5, "r") as f:
        if "programs" not in f:
            raise ValueError(f"{dataset.questions_h5}: no programs, so no program lengths for a curriculum")
        programs = f["programs"][()][dataset.rows]
    # prefix programs between <START> and <END>: functions = non-<NULL> tokens minus the two markers
    return np.maximum((programs != 0).sum(1) - 2, 1)


def _load_stem(model: FiLMModel, checkpoint) -> None:
    """Copy a pre-trained perception trunk into a pixel-stem FiLM model (same widths)."""
    from .models.perception import stem_state_dict
    from .perception import load_perception
    if model.cfg.stem != "pixels":
        raise ValueError("init_stem initialises a pixels stem; this model reads features")
    state = stem_state_dict(load_perception(checkpoint))
    own = model.state_dict()
    bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{checkpoint}: the perception trunk does not fit this model's pixel stem "
                         f"({bad[0]}); give both the same channels and stem_layers")
    model.load_state_dict(state, strict=False)


def _load_weights(model, checkpoint) -> None:
    """Start ``model`` from the weights of a run's checkpoint (the same architecture)."""
    state = load_checkpoint(Path(checkpoint))["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{checkpoint}: its weights do not fit this model ({str(e).splitlines()[0]})") from None


def _check_input(cfg: FiLMConfig, dataset: ClevrQuestionsDataset):
    shape = tuple(dataset.visual_shape)
    if cfg.stem == "pixels" and shape[-1] != cfg.image_size:
        raise ValueError(f"{dataset.visual_h5}: images are {shape[-2]}x{shape[-1]} but the model "
                         f"expects {cfg.image_size}x{cfg.image_size}; preprocess with "
                         f"--image-size {cfg.image_size}")


def model_from_config(d: dict):
    """The (untrained) model a checkpoint's ``model_config`` describes: FiLM or a baseline."""
    if d.get("model") == "baseline":
        return build_baseline(BaselineConfig.from_dict(d))
    return FiLMModel(FiLMConfig.from_dict(d))


def model_label(model) -> str:
    """The model's row name in Table 1."""
    if isinstance(model, FiLMModel):
        return "CNN+GRU+FiLM" + (" (raw pixels)" if model.cfg.stem == "pixels" else "")
    return model.cfg.label


def load_run(run_dir, which: str = "best", device="cpu"):
    """The model of a run directory (``best.pt`` or ``last.pt``) and its checkpoint."""
    ckpt = load_checkpoint(Path(run_dir) / f"{which}.pt", map_location=device)
    model = model_from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def build_baseline_model(data_dir, kind: str, preset_name: str, stem: str | None = None, **changes):
    """A Table 1 baseline sized for the vocabulary of ``data_dir`` (see ``baseline_preset``)."""
    vocab = Vocab.load(Path(data_dir) / "vocab.json")
    cfg = baseline_preset(kind, preset_name, len(vocab.question_token_to_idx), len(vocab.answer_token_to_idx), stem)
    return build_baseline(cfg.variant(**changes) if changes else cfg)


def train_baseline(data_dir, out_dir, kind: str, *, preset_name: str = "cpu", stem: str | None = None,
                   model_changes: dict | None = None, val_samples: int | None = None,
                   train_samples: int | None = None, features: str | None = None,
                   curve_samples: int | None = None, splits: tuple[str, str] = ("train", "val"),
                   init_from=None, train_indices=None, **train_kw) -> dict:
    """Train (or, for "qtype", count) a Table 1 baseline on a preprocessed dataset, into a run
    directory of the same layout as FiLM's. The neural ones use ``filmlib.train.Trainer`` with the
    authors' optimiser settings for them (``lr`` 5e-4, no weight decay) unless ``train_kw`` says
    otherwise. ``features``, ``curve_samples``, ``splits``, ``init_from`` and ``train_indices`` as
    for :func:`train_film`."""
    changes = dict(model_changes or {})
    if stem == "features" and kind in ("cnn_lstm", "cnn_lstm_sa"):
        changes = {**feature_shape(data_dir, features, splits[0]), **changes}
    seed_everything(train_kw.get("seed", 0))
    model = build_baseline_model(data_dir, kind, preset_name, stem, **changes)
    cfg_dict = model.cfg.to_dict()
    if kind == "qtype":
        return _fit_qtype(model, data_dir, out_dir, train_samples, train_kw, preset_name)
    if init_from is not None:
        _load_weights(model, init_from)
    feats = features if getattr(model.cfg, "stem", None) == "features" and _reads_image(model) else None
    train_split, val_split = splits
    train_set = split_for(model, data_dir, train_split, train_samples, feats, indices=train_indices)
    val_set = split_for(model, data_dir, val_split, val_samples, feats)
    curve_set = split_for(model, data_dir, val_split, curve_samples, feats) if curve_samples else None
    if train_set.visual_h5 is not None:
        _check_input(model.cfg, train_set)
    train_kw = {"lr": model.cfg.lr, "weight_decay": model.cfg.weight_decay, **train_kw}
    cfg = TrainConfig(out_dir=str(out_dir), **train_kw)
    cfg.extra.update(preset=preset_name, data_dir=str(data_dir), model=kind, features=feats, splits=list(splits),
                     init_from=None if init_from is None else str(init_from))
    trainer = Trainer(model, train_set, val_set, cfg, collate_fn=collate, batch_fn=batch_fn_for(train_set),
                      model_config=cfg_dict, curve_set=curve_set)
    summary = trainer.fit()
    summary["parameters"] = param_count(model)
    return summary


def pick_lr(train, run_dir, grid, pilot_samples: int, budget: int) -> dict:
    """Pick a run's peak learning rate from ``grid`` on val, then train the winner to ``budget``.

    ``train(out_dir, lr, max_samples)`` trains (resuming) one run and returns the Trainer's
    summary; its schedule's horizon must be ``budget`` whatever ``max_samples`` is, so that each
    pilot is exactly the first ``pilot_samples`` questions of the full run with that lr. Each lr
    trains a pilot into ``run_dir/lr_grid/lr_<lr>``; the one with the best accuracy on the whole
    val split (the Trainer's end-of-pilot evaluation) wins, its checkpoints are copied into
    ``run_dir`` and the run continues there to ``budget`` questions. The pilots' scores and the
    choice go to ``run_dir/lr_grid.json``; a recorded choice is kept, finished pilots are kept,
    interrupted ones resume. Returns the final run's summary with ``lr_grid`` added."""
    import shutil
    run_dir = Path(run_dir)
    grid = [float(lr) for lr in grid]
    if not grid:
        raise ValueError(f"{run_dir}: the learning-rate grid is empty")
    if not 0 < pilot_samples <= budget:
        raise ValueError(f"{run_dir}: pilot_samples={pilot_samples} must be in (0, budget={budget}]")
    record_path = run_dir / "lr_grid.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    if record is None or record.get("grid") != grid or record.get("pilot_samples") != pilot_samples:
        pilots = {}
        for lr in grid:
            out = run_dir / "lr_grid" / f"lr_{lr:g}"
            summary = train(out, lr, pilot_samples)
            scored = [h["val_accuracy"] for h in summary["history"] if h.get("val_accuracy") is not None]
            pilots[f"{lr:g}"] = {"val_accuracy": scored[-1] if scored else None, "samples": summary["samples"],
                                 "train_minutes": round(summary["train_minutes"], 2)}
        ranked = [lr for lr in grid if pilots[f"{lr:g}"]["val_accuracy"] is not None]
        if not ranked:
            raise RuntimeError(f"{run_dir}: no pilot was scored on val (is the val split empty?)")
        chosen = max(ranked, key=lambda lr: pilots[f"{lr:g}"]["val_accuracy"])   # ties: the first
        record = {"grid": grid, "pilot_samples": pilot_samples, "budget": budget, "pilots": pilots,
                  "chosen": chosen, "metric": "val accuracy (whole val split) after the pilot"}
        winner = run_dir / "lr_grid" / f"lr_{chosen:g}"
        if not (run_dir / "last.pt").exists():   # continue the winning pilot (copy, then resume)
            for name in ("last.pt", "best.pt", "curve.jsonl", "metrics.jsonl", "metrics.csv"):
                if (winner / name).exists():
                    with atomic_path(run_dir / name) as tmp:
                        shutil.copyfile(winner / name, tmp)
        atomic_write_text(record_path, json.dumps(record, indent=1) + "\n")
    summary = train(run_dir, record["chosen"], budget)
    summary["lr_grid"] = record
    return summary


def table1_runs(results_dir, scale: str) -> dict[str, Path]:
    """{Table 1 row name: run directory} of a scale: its baselines, FiLM (notebook 02's run) and,
    when the scale asks for it, FiLM from raw pixels."""
    cfg = load_scale(scale)
    base = cfg["baselines"]
    results_dir = Path(results_dir)
    film_label = "CNN+GRU+FiLM" + (" (raw pixels)" if cfg["film"]["stem"] == "pixels" else "")
    runs = {LABELS[k]: results_dir / f"{k}_{scale}" for k in base["models"]}
    runs[film_label] = results_dir / f"film_{scale}"
    if base.get("raw_pixels") and cfg["film"]["stem"] != "pixels":
        runs["CNN+GRU+FiLM (raw pixels)"] = results_dir / f"film_pixels_{scale}"
    return runs


def _budget_kwargs(film: dict, base: dict, kind: str) -> dict:
    """The Trainer settings a baseline shares with FiLM (question budget, schedule, batch, bf16
    autocast, curve points) when the scale gives baselines a learning-rate grid."""
    kw = {k: film[k] for k in ("batch_size", "schedule", "warmup_samples", "min_lr_ratio", "bf16") if k in film}
    kw.update(epochs=base.get("epochs", 1000), patience=base.get("patience"),
              max_steps_per_epoch=base.get("max_steps_per_epoch"), threads=base.get("threads"),
              val_samples=base.get("val_samples"), eval_every_samples=film.get("eval_every"),
              curve_samples=film.get("curve_samples"),
              time_limit_minutes=(base.get("minutes") or {}).get(kind))
    if kw.get("schedule", "constant") != "constant":
        kw["schedule_samples"] = film["max_samples"]
    return kw


def film_questions_seen(results_dir, scale: str) -> int | None:
    """How many questions notebook 02's FiLM run of a scale trained on, once it has been scored
    (``film_<scale>/metrics.json``): its ``last.pt``'s count, which the best checkpoint scored in
    ``metrics.json`` may be short of (that count without ``last.pt``); None before it is scored."""
    run = Path(results_dir) / f"film_{scale}"
    path = run / "metrics.json"
    if not path.is_file():
        return None
    samples = (load_checkpoint(run / "last.pt").get("samples") if (run / "last.pt").is_file()
               else json.loads(path.read_text()).get("samples"))
    return int(samples) if samples else None


#: Table 1's trained rows, longest step per question first: the order runs are handed to lanes, so
#: that the long ones start first and the lanes finish together (docs/performance.md)
_LONGEST_FIRST = ("film_pixels", "cnn_lstm_sa", "cnn_lstm", "lstm")


def run_baselines(data_dir, results_dir, scale: str, *, stem: str | None = None, features: str | None = None,
                  seed: int = 0, models: list[str] | None = None, progress: bool = True,
                  lanes: int | None = None, device: str = "auto") -> dict[str, dict]:
    """Train (or resume) and score each Table 1 baseline of a scale (``filmlib/scales/<scale>.yaml``,
    section ``baselines``) into ``results_dir/<kind>_<scale>``; returns {row name: val metrics}.

    With ``lr_grid`` in the section (the ``cpu`` scale), every trained model gets FiLM's question
    budget, batch, schedule and precision (section ``film``) and its own peak learning rate, picked on val
    from the grid by pilot runs (:func:`pick_lr`) — as many questions as FiLM's run of the scale
    saw, when it has been scored (:func:`film_questions_seen`); with ``raw_pixels: true`` FiLM from
    raw pixels (FiLM's recipe, lr and schedule with ``stem: pixels``; its budget
    ``raw_pixels_samples``, by default the same questions) is trained into ``film_pixels_<scale>``
    too (``models`` may name it ``film_pixels``). Without a grid, each model trains with its
    authors' optimiser under a time budget and early stopping. A finished run is kept; an
    interrupted one resumes.

    ``lanes`` (default: the section's ``lanes``, else 1): how many runs train at once, each in its
    own process with ``threads // lanes`` threads, longest first. On 2 cores two 1-thread runs do
    about 1.3x the work of one 2-thread run (docs/performance.md). Runs are scored after all have
    trained, in this process (so a failure leaves the finished ones unscored until the next call,
    which keeps them and scores them). ``device``: where every run trains and is scored (``auto``:
    a GPU if torch sees one)."""
    scale_cfg = load_scale(scale)
    cfg, film = scale_cfg["baselines"], scale_cfg["film"]
    kinds = list(models or cfg["models"])
    if models is None and cfg.get("raw_pixels") and film["stem"] != "pixels":
        kinds.append("film_pixels")
    # the same number of questions as FiLM's run saw (its time guard may have stopped it before its
    # budget); the schedule keeps FiLM's horizon
    known = [n for n in (film.get("max_samples"), film_questions_seen(results_dir, scale)) if n]
    budget = min(known) if known else None
    trained = [k for k in kinds if k != "qtype"]
    # lanes for the runs still to train only: a last unfinished run gets every thread
    todo = [k for k in trained if not run_spent(Path(results_dir) / f"{k}_{scale}", _row_budget(cfg, k, budget),
                                                (cfg.get("minutes") or {}).get(k))]
    lanes = max(1, min(int(lanes or cfg.get("lanes") or 1), len(todo) or 1))
    threads = cfg.get("threads")
    job = dict(data_dir=str(data_dir), results_dir=str(results_dir), scale=scale, stem=stem, features=features,
               seed=seed, budget=budget, device=device)
    if "qtype" in kinds:
        train_table1_row("qtype", **job, progress=progress, threads=threads)
    if lanes == 1:
        for kind in trained:
            train_table1_row(kind, **job, progress=progress, threads=threads)
    else:
        order = sorted(todo, key=lambda k: _LONGEST_FIRST.index(k) if k in _LONGEST_FIRST else len(_LONGEST_FIRST))
        run_in_lanes([(k, dict(job, kind=k, progress=False, threads=max(1, (threads or lanes) // lanes)))
                      for k in order], lanes, progress=progress)
    out = {}
    for kind in kinds:      # a run already scored from its present best.pt is not scored again
        metrics = val_metrics(Path(results_dir) / f"{kind}_{scale}", data_dir, device=device)
        out[metrics["model"]] = metrics
    return out


def _row_budget(cfg: dict, kind: str, budget: int | None) -> int | None:
    """The questions a Table 1 row trains for (``cfg``: the scale's ``baselines`` section): FiLM
    from raw pixels its ``raw_pixels_samples`` (default: ``budget``), a model with a
    learning-rate grid ``budget``; None where epochs and early stopping decide."""
    if kind == "film_pixels":
        return cfg.get("raw_pixels_samples") or budget
    return budget if cfg.get("lr_grid") else None


def scored_on_val(run_dir) -> bool:
    """Has the run's best checkpoint been scored on val (``metrics.json``, with its predictions)
    since it was written?"""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.json"
    if not (_written_since(metrics, run_dir / "best.pt") and (run_dir / "predictions_val.jsonl").is_file()):
        return False
    return json.loads(metrics.read_text()).get("split") == "val"


def _written_since(path: Path, checkpoint: Path) -> bool:
    """Was ``path`` written from ``checkpoint`` as it is now (both exist, ``path`` not older)?"""
    return path.is_file() and checkpoint.is_file() and path.stat().st_mtime >= checkpoint.stat().st_mtime


def val_metrics(run_dir, data_dir, *, device: str = "auto", label: str | None = None) -> dict:
    """A run's metrics on val: those in its ``metrics.json`` while :func:`scored_on_val` holds,
    else scored now (:func:`evaluate_run`)."""
    if scored_on_val(run_dir):
        return json.loads((Path(run_dir) / "metrics.json").read_text())
    return evaluate_run(run_dir, data_dir, "val", device=device, label=label)


def run_spent(run_dir, budget: int | None, minutes: float | None) -> bool:
    """Has the run in ``run_dir`` spent its question ``budget`` (or its ``minutes`` guard) and
    closed its last epoch? False without a budget (epochs and early stopping decide: only the
    Trainer knows) or before its ``last.pt``. A run with a learning-rate grid (:func:`pick_lr`)
    has its ``last.pt`` only once its pilots are done."""
    last = Path(run_dir) / "last.pt"
    if budget is None or not last.is_file():
        return False
    ckpt = load_checkpoint(last)
    if ckpt.get("epoch_batches", 0) > 0:     # stopped at a curve point: the Trainer closes the epoch
        return False
    return (ckpt.get("samples", 0) >= budget
            or (minutes is not None and ckpt.get("train_seconds", 0) >= 60 * minutes))


def train_table1_row(kind: str, data_dir, results_dir, scale: str, *, stem: str | None = None,
                     features: str | None = None, seed: int = 0, budget: int | None = None,
                     progress: bool = True, threads: int | None = None, device: str = "auto") -> dict:
    """Train (or resume; Q-type: count) one row of a scale's Table 1 into ``results_dir/<kind>_<scale>``,
    as :func:`run_baselines` does (``budget``: its question budget), without scoring it. Returns
    the Trainer's summary."""
    scale_cfg = load_scale(scale)
    cfg, film = scale_cfg["baselines"], scale_cfg["film"]
    grid = cfg.get("lr_grid")
    budget = budget or film.get("max_samples")
    run = Path(results_dir) / f"{kind}_{scale}"
    guard = (cfg.get("minutes") or {}).get(kind)
    if kind == "film_pixels":
        kw = film_train_kwargs({**film, "stem": "pixels", "features": None, "threads": threads,
                                "max_samples": _row_budget(cfg, kind, budget), "time_limit_minutes": guard,
                                "model": {**(film.get("model") or {}), **(cfg.get("raw_pixels_model") or {})}})
        if kw.get("schedule", "constant") != "constant":
            kw["schedule_samples"] = film["max_samples"]          # FiLM's horizon, as its own run
        return train_film(data_dir, run, seed=seed, progress=progress, device=device, **kw)
    if grid and kind != "qtype":

        def train(out_dir, lr, max_samples):
            return train_baseline(data_dir, out_dir, kind, preset_name=scale, stem=stem, features=features,
                                  lr=lr, max_samples=max_samples, seed=seed, progress=progress, device=device,
                                  **{**_budget_kwargs(film, cfg, kind), "threads": threads})
        return pick_lr(train, run, grid, cfg["pilot_samples"], budget)
    return train_baseline(data_dir, run, kind, preset_name=scale, stem=stem, features=features,
                          epochs=cfg["epochs"], max_steps_per_epoch=cfg["max_steps_per_epoch"],
                          time_limit_minutes=guard, patience=cfg["patience"], threads=threads,
                          val_samples=cfg["val_samples"], seed=seed, progress=progress, device=device)


def _lane(name: str, kwargs: dict, report, target=None) -> None:
    """A lane process's body: ``target(**kwargs)`` (default: train the Table 1 row ``kwargs["kind"]``),
    then report (name, None) or (name, the error). A lane never outlives the process that started
    it: a watcher thread exits it when that process ends (killed, say, without the chance to
    terminate its lanes)."""
    import multiprocessing as mp
    import os
    import threading
    import traceback
    parent = mp.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()
    try:
        if target is None:
            kind = kwargs.pop("kind")
            train_table1_row(kind, **kwargs)
        else:
            target(**kwargs)
    except BaseException as e:                 # noqa: BLE001 - reported to the parent, which raises
        report.put((name, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        raise SystemExit(1)
    report.put((name, None))


def run_in_lanes(jobs: list[tuple[str, dict]], lanes: int, *, progress: bool = True, poll: float = 2.0,
                 target=None) -> None:
    """Run ``train_table1_row(**kwargs)`` for each ``(name, kwargs)`` of ``jobs``, ``lanes`` at a
    time, each in a fresh (spawned) process, in the order given (``target``: another function to
    run, importable by the spawned processes). The first failure stops the others
    (they resume from their last checkpoint next time) and is raised here with the child's
    traceback; so does an interruption of this process (e.g. Ctrl-C in Jupyter), which terminates
    the lanes before it propagates."""
    import multiprocessing as mp
    import queue as queue_module
    names = [name for name, _ in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"run_in_lanes: job names must be distinct; got {names}")
    ctx = mp.get_context("spawn")
    report = ctx.Queue()
    pending, running, failure = list(jobs), {}, None
    started = time.time()

    def take(name, error):
        nonlocal failure
        running.pop(name).join()
        if error is not None:
            failure = failure or f"{name}: {error}"
        elif progress:
            print(f"[lanes] {name}: finished at {(time.time() - started) / 60:.1f} min", flush=True)

    try:
        while (pending and failure is None) or running:
            while pending and failure is None and len(running) < lanes:
                name, kwargs = pending.pop(0)
                proc = running[name] = ctx.Process(target=_lane, args=(name, kwargs, report, target),
                                                   name=f"filmlib-lane-{name}")
                proc.start()
                if progress:
                    print(f"[lanes] {name}: started ({len(running)} running)", flush=True)
            try:
                take(*report.get(timeout=poll))
            except queue_module.Empty:
                dead = [n for n, p in running.items() if not p.is_alive() and p.exitcode != 0]
                if dead:
                    # a report may still be on its way: read what is there before blaming the exit code
                    try:
                        while True:
                            take(*report.get(timeout=0.5))
                    except queue_module.Empty:
                        pass
                    for name in dead:
                        if name in running:                    # died without reporting (a signal, say)
                            code = running[name].exitcode
                            running.pop(name).join()
                            failure = failure or f"{name}: its process exited with code {code}"
            if failure is not None:
                break
    finally:
        for proc in running.values():
            if proc.pid is not None:
                proc.terminate()
        for proc in running.values():
            if proc.pid is not None:
                proc.join()
        report.close()
    if failure is not None:
        raise RuntimeError(f"a Table 1 run failed in its lane: {failure}")


@torch.no_grad()
def attention_maps(run_dir, data_dir, split: str = "val", indices=(0, 1, 2, 3)) -> list[dict]:
    """CNN+LSTM+SA's attention on some questions of a split: for each, the question's index in
    the split, ``image_index``, ``maps`` (hops, H, W) summing to 1 per hop, and the predicted and
    true answers as words."""
    model, ckpt = load_run(run_dir)
    if getattr(model.cfg, "kind", None) != "cnn_lstm_sa":
        raise ValueError(f"{run_dir}: attention maps need a CNN+LSTM+SA run, not {model_label(model)}")
    dataset = split_for(model, data_dir, split, features=run_features(ckpt))
    answers = Vocab.load(Path(data_dir) / "vocab.json").answer_idx_to_token
    batch = collate([dataset[int(i)] for i in indices])
    logits, maps = model(batch["visual"], batch["questions"], return_attention=True)
    return [{"index": int(i), "image_index": int(batch["image_indices"][k]), "maps": maps[k].numpy(),
             "prediction": answers[int(logits[k].argmax())], "answer": answers[int(batch["answers"][k])],
             "question_index": int(batch["question_indices"][k])}
            for k, i in enumerate(indices)]


def question_only_batch(batch: dict):
    """(empty visual, questions, answers): for models that never look at the image (LSTM), so
    their datasets need not read images at all."""
    answers = batch["answers"]
    return answers.new_zeros(answers.shape[0], 0, dtype=torch.float32), batch["questions"], answers


def _reads_image(model) -> bool:
    """False for the question-only baselines (Q-type, LSTM)."""
    return not isinstance(model, QTypeBaseline) and getattr(model.cfg, "kind", None) != "lstm"


def split_for(model, data_dir, split: str, max_samples: int | None = None, features: str | None = None,
              humans: bool = False, indices=None):
    """The split with the visual input the model reads (none for question-only models);
    ``humans``: its CLEVR-Humans questions (``<split>_humans_questions.h5``, the grown vocabulary);
    ``indices``: these question rows only."""
    if not _reads_image(model):
        return ClevrQuestionsDataset(_questions_file(data_dir, split, humans), None, max_samples=max_samples,
                                     indices=indices)
    return load_split(data_dir, split, model.cfg.stem, max_samples=max_samples, humans=humans,
                      features=features if model.cfg.stem == "features" else None, indices=indices)


def unknown_words_as_unk(batch_fn, vocab_size: int):
    """``batch_fn`` with every question word the model has no embedding for (an index of a grown
    vocabulary, e.g. CLEVR-Humans' new words, read by a model trained before it grew) read as <UNK>."""
    def read(batch):
        visual, questions, answers = batch_fn(batch)
        return visual, questions.masked_fill(questions >= vocab_size, UNK_IDX), answers
    return read


def batch_fn_for(dataset):
    """How a Trainer or ``predict`` reads a batch of ``dataset``: without a visual input when it has none."""
    return question_only_batch if dataset.visual_h5 is None else default_batch


def run_features(ckpt: dict) -> str | None:
    """The features file a run's features stem read (None: the default ResNet-101 file)."""
    return ckpt.get("train_config", {}).get("extra", {}).get("features")


def _questions_file(data_dir, split: str, humans: bool = False) -> Path:
    q = Path(data_dir) / (f"{split}_humans_questions.h5" if humans else f"{split}_questions.h5")
    if not q.exists():
        raise FileNotFoundError(f"{q} is missing: run `python -m filmlib preprocess` first")
    return q


def _fit_qtype(model: QTypeBaseline, data_dir, out_dir, train_samples, train_kw, preset_name) -> dict:
    """Count answers per group over the train split; write best.pt / last.pt like a trained run."""
    start = time.perf_counter()
    train = ClevrQuestionsDataset(_questions_file(data_dir, "train"), None, max_samples=train_samples)
    model.fit(_qtype_groups(model, train), train.answers)
    seconds = time.perf_counter() - start
    out = Path(out_dir)
    cfg = TrainConfig(out_dir=str(out), **train_kw)
    cfg.extra.update(preset=preset_name, data_dir=str(data_dir), model="qtype")
    ckpt = {"model": model.state_dict(), "epoch": 1, "step": 0, "best_val": -1.0, "best_epoch": 1,
            "history": [], "train_seconds": seconds, "train_config": asdict(cfg),
            "model_config": model.cfg.to_dict()}
    for name in ("last.pt", "best.pt"):
        atomic_save(ckpt, out / name)
    return {"epochs": 1, "train_minutes": seconds / 60, "best_epoch": 1, "best_val_accuracy": None,
            "history": [], "parameters": 0}


def _qtype_groups(model: QTypeBaseline, dataset: ClevrQuestionsDataset):
    """What Q-type groups by: the question family (default) or the program's last function."""
    return dataset.final_functions if model.cfg.qtype_by == "final_function" else dataset.families


def predict_qtype(model: QTypeBaseline, dataset: ClevrQuestionsDataset) -> dict:
    """``filmlib.evaluate.predict``'s output for the Q-type baseline: it reads families, not images."""
    return {"prediction": model.answer_families(_qtype_groups(model, dataset)).numpy(),
            "answer": np.asarray(dataset.answers), "family": np.asarray(dataset.families),
            "type": np.asarray(dataset.types), "final_function": np.asarray(dataset.final_functions),
            "image_index": np.asarray(dataset.image_idxs), "question_index": np.asarray(dataset.orig_idxs)}


def evaluate_run(run_dir, data_dir, split: str = "val", *, which: str = "best", device: str = "auto",
                 label: str | None = None, data_label: str = "SynthCLEVR", batch_size: int = 256,
                 humans: bool = False) -> dict:
    """Score a run (FiLM or a baseline) on a split; writes metrics.json,
    predictions_<split>.jsonl and table1.md (``label``: the row name, by default the model's).
    ``humans``: on the split's CLEVR-Humans questions instead, written as metrics_<split>_humans.json
    and predictions_<split>_humans.jsonl (no table)."""
    device = resolve_device(device)
    model, ckpt = load_run(run_dir, which, device)
    label = label or model_label(model)
    vocab = Vocab.load(Path(data_dir) / "vocab.json")
    if isinstance(model, QTypeBaseline):
        pred = predict_qtype(model.cpu(), ClevrQuestionsDataset(_questions_file(data_dir, split, humans), None))
    else:
        dataset = split_for(model, data_dir, split, features=run_features(ckpt), humans=humans)
        batch_fn = unknown_words_as_unk(batch_fn_for(dataset), model.cfg.vocab_size)
        pred = predict(model, make_loader(dataset, batch_size), batch_fn=batch_fn, device=device)
    answers = vocab.answer_idx_to_token
    report = accuracy_report(pred, answers)
    run_dir = Path(run_dir)
    name = f"{split}_humans" if humans else split
    write_predictions(run_dir / f"predictions_{name}.jsonl", pred, answers)
    history = ckpt["history"]
    metrics = {"split": split, "checkpoint": which, "epoch": ckpt["epoch"],
               f"{split}_accuracy": report["overall"], "by_type": report.get("by_type"),
               "by_final_function": report.get("by_final_function"),
               "by_family": report.get("by_family"), "count_off_by_one": report.get("count_off_by_one"),
               "train_minutes": round(ckpt["train_seconds"] / 60, 2), "samples": ckpt.get("samples"),
               "lr": ckpt["train_config"].get("lr"), "best_epoch": ckpt["best_epoch"], "epochs_trained": len(history),
               "parameters": param_count(model), "preset": ckpt["train_config"]["extra"].get("preset"), "model": label}
    if humans:
        metrics.update(questions="CLEVR-Humans", vocab_size=model.cfg.vocab_size)
        atomic_write_text(run_dir / f"metrics_{name}.json", json.dumps(metrics, indent=1))
        return metrics
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    film_rows = ("CNN+GRU+FiLM", "CNN+GRU+FiLM (raw pixels)")
    paper_rows = film_rows if label.startswith("CNN+GRU+FiLM") or label not in PAPER_TABLE1 else (label,)
    atomic_write_text(run_dir / "table1.md", table1_markdown({label: report}, paper_rows, data_label=data_label))
    return metrics


def run_image_reliance(run_dir, data_dir, split: str = "val", *, which: str = "best", device: str = "auto",
                       batch_size: int = 256, seed: int = 0) -> dict:
    """How much a run's answers come from the image: its accuracy on a split with each question's
    own image and with another scene's (:func:`filmlib.evaluate.image_reliance`; the swap is a
    derangement of the scenes within each batch of ``batch_size``, drawn from ``seed``).

    The result is kept in the run directory (``image_reliance_<split>.json``) and returned again,
    without scoring, while that checkpoint is unchanged and the split, checkpoint, batch size and
    seed are the same."""
    run_dir = Path(run_dir)
    kept, checkpoint = run_dir / f"image_reliance_{split}.json", run_dir / f"{which}.pt"
    key = {"split": split, "checkpoint": which, "batch_size": batch_size, "seed": seed}
    if _written_since(kept, checkpoint):
        result = json.loads(kept.read_text())
        if all(result.get(k) == v for k, v in key.items()):
            return {k: v for k, v in result.items() if k != "checkpoint"}
    device = resolve_device(device)
    model, ckpt = load_run(run_dir, which, device)
    if not _reads_image(model):
        raise ValueError(f"{run_dir}: {model_label(model)} reads no image, so there is nothing to swap")
    dataset = split_for(model, data_dir, split, features=run_features(ckpt))
    result = image_reliance(model, make_loader(dataset, batch_size), batch_fn=default_batch, device=device, seed=seed)
    out = {"model": model_label(model), "split": split, "batch_size": batch_size, "seed": seed, **result}
    atomic_write_text(kept, json.dumps({**out, "checkpoint": which}, indent=1) + "\n")
    return out


def error_report(run_dir, root, split: str = "val", *, data_dir=None, perception_dir=None) -> dict:
    """Where a scored run's errors on ``split`` are (its ``predictions_<split>.jsonl``), by
    :mod:`filmlib.analysis.errors`: accuracy by question type and the reasoning its program needs
    (the questions file under ``root``), and, given ``perception_dir`` (the perception CNN) and
    ``data_dir`` (the split's images cache), its answers on the scenes that CNN gets exactly right
    and on the others, at each number of objects. Written to ``errors_<split>.json`` and
    ``errors_<split>.md`` in the run directory."""
    from .analysis.errors import accuracy_by_perception, accuracy_by_reasoning, markdown
    from .data.clevr import load_questions_file, questions_path
    from .evaluate import read_predictions
    if perception_dir is not None and data_dir is None:
        raise ValueError("perception_dir needs data_dir (the folder with the split's images cache)")
    run_dir = Path(run_dir)
    predictions = run_dir / f"predictions_{split}.jsonl"
    if not predictions.is_file():
        raise FileNotFoundError(f"{predictions}: not found; score the run on {split} first "
                                f"(`python -m filmlib evaluate --run {run_dir} --split {split} ...`)")
    keys = ("question_index", "type") + (("image_index",) if perception_dir is not None else ())
    rows = read_predictions(predictions, keys=keys)
    report = {"run": str(run_dir), "split": split,
              "reasoning": accuracy_by_reasoning(rows, load_questions_file(questions_path(root, split))[1])}
    if perception_dir is not None:
        from . import perception
        from .data.scene_maps import load_split_scenes, scene_targets
        net = perception.load_perception(Path(perception_dir) / perception.CHECKPOINT)
        images = perception.load_images(data_dir, split)
        perception.check_images(net.cfg, images, Path(data_dir) / f"{split}_images.h5")
        scenes, size = load_split_scenes(root, split)
        if len(scenes) != len(images):
            raise DataFileError(f"{root}: split {split!r} has {len(scenes)} scene graphs but "
                                f"{Path(data_dir) / f'{split}_images.h5'} holds {len(images)} images")
        errors = perception.scene_errors(net, images, scene_targets(scenes, size, net.cfg.grid),
                                         objects=[len(sc["objects"]) for sc in scenes])
        report["perception_dir"] = str(perception_dir)
        report["perception"] = accuracy_by_perception(rows, errors)
    atomic_write_text(run_dir / f"errors_{split}.md", markdown(report["reasoning"], report.get("perception")))
    atomic_write_text(run_dir / f"errors_{split}.json", json.dumps(report, indent=1))
    return report


__all__ = ["attention_maps", "pick_lr", "run_baselines", "table1_runs", "build_baseline_model", "build_model", "evaluate_run", "feature_shape",
           "film_train_kwargs", "load_run", "load_split", "model_from_config", "model_label", "perception_config", "error_report",
           "predict_qtype", "prepare_maps", "run_features", "run_image_reliance", "val_metrics", "train_baseline", "train_film",
           "split_for", "unknown_words_as_unk", "visual_file"]
