"""The camera and renderer: geometry is where the scene says, and the picture shows it."""
import numpy as np
import pytest

from filmlib.synth.attributes import COLOR_RGB, SIZE_RADIUS, half_extent
from filmlib.synth.camera import DEFAULT_POSITION, Camera, default_camera, sample_camera
from filmlib.synth.render import (BASE_LIGHTS, Light, object_id_map, render_scene,
                                  sample_lights)
from filmlib.synth.scene import make_scene

FIXED_LIGHTS = [Light(np.array(pos, float), i, pen, name) for name, pos, i, pen in BASE_LIGHTS]


def obj(shape="cube", color="red", material="rubber", size="large", x=0.0, y=0.0, rotation=0.0):
    return {"shape": shape, "color": color, "material": material, "size": size,
            "3d_coords": [x, y, half_extent(shape, size)], "rotation": rotation}


def hue_saturation(rgb):
    r, g, b = np.asarray(rgb, float) / 255
    hi, lo = max(r, g, b), min(r, g, b)
    if hi - lo < 1e-9:
        return 0.0, 0.0
    if hi == r:
        h = ((g - b) / (hi - lo)) % 6
    elif hi == g:
        h = (b - r) / (hi - lo) + 2
    else:
        h = (r - g) / (hi - lo) + 4
    return 60 * h, (hi - lo) / hi


def colour_name(rgb):
    """The named CLEVR colour nearest in hue; gray when unsaturated."""
    hue, sat = hue_saturation(rgb)
    if sat < 0.25:
        return "gray"

    def distance(name):
        d = abs(hue - hue_saturation(COLOR_RGB[name])[0])
        return min(d, 360 - d)
    return min((c for c in COLOR_RGB if c != "gray"), key=distance)


def test_colour_name_helper():
    for name, rgb in COLOR_RGB.items():
        assert colour_name(rgb) == name
        assert colour_name(np.array(rgb) * 0.3) == name


# --- camera ----------------------------------------------------------------------------------

def test_camera_projection():
    cam = default_camera(480, 320)
    assert cam.focal == pytest.approx(525, abs=3)
    col, row, depth = cam.project([0.0, 0.0, 0.0])
    assert (col, row) == pytest.approx((240, 160))
    assert depth == pytest.approx(np.linalg.norm(DEFAULT_POSITION))
    # rays through projected points point at them
    pts = np.random.default_rng(0).uniform(-3, 3, (20, 3))
    proj = cam.project(pts)
    rays = cam.rays(proj[:, 0], proj[:, 1])                       # (3, 20)
    to_pts = pts - np.array(cam.position)
    to_pts /= np.linalg.norm(to_pts, axis=1, keepdims=True)
    assert np.allclose(rays.T, to_pts, atol=1e-5)
    # square images keep the horizontal field of view
    assert default_camera(128, 128).focal == pytest.approx(64 / np.tan(np.radians(24.5)))


def test_sample_camera_jitter():
    rng = np.random.default_rng(0)
    positions = np.array([sample_camera(rng, 64, 64).position for _ in range(200)])
    offset = positions - np.array(DEFAULT_POSITION)
    assert np.abs(offset).max() <= 0.5 and np.abs(offset).max() > 0.45
    assert np.abs(offset.mean(0)).max() < 0.1


def test_sample_lights_jitter():
    lights = [sample_lights(np.random.default_rng(i)) for i in range(50)]
    for j, (name, pos, _, _) in enumerate(BASE_LIGHTS):
        offsets = np.array([ls[j].position for ls in lights]) - pos
        assert ls_names(lights[0])[j] == name
        assert np.abs(offsets).max() <= 1.0 and np.abs(offsets).max() > 0.8


def ls_names(lights):
    return [lt.name for lt in lights]


# --- the rendered picture ----------------------------------------------------------------------

@pytest.mark.parametrize("width,height,n", [(128, 128, 16), (480, 320, 3), (64, 64, 8)])
def test_pixel_coords_show_the_object_in_its_colour(width, height, n):
    at_pixel = total = 0
    for seed in range(n):
        cam = sample_camera(np.random.default_rng(500 + seed), width, height)
        lights = sample_lights(np.random.default_rng(900 + seed))
        scene, image = make_scene(np.random.default_rng(seed), width=width, height=height,
                                  split="val", image_index=seed, camera=cam, lights=lights)
        render = render_scene(scene["objects"], cam, lights)
        assert np.array_equal(render.image, image)  # make_scene draws exactly this
        ids = render.object_id
        for k, o in enumerate(scene["objects"]):
            px, py, _ = o["pixel_coords"]
            total += 1
            if not (1 <= px < width - 1 and 1 <= py < height - 1) or ids[py, px] != k:
                continue
            at_pixel += 1
            r = 2 if width >= 256 else 1
            ys, xs = np.mgrid[max(py - r, 1):min(py + r + 1, height - 1),
                              max(px - r, 1):min(px + r + 1, width - 1)]
            inner = ((ids[ys, xs] == k) & (ids[ys - 1, xs] == k) & (ids[ys + 1, xs] == k)
                     & (ids[ys, xs - 1] == k) & (ids[ys, xs + 1] == k))
            patch = image[ys[inner], xs[inner]] if inner.any() else image[py, px][None]
            if o["material"] == "metal":
                # a mirror may show a neighbour at its centre (tinted, but darkened towards
                # another hue): metal is judged on the whole of what is seen of it
                patch = image[ids == k]
            assert colour_name(np.median(patch, 0)) == o["color"], (seed, k, o)
    assert at_pixel >= 0.8 * total


