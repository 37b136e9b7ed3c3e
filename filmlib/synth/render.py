"""A fast numpy ray caster that draws SynthCLEVR scenes in CLEVR's look.

One ray per pixel finds the visible surface: the ground plane analytically for every pixel,
each object only inside the screen box its 3D bounding box projects to. Shading is CLEVR's
studio: a matte light-gray floor fading into a gray backdrop, three point lights (key, fill,
back) plus a sky-like ambient term, soft shadows, matte rubber and mirror-like metal.

Three shortcuts keep it within a few milliseconds per small image on one core:

- Soft shadows are analytic. For a light and an occluder, the shadow ray's point closest to
  the occluder's centre is tested against the occluder's signed distance; a smoothstep whose
  width grows with the distance along the ray turns that into a penumbra. Only pixels inside
  the screen box of the occluder's shadow volume are tested.
- Anti-aliasing is by coverage: only pixels whose object id differs from a neighbour's get
  extra rays, and those rays are only intersected (not shaded); each sub-sample borrows the
  colour of a neighbouring pixel that sees the same surface.
- Metal reflections trace one bounce, shading what they hit without shadows.

Arrays of vectors are (3, N) float32: one row per axis, one column per ray.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .attributes import COLOR_RGB, SIZE_RADIUS, half_extent
from .camera import Camera

F32 = np.float32
EPS = 1e-3
BEVEL = 0.1             # rounded-edge width of cubes and cylinders, as a fraction of half-height

# Studio constants (display-referred values in [0, 1]).
GROUND_ALBEDO = 0.57
AMBIENT = 0.42          # sky-like ambient, scaled by (AMB_BASE + (1 - AMB_BASE) * n_z)
AMB_BASE = 0.55
BACKDROP = 0.42         # the gray the far floor fades into (and rays that miss it)
SKY_HORIZON, SKY_ZENITH = 0.2, 1.6   # the studio as metal reflects it
FALLOFF_DIST = 15.0      # lights dim as 1 / (FALLOFF_DIST^2 + d^2)
FADE_NEAR, FADE_FAR = 7.0, 20.0   # floor fades into the backdrop between these ground radii
SHADOW_W0 = 0.02        # penumbra half-width at the occluder
CONTACT_AO = 0.85       # strength of the darkening of the floor under objects
RUBBER_SPEC, RUBBER_SHINE = 0.07, 10.0
METAL_SPEC, METAL_SHINE = 1.1, 90.0
METAL_GLOSS = 0.4
METAL_REFLECT, METAL_DIFFUSE = 0.7, 0.1
METAL_SHEEN = 0.12      # untinted share of the mirror reflection
AA_OFFSETS = np.array([(0.5625, 0.3125), (0.4375, 0.6875), (0.8125, 0.5625), (0.3125, 0.1875),
                       (0.1875, 0.8125), (0.0625, 0.4375), (0.6875, 0.9375), (0.9375, 0.0625)],
                      dtype=F32)  # 8-rooks sub-pixel pattern (column, row offsets)


# --- Lights ----------------------------------------------------------------------------------

@dataclass
class Light:
    position: np.ndarray   # (3,) world coordinates
    intensity: float
    penumbra: float        # growth of the shadow's half-width per unit of distance to the occluder
    name: str = ""


#: CLEVR's three lamps (name, position, intensity, penumbra), before per-image jitter.
BASE_LIGHTS = (
    ("key", (6.45, -2.91, 4.26), 0.52, 0.07),   # right of, in front of and above the camera's view
    ("fill", (-4.67, -4.01, 3.01), 0.24, 0.10),  # from the left
    ("back", (-1.17, 2.64, 5.82), 0.30, 0.09),   # from behind
)


def sample_lights(rng: np.random.Generator) -> list[Light]:
    """Key, fill and back light, each position jittered by uniform(-1, 1) per axis."""
    return [Light(np.add(pos, rng.uniform(-1.0, 1.0, size=3)), intensity, pen, name)
            for name, pos, intensity, pen in BASE_LIGHTS]


# --- Solids: the objects as geometry -----------------------------------------------------------

@dataclass(frozen=True)
class Solid:
    shape: str
    center: np.ndarray   # (3, 1) float32
    radius: float        # footprint (bounding) radius r
    half: float          # half-height: sphere r, cylinder r, cube r / sqrt(2) (its half-side)
    cos: float
    sin: float
    albedo: np.ndarray   # (3, 1) float32 in [0, 1]
    metal: bool

    def corners(self, margin: float = 0.0) -> np.ndarray:
        """The 8 corners (8, 3) of the axis-aligned bounding box, grown by ``margin``."""
        c = self.center[:, 0].astype(np.float64)
        ext = np.array([self.radius, self.radius, self.half]) + margin
        signs = np.array([(i, j, k) for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])
        return c + signs * ext


def solids_from_objects(objects: list[dict]) -> list[Solid]:
    solids = []
    for obj in objects:
        theta = np.radians(obj.get("rotation", 0.0))
        solids.append(Solid(
            shape=obj["shape"], center=np.asarray(obj["3d_coords"], F32)[:, None],
            radius=SIZE_RADIUS[obj["size"]], half=half_extent(obj["shape"], obj["size"]),
            cos=float(np.cos(theta)), sin=float(np.sin(theta)),
            albedo=(np.asarray(COLOR_RGB[obj["color"]], F32) / 255)[:, None],
            metal=obj["material"] == "metal"))
    return solids


def _to_local(s: Solid, v: np.ndarray) -> np.ndarray:
    """Rotate (3, N) vectors into the cube's frame (by -rotation about z)."""
    x, y = v[0], v[1]
    return np.stack([s.cos * x + s.sin * y, -s.sin * x + s.cos * y, v[2]])


