"""Pre-trained perception maps: train :class:`~filmlib.models.perception.PerceptionNet` on the
scene graphs, score it per attribute, and cache its frozen maps as a features file.

    from filmlib import perception
    run = perception.pretrain("data/cache/synthclevr-80", "data/synthclevr", "results/perception_cpu")
    perception.extract("results/perception_cpu/perception.pt", "data/cache/synthclevr-80", "train")

CLI: ``python -m filmlib perception --cache DIR --root DIR --out DIR [--minutes M]`` pre-trains,
scores val and writes ``<split>_perception.h5`` for every split; ``python -m filmlib scene-maps``
writes the scene-graph oracle maps (``<split>_oracle.h5``). A FiLM model reads either through
its features stem (``--features perception`` / ``oracle``).

What it needs is what CLEVR-format data ships: the images (an images cache from
``python -m filmlib preprocess``) and the train/val scene graphs. The same code runs on the
real CLEVR.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from .data.features import normalize_images
from .data.preprocess import FORMAT, DataFileError, atomic_h5
from .data.scene_maps import ATTRIBUTE_ORDER, load_split_scenes, scene_targets
from .io import atomic_write_text
from .models.perception import PerceptionConfig, PerceptionNet, perception_loss
from .train import atomic_save, load_checkpoint

CHECKPOINT = "perception.pt"


def load_images(cache_dir, split: str) -> np.ndarray:
    """``images`` uint8 [N, 3, S, S] of ``<cache_dir>/<split>_images.h5``, all in memory."""
    path = Path(cache_dir) / f"{split}_images.h5"
    if not path.is_file():
        raise DataFileError(f"{path}: images cache not found; run `python -m filmlib preprocess` first")
    with h5py.File(path, "r") as f:
        if "images" not in f:
            raise DataFileError(f"{path}: no 'images' dataset (found: {', '.join(sorted(f))})")
        return f["images"][()]


def load_targets(root, split: str, grid: int, num_images: int | None = None) -> dict[str, np.ndarray]:
    """Per-cell targets of a split's scene graphs (checked to match ``num_images`` rows)."""
    scenes, size = load_split_scenes(root, split)
    if num_images is not None and len(scenes) != num_images:
        raise DataFileError(f"{root}: split {split!r} has {len(scenes)} scene graphs but its images "
                            f"cache has {num_images} images; preprocess the same root again")
    return scene_targets(scenes, size, grid)


def _batch(images: np.ndarray, targets: dict, idx: np.ndarray):
    x = normalize_images(torch.from_numpy(images[idx]))
    t = {k: torch.from_numpy(v[idx]) for k, v in targets.items()}
    return x.contiguous(memory_format=torch.channels_last), t


def _cells(net: PerceptionNet, images: np.ndarray, targets: dict, batch_size: int):
    """Per batch of a split, in order: the image indices, the net's heads and the targets, and
    per cell: ``has`` (the cell holds an object), ``found`` (objectness above 0.5) and
    ``right`` [B, attributes, g, g] (each attribute's argmax equals the target's). Callers run it
    under ``torch.no_grad``."""
    net.eval()
    for start in range(0, len(images), batch_size):
        idx = np.arange(start, min(start + batch_size, len(images)))
        x, t = _batch(images, targets, idx)
        out = net(x)
        right = torch.stack([out[a].argmax(1) == t["attributes"][:, j] for j, a in enumerate(ATTRIBUTE_ORDER)], 1)
        yield idx, out, t, t["objectness"] > 0.5, out["objectness"][:, 0] > 0, right


@torch.no_grad()
def evaluate_perception(net: PerceptionNet, images: np.ndarray, targets: dict,
                        batch_size: int = 256) -> dict:
    """On the objects of a split (each cell's target object): accuracy of every attribute,
    objectness precision and recall (threshold 0.5), mean absolute offset and depth error."""
    hits = {a: 0 for a in ATTRIBUTE_ORDER}
    objects = tp = fp = fn = 0
    offset_err = depth_err = 0.0
    for _, out, t, has, found, right in _cells(net, images, targets, batch_size):
        objects += int(has.sum())
        for j, a in enumerate(ATTRIBUTE_ORDER):
            hits[a] += int(right[:, j][has].sum())
        tp += int((found & has).sum())
        fp += int((found & ~has).sum())
        fn += int((~found & has).sum())
        offset_err += float((out["offset"] - t["offset"]).abs().sum(1)[has].sum()) / 2
        depth_err += float((out["depth"][:, 0] - t["depth"]).abs()[has].sum())
    n = max(objects, 1)
    return {"objects": objects, **{a: hits[a] / n for a in ATTRIBUTE_ORDER},
            "objectness_precision": tp / max(tp + fp, 1), "objectness_recall": tp / max(tp + fn, 1),
            "offset_mae": offset_err / n, "depth_mae": depth_err / n}