def test_object_id_map_and_occlusion():
    cam = default_camera(128, 128)
    behind = np.array(default_camera().directions()["behind"])
    near = obj("cube", size="large", x=0.0, y=0.0)
    far_xy = 2.0 * behind[:2]
    far = obj("sphere", size="small", x=float(far_xy[0]), y=float(far_xy[1]))
    ids = object_id_map([near, far], cam)
    assert ids.shape == (128, 128) and ids.dtype == np.int16
    col, row, _ = cam.project(near["3d_coords"])
    assert ids[int(row), int(col)] == 0
    # the small sphere straight behind the big cube is mostly hidden
    alone = object_id_map([far], cam)
    visible = render_scene([near, far], cam, FIXED_LIGHTS).visible_pixels
    assert visible[1] < 0.5 * (alone == 0).sum()
    assert visible[0] == (ids == 0).sum() and visible[1] == (ids == 1).sum()
    assert (ids[:5] == -1).all()  # the top of the picture is floor / backdrop


def test_background_is_a_smooth_gray():
    image = render_scene([], default_camera(480, 320), FIXED_LIGHTS).image.astype(float)
    sat = image.max(2) - image.min(2)
    assert sat.max() <= 12  # gray, with CLEVR's faint warm tint near the key light
    assert (image[..., 0] >= image[..., 2]).mean() > 0.9
    assert 90 < image.mean() < 170
    # brighter near the camera, towards the key light (lower right), than far away
    assert image[-40:, -160:].mean() > image[:60].mean() + 20
    # no horizon line or other edge: neighbouring rows differ by little everywhere
    assert np.abs(np.diff(image[:, :, 0], axis=0)).max() <= 3
    assert np.abs(np.diff(image[:, :, 0], axis=1)).max() <= 3


def test_metal_is_shinier_than_rubber():
    cam = default_camera(240, 160)
    for shape in ("cube", "sphere", "cylinder"):
        for color in ("red", "blue", "gray"):
            scene = [obj(shape, color, "rubber", x=-0.9, y=-0.9),
                     obj(shape, color, "metal", x=0.9, y=0.9)]
            r = render_scene(scene, cam, FIXED_LIGHTS)
            lum = r.image.astype(float).mean(2)
            rubber, metal = lum[r.object_id == 0], lum[r.object_id == 1]
            assert metal.max() > rubber.max() + 25, (shape, color)
            # its highlights stand further above its body (small, sharp lamp reflections)
            assert np.percentile(metal, 99) - np.median(metal) > \
                np.percentile(rubber, 99) - np.median(rubber) + 2, (shape, color)


def floor_points(cam):
    """World point (H, W, 3) where each pixel centre's ray meets the ground."""
    rows, cols = np.mgrid[0:cam.height, 0:cam.width] + 0.5
    d = cam.rays(cols, rows).astype(float)                      # (3, H, W)
    t = -cam.position[2] / d[2]
    return np.stack([cam.position[i] + t * d[i] for i in range(3)], axis=-1)


def test_objects_cast_soft_shadows():
    # a single light from the camera's right, so the whole shadow is in view, on the left
    cam = default_camera(240, 160)
    right = np.array(cam.directions()["right"])
    light = Light(np.array([6 * right[0], 6 * right[1], 4.0]), 0.8, 0.07, "key")
    r = render_scene([obj("cylinder", "gray", size="large")], cam, [light])
    lum = r.image.astype(float).mean(2)
    floor = floor_points(cam)
    along = floor[..., :2] @ -right[:2]                         # distance towards the left
    across = np.abs(floor[..., :2] @ np.array([-right[1], right[0]]))
    visible = r.object_id == -1

    def mean_lum(lo, hi, side=1.0):
        band = visible & (side * along >= lo) & (side * along < hi) & (across < 0.3)
        assert band.sum() > 10
        return lum[band].mean()

    shadowed, lit = mean_lum(0.9, 1.5), mean_lum(0.9, 1.5, side=-1.0)
    open_floor = lum[visible & (np.hypot(floor[..., 0], floor[..., 1]) > 3.5)
                     & (np.hypot(floor[..., 0], floor[..., 1]) < 4.5)].mean()
    assert shadowed < 0.7 * lit and shadowed < 0.7 * open_floor
    # soft: the shadow lightens gradually with distance from the object
    profile = [mean_lum(d, d + 0.25) for d in np.arange(0.8, 4.5, 0.25)]
    assert profile[-1] > profile[0] + 20
    assert np.abs(np.diff(profile)).max() < 0.4 * (max(profile) - min(profile))


