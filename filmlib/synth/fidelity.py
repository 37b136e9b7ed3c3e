"""How close SynthCLEVR's renderer comes to real CLEVR images.

Any CLEVR scene record can be drawn as its image was taken: the jittered camera is recovered
from the objects' ``3d_coords`` and ``pixel_coords`` (:func:`~filmlib.synth.camera.fit_camera`),
so the render lines up with the real picture pixel for pixel and the two can be compared
directly. The figures (:func:`compare`):

- ``mad``: mean absolute difference over the whole image, in levels of 255;
- per object, the mean colour inside the object (the real image inside the real outline when
  one is given, else both inside the rendered mask) and their absolute difference per channel;
- per object, its pixel area in both images, when the real outlines are given.

The real outlines come from :func:`outline_objects`: the rendered mask seeds it, the real
image decides each pixel near the silhouette. ``filmlib/reference/`` ships two real CLEVR
images with their scene records and stored outlines, the calibration pair the renderer was
tuned on (:func:`load_reference`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .camera import fit_camera
from .render import BASE_LIGHTS, STUDIO, Light, RenderResult, Studio, render_scene  # noqa: F401

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"
REFERENCE_SCENES = "CLEVR_val_scenes_3_10.json"


def base_lights() -> list[Light]:
    """CLEVR's three lamps without the per-image jitter (a real image's jitter is unknown)."""
    return [Light(np.array(pos, float), intensity, pen, name)
            for name, pos, intensity, pen in BASE_LIGHTS]


def render_record(scene: dict, width: int = 480, height: int = 320, *,
                  record_size: tuple[int, int] = (480, 320), lights: list[Light] | None = None,
                  studio: Studio = STUDIO) -> tuple[RenderResult, object]:
    """Draw a CLEVR scene record at ``width`` x ``height`` through the camera that took it,
    fitted from its objects' ``pixel_coords`` in the record's own image of ``record_size``
    (480x320 for the real CLEVR; a SynthCLEVR file's ``info.synthclevr`` gives its size,
    see :func:`record_size`). Returns the render and the camera."""
    objects = scene.get("objects")
    if not objects:
        raise ValueError(f"scene {scene.get('image_filename', '?')} has no objects to fit "
                         "the camera to")
    for k, obj in enumerate(objects):
        missing = {"shape", "color", "material", "size", "3d_coords", "pixel_coords"} - set(obj)
        if missing:
            raise ValueError(f"scene {scene.get('image_filename', '?')}: object {k} lacks "
                             f"{sorted(missing)}")
    try:
        fitted = fit_camera([o["3d_coords"] for o in objects],
                            [o["pixel_coords"] for o in objects], *record_size)
    except ValueError as e:
        raise ValueError(f"scene {scene.get('image_filename', '?')}: {e}") from None
    camera = dataclasses.replace(fitted, width=width, height=height)
    lights = lights if lights is not None else base_lights()
    return render_scene(objects, camera, lights, studio=studio), camera


def record_size(info: dict) -> tuple[int, int]:
    """The image size a scenes file's ``pixel_coords`` are stated at (see
    :func:`filmlib.data.scene_maps.scene_size`)."""
    from ..data.scene_maps import scene_size
    return scene_size(info)


# --- Outlining the objects of a real image -------------------------------------------------------

def _shift(a: np.ndarray, dr: int, dc: int, fill) -> np.ndarray:
    out = np.full_like(a, fill)
    h, w = a.shape[:2]
    out[max(dr, 0):h + min(dr, 0), max(dc, 0):w + min(dc, 0)] = \
        a[max(-dr, 0):h + min(-dr, 0), max(-dc, 0):w + min(-dc, 0)]
    return out


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    for _ in range(steps):
        mask = (mask | _shift(mask, 1, 0, False) | _shift(mask, -1, 0, False)
                | _shift(mask, 0, 1, False) | _shift(mask, 0, -1, False))
    return mask


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    return ~_dilate(~mask, steps)


def outline_objects(real: np.ndarray, object_id: np.ndarray, band: int = 4,
                    smooth: int = 2) -> np.ndarray:
    """Labels (H, W) int16 of the objects in a real image: k for object k, -1 for the floor.

    ``object_id`` is the render of the same scene record (it places each object to within a
    pixel or two). Pixels more than ``band`` pixels inside a rendered object keep its label,
    pixels more than ``band`` outside every object are floor; each pixel in between goes to
    whichever of its candidates (the objects whose band holds it, and the floor) has the
    nearest colour model: the mean and covariance of the real pixels in the object's sure
    interior, or of the floor in a ring just outside the band. ``smooth`` passes of a 3x3
    majority filter then remove single stray pixels.
    """
    img = np.asarray(real, np.float64)[..., :3]
    height, width = object_id.shape
    if img.shape[:2] != (height, width):
        raise ValueError(f"real image is {img.shape[1]}x{img.shape[0]}, the render "
                         f"{width}x{height}")
    n = int(object_id.max()) + 1
    masks = [object_id == k for k in range(n)]
    anywhere = object_id >= 0
    near = _dilate(anywhere, band)
    ring = _dilate(anywhere, band + 6) & ~near
    models = []                                          # (mean, inverse covariance, log det)
    for pixels in [img[ring]] + [img[_erode(m, band)] if _erode(m, band).sum() >= 20 else img[m]
                                 for m in masks]:
        if len(pixels) < 4:
            models.append(None)
            continue
        mean = pixels.mean(0)
        cov = np.cov(pixels.T) + np.eye(3) * 4.0        # a floor of 2 levels' spread
        models.append((mean, np.linalg.inv(cov), np.linalg.slogdet(cov)[1]))

    def cost(model, px, shade=False):
        mean, inv, logdet = model
        if shade:  # the floor in shadow: the floor's colour, darkened
            scale = np.clip(px @ mean / (mean @ mean), 0.25, 1.0)[:, None]
            d = px - scale * mean
        else:
            d = px - mean
        return np.einsum("...i,ij,...j->...", d, inv, d) + logdet

    labels = np.where(anywhere, object_id, -1).astype(np.int16)
    sure = [_erode(m, band) for m in masks]
    undecided = near & ~np.any(sure, axis=0) if n else np.zeros_like(near)
    rows, cols = np.nonzero(undecided)
    px = img[rows, cols]
    best = np.full(len(rows), np.inf)
    choice = np.full(len(rows), -1, np.int16)
    for k, model in enumerate(models):                   # k = 0 is the floor
        if model is None:
            continue
        if k == 0:
            c = cost(model, px)
        else:
            allowed = _dilate(masks[k - 1], band)[rows, cols]
            c = np.where(allowed, cost(model, px), np.inf)
            if np.ptp(model[0]) > 25 and models[0] is not None:
                # beside a coloured object, a dark grey pixel is the floor in its shadow, not
                # the object's dark side (which keeps the object's hue); beside a grey object
                # the two cannot be told apart by colour
                c_shadow = np.where(allowed, cost(models[0], px, shade=True), np.inf)
                floor_better = c_shadow < c
                c = np.where(floor_better, np.inf, c)
        better = c < best
        best[better], choice[better] = c[better], k - 1
    labels[rows, cols] = choice
    for _ in range(smooth):                              # majority of the 3x3 neighbourhood
        votes = np.stack([_shift(labels, dr, dc, -1) for dr in (-1, 0, 1) for dc in (-1, 0, 1)])
        counts = np.stack([(votes == k).sum(0) for k in range(-1, n)])
        majority = (counts.argmax(0) - 1).astype(np.int16)
        labels = np.where(undecided, majority, labels)
    return labels


# --- The figures ---------------------------------------------------------------------------------

def compare(real: np.ndarray, render: RenderResult, real_labels: np.ndarray | None = None,
            objects: list[dict] | None = None) -> dict:
    """Difference figures between a real image (H, W, 3 or 4) and the render of its record.

    Per object: the mean colour of the real image (inside ``real_labels == k`` when given,
    else inside the rendered mask) against the render's inside its own mask; with
    ``real_labels``, the pixel areas too.
    """
    real = np.asarray(real)[..., :3].astype(np.float64)
    ours = render.image.astype(np.float64)
    if real.shape != ours.shape:
        raise ValueError(f"real image is {real.shape[1]}x{real.shape[0]}, the render "
                         f"{ours.shape[1]}x{ours.shape[0]}: render at the real image's size")
    ids = render.object_id
    out = {"mad": round(float(np.abs(real - ours).mean()), 3), "objects": []}
    diffs = []
    for k in range(len(render.visible_pixels)):
        mine = ids == k
        theirs = (real_labels == k) if real_labels is not None else mine
        row = {"index": k}
        if objects is not None:
            o = objects[k]
            row["object"] = f"{o['size']} {o['color']} {o['material']} {o['shape']}"
        row["area_render"] = int(mine.sum())
        if real_labels is not None:
            row["area_real"] = int(theirs.sum())
            row["area_ratio"] = (round(row["area_render"] / row["area_real"], 3)
                                 if row["area_real"] else None)
        if mine.any() and theirs.any():
            a, b = real[theirs].mean(0), ours[mine].mean(0)
            row["colour_real"] = [round(float(v), 1) for v in a]
            row["colour_render"] = [round(float(v), 1) for v in b]
            row["colour_diff"] = round(float(np.abs(a - b).mean()), 2)
            diffs.append(row["colour_diff"])
        out["objects"].append(row)
    out["colour_diff_mean"] = round(float(np.mean(diffs)), 2) if diffs else None
    if real_labels is not None:
        ratios = [abs(r["area_ratio"] - 1) if r["area_ratio"] is not None else 1.0
                  for r in out["objects"] if r["area_real"] or r["area_render"]]
        out["area_error_max"] = round(float(max(ratios)), 3) if ratios else None
    return out


# --- The calibration pair ------------------------------------------------------------------------

@dataclass
class Reference:
    scene: dict                 # the real scene record
    image: np.ndarray           # (320, 480, 4) uint8 RGBA, as released
    labels: np.ndarray | None   # (320, 480) int16 stored outlines (-1 floor), if shipped
    path: Path


def mask_path(image_filename: str) -> Path:
    return REFERENCE_DIR / "masks" / image_filename.replace(".png", "_masks.png")


def load_labels(path: Path) -> np.ndarray:
    """Stored outlines: a grey PNG, level k + 1 for object k, 0 for the floor."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), np.int16) - 1