def check_images(cfg: PerceptionConfig, images: np.ndarray, where) -> None:
    """Refuse images of another size than a net of ``cfg`` reads (``where``: the file or folder,
    for the message)."""
    want = (cfg.in_channels, cfg.image_size, cfg.image_size)
    if tuple(images.shape[1:]) != want:
        raise DataFileError(f"{where}: images of shape {tuple(images.shape[1:])}, but the perception net "
                            f"expects {want}; use the images cache it was trained on")


@torch.no_grad()
def scene_errors(net: PerceptionNet, images: np.ndarray, targets: dict, objects=None,
                 batch_size: int = 256) -> dict[str, np.ndarray]:
    """What the perception heads get wrong in each image, int arrays [N]: ``cells`` (cells
    holding an object), ``missed`` (of those, objectness below 0.5), ``false`` (cells without an
    object above 0.5), ``wrong`` (object cells with any attribute wrong), ``objects`` (each
    scene's number of objects: ``objects`` if given, else ``cells``), ``merged`` (objects that
    share a cell with a nearer one, which no head can report), and ``perfect`` (bool: none missed,
    false, wrong or merged). FiLM reads the trunk's maps, not these heads, so a scene the heads
    get right is one whose maps carry every object plainly, not the only scenes that can be
    answered."""
    out = {k: np.zeros(len(images), np.int64) for k in ("cells", "missed", "false", "wrong")}
    for idx, _, _, has, found, right in _cells(net, images, targets, batch_size):
        out["cells"][idx] = has.flatten(1).sum(1).numpy()
        out["missed"][idx] = (has & ~found).flatten(1).sum(1).numpy()
        out["false"][idx] = (found & ~has).flatten(1).sum(1).numpy()
        out["wrong"][idx] = (has & ~right.all(1)).flatten(1).sum(1).numpy()
    out["objects"] = out["cells"].copy() if objects is None else np.asarray(objects, np.int64)
    if out["objects"].shape != out["cells"].shape or (out["objects"] < out["cells"]).any():
        raise ValueError(f"objects must give each of the {len(images)} scenes at least as many objects as "
                         f"occupied cells")
    out["merged"] = out["objects"] - out["cells"]
    out["perfect"] = (out["missed"] == 0) & (out["false"] == 0) & (out["wrong"] == 0) & (out["merged"] == 0)
    return out


