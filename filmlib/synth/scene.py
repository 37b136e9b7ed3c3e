"""Sample a CLEVR scene, the way CLEVR's generator does, and render it.

The rules are CLEVR's: a number of objects drawn once per scene, attributes drawn uniformly,
positions uniform in (-3, 3)^2 with a minimum surface gap and a minimum offset along each
cardinal direction (so "left of" and "behind" are never ambiguous to the eye), a restart of the
whole layout after repeated failures, and a re-layout when any object is too hidden to see.
"""
from __future__ import annotations

import numpy as np

from .attributes import MATERIALS, SHAPES, SIZE_RADIUS, SIZES, allowed_colors, half_extent
from .camera import Camera, default_camera, sample_camera
from .render import Light, render_scene, sample_lights, trace_primary

MIN_GAP = 0.25           # between the footprints of two objects
MIN_AXIS_MARGIN = 0.4    # between two objects' centres along left/right and front/behind
MAX_TRIES = 50           # placements per object before the whole layout restarts
MAX_LAYOUTS = 10_000     # a guard against parameters no layout can satisfy
RELATIONS = ("left", "right", "front", "behind")


def compute_relationships(objects: list[dict], directions: dict,
                          eps: float = 0.2) -> dict[str, list[list[int]]]:
    """relationships[name][i]: sorted j whose centre is more than ``eps`` from object i's
    along ``directions[name]``."""
    coords = np.array([o["3d_coords"] for o in objects], dtype=np.float64).reshape(-1, 3)
    diff = coords[None, :, :] - coords[:, None, :]  # diff[i, j] = coords_j - coords_i
    out = {}
    for name in RELATIONS:
        related = diff @ np.asarray(directions[name], dtype=np.float64) > eps  # (n, n)
        np.fill_diagonal(related, False)
        out[name] = [np.flatnonzero(row).tolist() for row in related]
    return out


def placement_ok(xy: np.ndarray, radius: float, placed: np.ndarray,
                 directions: dict) -> np.ndarray:
    """CLEVR's rule for candidate centres ``xy`` (T, 2) of an object of footprint ``radius``
    among ``placed`` objects (M, 3: x, y, radius): a gap of MIN_GAP between footprints, and an
    offset of at least MIN_AXIS_MARGIN (or exactly zero) along each cardinal direction.
    Returns (T,) bool."""
    if len(placed) == 0:
        return np.ones(len(xy), bool)
    diff = xy[:, None, :] - placed[None, :, :2]                    # (T, M, 2)
    gap = np.sqrt((diff ** 2).sum(2)) - radius - placed[None, :, 2]
    ok = (gap >= MIN_GAP).all(1)
    axes = np.array([directions[name][:2] for name in RELATIONS])  # (4, 2)
    margins = diff @ axes.T                                        # (T, M, 4)
    ok &= ~((margins > 0) & (margins < MIN_AXIS_MARGIN)).any((1, 2))
    return ok


def sample_layout(rng: np.random.Generator, n_objects: int, directions: dict,
                  cogent: str | None = None) -> list[dict]:
    """Objects (without pixel_coords) satisfying the placement rules. Each object gets
    MAX_TRIES candidate positions; if none fits, the whole layout restarts (as in CLEVR)."""
    for _ in range(MAX_LAYOUTS):
        objects, placed = [], np.zeros((0, 3))
        for _ in range(n_objects):
            # one draw per object: size, shape, colour, material, rotation, candidate centres
            u = rng.random(5 + 2 * MAX_TRIES)
            size = SIZES[int(u[0] * len(SIZES))]
            radius = SIZE_RADIUS[size]
            candidates = u[5:].reshape(MAX_TRIES, 2) * 6.0 - 3.0
            fits = np.flatnonzero(placement_ok(candidates, radius, placed, directions))
            if fits.size == 0:
                break  # this object does not fit: start the layout again
            x, y = candidates[fits[0]]
            shape = SHAPES[int(u[1] * len(SHAPES))]
            colors = allowed_colors(shape, cogent)
            objects.append({
                "shape": shape,
                "color": colors[int(u[2] * len(colors))],
                "material": MATERIALS[int(u[3] * len(MATERIALS))],
                "size": size,
                "3d_coords": [float(x), float(y), float(half_extent(shape, size))],
                "rotation": float(u[4] * 360.0),
            })
            placed = np.vstack([placed, (x, y, radius)])
        if len(objects) == n_objects:
            return objects
    raise RuntimeError(f"could not place {n_objects} objects")


def _with_pixel_coords(objects: list[dict], camera: Camera) -> list[dict]:
    """Objects in the scene-file key order, with ``pixel_coords`` [col, row, depth]."""
    proj = camera.project(np.array([o["3d_coords"] for o in objects]))
    keys = ("shape", "color", "material", "size", "3d_coords", "pixel_coords", "rotation")
    out = []
    for obj, (col, row, depth) in zip(objects, proj):
        obj = dict(obj, pixel_coords=[int(round(col)), int(round(row)), float(depth)])
        out.append({k: obj[k] for k in keys})
    return out


def make_scene(rng: np.random.Generator, *, width: int, height: int, split: str,
               image_index: int, cogent: str | None = None, min_objects: int = 3,
               max_objects: int = 10, min_visible_pixels: int = 200,
               camera: Camera | None = None,
               lights: list[Light] | None = None) -> tuple[dict, np.ndarray]:
    """One CLEVR scene dict and its (H, W, 3) uint8 image, fully determined by ``rng``.

    ``min_visible_pixels`` is stated at CLEVR's 480x320 and scaled by the image area. The
    scene's ``directions`` (and so its relationships and placement rules) are the un-jittered
    camera's, as in CLEVR's files; ``pixel_coords`` and the image use the jittered one.
    ``camera``/``lights`` override the jittered ones (for figures and tests).
    """
    if camera is None:
        camera = sample_camera(rng, width, height)
    if lights is None:
        lights = sample_lights(rng)
    # CLEVR's scene files keep the un-jittered camera's directions (the same in every scene):
    # relations follow the fixed view, the picture the jittered one
    directions = default_camera().directions()
    threshold = min_visible_pixels * (camera.width * camera.height) / (480 * 320)
    n_objects = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(MAX_LAYOUTS):
        objects = sample_layout(rng, n_objects, directions, cogent)
        primary = trace_primary(objects, camera)
        if (primary.visible_pixels() >= threshold).all():
            break
    else:
        raise RuntimeError("no layout left every object visible")
    result = render_scene(objects, camera, lights, primary=primary)
    objects = _with_pixel_coords(objects, camera)
    scene = {
        "split": split,
        "image_index": image_index,
        "image_filename": f"CLEVR_{split}_{image_index:06d}.png",
        "objects": objects,
        "relationships": compute_relationships(objects, directions),
        "directions": directions,
    }
    return scene, result.image
