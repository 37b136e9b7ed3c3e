"""What a CLEVR scene graph says about each cell of a coarse grid over the image.

CLEVR-format data ships a scene graph for every train and val image: each object's colour,
shape, material, size and ``pixel_coords`` (x, y in the image, z = depth from the camera).
Cut the image into a ``grid`` x ``grid`` lattice (10 x 10: the cells of the cpu model's 80x80
input after three stride-2 layers) and an object belongs to the cell its centre falls in,
(row, col) = (floor(grid * y / H), floor(grid * x / W)), whatever the image's aspect ratio
(images are squashed to a square before any model reads them).

Two things are built from that, both per image:

* :func:`scene_targets` -- dense per-cell *targets* for pre-training a perception CNN
  (:mod:`filmlib.perception`): objectness, the class index of each attribute (``-1`` where no
  object), the centre's offset inside its cell and the depth. Where two objects share a cell
  (about 2% of objects) the one nearer the camera is the target.
* :func:`oracle_maps` -- "perfect perception" maps, ``CHANNELS`` x grid x grid floats, the
  upper bound of any perception and a teaching device: one-hot colour (8), shape (3),
  material (2), size (2), objectness, standardised depth and the centre's offset (2) at each
  object's cell; objects sharing a cell are summed. :func:`write_scene_maps` writes them in
  the features-file layout the trainer reads (``features`` [N, C, grid, grid]).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from filmlib.data.clevr import ATTRIBUTES, load_scenes_file, scenes_path
from filmlib.data.preprocess import FORMAT, DataFileError, atomic_h5

GRID = 10
#: The attributes a target or a map carries, in channel order.
ATTRIBUTE_ORDER = ("color", "shape", "material", "size")
#: Depth (``pixel_coords`` z, distance from the camera in scene units) is standardised with
#: fixed constants, so that every split and every dataset is scaled alike: CLEVR's camera
#: sees objects at depths of about 6 to 17 (SynthCLEVR's cpu train split: mean 11.0, s.d. 2.1).
DEPTH_MEAN, DEPTH_STD = 11.0, 2.1


def channel_names() -> list[str]:
    """The oracle maps' channels, in order."""
    names = [f"{a}={v}" for a in ATTRIBUTE_ORDER for v in ATTRIBUTES[a]]
    return names + ["objectness", "depth", "offset_x", "offset_y"]


CHANNELS = len(channel_names())      # 19


def scene_size(info: dict) -> tuple[int, int]:
    """(width, height) that a scenes file's ``pixel_coords`` refer to: SynthCLEVR records its
    own in ``info.synthclevr``; CLEVR v1.0's images are 480x320."""
    made = info.get("synthclevr") or {}
    return int(made.get("width", 480)), int(made.get("height", 320))


def object_cells(scene: dict, size: tuple[int, int], grid: int = GRID) -> list[dict]:
    """Each object's cell (row, col), its centre's offset inside the cell (x, y in [-1, 1]),
    its depth and its attribute indices (in ``ATTRIBUTE_ORDER``)."""
    width, height = size
    out = []
    for k, obj in enumerate(scene["objects"]):
        x, y, z = obj["pixel_coords"]
        fx, fy = grid * x / width, grid * y / height
        col, row = min(max(int(np.floor(fx)), 0), grid - 1), min(max(int(np.floor(fy)), 0), grid - 1)
        attrs = []
        for a in ATTRIBUTE_ORDER:
            values = ATTRIBUTES[a]
            if obj[a] not in values:
                raise DataFileError(f"scene {scene.get('image_index')}: object {k} has {a}={obj[a]!r}, "
                                    f"not one of {values}")
            attrs.append(values.index(obj[a]))
        out.append({"row": row, "col": col, "offset": (2 * (fx - col) - 1, 2 * (fy - row) - 1),
                    "depth": float(z), "attrs": attrs, "object": k})
    return out


