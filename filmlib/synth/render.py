"""A fast numpy ray caster that draws SynthCLEVR scenes in CLEVR's look.

One ray per pixel finds the visible surface: the ground plane analytically for every pixel,
each object only inside the screen box its 3D bounding box projects to. Shading is CLEVR's
studio: a matte light-gray floor fading into a gray backdrop, three point lights (key, fill,
back) plus a sky-like ambient term, soft shadows, matte rubber and mirror-like metal, with the
edges of cubes and cylinders shaded as if bevelled (CLEVR's meshes are).

Three shortcuts keep it within a few milliseconds per small image on one core:

- Soft shadows are analytic. For a light and an occluder, the shadow ray's point closest to
  the occluder's centre is tested against the occluder's signed distance; a smoothstep whose
  width grows with the distance along the ray turns that into a penumbra, which also fades
  out with distance (CLEVR's lamps are large). Only the screen box of the occluder's shadow
  volume is tested.
- Anti-aliasing is by coverage: only pixels whose object id differs from a neighbour's get
  extra rays, and those rays are only intersected, not shaded; each sub-sample borrows the
  colour of a neighbouring pixel that sees the same surface.
- Metal reflections trace one bounce and shade what they hit simply.

Vectors are handled by component: a "vector" is anything indexable as v[0], v[1], v[2] (a
tuple of arrays or a (3, ...) array); per-pixel arrays are (3, H, W) and screen boxes are
views into them, so no pixel is copied to test an object.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .attributes import COLOR_RGB, SIZE_RADIUS, half_extent
from .camera import Camera

F32 = np.float32
EPS = 1e-3
INF = F32(np.inf)

# --- The studio (display-referred values in [0, 1]) ------------------------------------------
GROUND_ALBEDO = 0.52
AMBIENT = 0.42                      # sky-like ambient, times (AMB_BASE + (1 - AMB_BASE) * n_z)
AMB_BASE = 0.55
BACKDROP = 0.37                     # the gray the far floor fades into
FADE_NEAR, FADE_FAR = 5.0, 14.0     # ground radii over which the floor fades into the backdrop
SKY_HORIZON, SKY_ZENITH = 0.2, 1.6  # the studio as metal reflects it
FALLOFF_DIST = 15.0                 # lights dim as 1 / (FALLOFF_DIST^2 + d^2)
SHADOW_W0 = 0.02                    # penumbra half-width at the occluder
SHADOW_REACH = (1.5, 3.5)           # shadows fade out between these distances from the occluder
CONTACT_AO = 0.85                   # darkening of the floor right under an object
BEVEL = 0.1                         # rounded-edge width, as a fraction of the half-height
RUBBER_SPEC, RUBBER_SHINE = 0.07, 10.0
METAL_SPEC, METAL_SHINE, METAL_GLOSS = 1.1, 90.0, 0.4
METAL_REFLECT, METAL_DIFFUSE = 0.7, 0.1
METAL_SHEEN = 0.12                  # untinted share of metal's mirror reflection
AA_OFFSETS = np.array([(0.5625, 0.3125), (0.4375, 0.6875), (0.8125, 0.5625), (0.3125, 0.1875),
                       (0.1875, 0.8125), (0.0625, 0.4375), (0.6875, 0.9375), (0.9375, 0.0625)],
                      dtype=F32)  # 8-rooks sub-pixel pattern (column, row offsets)


def _dot(a, b):
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _smoothstep(edge0, edge1, x):
    u = np.minimum(np.maximum((x - edge0) / (edge1 - edge0), F32(0)), F32(1))
    return u * u * (3 - 2 * u)


# --- Lights ------------------------------------------------------------------------------------

@dataclass
class Light:
    position: np.ndarray   # (3,) world coordinates
    intensity: float
    penumbra: float        # growth of the shadow's half-width per unit of distance to the occluder
    name: str = ""


#: CLEVR's three lamps (name, position, intensity, penumbra) before the per-image jitter.
BASE_LIGHTS = (
    ("key", (6.45, -2.91, 4.26), 0.52, 0.07),    # right of, in front of and above the view
    ("fill", (-4.67, -4.01, 3.01), 0.24, 0.10),  # from the left
    ("back", (-1.17, 2.64, 5.82), 0.30, 0.09),   # from behind
)


def sample_lights(rng: np.random.Generator) -> list[Light]:
    """Key, fill and back light, each position jittered by uniform(-1, 1) per axis."""
    return [Light(np.add(pos, rng.uniform(-1.0, 1.0, size=3)), intensity, pen, name)
            for name, pos, intensity, pen in BASE_LIGHTS]


def _strength(light: Light, dist):
    """Intensity of ``light`` at distances ``dist``: a gentle falloff, equal to the nominal
    intensity at the scene's centre."""
    d0 = FALLOFF_DIST ** 2
    at_centre = d0 + float(np.dot(light.position, light.position))
    return (light.intensity * at_centre) / (d0 + dist * dist)


