"""A fast numpy ray caster that draws SynthCLEVR scenes in CLEVR's look.

One ray per pixel finds the visible surface: the ground plane analytically for every pixel,
each object only inside the screen box its 3D bounding box projects to. The geometry is
CLEVR's: every object rests on the floor with its centre at z = r (the size's radius); a cube
has half-side r and a cylinder radius and half-height r, both with rounded edges (hit by a few
sphere-tracing steps from the sharp solid onto the rounded one).

Shading follows CLEVR's Blender studio, in linear light with an sRGB-encoded result (CLEVR
set each colour's RGB as a linear albedo, which is why its rubber looks pastel): a matte floor
fading into the backdrop, three lamps (a warm key from the right, a cool fill from the left,
a back light) plus the sky's ambient light, soft shadows, rubber as a matte body under a faint
glossy layer, metal as a tinted mirror with small sharp lamp highlights. The studio's numbers
(:class:`Studio`) were fitted to two real CLEVR images (``filmlib/reference/``,
``docs/renderer.md``).

Three shortcuts keep it within a few milliseconds per small image on one core:

- Soft shadows are analytic. For a light and an occluder, the shadow ray's point closest to
  the occluder's centre is tested against the occluder's signed distance; a smoothstep whose
  width grows with the distance along the ray turns that into a penumbra, which also fades
  out with distance (CLEVR's lamps are large). Only the screen box of the occluder's shadow
  volume is tested.
- Anti-aliasing is by coverage: only pixels whose object id differs from a neighbour's get
  extra rays, and those rays are only intersected, not shaded; each sub-sample borrows the
  colour of a neighbouring pixel that sees the same surface.
- Metal reflections trace one bounce (floor, neighbours, studio) and shade what they hit
  without cast shadows; rubber's glossy layer reflects a blurred studio, not traced.

Vectors are handled by component: a "vector" is anything indexable as v[0], v[1], v[2] (a
tuple of arrays or a (3, ...) array); per-pixel arrays are (3, H, W) and screen boxes are
views into them, so no pixel is copied to test an object.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .attributes import COLOR_RGB, SIZE_RADIUS, half_extent
from .camera import Camera

F32 = np.float32
EPS = 1e-3
INF = F32(np.inf)
#: CLEVR's cube and cylinder meshes have rounded edges; their radius, as a share of the size's
#: r, fitted to the outlines of the real cubes and cylinders in ``filmlib/reference/`` (best
#: overlap of rendered and real silhouettes: 0.97-0.98 for the cubes, 0.94-0.97 cylinders)
EDGE_ROUND = {"cube": 0.2, "cylinder": 0.15, "sphere": 0.0}
MARCH_STEPS = 8     # sphere-tracing steps from the sharp solid onto the rounded one
SHADOW_STEP = 2     # the floor's soft shadows are found on every 2nd pixel and interpolated...
SHADOW_STEP_FROM = 64   # ...in images at least twice this wide

# --- The studio (linear light; the output is sRGB-encoded) ------------------------------------

@dataclass(frozen=True)
class Studio:
    """Every number of CLEVR's studio the renderer uses, in linear light.

    CLEVR's Blender scenes set each colour's RGB (``COLOR_RGB`` / 255) as a *linear* albedo and
    the image is sRGB-encoded, which is why real rubber looks pastel rather than saturated;
    the renderer does the same. The values were fitted to the two real CLEVR images in
    ``filmlib/reference/`` (see ``docs/renderer.md``).
    """
    floor_albedo: float = 0.5
    ambient: tuple = (0.150, 0.148, 0.146)    # sky irradiance, RGB (faintly warm)
    ambient_base: float = 0.46                # share of it a vertical face still gets
    backdrop: tuple = (0.145, 0.145, 0.145)   # radiance of the far floor the view fades into
    fade: tuple = (4.26, 9.73)                # ground radii over which the floor fades into it
    sky_horizon: tuple = (0.037, 0.037, 0.037)  # the studio as mirrors see it: at the horizon,
    sky_zenith: tuple = (0.001, 0.001, 0.001)   # and overhead (dark: metal tops are dark)
    falloff: float = 15.0                     # lights dim as 1 / (falloff^2 + d^2)
    shadow_w0: float = 0.12                   # penumbra half-width at the occluder
    shadow_soft: float = 2.5                  # times each light's penumbra growth
    shadow_reach: tuple = (2.0, 6.0)          # shadows fade out between these distances
    shadow_depth: float = 1.0                 # darkness of a full shadow (1: all the light)
    contact_ao: float = 0.71                  # darkening of the floor right under an object
    rubber_diffuse: float = 0.76              # share of rubber's albedo its matte body shows
    rubber_sheen: float = 0.03                # rubber's glossy layer at normal incidence
    rubber_spec: float = 0.1                  # and its faint, broad lamp highlight
    rubber_shine: float = 12.0
    metal_reflect: float = 0.44               # metal: the tinted mirror...
    metal_diffuse: float = 0.2                # ...over a dim diffuse body,
    metal_spec: float = 150.0                 # small sharp lamp highlights that clip to white,
    metal_shine: float = 1500.0
    metal_gloss: float = 0.5                  # and a broader lobe that lights up the bevels
    metal_gloss_shine: float = 60.0
    metal_sheen: float = 0.05                 # untinted share of metal's reflection
    exposure: float = 1.0

    def replace(self, **changes) -> "Studio":
        return dataclasses.replace(self, **changes)


STUDIO = Studio()
AA_OFFSETS = np.array([(0.5625, 0.3125), (0.4375, 0.6875), (0.8125, 0.5625), (0.3125, 0.1875),
                       (0.1875, 0.8125), (0.0625, 0.4375), (0.6875, 0.9375), (0.9375, 0.0625)],
                      dtype=F32)  # 8-rooks sub-pixel pattern (column, row offsets)

_SRGB_STEPS = 8192
_SRGB_LUT = None


def encode_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] (clipped) to 8-bit sRGB, through a lookup table."""
    global _SRGB_LUT
    if _SRGB_LUT is None:
        x = np.linspace(0, 1, _SRGB_STEPS + 1)
        srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
        _SRGB_LUT = (srgb * 255 + 0.5).astype(np.uint8)
    idx = (np.clip(linear, 0, 1) * _SRGB_STEPS + 0.5).astype(np.int32)
    return _SRGB_LUT[idx]