def pretrain(cache_dir, root, out_dir, *, cfg: PerceptionConfig | None = None, epochs: int = 6,
             batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-5,
             time_limit_minutes: float | None = None, val_images: int | None = 1000,
             threads: int | None = None, seed: int = 0, progress: bool = True,
             splits: tuple[str, str] = ("train", "val")) -> dict:
    """Train a perception net on the train split's images and scene graphs (``splits``: the
    train and val splits' names, e.g. CoGenT's ``("trainA", "valA")``); write
    ``perception.pt`` (``{"model", "config", "history", ...}``, loadable with
    ``weights_only=True``) and ``metrics.json`` (per-attribute accuracy on the first
    ``val_images`` val images after each epoch). Adam with a cosine decay over ``epochs``;
    ``time_limit_minutes`` stops early. A finished run in ``out_dir`` is kept (returned as is)."""
    out = Path(out_dir)
    done = out / "metrics.json"
    if done.is_file() and (out / CHECKPOINT).is_file():
        return json.loads(done.read_text())
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train_split, val_split = splits
    images = load_images(cache_dir, train_split)
    cfg = cfg or PerceptionConfig(image_size=images.shape[-1])
    check_images(cfg, images, Path(cache_dir) / f"{train_split}_images.h5")
    targets = load_targets(root, train_split, cfg.grid, len(images))
    val_x = load_images(cache_dir, val_split)[:val_images]
    val_t = {k: v[:len(val_x)] for k, v in load_targets(root, val_split, cfg.grid).items()}
    net = PerceptionNet(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    if len(images) == 0:
        raise DataFileError(f"{cache_dir}: the train split holds no images to pre-train on")
    batch_size = min(batch_size, len(images))  # a tiny split trains on whole-split batches
    steps_per_epoch = len(images) // batch_size
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    rng = np.random.default_rng(seed)
    history, start, stopped = [], time.perf_counter(), False
    from tqdm.auto import tqdm
    for epoch in range(epochs):
        net.train()
        order = rng.permutation(len(images))
        loss_sum = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"perception epoch {epoch + 1}", disable=not progress, leave=False)
        for i in bar:
            if time_limit_minutes is not None and time.perf_counter() - start >= 60 * time_limit_minutes:
                stopped = True
                break
            x, t = _batch(images, targets, np.sort(order[i * batch_size:(i + 1) * batch_size]))
            loss, _ = perception_loss(net(x), t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
            if i % 50 == 0:
                bar.set_postfix(loss=f"{loss_sum / (i + 1):.3f}")
        bar.close()
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(i + (0 if stopped else 1), 1),
               "minutes": round((time.perf_counter() - start) / 60, 3),
               "val": evaluate_perception(net, val_x, val_t)}
        history.append(row)
        if stopped:
            break
    minutes = (time.perf_counter() - start) / 60
    net.eval()
    atomic_save({"model": net.state_dict(), "config": cfg.to_dict(), "history": history,
                 "train_minutes": minutes, "train_images": len(images)}, out / CHECKPOINT)
    summary = {"config": cfg.to_dict(), "epochs": len(history), "train_minutes": round(minutes, 2),
               "train_images": len(images), "val_images": len(val_x), "val": history[-1]["val"],
               "history": history, "batch_size": batch_size, "lr": lr, "seed": seed}
    atomic_write_text(done, json.dumps(summary, indent=1))
    return summary


def load_perception(path) -> PerceptionNet:
    """A trained perception net from ``perception.pt`` (``weights_only`` load), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{path}: perception checkpoint not found; run `python -m filmlib perception` first")
    ckpt = load_checkpoint(path)
    net = PerceptionNet(PerceptionConfig.from_dict(ckpt["config"]))
    net.load_state_dict(ckpt["model"])
    return net.eval()


@torch.inference_mode()
def extract(net_or_path, cache_dir, split: str, out_h5=None, *, batch_size: int = 256,
            dtype: str = "float16") -> dict:
    """The frozen trunk's maps of every image of a split, as a features file
    (``features`` [N, channels, g, g], default ``<cache_dir>/<split>_perception.h5``)."""
    net = load_perception(net_or_path) if isinstance(net_or_path, (str, Path)) else net_or_path.eval()
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, not {dtype!r}")
    images = load_images(cache_dir, split)
    out_h5 = Path(out_h5) if out_h5 is not None else Path(cache_dir) / f"{split}_perception.h5"
    g, c = net.cfg.grid, net.cfg.channels
    with atomic_h5(out_h5) as f:
        ds = f.create_dataset("features", (len(images), c, g, g), dtype, chunks=(1, c, g, g))
        for start in range(0, len(images), batch_size):
            x = normalize_images(torch.from_numpy(images[start:start + batch_size]))
            ds[start:start + len(x)] = net.trunk(x.contiguous(memory_format=torch.channels_last)).float().numpy()
        f.attrs["format"] = FORMAT
        f.attrs["model"] = "filmlib perception trunk"
        f.attrs["config"] = json.dumps(net.cfg.to_dict())
        f.attrs["source"] = str((Path(cache_dir) / f"{split}_images.h5").resolve())
    return {"path": str(out_h5), "images": len(images), "shape": [len(images), c, g, g], "dtype": dtype}


__all__ = ["CHECKPOINT", "evaluate_perception", "extract", "load_images", "load_perception",
           "load_targets", "pretrain", "scene_errors", "check_images"]