# --- Solids: the objects as geometry -----------------------------------------------------------

@dataclass(frozen=True)
class Solid:
    shape: str
    center: tuple[float, float, float]
    radius: float   # footprint (bounding) radius r
    half: float     # half-height: sphere r, cylinder r, cube r / sqrt(2) (its half-side)
    cos: float      # of the rotation about z
    sin: float
    albedo: tuple[float, float, float]
    metal: bool

    def local(self, x, y):
        """Rotate horizontal components into the solid's own frame."""
        return self.cos * x + self.sin * y, self.cos * y - self.sin * x


_SIGNS = np.array([(i, j, k) for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)


def solids_from_objects(objects: list[dict]) -> list[Solid]:
    solids = []
    for obj in objects:
        theta = np.radians(obj.get("rotation", 0.0))
        solids.append(Solid(
            shape=obj["shape"], center=tuple(float(c) for c in obj["3d_coords"]),
            radius=SIZE_RADIUS[obj["size"]], half=half_extent(obj["shape"], obj["size"]),
            cos=float(np.cos(theta)), sin=float(np.sin(theta)),
            albedo=tuple(c / 255 for c in COLOR_RGB[obj["color"]]),
            metal=obj["material"] == "metal"))
    return solids


def intersect(s: Solid, origin, d) -> np.ndarray:
    """Distance along unit rays ``d`` from ``origin`` (outside ``s``) to ``s``; inf for a miss.

    Cylinders need no bottom cap: no ray from z >= 0 outside the solid reaches it first.
    """
    ox, oy, oz = (origin[i] - s.center[i] for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        if s.shape == "sphere":
            b = ox * d[0] + oy * d[1] + oz * d[2]
            disc = b * b - (ox * ox + oy * oy + oz * oz - s.radius ** 2)
            t = -b - np.sqrt(np.maximum(disc, 0))
            return np.where((disc > 0) & (t > EPS), t, INF)
        if s.shape == "cylinder":
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


def normal(s: Solid, p) -> tuple:
    """Outward unit normal (3 arrays) at surface points ``p`` of ``s``.

    Cubes and cylinders are shaded as if their edges were rounded over BEVEL * half; the
    bevels catch the light, which is much of what makes metal cubes read as metal.
    """
    qx, qy, qz = p[0] - s.center[0], p[1] - s.center[1], p[2] - s.center[2]
    if s.shape == "sphere":
        return qx / s.radius, qy / s.radius, qz / s.radius
    inner = s.half * (1 - BEVEL)
    if s.shape == "cylinder":
        rho = np.sqrt(qx * qx + qy * qy) + F32(1e-9)
        radial = np.maximum(rho - (s.radius - s.half * BEVEL), 0) / rho
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
    """Signed distance to the surface of ``s`` of points given relative to its centre."""
    if s.shape == "sphere":
        return np.sqrt(qx * qx + qy * qy + qz * qz) - s.radius
    if s.shape == "cylinder":
        dx = np.sqrt(qx * qx + qy * qy) - s.radius
        dz = np.abs(qz) - s.half
    else:
        lx, ly = s.local(qx, qy)
        dx = np.maximum(np.abs(lx), np.abs(ly)) - s.half  # a square's distance, to first order
        dz = np.abs(qz) - s.half
    ox, oz = np.maximum(dx, 0), np.maximum(dz, 0)
    return np.minimum(np.maximum(dx, dz), 0) + np.sqrt(ox * ox + oz * oz)


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
    ext = np.array([(s.radius, s.radius, s.half) for s in solids]) + margin
    return centre[:, None, :] + _SIGNS * ext[:, None, :]


def object_boxes(camera: Camera, solids: list[Solid]) -> list[Box | None]:
    return screen_boxes(camera, _corners(solids))


def shadow_boxes(camera: Camera, lights: list[Light],
                 solids: list[Solid]) -> list[list[Box | None]]:
    """boxes[light][solid]: screen box of the region where the solid may shadow the light:
    its bounding box, grown by the widest penumbra, swept away from the light as far as
    shadows reach."""
    k = len(solids)
    reach = SHADOW_REACH[1] + 2 * np.array([s.radius for s in solids])[:, None]
    groups = []
    for lt in lights:
        grown = _corners(solids, SHADOW_W0 + lt.penumbra * SHADOW_REACH[1])  # (K, 8, 3)
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
    ext = np.array([(reach * s.radius, reach * s.radius, s.half) for s in solids])
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

def _floor_fade(p) -> np.ndarray:
    """Weight of the backdrop over the floor: 0 near the objects, 1 far away."""
    return _smoothstep(FADE_NEAR, FADE_FAR, np.sqrt(p[0] * p[0] + p[1] * p[1]))


def _sky(d) -> np.ndarray:
    """The studio seen by reflected rays that leave it: dim at the horizon, bright overhead
    (CLEVR's lamps are large area lights above the scene)."""
    return SKY_HORIZON + (SKY_ZENITH - SKY_HORIZON) * np.sqrt(np.maximum(d[2], 0))


def occluder_visibility(s: Solid, p, to_light, dist, penumbra: float) -> np.ndarray:
    """Share of a light that gets past ``s`` to points ``p`` (unit vectors ``to_light``,
    distances ``dist`` to it, shadow softness ``penumbra``): the shadow ray's point nearest
    the solid's centre, tested against its signed distance."""
    qx, qy, qz = s.center[0] - p[0], s.center[1] - p[1], s.center[2] - p[2]
    tc = np.minimum(np.maximum(qx * to_light[0] + qy * to_light[1] + qz * to_light[2], 0), dist)
    dist_to_surface = sdf(s, to_light[0] * tc - qx, to_light[1] * tc - qy, to_light[2] * tc - qz)
    # penumbra: a smoothstep over [-w, w] around the surface, w growing along the ray
    u = np.minimum(np.maximum(0.5 - dist_to_surface / (2 * SHADOW_W0 + 2 * penumbra * tc), 0), 1)
    near, far = SHADOW_REACH
    fading = np.minimum(np.maximum((far - tc) * (1 / (far - near)), 0), 1)  # 1 near, 0 far
    return 1 - u * u * (3 - 2 * u) * fading


def _shadows(light, solids, boxes, points, to_light, dist, ids) -> np.ndarray:
    """Soft visibility (H, W) of ``light`` from the visible surfaces; ``boxes``: the screen
    box of each solid's shadow volume."""
    vis = np.ones(ids.shape, F32)
    for k, (s, box) in enumerate(zip(solids, boxes)):
        if box is None:
            continue
        v = occluder_visibility(s, _view(points, box), _view(to_light, box), _view(dist, box),
                                light.penumbra)
        # an object's own dark side comes from n.l, not from here
        _view(vis, box)[...] *= np.where(_view(ids, box) == k, F32(1), v)
    return vis


def _occlusion(s: Solid, p) -> np.ndarray:
    """Ambient light left to floor points ``p`` near ``s`` (a sphere-occluder estimate)."""
    qx, qy, qz = s.center[0] - p[0], s.center[1] - p[1], s.center[2] - p[2]
    d2 = qx * qx + qy * qy + qz * qz + F32(1e-6)
    occ = (s.half ** 2) * qz / (d2 * np.sqrt(d2))
    return 1 - CONTACT_AO * np.minimum(np.maximum(occ, 0), 1)


def luminance(r, g, b):
    return 0.299 * r + 0.587 * g + 0.114 * b


def _reflection(solids, lights, owner, p, n, d) -> np.ndarray:
    """Brightness seen in the mirror direction from points ``p`` (normals ``n``, view rays
    ``d``) on metal objects ``owner``: another object, else the floor (with its contact
    shadows), else the studio. What they hit is shaded without cast shadows.

    Only the brightness is kept: the metal tints it with its own colour, so every pixel of a
    metal object keeps its named hue whatever it reflects (CLEVR's colours must stay legible).
    """
    k = 2 * _dot(d, n)
    r = d[0] - k * n[0], d[1] - k * n[1], d[2] - k * n[2]
    o = tuple(p[i] + F32(2 * EPS) * n[i] for i in range(3))
    t = ground_hit(o, r)
    hit = np.full(t.shape, -1, np.int16)
    for j, s in enumerate(solids):
        tj = np.where(owner == j, INF, intersect(s, o, r))
        closer = tj < t
        t = np.where(closer, tj, t)
        hit[closer] = j
    finite = np.isfinite(t)
    t = np.where(finite, t, 0)
    q = tuple(o[i] + r[i] * t for i in range(3))
    lum = np.array([luminance(GROUND_ALBEDO, GROUND_ALBEDO, GROUND_ALBEDO)]
                   + [luminance(*s.albedo) for s in solids], F32)
    albedo = lum[hit + 1]
    nrm = [np.zeros_like(t), np.zeros_like(t), np.ones_like(t)]
    for j in np.unique(hit[hit >= 0]):
        sel = np.flatnonzero(hit == j)
        for i, v in enumerate(normal(solids[j], [c[sel] for c in q])):
            nrm[i][sel] = v
    floor = (hit < 0) & finite
    light = AMBIENT * (AMB_BASE + (1 - AMB_BASE) * nrm[2])
    fl = np.flatnonzero(floor)
    if fl.size:  # the floor's contact shadows show in the mirror
        qf = [c[fl] for c in q]
        light[fl] *= np.prod([_occlusion(s, qf) for s in solids], axis=0)
    for lt in lights:
        lx, ly, lz = (F32(lt.position[c]) - q[c] for c in range(3))
        dist = np.sqrt(lx * lx + ly * ly + lz * lz)
        light += _strength(lt, dist) * np.maximum(nrm[0] * lx + nrm[1] * ly + nrm[2] * lz, 0) / dist
    fade = np.where(floor, _floor_fade(q), F32(1))
    return np.where(hit >= 0, albedo * light, albedo * light * (1 - fade) + _sky(r) * fade)


def shade(primary: PrimaryHits, camera: Camera, lights: list[Light]) -> np.ndarray:
    """Colour (H, W, 3) float in [0, 1] (before clipping) of every pixel's visible surface."""
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
    ambient = AMBIENT * (AMB_BASE + (1 - AMB_BASE) * normals[2])
    for s, box in zip(solids, floor_boxes(camera, solids, 3.0) if solids else []):
        if box is not None:
            av = _view(ambient, box)
            av *= np.where(_view(ids, box) < 0, _occlusion(s, _view(points, box)), F32(1))

    # objects' pixels, flattened, for the terms only they need
    on_obj = np.flatnonzero(ids >= 0)
    owner = ids.ravel()[on_obj]
    n_obj = [normals[i].ravel()[on_obj] for i in range(3)]
    v_obj = [-dirs[i].ravel()[on_obj] for i in range(3)]
    metal_table = np.array([s.metal for s in solids], bool)
    metal = metal_table[owner] if solids else np.zeros(0, bool)

    diffuse = np.zeros(ids.shape, F32)
    highlight = np.zeros(on_obj.size, F32)
    boxes = shadow_boxes(camera, lights, solids) if solids else [[]] * len(lights)
    for lt, sboxes in zip(lights, boxes):
        to_light = np.stack([F32(lt.position[i]) - points[i] for i in range(3)])  # (3, H, W)
        dist = np.sqrt(_dot(to_light, to_light))
        to_light /= dist
        lit = _shadows(lt, solids, sboxes, points, to_light, dist, ids) * _strength(lt, dist)
        ndl = _dot(normals, to_light)
        diffuse += np.maximum(ndl, 0) * lit
        # Blinn-Phong highlights on objects only; the floor is matte
        h = [to_light[i].ravel()[on_obj] + v_obj[i] for i in range(3)]
        ndh = np.maximum(_dot(n_obj, h), 0) / np.sqrt(_dot(h, h))
        lit = lit.ravel()[on_obj] * (ndl.ravel()[on_obj] > 0)
        highlight += lit * np.where(metal, METAL_SPEC * ndh ** METAL_SHINE
                                    + METAL_GLOSS * ndh ** 8, RUBBER_SPEC * ndh ** RUBBER_SHINE)

    albedo = np.array([(GROUND_ALBEDO,) * 3] + [s.albedo for s in solids], F32)  # (K+1, 3)
    light = ambient + diffuse
    colour = np.stack([np.take(albedo[:, i], ids + 1) * light for i in range(3)])  # (3, H, W)
    flat = colour.reshape(3, -1)
    for i in range(3):
        flat[i, on_obj] += highlight

    if metal.any():  # metal: a tinted mirror (Schlick: whiter at grazing angles) over a dim body
        m = np.flatnonzero(metal)
        idx, who = on_obj[m], owner[m]
        n, d = [c[m] for c in n_obj], [-c[m] for c in v_obj]
        p = [points[i].ravel()[idx] for i in range(3)]
        mirror = _reflection(solids, lights, who, p, n, d)
        grazing = (1 - np.minimum(np.maximum(-_dot(d, n), 0), 1)) ** 5
        body = light.ravel()[idx]
        for i in range(3):
            tint = albedo[who + 1, i]
            fresnel = METAL_SHEEN + (1 - METAL_SHEEN) * (tint + (1 - tint) * grazing)
            flat[i, idx] = (METAL_DIFFUSE * tint * body + METAL_REFLECT * fresnel * mirror
                            + highlight[m] * (0.5 + 0.5 * tint))

    fade = np.where(finite, _floor_fade(points), F32(1))
    fade = np.where(ids < 0, fade, F32(0))
    colour = colour * (1 - fade) + BACKDROP * fade
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
                 antialias: bool = True, primary: PrimaryHits | None = None) -> RenderResult:
    """Draw a scene. ``primary`` may pass the ``trace_primary(objects, camera)`` already
    computed (the visibility check does), to skip tracing it again."""
    if primary is None:
        primary = trace_primary(objects, camera)
    image = shade(primary, camera, lights)
    if antialias:
        image = antialias_edges(image, primary, camera)
    image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return RenderResult(image, primary.object_id.copy(), primary.visible_pixels())