def decode_srgb(encoded) -> np.ndarray:
    """8-bit sRGB (0-255) to linear light in [0, 1]."""
    x = np.asarray(encoded, np.float64) / 255
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _smoothstep(edge0, edge1, x):
    span = max(float(edge1) - float(edge0), 1e-6)   # a step, not a division by zero
    u = np.minimum(np.maximum((x - edge0) * F32(1 / span), F32(0)), F32(1))
    return u * u * (3 - 2 * u)


# --- Lights ------------------------------------------------------------------------------------

@dataclass
class Light:
    position: np.ndarray   # (3,) world coordinates
    intensity: tuple       # linear RGB irradiance at the scene's centre, facing the light
    penumbra: float        # growth of the shadow's half-width per unit of distance to the occluder
    name: str = ""

    def __post_init__(self):
        if np.ndim(self.intensity) == 0:   # one number: a white light
            self.intensity = (float(self.intensity),) * 3
        if len(self.intensity) != 3:
            raise ValueError(f"light {self.name!r}: intensity must be one number or RGB")


#: CLEVR's three lamps (name, position, RGB intensity, penumbra) before the per-image jitter.
BASE_LIGHTS = (
    ("key", (6.45, -2.91, 4.26), (0.331, 0.314, 0.277), 0.07),   # warm; right, front, above
    ("fill", (-4.67, -4.01, 3.01), (0.130, 0.136, 0.156), 0.10),  # cool; from the left
    ("back", (-1.17, 2.64, 5.82), (0.166, 0.169, 0.169), 0.09),   # from behind
)


def sample_lights(rng: np.random.Generator) -> list[Light]:
    """Key, fill and back light, each position jittered by uniform(-1, 1) per axis."""
    return [Light(np.add(pos, rng.uniform(-1.0, 1.0, size=3)), intensity, pen, name)
            for name, pos, intensity, pen in BASE_LIGHTS]


def _strength(light: Light, dist, studio: Studio):
    """Falloff of ``light`` at distances ``dist``: gentle, 1 at the scene's centre."""
    d0 = studio.falloff ** 2
    at_centre = d0 + float(np.dot(light.position, light.position))
    return at_centre / (d0 + dist * dist)


# --- Solids: the objects as geometry -----------------------------------------------------------

@dataclass(frozen=True)
class Solid:
    shape: str
    center: tuple[float, float, float]
    radius: float   # the size's radius r
    half: float     # half-height: r for every shape (a cube's half-side)
    cos: float      # of the rotation about z
    sin: float
    albedo: tuple[float, float, float]
    metal: bool
    round: float = 0.0  # radius of the rounded edges (CLEVR's cube and cylinder meshes have them)

    @property
    def reach(self) -> float:
        """Horizontal bounding radius: a cube's corners stand r * sqrt(2) from its axis."""
        return self.radius * 2 ** 0.5 if self.shape == "cube" else self.radius

    def local(self, x, y):
        """Rotate horizontal components into the solid's own frame."""
        return self.cos * x + self.sin * y, self.cos * y - self.sin * x