@pytest.mark.parametrize("shape,size", [("cylinder", "large"), ("cube", "small")])
def test_default_lights_cast_shadows(shape, size):
    # CLEVR's key light is right of and in front of the view: past an object, on the side
    # away from it, the floor gets darker than the same floor with no object
    cam = default_camera(240, 160)
    empty = render_scene([], cam, FIXED_LIGHTS).image.astype(float).mean(2)
    r = render_scene([obj(shape, "gray", size=size)], cam, FIXED_LIGHTS, antialias=False)
    darkening = r.image.astype(float).mean(2) / empty
    xy = floor_points(cam)[..., :2]
    rho = np.hypot(xy[..., 0], xy[..., 1])
    key = FIXED_LIGHTS[0].position[:2] / np.linalg.norm(FIXED_LIGHTS[0].position[:2])
    away = (xy @ key) < -0.5 * rho
    ring = (r.object_id == -1) & (rho > 1.2 * SIZE_RADIUS[size] + 0.3) & (rho < 3.0)
    assert darkening[ring & away].min() < 0.92   # ~0.86 with CLEVR's soft shadows, ~0.97 without


def test_antialiasing_only_touches_silhouettes():
    cam = default_camera(128, 128)
    scene = [obj("sphere", "cyan", "rubber", x=-1.0), obj("cube", "purple", "metal", y=1.2,
                                                          rotation=30.0)]
    smooth = render_scene(scene, cam, FIXED_LIGHTS).image.astype(int)
    sharp = render_scene(scene, cam, FIXED_LIGHTS, antialias=False).image.astype(int)
    ids = render_scene(scene, cam, FIXED_LIGHTS).object_id
    pad = np.pad(ids, 1, mode="edge")
    edge = ((pad[1:-1, 2:] != ids) | (pad[1:-1, :-2] != ids)
            | (pad[2:, 1:-1] != ids) | (pad[:-2, 1:-1] != ids))
    changed = (smooth != sharp).any(2)
    assert changed.sum() > 20
    assert not (changed & ~edge).any()


@pytest.mark.parametrize("width,height", [(480, 320), (128, 128), (64, 64), (224, 224),
                                          (100, 60)])
def test_any_image_size(width, height):
    cam = Camera(position=(7.5, -6.5, 5.3), width=width, height=height)
    scene = [obj("cylinder", "green", "metal", x=1.0), obj("sphere", "yellow", size="small",
                                                           x=-1.0, y=1.0)]
    r = render_scene(scene, cam, FIXED_LIGHTS)
    assert r.image.shape == (height, width, 3) and r.image.dtype == np.uint8
    assert r.object_id.shape == (height, width)
    assert (r.visible_pixels > 0).all()


# --- CLEVR's geometry ------------------------------------------------------------------------

def test_cubes_have_half_side_r():
    """A cube of half-side r covers about twice the pixels of a sphere of radius r (one of
    half-side r / sqrt(2), the old mistake, about as many)."""
    cam = default_camera(240, 160)
    for size in ("large", "small"):
        areas = {shape: (object_id_map([obj(shape, size=size, rotation=0.4)], cam) == 0).sum()
                 for shape in ("cube", "sphere", "cylinder")}
        assert 1.6 < areas["cube"] / areas["sphere"] < 2.4, areas
        assert areas["cylinder"] > areas["sphere"]


def test_rotation_is_applied_as_radians():
    """CLEVR stores degrees but turned its objects by the number as radians: a quarter turn
    is 2*pi/4 in the stored number, and a turn of 90 (degrees) is not one."""
    cam = default_camera(160, 120)
    ids = {r: object_id_map([obj("cube", rotation=r)], cam) for r in (0.3, 0.3 + np.pi / 2, 90.3)}
    assert np.array_equal(ids[0.3], ids[0.3 + np.pi / 2])
    assert (ids[0.3] != ids[90.3]).sum() > 20


def test_rounded_edges_trim_the_silhouette(monkeypatch):
    from filmlib.synth import render as R
    cam = default_camera(240, 160)
    for shape in ("cube", "cylinder"):
        rounded = (object_id_map([obj(shape, rotation=0.5)], cam) == 0).sum()
        with monkeypatch.context() as m:
            m.setitem(R.EDGE_ROUND, shape, 0.0)
            sharp = (object_id_map([obj(shape, rotation=0.5)], cam) == 0).sum()
        assert 0.85 * sharp < rounded < 0.98 * sharp, (shape, rounded, sharp)


def test_srgb_encoding_round_trip():
    from filmlib.synth.render import decode_srgb, encode_srgb
    levels = np.arange(256)
    assert np.array_equal(encode_srgb(decode_srgb(levels)), levels)
    assert encode_srgb(np.array([-1.0, 0.0, 0.2159, 1.0, 3.0])).tolist() == [0, 0, 128, 255, 255]
