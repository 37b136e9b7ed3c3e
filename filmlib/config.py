"""Scales (``smoke | cpu | paper``) and the project's standard paths."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

SCALES = ("smoke", "cpu", "paper")
SOURCES = ("synth", "clevr")   # SynthCLEVR (generated) | a downloaded CLEVR v1.0


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
    """``data/synthclevr`` (cpu, the default), ``data/<scale>/synthclevr`` (smoke, paper: their
    own sizes, so one scale's data never overwrites another's), ``data/CLEVR_v1.0`` (real)."""
    if source == "clevr":
        return repo_root() / "data" / "CLEVR_v1.0"
    if scale == "cpu":
        return repo_root() / "data" / "synthclevr"
    return repo_root() / "data" / scale / "synthclevr"


def default_cache_dir(data_root: Path, image_size: int) -> Path:
    """Where the HDF5 caches of a dataset at an image size live: ``<data>/../cache/<name>-<size>``."""
    data_root = Path(data_root)
    return data_root.parent / "cache" / f"{data_root.name}-{image_size}"


def check_parameters(*, scale, source="synth", data_root=None, results_dir=None, workers=1, seed=0,
                     device="auto") -> None:
    """Validate the parameters every notebook takes (papermill's ``-p``), the same rules as the
    command line's: raises one ``ValueError`` naming each bad parameter and what it accepts."""
    problems = []
    if scale not in SCALES:
        problems.append(f"scale={scale!r} is not one of {', '.join(SCALES)}")
    if source not in SOURCES:
        problems.append(f"source={source!r} is not one of {', '.join(SOURCES)}")
    for name, value in (("data_root", data_root), ("results_dir", results_dir)):
        if value is not None and not isinstance(value, (str, Path)):
            problems.append(f"{name}={value!r} must be a path (or None for the default)")
    # a missing CLEVR_v1.0 folder in an existing one is fine: notebook 00 downloads it there
    if (source == "clevr" and isinstance(data_root, (str, Path)) and not Path(data_root).is_dir()
            and not (Path(data_root).name == "CLEVR_v1.0" and Path(data_root).parent.is_dir())):
        problems.append(f"data_root={str(data_root)!r} does not exist: download CLEVR v1.0 there first "
                        f"(`python -m filmlib download clevr --to {Path(data_root).parent}`)")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        problems.append(f"workers={workers!r} must be a whole number >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(f"seed={seed!r} must be a whole number >= 0")
    problem = device_problem(device)
    if problem:
        problems.append(f"device={device!r} {problem}")
    if problems:
        raise ValueError("bad notebook parameters: " + "; ".join(problems))


def device_problem(device) -> str | None:
    """What is wrong with a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``) here, or None."""
    import re
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        return "is not one of auto, cpu, cuda, cuda:N"
    if device.startswith("cuda"):
        import torch
        n = torch.cuda.device_count()
        if n == 0:
            return "asks for a GPU, and torch sees none here; use device='auto' (or 'cpu')"
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= n:
            return f"asks for GPU {index}, and torch sees {n} (cuda:0..cuda:{n - 1})"
    return None