_SIGNS = np.array([(i, j, k) for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)


def solids_from_objects(objects: list[dict]) -> list[Solid]:
    solids = []
    for obj in objects:
        # CLEVR stores the rotation in degrees, but its Blender script set the number as
        # radians; that is the turn its images show, so it is the turn drawn here
        theta = float(obj.get("rotation", 0.0))
        solids.append(Solid(
            shape=obj["shape"], center=tuple(float(c) for c in obj["3d_coords"]),
            radius=SIZE_RADIUS[obj["size"]], half=half_extent(obj["shape"], obj["size"]),
            cos=float(np.cos(theta)), sin=float(np.sin(theta)),
            albedo=tuple(c / 255 for c in COLOR_RGB[obj["color"]]),
            metal=obj["material"] == "metal",
            round=EDGE_ROUND[obj["shape"]] * SIZE_RADIUS[obj["size"]]))
    return solids


def _sharp_entry(s: Solid, ox, oy, oz, d) -> np.ndarray:
    """Distance to the solid with sharp edges (which holds the rounded one); inf for a miss.
    ``ox, oy, oz``: the ray origins relative to the solid's centre."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if s.shape == "sphere":
            b = ox * d[0] + oy * d[1] + oz * d[2]
            disc = b * b - (ox * ox + oy * oy + oz * oz - s.radius ** 2)
            t = -b - np.sqrt(np.maximum(disc, 0))
            return np.where((disc > 0) & (t > EPS), t, INF)
        if s.shape == "cylinder":  # no bottom cap: no ray from z >= 0 outside reaches it first
            a = d[0] * d[0] + d[1] * d[1]
            b = ox * d[0] + oy * d[1]
            disc = b * b - a * (ox * ox + oy * oy - s.radius ** 2)
            t_side = (-b - np.sqrt(np.maximum(disc, 0))) / a
            side = (disc > 0) & (t_side > EPS) & (np.abs(oz + t_side * d[2]) <= s.half)
            t_top = (s.half - oz) / d[2]
            hx, hy = ox + t_top * d[0], oy + t_top * d[1]
            top = (t_top > EPS) & (hx * hx + hy * hy <= s.radius ** 2)
            return np.where(side, t_side, np.where(top, t_top, INF))
        # cube: the slab test in the cube's own frame
        (lox, loy), (ldx, ldy) = s.local(ox, oy), s.local(d[0], d[1])
        near, far = None, None
        for o, dd in ((lox, ldx), (loy, ldy), (oz, d[2])):
            t1, t2 = (-s.half - o) / dd, (s.half - o) / dd
            lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
            near = lo if near is None else np.maximum(near, lo)
            far = hi if far is None else np.minimum(far, hi)
        return np.where((near <= far) & (near > EPS), near, INF)


def intersect(s: Solid, origin, d, rounded: bool = True) -> np.ndarray:
    """Distance along unit rays ``d`` from ``origin`` (outside ``s``) to ``s``; inf for a miss.

    Spheres, and the flat faces of the others, are hit analytically; rays that meet a cube or
    cylinder are then marched on from the sharp-edged solid onto the rounded one by its exact
    signed distance (sphere tracing), which only moves the hits near the rounded edges.
    ``rounded=False`` keeps the sharp solid (for reflections, where it cannot be seen).
    """
    ox, oy, oz = (origin[i] - s.center[i] for i in range(3))
    t = _sharp_entry(s, ox, oy, oz, d)
    if s.round <= 0 or not rounded:
        return t
    hit = np.isfinite(t)
    if not hit.any():
        return t
    # a hit on a flat face, farther than the rounding radius from its edges, is exact already
    tt = np.where(hit, t, 0)
    px, py, pz = ox + tt * d[0], oy + tt * d[1], oz + tt * d[2]
    inner = F32(s.half - s.round)
    if s.shape == "cylinder":
        near_edge = ((np.abs(pz) > inner)
                     & (px * px + py * py > F32(s.radius - s.round) ** 2))
    else:
        lx, ly = s.local(px, py)
        near_edge = ((np.abs(lx) > inner).astype(np.int8) + (np.abs(ly) > inner)
                     + (np.abs(pz) > inner)) >= 2
    hit = np.flatnonzero(hit & near_edge)
    if hit.size == 0:
        return t
    take = (lambda a: a.ravel()[hit] if np.ndim(a) else a)
    o = [take(ox), take(oy), take(oz)]
    dd = [take(d[0]), take(d[1]), take(d[2])]
    th = t.ravel()[hit].copy()
    tol = F32(1e-3 * s.radius)
    for _ in range(MARCH_STEPS):
        dist = sdf(s, o[0] + th * dd[0], o[1] + th * dd[1], o[2] + th * dd[2])
        th += dist
    dist = sdf(s, o[0] + th * dd[0], o[1] + th * dd[1], o[2] + th * dd[2])
    out = t.copy().ravel()
    out[hit] = np.where(dist < 4 * tol, th, INF)
    return out.reshape(t.shape)


def normal(s: Solid, p) -> tuple:
    """Outward unit normal (3 arrays) at surface points ``p`` of ``s``: the gradient of its
    signed distance, so the rounded edges (radius ``s.round``) catch the light, which is much
    of what makes metal cubes read as metal."""
    qx, qy, qz = p[0] - s.center[0], p[1] - s.center[1], p[2] - s.center[2]
    if s.shape == "sphere":
        return qx / s.radius, qy / s.radius, qz / s.radius
    inner = s.half - s.round
    if s.shape == "cylinder":
        rho = np.sqrt(qx * qx + qy * qy) + F32(1e-9)
        radial = np.maximum(rho - (s.radius - s.round), 0) / rho
        nx, ny, nz = qx * radial, qy * radial, np.maximum(qz - inner, 0)
    else:
        lx, ly = s.local(qx, qy)
        lx = np.sign(lx) * np.maximum(np.abs(lx) - inner, 0)
        ly = np.sign(ly) * np.maximum(np.abs(ly) - inner, 0)
        nz = np.sign(qz) * np.maximum(np.abs(qz) - inner, 0)
        nx, ny = s.cos * lx - s.sin * ly, s.sin * lx + s.cos * ly  # back to the world frame
    norm = 1 / np.maximum(np.sqrt(nx * nx + ny * ny + nz * nz), F32(1e-12))
    return nx * norm, ny * norm, nz * norm


def sdf(s: Solid, qx, qy, qz) -> np.ndarray:
    """Signed distance to the surface of ``s`` (edges rounded over ``s.round``) of points
    given relative to its centre."""
    if s.shape == "sphere":
        return np.sqrt(qx * qx + qy * qy + qz * qz) - s.radius
    rnd = F32(s.round)
    if s.shape == "cylinder":
        dx = np.sqrt(qx * qx + qy * qy) - F32(s.radius - s.round)
        dz = np.abs(qz) - F32(s.half - s.round)
        ox, oz = np.maximum(dx, 0), np.maximum(dz, 0)
        return np.minimum(np.maximum(dx, dz), 0) + np.sqrt(ox * ox + oz * oz) - rnd
    lx, ly = s.local(qx, qy)
    inner = F32(s.half - s.round)
    dx, dy, dz = np.abs(lx) - inner, np.abs(ly) - inner, np.abs(qz) - inner
    ox, oy, oz = np.maximum(dx, 0), np.maximum(dy, 0), np.maximum(dz, 0)
    return (np.minimum(np.maximum(np.maximum(dx, dy), dz), 0)
            + np.sqrt(ox * ox + oy * oy + oz * oz) - rnd)


# --- Screen-space boxes --------------------------------------------------------------------------

Box = tuple[int, int, int, int]  # (row0, row1, col0, col1), half-open, clipped to the image


def screen_boxes(camera: Camera, points: np.ndarray) -> list[Box | None]:
    """For each group of world points (K, M, 3): the screen rectangle covering it (None if off
    screen), padded by a pixel."""
    k, m, _ = points.shape
    proj = camera.project(points.reshape(-1, 3)).reshape(k, m, 3)
    behind = proj[:, :, 2].min(1) <= 1e-3  # partly behind the camera: anything may be covered
    lo = np.where(behind[:, None], 0, np.floor(proj[:, :, :2].min(1)) - 1)
    hi = np.where(behind[:, None], np.inf, np.ceil(proj[:, :, :2].max(1)) + 1)
    lo = np.maximum(lo, 0).astype(int).tolist()
    hi = np.minimum(hi, [camera.width, camera.height]).astype(int).tolist()
    return [(r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None
            for (c0, r0), (c1, r1) in zip(lo, hi)]


def _corners(solids: list[Solid], margin=0.0) -> np.ndarray:
    """Corners (K, 8, 3) of the solids' axis-aligned bounding boxes, grown by ``margin``."""
    centre = np.array([s.center for s in solids])
    ext = np.array([(s.reach, s.reach, s.half) for s in solids]) + margin
    return centre[:, None, :] + _SIGNS * ext[:, None, :]


def object_boxes(camera: Camera, solids: list[Solid]) -> list[Box | None]:
    return screen_boxes(camera, _corners(solids))


def shadow_boxes(camera: Camera, lights: list[Light], solids: list[Solid],
                 studio: Studio = STUDIO) -> list[list[Box | None]]:
    """boxes[light][solid]: screen box of the region where the solid may shadow the light:
    its bounding box, grown by the widest penumbra, swept away from the light as far as
    shadows reach."""
    k = len(solids)
    far = studio.shadow_reach[1]
    reach = far + 2 * np.array([s.reach for s in solids])[:, None]
    groups = []
    for lt in lights:
        grown = _corners(solids, studio.shadow_w0 + lt.penumbra * studio.shadow_soft * far)
        away = grown - np.asarray(lt.position, float)
        away /= np.linalg.norm(away, axis=2, keepdims=True)
        with np.errstate(divide="ignore"):
            to_ground = np.where(away[..., 2] < 0, grown[..., 2] / -away[..., 2], np.inf)
        ends = grown + away * np.minimum(to_ground, reach)[..., None]
        groups.append(np.concatenate([grown, ends], axis=1))
    boxes = screen_boxes(camera, np.concatenate(groups))
    return [boxes[i * k:(i + 1) * k] for i in range(len(lights))]


def floor_boxes(camera: Camera, solids: list[Solid], reach: float) -> list[Box | None]:
    """Screen boxes of the floor within ``reach`` radii of each solid (and of the solid)."""
    centre = np.array([s.center for s in solids])
    ext = np.array([(reach * s.reach, reach * s.reach, s.half) for s in solids])
    return screen_boxes(camera, centre[:, None, :] + _SIGNS * ext[:, None, :])


def _view(a: np.ndarray, box: Box) -> np.ndarray:
    r0, r1, c0, c1 = box
    return a[..., r0:r1, c0:c1]


# --- The primary pass (also the visibility pass) ---------------------------------------------

@dataclass
class PrimaryHits:
    solids: list[Solid]
    boxes: list[Box | None]   # screen box of each object
    dirs: np.ndarray          # (3, H, W) unit view rays through the pixel centres
    t: np.ndarray             # (H, W) distance to the visible surface (inf: none)
    object_id: np.ndarray     # (H, W) int16 object id, -1 = floor/backdrop

    def visible_pixels(self) -> np.ndarray:
        ids = self.object_id
        return np.bincount(ids[ids >= 0], minlength=len(self.solids))[:len(self.solids)]


def ground_hit(origin, d) -> np.ndarray:
    """Distance along rays ``d`` to the plane z = 0; inf for rays that do not go down."""
    with np.errstate(divide="ignore"):
        t = -origin[2] / d[2]
    return np.where(d[2] < 0, t, INF).astype(F32)


def trace_primary(objects: list[dict], camera: Camera) -> PrimaryHits:
    """Which surface each pixel centre sees."""
    solids = solids_from_objects(objects)
    boxes = object_boxes(camera, solids) if solids else []
    rows, cols = np.mgrid[0:camera.height, 0:camera.width].astype(F32) + F32(0.5)
    dirs = camera.rays(cols, rows)
    origin = camera.position
    t = ground_hit(origin, dirs)
    ids = np.full(t.shape, -1, np.int16)
    for k, (s, box) in enumerate(zip(solids, boxes)):
        if box is None:
            continue
        tv, iv = _view(t, box), _view(ids, box)
        tk = intersect(s, origin, _view(dirs, box))
        closer = tk < tv
        tv[closer] = tk[closer]
        iv[closer] = k
    return PrimaryHits(solids, boxes, dirs, t, ids)


def object_id_map(objects: list[dict], camera: Camera) -> np.ndarray:
    """(H, W) int16 id of the object each pixel centre sees, -1 for floor/backdrop."""
    return trace_primary(objects, camera).object_id


# --- Shading -----------------------------------------------------------------------------------

def _floor_fade(p, studio: Studio) -> np.ndarray:
    """Weight of the backdrop over the floor: 0 near the objects, 1 far away."""
    return _smoothstep(studio.fade[0], studio.fade[1], np.sqrt(p[0] * p[0] + p[1] * p[1]))


def _sky(r, studio: Studio) -> list[np.ndarray]:
    """The studio seen by reflected rays ``r`` that leave it, per channel: the backdrop at the
    horizon, the lamps' surroundings overhead."""
    w = np.sqrt(np.maximum(r[2], 0))
    return [F32(h) + F32(z - h) * w for h, z in zip(studio.sky_horizon, studio.sky_zenith)]


def occluder_visibility(s: Solid, p, to_light, dist, penumbra: float,
                        studio: Studio = STUDIO) -> np.ndarray:
    """Share of a light that gets past ``s`` to points ``p`` (unit vectors ``to_light``,
    distances ``dist`` to it, shadow softness ``penumbra``): the shadow ray's point nearest
    the solid's centre, tested against its signed distance."""
    qx, qy, qz = s.center[0] - p[0], s.center[1] - p[1], s.center[2] - p[2]
    tc = np.minimum(np.maximum(qx * to_light[0] + qy * to_light[1] + qz * to_light[2], 0), dist)
    dist_to_surface = sdf(s, to_light[0] * tc - qx, to_light[1] * tc - qy, to_light[2] * tc - qz)
    # penumbra: a smoothstep over [-w, w] around the surface, w growing along the ray (the
    # lamps are large)
    width = 2 * studio.shadow_w0 + 2 * penumbra * studio.shadow_soft * tc
    u = np.minimum(np.maximum(0.5 - dist_to_surface / width, 0), 1)
    near, far = studio.shadow_reach
    fading = np.minimum(np.maximum((far - tc) * (1 / (far - near)), 0), 1)  # 1 near, 0 far
    return 1 - F32(studio.shadow_depth) * u * u * (3 - 2 * u) * fading


def _upsample(a: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of ``a``, sampled at every ``step``-th pixel (from pixel 0), to
    ``shape``; clamped at the far edges."""
    if step == 1:
        return np.array(a, F32)
    out = a
    for axis, n in enumerate(shape):
        pos = np.arange(n, dtype=F32) / step
        lo = np.minimum(pos.astype(int), a.shape[axis] - 1)
        hi = np.minimum(lo + 1, a.shape[axis] - 1)
        frac = np.minimum(pos - lo.astype(F32), F32(1)).reshape((-1, 1) if axis == 0 else (1, -1))
        out = (np.take(out, lo, axis) * (1 - frac) + np.take(out, hi, axis) * frac)
    return out


@dataclass
class _ShadowPoints:
    """The points whose shadows are found, in one list: the floor on a grid of every
    ``step``-th pixel, then the objects' own pixels; with the full-size pixel of each and the
    object it lies on (-1: floor). The same for every lamp."""
    xyz: list            # 3 arrays (N,)
    row: np.ndarray
    col: np.ndarray
    owner: np.ndarray
    grid: tuple          # (rows, columns) of the floor grid
    step: int


def _shadow_points(camera: Camera, points, on_obj, owner, step: int) -> _ShadowPoints:
    # the floor grid: where a ray sees an object, the floor behind it (it only feeds the
    # interpolation); where it misses the floor, a far point
    rows, cols = np.mgrid[0:camera.height:step, 0:camera.width:step].astype(F32) + F32(0.5)
    d = camera.rays(cols, rows)
    t = ground_hit(camera.position, d)
    t = np.where(np.isfinite(t), t, F32(1e3))
    grid = t.shape
    xyz = [np.concatenate([(F32(camera.position[i]) + d[i] * t).ravel(),
                           points[i].ravel()[on_obj]]) for i in range(3)]
    grow, gcol = np.divmod(np.arange(grid[0] * grid[1]), grid[1])
    orow, ocol = np.divmod(on_obj, camera.width)
    return _ShadowPoints(xyz, np.concatenate([grow * step, orow]),
                         np.concatenate([gcol * step, ocol]),
                         np.concatenate([np.full(grow.size, -1), owner]), grid, step)


def _shadows(light, solids, boxes, sp: _ShadowPoints, shape, studio) -> np.ndarray:
    """Soft visibility (H, W) of ``light`` from the visible surfaces; ``boxes``: the screen
    box of each solid's shadow volume.

    Shadows are soft (the lamps are large), so the floor's are found on every ``step``-th
    pixel of the ground plane and interpolated; the objects' own pixels are done one by one
    (an object's own dark side comes from n.l, not from here). Both go through one list of
    points (:class:`_ShadowPoints`), so each occluder costs one call.
    """
    tl = [F32(light.position[i]) - sp.xyz[i] for i in range(3)]
    dist = np.sqrt(_dot(tl, tl))
    tl = [c / dist for c in tl]
    vis = np.ones(dist.shape, F32)
    pad = sp.step
    for k, (s, box) in enumerate(zip(solids, boxes)):
        if box is None:
            continue
        r0, r1, c0, c1 = box
        sel = np.flatnonzero((sp.row >= r0 - pad) & (sp.row < r1 + pad) & (sp.col >= c0 - pad)
                             & (sp.col < c1 + pad) & (sp.owner != k))
        if sel.size:
            vis[sel] *= occluder_visibility(s, [c[sel] for c in sp.xyz], [c[sel] for c in tl],
                                            dist[sel], light.penumbra, studio)
    n_floor = sp.grid[0] * sp.grid[1]
    out = _upsample(vis[:n_floor].reshape(sp.grid), sp.step, shape)
    objects = sp.owner >= 0
    np.put(out, (sp.row * shape[1] + sp.col)[objects], vis[objects])
    return out


def _occlusion(s: Solid, p, studio: Studio) -> np.ndarray:
    """Ambient light left to floor points ``p`` near ``s`` (a sphere-occluder estimate)."""
    qx, qy, qz = s.center[0] - p[0], s.center[1] - p[1], s.center[2] - p[2]
    d2 = qx * qx + qy * qy + qz * qz + F32(1e-6)
    occ = (s.half ** 2) * qz / (d2 * np.sqrt(d2))
    return 1 - F32(studio.contact_ao) * np.minimum(np.maximum(occ, 0), 1)


def luminance(r, g, b):
    return 0.299 * r + 0.587 * g + 0.114 * b


def _irradiance(ambient, fields, lights, studio: Studio) -> list[np.ndarray]:
    """Light arriving per channel: the sky's share ``ambient`` plus each lamp's ``fields``."""
    out = []
    for c in range(3):
        e = F32(studio.ambient[c]) * ambient
        for lt, f in zip(lights, fields):
            e = e + F32(lt.intensity[c]) * f
        out.append(e)
    return out


def _unshadowed(q, nrm, lights, studio) -> list[np.ndarray]:
    """Each lamp's cosine-weighted falloff at points ``q`` with normals ``nrm`` (no shadows)."""
    fields = []
    for lt in lights:
        lx, ly, lz = (F32(lt.position[c]) - q[c] for c in range(3))
        dist = np.sqrt(lx * lx + ly * ly + lz * lz)
        cos = np.maximum(nrm[0] * lx + nrm[1] * ly + nrm[2] * lz, 0) / dist
        fields.append(cos * _strength(lt, dist, studio))
    return fields


def _mirror(solids, lights, owner, p, n, r, studio: Studio) -> list[np.ndarray]:
    """Radiance per channel seen along mirror rays ``r`` from points ``p`` (normals ``n``) on
    objects ``owner``: another object (lit without cast shadows), else the floor (with its
    contact shadows, fading into the backdrop), else the studio."""
    o = tuple(p[i] + F32(2 * EPS) * n[i] for i in range(3))
    t = ground_hit(o, r)
    hit = np.full(t.shape, -1, np.int16)
    for j, s in enumerate(solids):
        tj = np.where(owner == j, INF, intersect(s, o, r, rounded=False))
        closer = tj < t
        t = np.where(closer, tj, t)
        hit[closer] = j
    finite = np.isfinite(t)
    t = np.where(finite, t, 0)
    q = tuple(o[i] + r[i] * t for i in range(3))
    nrm = [np.zeros_like(t), np.zeros_like(t), np.ones_like(t)]
    for j in np.unique(hit[hit >= 0]):
        sel = np.flatnonzero(hit == j)
        for i, v in enumerate(normal(solids[j], [c[sel] for c in q])):
            nrm[i][sel] = v
    floor = (hit < 0) & finite
    ambient = F32(studio.ambient_base) + F32(1 - studio.ambient_base) * nrm[2]
    fl = np.flatnonzero(floor)
    if fl.size:  # the floor's contact shadows show in the mirror
        qf = [c[fl] for c in q]
        ambient[fl] *= np.prod([_occlusion(s, qf, studio) for s in solids], axis=0)
    light = _irradiance(ambient, _unshadowed(q, nrm, lights, studio), lights, studio)
    # what is seen: floor albedo, an object's own (a metal neighbour shows about half of its
    # lit colour, the rest being its own reflection), or the sky
    albedo = np.array([(studio.floor_albedo,) * 3]
                      + [np.multiply(s.albedo, 0.5 if s.metal else 1.0) for s in solids], F32)
    fade = np.where(floor, _floor_fade(q, studio), F32(1))
    sky = _sky(r, studio)
    out = []
    for c in range(3):
        seen = albedo[hit + 1, c] * light[c]
        out.append(np.where(hit >= 0, seen, seen * (1 - fade) + sky[c] * fade))
    return out


def shade(primary: PrimaryHits, camera: Camera, lights: list[Light],
          studio: Studio = STUDIO) -> np.ndarray:
    """Linear radiance (H, W, 3) float (before clipping) of every pixel's visible surface."""
    solids, dirs, ids = primary.solids, primary.dirs, primary.object_id
    finite = np.isfinite(primary.t)
    t = np.where(finite, primary.t, F32(1e3))
    origin = camera.position
    points = np.stack([origin[i] + dirs[i] * t for i in range(3)])     # (3, H, W)

    normals = np.zeros_like(points)
    normals[2] = 1
    for k, (s, box) in enumerate(zip(solids, primary.boxes)):
        if box is not None:
            mine = _view(ids, box) == k
            nv = _view(normals, box)
            for i, v in enumerate(normal(s, _view(points, box))):
                nv[i] = np.where(mine, v, nv[i])
    ambient = F32(studio.ambient_base) + F32(1 - studio.ambient_base) * normals[2]
    for s, box in zip(solids, floor_boxes(camera, solids, 3.0) if solids else []):
        if box is not None:
            av = _view(ambient, box)
            av *= np.where(_view(ids, box) < 0, _occlusion(s, _view(points, box), studio), F32(1))

    # objects' pixels, flattened, for the terms only they need
    on_obj = np.flatnonzero(ids >= 0)
    owner = ids.ravel()[on_obj]
    n_obj = [normals[i].ravel()[on_obj] for i in range(3)]
    v_obj = [-dirs[i].ravel()[on_obj] for i in range(3)]
    metal_table = np.array([s.metal for s in solids], bool)
    metal = metal_table[owner] if solids else np.zeros(0, bool)

    fields = []
    highlight = [np.zeros(on_obj.size, F32) for _ in range(3)]
    boxes = shadow_boxes(camera, lights, solids, studio) if solids else [[]] * len(lights)
    step = SHADOW_STEP if camera.width >= 2 * SHADOW_STEP_FROM else 1
    spoints = _shadow_points(camera, points, on_obj, owner, step)
    for lt, sboxes in zip(lights, boxes):
        to_light = np.stack([F32(lt.position[i]) - points[i] for i in range(3)])  # (3, H, W)
        dist = np.sqrt(_dot(to_light, to_light))
        to_light /= dist
        lit = _shadows(lt, solids, sboxes, spoints, ids.shape, studio)
        lit *= _strength(lt, dist, studio)
        ndl = _dot(normals, to_light)
        fields.append(np.maximum(ndl, 0) * lit)
        # Blinn-Phong highlights on objects only; the floor is matte
        h = [to_light[i].ravel()[on_obj] + v_obj[i] for i in range(3)]
        ndh = np.maximum(_dot(n_obj, h), 0) / np.sqrt(_dot(h, h))
        lit = lit.ravel()[on_obj] * (ndl.ravel()[on_obj] > 0)
        lobe = np.empty_like(ndh)
        nm, nr = ndh[metal], ndh[~metal]
        lobe[metal] = (studio.metal_spec * nm ** studio.metal_shine
                       + studio.metal_gloss * nm ** studio.metal_gloss_shine)
        lobe[~metal] = studio.rubber_spec * nr ** studio.rubber_shine
        lobe *= lit
        for c in range(3):
            highlight[c] += F32(lt.intensity[c]) * lobe

    light = _irradiance(ambient, fields, lights, studio)                  # 3 x (H, W)
    albedo = np.array([(studio.floor_albedo,) * 3] + [s.albedo for s in solids], F32)
    colour = np.stack([np.take(albedo[:, c], ids + 1) * light[c] for c in range(3)])
    flat = colour.reshape(3, -1)

    if on_obj.size:
        # every object: a mirror direction and the Fresnel factor of its glossy layer
        cos = np.minimum(np.maximum(_dot(n_obj, v_obj), 0), 1)
        grazing = (1 - cos) ** 5
        k = 2 * cos
        r = [k * n_obj[i] - v_obj[i] for i in range(3)]
    rub = np.flatnonzero(~metal)
    if rub.size:  # rubber: matte under a faint glossy layer that reflects the blurred studio
        idx = on_obj[rub]
        fres = F32(studio.rubber_sheen) + F32(0.5 - studio.rubber_sheen) * grazing[rub]
        up = _smoothstep(F32(-0.15), F32(0.15), r[2][rub])
        floor_seen = studio.floor_albedo * (np.add(studio.ambient, 0)
                                            + 0.6 * np.sum([lt.intensity for lt in lights], 0))
        sky = _sky([c[rub] for c in r], studio)
        for c in range(3):
            env = floor_seen[c] * (1 - up) + sky[c] * up
            flat[c, idx] = ((1 - fres) * studio.rubber_diffuse * flat[c, idx] + fres * env
                            + highlight[c][rub])
    met = np.flatnonzero(metal)
    if met.size:  # metal: a tinted mirror (Schlick: whiter at grazing angles) over a dim body
        idx, who = on_obj[met], owner[met]
        mirror = _mirror(solids, lights, who, [points[i].ravel()[idx] for i in range(3)],
                         [c[met] for c in n_obj], [c[met] for c in r], studio)
        sheen = F32(studio.metal_sheen)
        for c in range(3):
            tint = albedo[who + 1, c]
            fres = sheen + (1 - sheen) * (tint + (1 - tint) * grazing[met])
            flat[c, idx] = (studio.metal_diffuse * tint * light[c].ravel()[idx]
                            + studio.metal_reflect * fres * mirror[c]
                            + highlight[c][met] * (sheen + (1 - sheen) * tint))

    fade = np.where(finite, _floor_fade(points, studio), F32(1))
    fade = np.where(ids < 0, fade, F32(0))
    for c in range(3):
        colour[c] = (colour[c] * (1 - fade) + F32(studio.backdrop[c]) * fade) * F32(studio.exposure)
    return colour.transpose(1, 2, 0)


# --- Anti-aliasing -------------------------------------------------------------------------------

def antialias_edges(image: np.ndarray, primary: PrimaryHits, camera: Camera) -> np.ndarray:
    """Re-sample silhouette pixels of ``image`` (H, W, 3) float by sub-pixel coverage."""
    ids = primary.object_id
    height, width = ids.shape
    pad = np.pad(ids, 1, mode="edge")
    edge = ((pad[1:-1, 2:] != ids) | (pad[1:-1, :-2] != ids)
            | (pad[2:, 1:-1] != ids) | (pad[:-2, 1:-1] != ids))
    rows, cols = np.nonzero(edge)
    if rows.size == 0:
        return image
    n_sub = len(AA_OFFSETS)
    dirs = camera.rays((cols[:, None] + AA_OFFSETS[:, 0]).ravel(),
                       (rows[:, None] + AA_OFFSETS[:, 1]).ravel())       # (3, E * S)
    t = ground_hit(camera.position, dirs)
    sub_ids = np.full(t.shape, -1, np.int16)
    for k, (s, box) in enumerate(zip(primary.solids, primary.boxes)):
        if box is None:
            continue
        r0, r1, c0, c1 = box
        inside = np.flatnonzero((rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1))
        rays = (inside[:, None] * n_sub + np.arange(n_sub)).ravel()
        tk = intersect(s, camera.position, [dirs[i].take(rays) for i in range(3)])
        closer = tk < t[rays]
        t[rays[closer]] = tk[closer]
        sub_ids[rays[closer]] = k
    sub_ids = sub_ids.reshape(rows.size, n_sub)                             # (E, S)

    # the 3x3 neighbourhood, centre first: each sub-sample takes the colour of the first
    # neighbour that sees the same surface (the centre itself if none does)
    offsets = [(0, 0)] + [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]
    nr = np.clip(rows[:, None] + np.array([o[0] for o in offsets]), 0, height - 1)  # (E, 9)
    nc = np.clip(cols[:, None] + np.array([o[1] for o in offsets]), 0, width - 1)
    near_ids = ids[nr, nc]                                                            # (E, 9)
    near_rgb = image[nr, nc]                                                          # (E, 9, 3)
    pick = (sub_ids[:, :, None] == near_ids[:, None, :]).argmax(2)                    # (E, S)
    out = image.copy()
    out[rows, cols] = near_rgb[np.arange(rows.size)[:, None], pick].mean(1)
    return out


# --- Entry point ------------------------------------------------------------------------------

@dataclass
class RenderResult:
    image: np.ndarray           # (H, W, 3) uint8 RGB
    object_id: np.ndarray       # (H, W) int16, -1 = floor/backdrop
    visible_pixels: np.ndarray  # (n_objects,) pixels whose centre sees each object


def render_scene(objects: list[dict], camera: Camera, lights: list[Light], *,
                 antialias: bool = True, primary: PrimaryHits | None = None,
                 studio: Studio = STUDIO) -> RenderResult:
    """Draw a scene. ``primary`` may pass the ``trace_primary(objects, camera)`` already
    computed (the visibility check does), to skip tracing it again."""
    if primary is None:
        primary = trace_primary(objects, camera)
    image = shade(primary, camera, lights, studio)
    if antialias:
        image = antialias_edges(image, primary, camera)
    image = encode_srgb(image)
    return RenderResult(image, primary.object_id.copy(), primary.visible_pixels())