def save_labels(labels: np.ndarray, path: Path) -> None:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        Image.fromarray((labels + 1).astype(np.uint8), mode="L").save(tmp, format="PNG")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def load_reference() -> list[Reference]:
    """The two real CLEVR images shipped in ``filmlib/reference/`` with their records."""
    from PIL import Image
    scenes = json.loads((REFERENCE_DIR / REFERENCE_SCENES).read_text())["scenes"]
    out = []
    for scene in scenes:
        path = REFERENCE_DIR / scene["image_filename"]
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGBA"))
        masks = mask_path(scene["image_filename"])
        out.append(Reference(scene, image, load_labels(masks) if masks.exists() else None, path))
    return out


# --- Pictures and the command line ---------------------------------------------------------------

def outline(image: np.ndarray, labels: np.ndarray, colour=(255, 64, 64)) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) with the borders between ``labels`` drawn in ``colour``."""
    out = np.array(image[..., :3], np.uint8)
    edge = ((labels != _shift(labels, 1, 0, -2)) | (labels != _shift(labels, 0, 1, -2)))
    edge[0, :] = edge[:, 0] = False
    out[edge] = colour
    return out


def panel(real: np.ndarray, render: RenderResult, real_labels: np.ndarray | None = None,
          gain: float = 4.0) -> np.ndarray:
    """Real | render | |difference| x ``gain`` side by side (H, 3W, 3) uint8, the real
    objects' outlines (if given) drawn on the first and the rendered masks on the second."""
    real = np.asarray(real)[..., :3].astype(np.uint8)
    left = outline(real, real_labels) if real_labels is not None else real
    middle = outline(render.image, render.object_id, (64, 224, 255))
    diff = np.abs(real.astype(np.int16) - render.image).mean(2) * gain
    right = np.repeat(np.clip(diff, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return np.concatenate([left, middle, right], axis=1)


def _save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        Image.fromarray(image).save(tmp, format="PNG")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def render_command(scenes_path, index: int, out, *, compare_with=None, masks=None,
                   width: int = 480, height: int = 320) -> dict:
    """``python -m filmlib render``: draw scene ``index`` of a scenes file, optionally beside
    the real image, and return the figures."""
    from PIL import Image

    from ..data import clevr
    info, scenes = clevr.load_scenes_file(scenes_path)
    by_index = {s.get("image_index"): s for s in scenes}
    if not scenes:
        raise ValueError(f"{scenes_path}: holds no scenes")
    if index not in by_index:
        raise ValueError(f"{scenes_path}: no scene with image_index {index} (it holds "
                         f"{len(scenes)} scenes, image_index {min(by_index)}..{max(by_index)})")
    scene = by_index[index]
    summary = {"scene": scene.get("image_filename"), "out": str(out)}
    if compare_with is None:
        result, camera = render_record(scene, width, height, record_size=record_size(info))
        _save_png(result.image, out)
        summary["camera"] = [round(c, 4) for c in camera.position]
        return summary
    try:
        with Image.open(compare_with) as im:
            real = np.asarray(im.convert("RGB"))
    except OSError as e:
        raise ValueError(f"{compare_with}: not a readable image ({e})") from None
    result, camera = render_record(scene, real.shape[1], real.shape[0],
                                   record_size=record_size(info))
    if masks is not None:
        labels = load_labels(masks)
        if labels.shape != real.shape[:2]:
            raise ValueError(f"{masks}: outlines are {labels.shape[1]}x{labels.shape[0]}, the "
                             f"image {real.shape[1]}x{real.shape[0]}")
    else:
        labels = outline_objects(real, result.object_id)
    _save_png(panel(real, result, labels), out)
    summary["camera"] = [round(c, 4) for c in camera.position]
    summary.update(compare(real, result, labels, scene["objects"]))
    return summary


# --- Calibration ---------------------------------------------------------------------------------

#: The studio numbers :func:`fit_studio` fits by default (``name`` or ``(name, channel)``); the
#: lamps' RGB intensities are fitted too. The rest (shadow softness, the highlights and sheens)
#: were set by eye: they are small in area, so a pixel difference cannot see them.
FITTED = (("ambient", 0), ("ambient", 1), ("ambient", 2), "ambient_base",
          ("backdrop", 0), ("backdrop", 1), ("backdrop", 2), ("fade", 0), ("fade", 1),
          ("sky_horizon", None), ("sky_zenith", None), "falloff", "shadow_depth", "contact_ao",
          "rubber_diffuse", "metal_reflect", "metal_diffuse")


@dataclass
class Target:
    """One calibration image: a scene record, the real picture, its object outlines, and the
    image size the record's ``pixel_coords`` are stated at."""
    scene: dict
    image: np.ndarray
    labels: np.ndarray
    record_size: tuple[int, int] = (480, 320)


def _studio_vector(studio: Studio, lights: list[Light] | None, names) -> np.ndarray:
    x = []
    for item in names:
        name, channel = item if isinstance(item, tuple) else (item, None)
        value = getattr(studio, name)
        x.append(value[channel or 0] if isinstance(value, tuple) else value)
    return np.array(x + [c for lt in lights or () for c in lt.intensity], float)


def _studio_from(x, studio: Studio, lights: list[Light], names) -> tuple[Studio, list[Light]]:
    changes = {}
    for item, v in zip(names, x):
        name, channel = item if isinstance(item, tuple) else (item, None)
        current = changes.get(name, getattr(studio, name))
        if isinstance(current, tuple):
            current = list(current)
            for c in ([channel] if channel is not None else range(len(current))):
                current[c] = float(v)
            changes[name] = tuple(current)
        else:
            changes[name] = float(v)
    if len(x) == len(names):   # the lamps were not fitted
        return studio.replace(**changes), lights
    rgb = np.asarray(x[len(names):], float).reshape(len(lights), 3)
    return studio.replace(**changes), [Light(lt.position, tuple(map(float, c)), lt.penumbra, lt.name)
                                       for lt, c in zip(lights, rgb)]


def fit_studio(targets: list[Target], *, studio: Studio = STUDIO,
               lights: list[Light] | None = None, names=FITTED, fit_lights: bool = True,
               downscale: int = 2, max_evaluations: int = 60) -> tuple[Studio, list[Light], dict]:
    """Fit studio numbers (``names``) and, with ``fit_lights``, the lamps' RGB intensities to
    real images by least squares (scipy).

    The residuals are the differences at every fourth row and column (at ``1/downscale`` of
    the images' size, weighted 1/4) and each object's mean colour difference inside its outline (weight 1), in
    levels of 255: the whole picture for the floor, backdrop and shadows, and the objects,
    which cover a small share of it, for the materials. Returns the fitted studio and lamps
    and a report (``cost`` before and after, ``evaluations``).
    """
    try:
        from scipy.optimize import least_squares
    except ImportError as e:
        raise ImportError("fit_studio needs scipy (the notebooks extra): pip install -e '.[notebooks]'") from e
    lights = lights if lights is not None else base_lights()
    prepared = []
    for t in targets:
        h, w = t.labels.shape
        if h % downscale or w % downscale:
            raise ValueError(f"{t.scene.get('image_filename')}: {w}x{h} is not divisible by "
                             f"downscale {downscale}")
        real = np.asarray(t.image, float)[..., :3]
        small = real.reshape(h // downscale, downscale, w // downscale, downscale, 3).mean((1, 3))
        prepared.append((t.scene, small, t.labels[::downscale, ::downscale], t.record_size))

    def residuals(x):
        st, lt = _studio_from(x, studio, lights, names)  # noqa: F841 (lt: the lamps tried)
        out = []
        for scene, real, labels, size in prepared:
            res, _ = render_record(scene, real.shape[1], real.shape[0], record_size=size,
                                   lights=lt, studio=st)
            out.append((res.image - real)[::4, ::4].ravel() / 4)
            for k in range(len(scene["objects"])):
                mine, theirs = res.object_id == k, labels == k
                if mine.any() and theirs.any():
                    out.append(res.image[mine].mean(0) - real[theirs].mean(0))
        return np.concatenate(out)

    x0 = _studio_vector(studio, lights if fit_lights else None, names)
    fit = least_squares(residuals, x0, bounds=(np.full_like(x0, 1e-3), np.full_like(x0, 50.0)),
                        diff_step=1e-2, x_scale="jac", max_nfev=max_evaluations)
    st, lt = _studio_from(fit.x, studio, lights, names)
    return st, lt, {"cost_before": float(0.5 * (residuals(x0) ** 2).sum()),
                    "cost_after": float(fit.cost), "evaluations": int(fit.nfev)}


def reference_targets() -> list[Target]:
    """The shipped calibration pair as :class:`Target` s."""
    return [Target(r.scene, r.image, r.labels) for r in load_reference()]
