"""Scales (``smoke | cpu | paper``) and the project's standard paths."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

SCALES = ("smoke", "cpu", "paper")


def load_scale(name: str) -> dict:
    """The settings of a scale, from ``filmlib/scales/<name>.yaml``."""
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; expected one of {', '.join(SCALES)}")
    text = resources.files("filmlib").joinpath("scales", f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def repo_root() -> Path:
    """The checkout holding this package (the folder with data/, results/, notebooks/)."""
    return Path(__file__).resolve().parents[1]


def default_data_root(scale: str, source: str = "synth") -> Path:
    """``data/synthclevr`` (cpu, paper), ``data/smoke/synthclevr`` (smoke), ``data/CLEVR_v1.0`` (real)."""
    if source == "clevr":
        return repo_root() / "data" / "CLEVR_v1.0"
    if scale == "smoke":
        return repo_root() / "data" / "smoke" / "synthclevr"
    return repo_root() / "data" / "synthclevr"


def default_cache_dir(data_root: Path, image_size: int) -> Path:
    """Where the HDF5 caches of a dataset at an image size live: ``<data>/../cache/<name>-<size>``."""
    data_root = Path(data_root)
    return data_root.parent / "cache" / f"{data_root.name}-{image_size}"
