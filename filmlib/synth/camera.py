"""The pinhole camera SynthCLEVR renders through.

CLEVR's Blender camera, fitted to the released scenes (their ``3d_coords`` against their
``pixel_coords``), sits near ``(7.5, -6.5, 5.3)`` looking at the origin with no roll and a
horizontal field of view of about 49 degrees; each image jitters its position a little.
The same camera defines the scene's ``directions`` ("behind" is the view axis laid flat on
the ground), so spatial relations are always relative to the viewer, as in CLEVR.

World frame: z up, the ground is the plane z = 0. Screen frame: column from the left, row from
the top, in pixels; pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: Camera centre fitted to CLEVR v1.0 (scene units); its bearing is set so that the default
#: camera's ``directions`` are the ones every real CLEVR scene file stores (behind =
#: (-0.75449, 0.65631, 0)), which come from the un-jittered camera.
DEFAULT_POSITION = (7.5, -6.524, 5.3)


@dataclass(frozen=True)
class Camera:
    position: tuple[float, float, float]
    look_at: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hfov_deg: float = 49.0  # horizontal field of view; no roll; principal point at the centre
    width: int = 480
    height: int = 320

    @property
    def focal(self) -> float:
        """Focal length in pixels (the same for both axes: square pixels)."""
        return (self.width / 2) / np.tan(np.radians(self.hfov_deg) / 2)

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit vectors (right, up, forward) of the camera in world coordinates, float64 (3,)."""
        return self._basis

    @cached_property
    def _basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        forward = np.subtract(self.look_at, self.position).astype(np.float64)
        forward /= np.linalg.norm(forward)
        right = np.array([forward[1], -forward[0], 0.0])  # forward x z: no roll keeps it level
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        return right, up, forward

    def project(self, points) -> np.ndarray:
        """World points (N, 3) -> (N, 3) ``[column, row, depth along the view axis]``.

        A single point (3,) gives a single (3,) row. Points behind the camera get a negative
        depth (and meaningless screen coordinates).
        """
        pts = np.asarray(points, dtype=np.float64)
        single = pts.ndim == 1
        rel = np.atleast_2d(pts) - np.asarray(self.position, dtype=np.float64)
        right, up, forward = self.basis()
        x, y, depth = rel @ right, rel @ up, rel @ forward
        with np.errstate(divide="ignore", invalid="ignore"):
            col = self.width / 2 + self.focal * x / depth
            row = self.height / 2 - self.focal * y / depth
        out = np.stack([col, row, depth], axis=1)
        return out[0] if single else out

    def rays(self, cols, rows) -> np.ndarray:
        """Unit ray directions (3, *shape) float32 through screen points ``(cols, rows)``."""
        cols, rows = np.asarray(cols, np.float32), np.asarray(rows, np.float32)
        shape = (3,) + (1,) * cols.ndim
        right, up, forward = (v.astype(np.float32).reshape(shape) for v in self.basis())
        f = np.float32(self.focal)
        u = (cols - np.float32(self.width / 2)) / f
        v = (np.float32(self.height / 2) - rows) / f
        d = forward + right * u + up * v
        d /= np.sqrt((d * d).sum(0))
        return d

    def directions(self) -> dict[str, list[float]]:
        """CLEVR's six unit vectors, in CLEVR's key order.

        "behind" is the view axis projected on the ground, "left" the camera's left (already
        horizontal, as there is no roll); the others are their opposites and +-z.
        """
        right, _, forward = self.basis()
        behind = np.array([forward[0], forward[1], 0.0])
        behind /= np.linalg.norm(behind)
        left = -np.array([right[0], right[1], 0.0])
        left /= np.linalg.norm(left)
        vectors = {"behind": behind, "front": -behind, "left": left, "right": -left,
                   "above": np.array([0.0, 0.0, 1.0]), "below": np.array([0.0, 0.0, -1.0])}
        return {name: [float(c) + 0.0 for c in v] for name, v in vectors.items()}


def default_camera(width: int = 480, height: int = 320) -> Camera:
    """The un-jittered CLEVR camera."""
    return Camera(position=DEFAULT_POSITION, width=width, height=height)


def sample_camera(rng: np.random.Generator, width: int = 480, height: int = 320,
                  jitter: float = 0.5) -> Camera:
    """CLEVR's per-image camera: each coordinate of the centre moves by uniform(-jitter, jitter)."""
    offset = rng.uniform(-jitter, jitter, size=3)
    position = tuple(float(p) for p in np.add(DEFAULT_POSITION, offset))
    return Camera(position=position, width=width, height=height)


def fit_camera(points, pixel_coords, width: int = 480, height: int = 320, *,
               iterations: int = 20, tolerance: float = 3.0) -> Camera:
    """The jittered camera that took a CLEVR image of ``width`` x ``height``, from its objects.

    ``points`` (N, 3) are the objects' ``3d_coords`` and ``pixel_coords`` (N, 3) their stored
    ``[column, row, depth]`` in that image. Gauss-Newton over the camera centre, aimed at the
    origin with no roll as CLEVR's is; the stored depth (a float) pins the distance, the
    rounded pixel positions the bearing. To draw the record at another size, keep the centre:
    ``dataclasses.replace(camera, width=..., height=...)``.

    Raises ``ValueError`` if no such camera puts every object within ``tolerance`` pixels of
    its ``pixel_coords`` (the record was not made at this size, or not by such a camera).
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    target = np.asarray(pixel_coords, np.float64).reshape(-1, 3)
    if len(pts) != len(target) or len(pts) == 0:
        raise ValueError(f"fit_camera needs as many pixel_coords as points (got {len(target)} "
                         f"and {len(pts)}, at least one)")

    def residual(pos):
        proj = Camera(tuple(pos), width=width, height=height).project(pts)
        # a unit of depth weighs like 50 px: the float depth is far more precise than the
        # rounded pixel positions
        return np.concatenate([proj[:, 0] - target[:, 0], proj[:, 1] - target[:, 1],
                               50 * (proj[:, 2] - target[:, 2])])

    pos = np.asarray(DEFAULT_POSITION, np.float64)
    for _ in range(iterations):
        r = residual(pos)
        jac = np.stack([(residual(pos + h) - r) / 1e-6 for h in np.eye(3) * 1e-6], axis=1)
        step = np.linalg.lstsq(jac, r, rcond=None)[0]
        pos = pos - step
        if np.abs(step).max() < 1e-9:
            break
    worst = np.abs(residual(pos)[:2 * len(pts)]).max()
    if not np.isfinite(worst) or worst > tolerance:
        raise ValueError(f"no CLEVR camera puts these objects at their pixel_coords in a "
                         f"{width}x{height} image (worst {worst:.1f} px): is that the size "
                         "the record was made at?")
    return Camera(tuple(float(c) for c in pos), width=width, height=height)