def intersect(s: Solid, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance (N,) along unit rays to the first hit on ``s``; inf for a miss.

    ``origin`` is (3, 1) or (3, N) and outside the solid. Cylinders need no bottom cap: no ray
    starting at z >= 0 outside the solid can reach it first.
    """
    oc = origin - s.center
    inf = F32(np.inf)
    if s.shape == "sphere":
        b = (oc * dirs).sum(0)
        disc = b * b - ((oc * oc).sum(0) - F32(s.radius ** 2))
        t = -b - np.sqrt(np.maximum(disc, 0))
        return np.where((disc > 0) & (t > EPS), t, inf)
    if s.shape == "cylinder":
        dx, dy, dz = dirs
        ox, oy, oz = np.broadcast_to(oc, dirs.shape)
        a = dx * dx + dy * dy + F32(1e-12)
        b = ox * dx + oy * dy
        disc = b * b - a * (ox * ox + oy * oy - F32(s.radius ** 2))
        t_side = (-b - np.sqrt(np.maximum(disc, 0))) / a
        z_side = oz + t_side * dz
        side = (disc > 0) & (t_side > EPS) & (np.abs(z_side) <= s.half)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_top = (F32(s.half) - oz) / dz
        hx, hy = ox + t_top * dx, oy + t_top * dy
        top = (dz < 0) & (t_top > EPS) & (hx * hx + hy * hy <= F32(s.radius ** 2))
        return np.where(side, t_side, np.where(top, t_top, inf))
    # cube: slabs in the rotated frame
    o, d = _to_local(s, np.broadcast_to(oc, dirs.shape)), _to_local(s, dirs)
    d = np.where(np.abs(d) < 1e-9, F32(1e-9), d)
    lo, hi = (-F32(s.half) - o) / d, (F32(s.half) - o) / d
    t_near = np.minimum(lo, hi).max(0)
    t_far = np.maximum(lo, hi).min(0)
    return np.where((t_near <= t_far) & (t_near > EPS), t_near, inf)


def normal(s: Solid, points: np.ndarray) -> np.ndarray:
    """Outward unit normals (3, N) at surface points (3, N) of ``s``.

    Cubes and cylinders are shaded as if their edges were rounded over a width BEVEL * half
    (CLEVR's meshes are bevelled; the bevels catch light, which shows metal for what it is).
    """
    q = points - s.center
    if s.shape == "sphere":
        return q / F32(s.radius)
    inner = F32(s.half * (1 - BEVEL))
    if s.shape == "cylinder":
        rho = np.sqrt(q[0] * q[0] + q[1] * q[1]) + F32(1e-9)
        radial = np.maximum(rho - F32(s.radius - s.half * BEVEL), 0) / rho
        n = np.stack([q[0] * radial, q[1] * radial, np.maximum(q[2] - inner, 0)])
    else:
        local = _to_local(s, q)
        n_local = np.sign(local) * np.maximum(np.abs(local) - inner, 0)
        c, si = s.cos, s.sin  # rotate back by +rotation
        n = np.stack([c * n_local[0] - si * n_local[1], si * n_local[0] + c * n_local[1],
                      n_local[2]])
    return n / np.maximum(np.sqrt((n * n).sum(0)), F32(1e-12))


def sdf(s: Solid, points: np.ndarray) -> np.ndarray:
    """Signed distance (N,) from points (3, N) to the surface of ``s`` (negative inside)."""
    q = points - s.center
    if s.shape == "sphere":
        return np.sqrt((q * q).sum(0)) - F32(s.radius)
    if s.shape == "cylinder":
        dx = np.sqrt(q[0] * q[0] + q[1] * q[1]) - F32(s.radius)
        dz = np.abs(q[2]) - F32(s.half)
        return (np.minimum(np.maximum(dx, dz), 0)
                + np.sqrt(np.maximum(dx, 0) ** 2 + np.maximum(dz, 0) ** 2))
    d = np.abs(_to_local(s, q)) - F32(s.half)
    return np.sqrt((np.maximum(d, 0) ** 2).sum(0)) + np.minimum(d.max(0), 0)


def _smoothstep(edge0, edge1, x):
    u = np.clip((x - edge0) / (edge1 - edge0), 0, 1)
    return u * u * (3 - 2 * u)


# --- Screen-space boxes ----------------------------------------------------------------------

Box = tuple[int, int, int, int]  # (col0, col1, row0, row1), half-open, clipped to the image


def screen_box(camera: Camera, points: np.ndarray, pad: int = 1) -> Box | None:
    """Screen rectangle covering world points (M, 3); None if it misses the image."""
    proj = camera.project(points)
    if (proj[:, 2] <= 1e-3).any():  # a point behind the camera: anything may be covered
        return (0, camera.width, 0, camera.height)
    c0 = max(int(np.floor(proj[:, 0].min())) - pad, 0)
    c1 = min(int(np.ceil(proj[:, 0].max())) + pad, camera.width)
    r0 = max(int(np.floor(proj[:, 1].min())) - pad, 0)
    r1 = min(int(np.ceil(proj[:, 1].max())) + pad, camera.height)
    return (c0, c1, r0, r1) if c0 < c1 and r0 < r1 else None


def shadow_box(camera: Camera, light: Light, s: Solid) -> Box | None:
    """Screen box of the region where ``s`` may shadow ``light``: its (grown) bounding box and
    that box's projection from the light onto the ground."""
    lp = np.asarray(light.position, np.float64)

    def cast(corners):
        height = lp[2] - corners[:, 2:3]
        if (height < 0.05).any():
            return None
        return lp + (corners - lp) * (lp[2] / height)  # on z = 0

    ground = cast(s.corners())
    if ground is None:
        return (0, camera.width, 0, camera.height)
    reach = np.linalg.norm(ground - s.corners(), axis=1).max() + 2 * s.radius
    grown = s.corners(SHADOW_W0 + light.penumbra * reach)
    ground = cast(grown)
    if ground is None:
        return (0, camera.width, 0, camera.height)
    return screen_box(camera, np.concatenate([grown, ground]))


def ground_box(camera: Camera, s: Solid, reach: float) -> Box | None:
    """Screen box of the floor within ``reach`` (xy) of ``s``'s centre."""
    c = s.center[:, 0].astype(np.float64)
    pts = np.array([(c[0] + i * reach, c[1] + j * reach, 0.0) for i in (-1, 1) for j in (-1, 1)])
    return screen_box(camera, np.concatenate([pts, s.corners()]))


# --- Pixel sets: the rays of one pass, with a fast "which rays fall in this box" -------------

class PixelGrid:
    """All pixel centres of the image, flattened row-major."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        rows, cols = np.divmod(np.arange(width * height, dtype=np.int64), width)
        self.cols, self.rows = cols.astype(F32) + 0.5, rows.astype(F32) + 0.5

    def select(self, box: Box | None) -> np.ndarray:
        if box is None:
            return np.empty(0, np.int64)
        c0, c1, r0, r1 = box
        return (np.arange(r0, r1)[:, None] * self.width + np.arange(c0, c1)).ravel()


class SubPixels:
    """Several sub-pixel rays inside each of some pixels (flattened pixel-major)."""

    def __init__(self, pix_rows: np.ndarray, pix_cols: np.ndarray, offsets: np.ndarray):
        self.pix_rows, self.pix_cols, self.n_sub = pix_rows, pix_cols, len(offsets)
        self.cols = (pix_cols[:, None] + offsets[:, 0]).ravel().astype(F32)
        self.rows = (pix_rows[:, None] + offsets[:, 1]).ravel().astype(F32)

    def select(self, box: Box | None) -> np.ndarray:
        if box is None:
            return np.empty(0, np.int64)
        c0, c1, r0, r1 = box
        inside = np.flatnonzero((self.pix_cols >= c0) & (self.pix_cols < c1)
                                & (self.pix_rows >= r0) & (self.pix_rows < r1))
        return (inside[:, None] * self.n_sub + np.arange(self.n_sub)).ravel()


def ground_hit(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance (N,) to the plane z = 0; inf for rays that do not go down."""
    with np.errstate(divide="ignore"):
        t = -origin[2] / dirs[2]
    return np.where((dirs[2] < 0) & (t > 0), t, F32(np.inf)).astype(F32)


def trace(solids: list[Solid], boxes: list[Box | None], origin: np.ndarray, dirs: np.ndarray,
          pixels) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit (t (N,), object id (N,) int16, -1 = floor or nothing) of camera rays."""
    t = ground_hit(origin, dirs)
    ids = np.full(t.shape, -1, np.int16)
    for k, (s, box) in enumerate(zip(solids, boxes)):
        idx = pixels.select(box)
        if idx.size == 0:
            continue
        tk = intersect(s, origin, dirs[:, idx])
        closer = tk < t[idx]
        t[idx[closer]] = tk[closer]
        ids[idx[closer]] = k
    return t, ids


# --- The primary pass (also the cheap visibility pass) ---------------------------------------

@dataclass
class PrimaryHits:
    solids: list[Solid]
    boxes: list[Box | None]   # screen box of each object
    pixels: PixelGrid
    dirs: np.ndarray          # (3, H*W) unit view rays
    t: np.ndarray             # (H*W,) distance to the visible surface (inf: nothing)
    ids: np.ndarray           # (H*W,) int16 object id, -1 = floor/backdrop

    @property
    def object_id(self) -> np.ndarray:
        return self.ids.reshape(self.pixels.height, self.pixels.width)

    def visible_pixels(self) -> np.ndarray:
        return np.bincount(self.ids[self.ids >= 0], minlength=len(self.solids))[:len(self.solids)]


def trace_primary(objects: list[dict], camera: Camera) -> PrimaryHits:
    solids = solids_from_objects(objects)
    boxes = [screen_box(camera, s.corners()) for s in solids]
    pixels = PixelGrid(camera.width, camera.height)
    dirs = camera.rays(pixels.cols, pixels.rows)
    t, ids = trace(solids, boxes, _camera_origin(camera), dirs, pixels)
    return PrimaryHits(solids, boxes, pixels, dirs, t, ids)


def object_id_map(objects: list[dict], camera: Camera) -> np.ndarray:
    """(H, W) int16 id of the object each pixel centre sees, -1 for floor/backdrop."""
    return trace_primary(objects, camera).object_id


def _camera_origin(camera: Camera) -> np.ndarray:
    return np.asarray(camera.position, F32)[:, None]


# --- Shading -----------------------------------------------------------------------------------

def _floor_fade(points: np.ndarray) -> np.ndarray:
    """Weight (N,) of the backdrop over the floor: 0 near the objects, 1 far away."""
    rho = np.sqrt(points[0] ** 2 + points[1] ** 2)
    return _smoothstep(FADE_NEAR, FADE_FAR, rho)


def _sky(dirs: np.ndarray) -> np.ndarray:
    """Studio environment (N,) seen by reflected rays that leave it: dim at the horizon,
    bright overhead (CLEVR's lamps are large area lights above the scene)."""
    return SKY_HORIZON + (SKY_ZENITH - SKY_HORIZON) * np.sqrt(np.clip(dirs[2], 0, 1))


def _shadow(light: Light, solids, sboxes, points, to_light, dist, ids, pixels) -> np.ndarray:
    """Soft visibility (N,) of ``light`` from surface points (3, N)."""
    vis = np.ones(points.shape[1], F32)
    for k, s in enumerate(solids):
        idx = pixels.select(sboxes[k])
        idx = idx[ids[idx] != k]  # an object's own dark side comes from n.l, not from here
        if idx.size == 0:
            continue
        vis[idx] *= _occluder_visibility(light, s, points[:, idx], to_light[:, idx], dist[idx])
    return vis


def _occluder_visibility(light: Light, s: Solid, p: np.ndarray, l: np.ndarray,
                         dist: np.ndarray) -> np.ndarray:
    """How much of ``light`` (N,) reaches points p (3, N) past ``s``; l: unit vectors to the
    light, dist: distances to it. Tests the shadow ray's point nearest the solid's centre."""
    tc = np.clip(((s.center - p) * l).sum(0), 0, dist)
    w = SHADOW_W0 + F32(light.penumbra) * tc
    return _smoothstep(-w, w, sdf(s, p + l * tc))


def _occlusion(s: Solid, floor_points: np.ndarray) -> np.ndarray:
    """Ambient light (N,) left to floor points (3, N) near ``s`` (a sphere-occluder estimate)."""
    q = s.center - floor_points
    d2 = (q * q).sum(0) + F32(1e-6)
    occ = F32(s.half ** 2) * q[2] / (d2 * np.sqrt(d2))
    return 1 - CONTACT_AO * np.clip(occ, 0, 1)


def _floor_occlusion(solids, camera, points, ids, pixels) -> np.ndarray:
    """Ambient occlusion (N,) of the visible floor by nearby objects."""
    ao = np.ones(points.shape[1], F32)
    for s in solids:
        idx = pixels.select(ground_box(camera, s, 3.0 * s.radius))
        idx = idx[ids[idx] < 0]
        if idx.size:
            ao[idx] *= _occlusion(s, points[:, idx])
    return ao


def _strength(light: Light, dist: np.ndarray) -> np.ndarray:
    """Intensity (N,) of ``light`` at distances ``dist``: a gentle falloff, normalised to
    the nominal intensity at the scene's centre."""
    d0 = F32(FALLOFF_DIST ** 2)
    at_centre = F32(np.dot(light.position, light.position))
    return F32(light.intensity) * (d0 + at_centre) / (d0 + dist * dist)


def _direct(lights, points, normals) -> np.ndarray:
    """Unshadowed ambient + Lambert (N,), for the points that reflections hit."""
    light = AMBIENT * (AMB_BASE + (1 - AMB_BASE) * normals[2])
    for lt in lights:
        l = np.asarray(lt.position, F32)[:, None] - points
        dist = np.sqrt((l * l).sum(0))
        light = light + _strength(lt, dist) * np.maximum((normals * l).sum(0), 0) / dist
    return light


def _reflection(solids, lights, owner, points, normals, dirs) -> np.ndarray:
    """Colour (3, M) seen in the mirror direction from points (3, M) on metal objects
    ``owner`` (M,): the other objects, else the floor (with contact shadows), else the studio."""
    refl = dirs - 2 * (dirs * normals).sum(0) * normals
    origin = points + F32(EPS * 2) * normals
    t = ground_hit(origin, refl)
    hit = np.full(t.shape, -1, np.int16)
    for j, s in enumerate(solids):
        rays = np.flatnonzero(owner != j)
        if rays.size == 0:
            continue
        tj = intersect(s, origin[:, rays], refl[:, rays])
        closer = tj < t[rays]
        t[rays[closer]], hit[rays[closer]] = tj[closer], j
    finite = np.isfinite(t)
    p = origin + refl * np.where(finite, t, 0)
    n = np.zeros_like(p)
    n[2] = 1
    albedo = np.full_like(p, GROUND_ALBEDO)
    for j in np.unique(hit[hit >= 0]):
        sel = np.flatnonzero(hit == j)
        n[:, sel] = normal(solids[j], p[:, sel])
        albedo[:, sel] = solids[j].albedo
    colour = albedo * _direct(lights, p, n)
    floor = np.flatnonzero((hit < 0) & finite)
    if floor.size:  # the floor's contact shadows and key-light shadows show in the mirror
        fp = p[:, floor]
        key = lights[0]
        to_key = np.asarray(key.position, F32)[:, None] - fp
        dist = np.sqrt((to_key * to_key).sum(0))
        to_key /= dist
        lit = _strength(key, dist) * to_key[2]
        vis = np.ones(floor.size, F32)
        for s in solids:
            colour[:, floor] *= _occlusion(s, fp)
            vis *= _occluder_visibility(key, s, fp, to_key, dist)
        colour[:, floor] -= GROUND_ALBEDO * lit * (1 - vis)
    fade = np.where(finite, _floor_fade(p), 1)
    return np.where(hit < 0, colour * (1 - fade) + _sky(refl) * fade, colour)


def shade(primary: PrimaryHits, camera: Camera, lights: list[Light]) -> np.ndarray:
    """Colour (3, H*W) in [0, 1] of every pixel's visible surface."""
    solids, pixels, dirs, ids = primary.solids, primary.pixels, primary.dirs, primary.ids
    finite = np.isfinite(primary.t)
    origin = _camera_origin(camera)
    points = origin + dirs * np.where(finite, primary.t, F32(1e3))
    n_pix = ids.shape[0]

    normals = np.zeros((3, n_pix), F32)
    normals[2] = 1
    albedo = np.full((3, n_pix), GROUND_ALBEDO, F32)
    members = []  # pixel indices that see each object
    for k, (s, box) in enumerate(zip(solids, primary.boxes)):
        idx = pixels.select(box)
        idx = idx[ids[idx] == k]
        members.append(idx)
        if idx.size:
            normals[:, idx] = normal(s, points[:, idx])
            albedo[:, idx] = s.albedo

    ambient = AMBIENT * (AMB_BASE + (1 - AMB_BASE) * normals[2])
    ambient *= _floor_occlusion(solids, camera, points, ids, pixels)
    diffuse = np.zeros(n_pix, F32)
    on_obj = np.flatnonzero(ids >= 0)
    metal = np.array([s.metal for s in solids] + [False])[ids[on_obj]]
    specular = np.zeros(on_obj.size, F32)
    view = -dirs[:, on_obj]
    for lt in lights:
        to_light = np.asarray(lt.position, F32)[:, None] - points
        dist = np.sqrt((to_light * to_light).sum(0))
        to_light /= dist
        sboxes = [shadow_box(camera, lt, s) for s in solids]
        vis = _shadow(lt, solids, sboxes, points, to_light, dist, ids, pixels)
        ndl = (normals * to_light).sum(0)
        strength = _strength(lt, dist)
        diffuse += strength * np.maximum(ndl, 0) * vis
        # Blinn-Phong highlight on objects only; the floor is matte
        h = to_light[:, on_obj] + view
        h /= np.sqrt((h * h).sum(0))
        ndh = np.maximum((normals[:, on_obj] * h).sum(0), 0)
        lit = strength[on_obj] * vis[on_obj] * (ndl[on_obj] > 0)
        specular += lit * np.where(metal, METAL_SPEC * ndh ** METAL_SHINE + METAL_GLOSS * ndh ** 8,
                                   RUBBER_SPEC * ndh ** RUBBER_SHINE)

    highlight = np.zeros(n_pix, F32)
    highlight[on_obj] = specular
    colour = albedo * (ambient + diffuse) + highlight
    shiny = [k for k, s in enumerate(solids) if s.metal and members[k].size]
    if shiny:  # metal: a tinted mirror (Schlick: whiter at grazing angles) over a dim body
        idx = np.concatenate([members[k] for k in shiny])
        owner = np.repeat(shiny, [members[k].size for k in shiny])
        d, n = dirs[:, idx], normals[:, idx]
        mirror = _reflection(solids, lights, owner, points[:, idx], n, d)
        tint = albedo[:, idx]
        fresnel = tint + (1 - tint) * (1 - np.clip(-(d * n).sum(0), 0, 1)) ** 5
        colour[:, idx] = (METAL_DIFFUSE * albedo[:, idx] * (ambient[idx] + diffuse[idx])
                          + METAL_REFLECT * (METAL_SHEEN + (1 - METAL_SHEEN) * fresnel) * mirror
                          + highlight[idx] * (0.5 + 0.5 * tint))

    floor = ids < 0
    fade = np.where(finite, _floor_fade(points), 1)[floor]
    colour[:, floor] = colour[:, floor] * (1 - fade) + F32(BACKDROP) * fade
    return colour


# --- Anti-aliasing -----------------------------------------------------------------------------

def antialias_edges(image: np.ndarray, primary: PrimaryHits, camera: Camera) -> np.ndarray:
    """Re-sample silhouette pixels of ``image`` (H, W, 3) float by sub-pixel coverage."""
    height, width = primary.pixels.height, primary.pixels.width
    ids = primary.object_id
    pad = np.pad(ids, 1, mode="edge")
    edge = ((pad[1:-1, 2:] != ids) | (pad[1:-1, :-2] != ids)
            | (pad[2:, 1:-1] != ids) | (pad[:-2, 1:-1] != ids))
    rows, cols = np.nonzero(edge)
    if rows.size == 0:
        return image
    subs = SubPixels(rows, cols, AA_OFFSETS)
    dirs = camera.rays(subs.cols, subs.rows)
    _, sub_ids = trace(primary.solids, primary.boxes, _camera_origin(camera), dirs, subs)
    sub_ids = sub_ids.reshape(rows.size, subs.n_sub)  # (E, S)

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


# --- Public entry point --------------------------------------------------------------------------

@dataclass
class RenderResult:
    image: np.ndarray           # (H, W, 3) uint8 RGB
    object_id: np.ndarray       # (H, W) int16, -1 = floor/backdrop
    visible_pixels: np.ndarray  # (n_objects,) pixels whose centre sees each object


def render_scene(objects: list[dict], camera: Camera, lights: list[Light], *,
                 antialias: bool = True, primary: PrimaryHits | None = None) -> RenderResult:
    """Draw a scene. ``primary`` may pass a ``trace_primary`` result computed for the same
    objects and camera, to skip tracing them again."""
    if primary is None:
        primary = trace_primary(objects, camera)
    colour = shade(primary, camera, lights)  # (3, H*W)
    image = colour.T.reshape(camera.height, camera.width, 3)
    if antialias:
        image = antialias_edges(image, primary, camera)
    image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return RenderResult(image, primary.object_id.copy(), primary.visible_pixels())
