"""ResNet-101 "conv4" image features, as the FiLM authors precompute them.

Each image is resized to 224x224 (PIL bicubic), scaled to [0, 1], normalised with ImageNet's
mean/std, and run through torchvision's ResNet-101 up to ``layer3``: 1024 x 14 x 14 floats per
image, written to ``features`` [N, 1024, 14, 14] (row = image index), the layout of the
authors' ``features.h5``. Weights come only from a local file (``torch.load(weights_only=True)``
or ``.safetensors``); ``weights=None`` gives a seeded random network, for tests and plumbing.
On a GPU (``device="cuda"``), cuDNN's TF32 convolutions give features within about 0.2% (of
the largest value) of the CPU's; there, decoding and writing, not the network, set the pace,
so use ``workers`` processes for decoding and ``dtype="float16"`` to halve what is written.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from filmlib.data.preprocess import (
    FORMAT, DataFileError, _image_list, _progress_bar, iter_image_batches, paths_signature, resumable_h5,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 ``(x / 255 - mean) / std``."""
    x = images.to(torch.float32).div_(255)
    if mean is None:
        return x
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return x.sub_(m).div_(s)


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise DataFileError(f"{path}: weights file not found (weights are never downloaded; "
                            f"pass the path of a local torchvision ResNet-101 state dict)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — any unreadable file gets the same clear message
        raise DataFileError(f"{path}: cannot read weights: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise DataFileError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_feature_extractor(weights=None, *, stage: int = 3, seed: int = 0) -> nn.Sequential:
    """torchvision ResNet-101 from ``conv1`` to ``layer{stage}``, in eval mode.

    ``weights``: path to a ResNet-101 state dict (e.g. torchvision's ``resnet101-*.pth``);
    None builds the network from ``seed`` without touching the global RNG.
    """
    import torchvision
    if not 1 <= stage <= 4:
        raise ValueError(f"stage must be 1..4, got {stage}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.resnet101(weights=None)
    if weights is not None:
        path = Path(weights)
        state = _read_state_dict(path)
        result = model.load_state_dict(state, strict=False)
        needed = ("conv1.", "bn1.", *(f"layer{i}." for i in range(1, stage + 1)))
        missing = [k for k in result.missing_keys if k.startswith(needed)]
        unexpected = [k for k in result.unexpected_keys if not k.startswith(("fc.", "layer4."))]
        if missing or unexpected:
            raise DataFileError(f"{path}: not a ResNet-101 state dict: missing {missing[:5]}, "
                                f"unexpected {unexpected[:5]}")
    layers = [model.conv1, model.bn1, model.relu, model.maxpool]
    layers += [getattr(model, f"layer{i}") for i in range(1, stage + 1)]
    return nn.Sequential(*layers).eval()


@torch.inference_mode()
def extract_features(images, out_h5, *, split: str | None = None, weights=None,
                     model: nn.Module | None = None, seed: int = 0, stage: int = 3,
                     image_size=(224, 224), batch_size: int = 32, dtype: str = "float32",
                     device="cpu", workers: int = 1, progress: bool = False) -> dict:
    """Write ``features`` [N, C, h, w] (ResNet-101 conv4: 1024 x 14 x 14) to ``out_h5``.

    ``images``: a list of image paths (row i = ``images[i]``) or a CLEVR root's split, as
    ``(root, split)`` or ``images=root, split=split``.
    ``model`` overrides ``weights``/``seed``/``stage``. ``dtype="float16"`` halves the file.
    Memory holds a few batches at a time, whatever the number of images (HDF5 chunks of one
    image each). A killed or interrupted run continues from its last written batch when called
    again with the same arguments (:func:`~filmlib.data.preprocess.resumable_h5`).
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, not {dtype!r}")
    paths = _image_list(images, split)
    device = torch.device(device)
    net = (model if model is not None else build_feature_extractor(weights, stage=stage,
                                                                     seed=seed)).to(device).eval()
    np_dtype = np.dtype(dtype)
    what = (f"resnet101.layer{stage}" if model is None else type(model).__name__)
    weights_id = (str(Path(weights).resolve()) if weights else f"random(seed={seed})") if model is None else None
    if model is None:
        weights_file = paths_signature([Path(weights)]) if weights else None
    else:                                  # a model object: its exact parameters
        digest = hashlib.sha1()
        for t in net.state_dict().values():
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        weights_file = digest.hexdigest()
    key = {"what": "features", "source": paths_signature(paths), "model": what, "weights": weights_id,
           "weights_file": weights_file, "image_size": list(image_size), "dtype": dtype, "batch_size": batch_size}
    with (resumable_h5(out_h5, key) as f,
          _progress_bar(len(paths), f"features {split or ''}", progress) as bar):
        done = int(f.attrs["rows_done"])
        ds = f["features"] if "features" in f else None
        if bar is not None:
            bar.update(done)
        for start, batch in iter_image_batches(paths[done:], image_size, batch_size, workers):
            start += done
            x = normalize_images(torch.from_numpy(batch)).to(device)
            y = net(x).float().cpu().numpy()                     # (B, C, h, w)
            if ds is None:
                ds = f.create_dataset("features", (len(paths), *y.shape[1:]), np_dtype,
                                      chunks=(1, *y.shape[1:]))
            ds[start:start + len(y)] = y.astype(np_dtype, copy=False)
            f.attrs["rows_done"] = start + len(y)
            f.flush()
            if bar is not None:
                bar.update(len(y))
        f.attrs["format"] = FORMAT
        f.attrs["image_size"] = tuple(image_size)
        f.attrs["model"] = what
        if model is None:
            f.attrs["weights"] = weights_id
        f.attrs["source"] = str(paths[0].parent.resolve())
        shape = list(ds.shape)
    return {"path": str(out_h5), "images": len(paths), "shape": shape, "dtype": dtype, "resumed_from": done}
