"""The shipped model: notebook 02's best ``cpu``-scale FiLM and the perception CNN whose maps it
reads, so that the explorer (notebook 08) and notebook 04 open without any training.

``filmlib/weights/`` holds ``<name>.safetensors`` (FiLM's weights and batch-norm buffers),
``<name>_perception.safetensors`` (the perception CNN) and ``<name>.json``: both configs, the
vocabulary the questions are encoded with, the SHA-256 of each weights file, and where the
weights came from (the run, its questions seen and val accuracy). :func:`load` checks the
hashes, the tensors' names and shapes against the configs, and refuses anything else with an
error naming the file and the problem. :func:`export` writes the three files from a trained run
(``python -m filmlib ship``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.download import file_digests
from .data.vocab import Vocab
from .io import atomic_path, atomic_write_text
from .models import FiLMConfig, FiLMModel
from .models.perception import PerceptionConfig, PerceptionNet

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT = "film_cpu"
FORMAT = 1


class ShippedWeightsError(ValueError):
    """A shipped-weights file is missing, damaged, changed, or does not fit its config."""


@dataclass
class Shipped:
    """The loaded model, in eval mode: ``film``, ``perception``, the ``vocab`` its questions are
    encoded with, and ``info`` (the manifest: configs, hashes, provenance)."""
    film: FiLMModel
    perception: PerceptionNet
    vocab: Vocab
    info: dict


def _sha256(path: Path) -> str:
    return file_digests(path)["sha256"]


def _save_tensors(state: dict, path: Path) -> str:
    from safetensors.torch import save_file
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
        Path(tmp).chmod(0o644)
    return _sha256(path)


def export(film_run, perception_checkpoint, vocab_path, out_dir=WEIGHTS_DIR, name: str = DEFAULT) -> dict:
    """Write ``name``'s three files from a FiLM run's ``best.pt``, a perception checkpoint and the
    data's vocabulary; returns the manifest."""
    from .train import load_checkpoint
    film_run, out_dir = Path(film_run), Path(out_dir)
    ckpt = load_checkpoint(film_run / "best.pt")
    perc = load_checkpoint(Path(perception_checkpoint))
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = json.loads((film_run / "metrics.json").read_text()) if (film_run / "metrics.json").is_file() else {}
    files = {"film": f"{name}.safetensors", "perception": f"{name}_perception.safetensors"}
    info = {"format": FORMAT, "name": name, "files": files,
            "film_config": ckpt["model_config"], "perception_config": perc["config"],
            "vocab": Vocab.load(vocab_path).to_dict(),
            "sha256": {"film": _save_tensors(ckpt["model"], out_dir / files["film"]),
                       "perception": _save_tensors(perc["model"], out_dir / files["perception"])},
            "source": {"run": film_run.name, "questions_seen": ckpt.get("samples"),
                       "val_accuracy": metrics.get("val_accuracy"), "features": ckpt["train_config"]["extra"].get("features"),
                       "perception_run": Path(perception_checkpoint).parent.name}}
    atomic_write_text(out_dir / f"{name}.json", json.dumps(info, indent=1) + "\n")
    return info


def _load_tensors(path: Path, expected_sha: str, model: torch.nn.Module) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    if not path.is_file():
        raise ShippedWeightsError(f"{path}: missing (the manifest names it)")
    sha = _sha256(path)
    if sha != expected_sha:
        raise ShippedWeightsError(f"{path}: SHA-256 {sha[:16]}… differs from the manifest's {expected_sha[:16]}…: "
                                  "the file was changed or damaged; restore it (git checkout) or re-export it")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ShippedWeightsError(f"{path}: not a readable safetensors file ({e})") from None
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ShippedWeightsError(f"{path}: its tensors do not match the config's model "
                                  f"(missing {missing[:3]}, unexpected {extra[:3]})")
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise ShippedWeightsError(f"{path}: {k} has shape {tuple(state[k].shape)}, the config's model "
                                  f"{tuple(own[k].shape)}")
    model.load_state_dict(state)


def load(name: str = DEFAULT, directory=WEIGHTS_DIR) -> Shipped:
    """The shipped model ``name`` from ``directory``, checked (see the module's docstring)."""
    manifest = Path(directory) / f"{name}.json"
    if not manifest.is_file():
        raise ShippedWeightsError(f"{manifest}: no such shipped model")
    try:
        info = json.loads(manifest.read_text())
        if info.get("format") != FORMAT:
            raise ShippedWeightsError(f"{manifest}: format {info.get('format')!r}, this filmlib reads {FORMAT}")
        film = FiLMModel(FiLMConfig.from_dict(info["film_config"]))
        perception = PerceptionNet(PerceptionConfig.from_dict(info["perception_config"]))
        vocab = Vocab.from_dict(info["vocab"], where=str(manifest))
        files, sha = info["files"], info["sha256"]
    except ShippedWeightsError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise ShippedWeightsError(f"{manifest}: not a valid manifest ({type(e).__name__}: {e})") from None
    if len(vocab.question_token_to_idx) != film.cfg.vocab_size or vocab.num_answers != film.cfg.num_answers:
        raise ShippedWeightsError(f"{manifest}: the vocabulary ({len(vocab.question_token_to_idx)} words, "
                                  f"{vocab.num_answers} answers) does not fit the model's config")
    _load_tensors(Path(directory) / files["film"], sha["film"], film)
    _load_tensors(Path(directory) / files["perception"], sha["perception"], perception)
    return Shipped(film.eval(), perception.eval(), vocab, info)


@torch.no_grad()
def reads_these_maps(model: Shipped, cache_dir, split: str = "val", n: int = 8) -> bool:
    """Are ``<cache_dir>/<split>_perception.h5``'s maps the shipped perception CNN's? (Its trunk
    run again on the split's first ``n`` cached images; the maps are stored as float16.)"""
    import h5py

    from .data.features import normalize_images
    cache_dir = Path(cache_dir)
    maps, images = cache_dir / f"{split}_perception.h5", cache_dir / f"{split}_images.h5"
    if not (maps.is_file() and images.is_file()):
        return False
    with h5py.File(images, "r") as fi, h5py.File(maps, "r") as fm:
        x = torch.from_numpy(fi["images"][:n])
        stored = torch.from_numpy(fm["features"][:n].astype(np.float32))
    mine = model.perception.trunk(normalize_images(x))
    return mine.shape == stored.shape and torch.allclose(mine, stored, rtol=1e-2, atol=1e-2)