def scene_targets(scenes: list[dict], size: tuple[int, int], grid: int = GRID) -> dict[str, np.ndarray]:
    """Per-cell targets for N scenes: ``objectness`` float32 [N, g, g] (1 where an object's
    centre falls), ``attributes`` int64 [N, 4, g, g] (class index per ``ATTRIBUTE_ORDER``,
    -1 where no object), ``offset`` float32 [N, 2, g, g], ``depth`` float32 [N, g, g]
    (standardised; 0 where no object). A cell holding two objects keeps the nearer one."""
    n = len(scenes)
    objectness = np.zeros((n, grid, grid), np.float32)
    attributes = np.full((n, len(ATTRIBUTE_ORDER), grid, grid), -1, np.int64)
    offset = np.zeros((n, 2, grid, grid), np.float32)
    depth = np.zeros((n, grid, grid), np.float32)
    nearest = np.full((n, grid, grid), np.inf)
    for i, scene in enumerate(scenes):
        for o in object_cells(scene, size, grid):
            r, c = o["row"], o["col"]
            objectness[i, r, c] = 1.0
            if o["depth"] < nearest[i, r, c]:
                nearest[i, r, c] = o["depth"]
                attributes[i, :, r, c] = o["attrs"]
                offset[i, :, r, c] = o["offset"]
                depth[i, r, c] = (o["depth"] - DEPTH_MEAN) / DEPTH_STD
    return {"objectness": objectness, "attributes": attributes, "offset": offset, "depth": depth}


def oracle_maps(scenes: list[dict], size: tuple[int, int], grid: int = GRID) -> np.ndarray:
    """"Perfect perception" maps, float32 [N, CHANNELS, g, g] (see the module docstring)."""
    maps = np.zeros((len(scenes), CHANNELS, grid, grid), np.float32)
    starts = np.cumsum([0] + [len(ATTRIBUTES[a]) for a in ATTRIBUTE_ORDER])
    base = int(starts[-1])                     # objectness, depth, offset_x, offset_y follow
    for i, scene in enumerate(scenes):
        for o in object_cells(scene, size, grid):
            r, c = o["row"], o["col"]
            for j, v in enumerate(o["attrs"]):
                maps[i, starts[j] + v, r, c] += 1.0
            maps[i, base, r, c] += 1.0
            maps[i, base + 1, r, c] += (o["depth"] - DEPTH_MEAN) / DEPTH_STD
            maps[i, base + 2, r, c] += o["offset"][0]
            maps[i, base + 3, r, c] += o["offset"][1]
    return maps


def load_split_scenes(root, split: str) -> tuple[list[dict], tuple[int, int]]:
    """The scene records of a CLEVR-layout split, ordered by ``image_index`` (which must run
    0..N-1, the rows of the images file), and the size their ``pixel_coords`` refer to."""
    path = scenes_path(root, split)
    if not path.is_file():
        raise DataFileError(f"{path}: scenes file not found (scene maps need the split's scene graphs)")
    info, scenes = load_scenes_file(path)
    scenes = sorted(scenes, key=lambda s: s["image_index"])
    if [s["image_index"] for s in scenes] != list(range(len(scenes))):
        raise DataFileError(f"{path}: image_index must run 0..{len(scenes) - 1} without gaps")
    return scenes, scene_size(info)


def write_scene_maps(root, split: str, out_h5, grid: int = GRID) -> dict:
    """The oracle maps of every image of a split, as a features file (``features`` float32
    [N, CHANNELS, grid, grid], row = image index) that :class:`ClevrQuestionsDataset` reads."""
    scenes, size = load_split_scenes(root, split)
    maps = oracle_maps(scenes, size, grid)
    with atomic_h5(out_h5) as f:
        f.create_dataset("features", data=maps, chunks=(1, *maps.shape[1:]))
        f.attrs["format"] = FORMAT
        f.attrs["model"] = "scene-graph oracle maps"
        f.attrs["channels"] = json.dumps(channel_names())
        f.attrs["grid"] = grid
        f.attrs["source"] = str(scenes_path(root, split).resolve())
    return {"path": str(out_h5), "images": len(scenes), "shape": list(maps.shape)}


__all__ = ["ATTRIBUTE_ORDER", "CHANNELS", "DEPTH_MEAN", "DEPTH_STD", "GRID", "channel_names",
           "load_split_scenes", "object_cells", "oracle_maps", "scene_size", "scene_targets",
           "write_scene_maps"]
