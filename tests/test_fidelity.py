"""SynthCLEVR against real CLEVR: the two shipped reference images, the camera fit, the
outlines and the `render` command."""
import json

import numpy as np
import pytest
from PIL import Image

from filmlib.cli import main
from filmlib.synth import fidelity as F
from filmlib.synth.camera import Camera, fit_camera, sample_camera
from filmlib.synth.render import object_id_map, render_scene, sample_lights
from filmlib.synth.scene import make_scene

# The renderer's fidelity budget (per reference image): mean absolute difference over the whole
# image, mean over objects of the per-channel mean colour difference, worst pixel-area error.
MAD_BUDGET = 7.0
COLOUR_BUDGET = 12.0
AREA_BUDGET = 0.15


@pytest.fixture(scope="module")
def references():
    return F.load_reference()


def test_reference_files(references):
    assert [r.scene["image_index"] for r in references] == [3, 10]
    for ref in references:
        assert ref.image.shape == (320, 480, 4) and ref.image.dtype == np.uint8
        assert ref.labels is not None and ref.labels.shape == (320, 480)
        n = len(ref.scene["objects"])
        # every object outlined, nothing else labelled
        assert set(np.unique(ref.labels)) == set(range(-1, n))
        for k in range(n):
            assert (ref.labels == k).sum() > 500


@pytest.mark.parametrize("which", [0, 1])
def test_render_of_reference_record_matches_the_real_image(references, which):
    """The regression guard: the record rendered through its fitted camera stays within the
    budget of the real image, in whole-image difference, object colour and object area."""
    ref = references[which]
    result, camera = F.render_record(ref.scene)
    figures = F.compare(ref.image, result, ref.labels, ref.scene["objects"])
    assert figures["mad"] <= MAD_BUDGET, figures["mad"]
    assert figures["colour_diff_mean"] <= COLOUR_BUDGET, figures["objects"]
    assert figures["area_error_max"] <= AREA_BUDGET, figures["objects"]
    # and no object is far off on its own
    assert max(o["colour_diff"] for o in figures["objects"]) <= 2 * COLOUR_BUDGET


def test_fit_camera_recovers_the_jittered_camera():
    rng = np.random.default_rng(3)
    for _ in range(5):
        true = sample_camera(rng, 480, 320)
        pts = np.column_stack([rng.uniform(-3, 3, (6, 2)), rng.choice([0.35, 0.7], 6)])
        proj = true.project(pts)
        stored = np.column_stack([np.round(proj[:, :2]), proj[:, 2]])  # CLEVR rounds columns/rows
        cam = fit_camera(pts, stored)
        assert np.allclose(cam.position, true.position, atol=0.05)
        # stated at the wrong size, no camera fits: a clear error, not a wrong camera
        with pytest.raises(ValueError, match="240x160"):
            fit_camera(pts, stored, 240, 160)
    with pytest.raises(ValueError, match="pixel_coords"):
        fit_camera(np.zeros((2, 3)), np.zeros((3, 3)))


@pytest.mark.parametrize("size", [(240, 160), (120, 120)])
def test_render_record_of_a_synthclevr_record_at_its_own_size(tmp_path, capsys, size):
    """A SynthCLEVR record states pixel_coords at the size it was made; drawn through the
    fitted camera, at that size or another, it is the image the generator wrote."""
    from filmlib.data import clevr
    from filmlib.synth.generate import SplitSpec, generate_split
    w, h = size
    generate_split(tmp_path, SplitSpec(split="val", num_images=2, questions_per_image=1,
                                       width=w, height=h, seed=4), progress=False)
    info, scenes = clevr.load_scenes_file(clevr.scenes_path(tmp_path, "val"))
    assert F.record_size(info) == (w, h)
    for scene in scenes:
        with Image.open(clevr.image_path(tmp_path, "val", scene["image_index"])) as im:
            written = np.asarray(im.convert("RGB")).astype(int)
        result, camera = F.render_record(scene, w, h, record_size=(w, h))
        # the jitter of the lamps is unknown, so the floor differs a little; the objects sit
        # where they were drawn
        ids = object_id_map(scene["objects"], camera)
        truth = F.outline_objects(written, ids)
        assert (ids == truth).mean() > 0.97
        assert np.abs(result.image - written).mean() < 12
        # and at twice the size, the same camera centre
        big, big_camera = F.render_record(scene, 2 * w, 2 * h, record_size=(w, h))
        assert big_camera.position == camera.position and big.image.shape == (2 * h, 2 * w, 3)
        with pytest.raises(ValueError, match=scene["image_filename"]):
            F.render_record(scene, record_size=(480, 320) if w != 480 else (240, 160))
    # the command reads the size from the file's info
    out = tmp_path / "side.png"
    path = clevr.image_path(tmp_path, "val", scenes[0]["image_index"])
    assert main(["render", "--scenes", str(clevr.scenes_path(tmp_path, "val")), "--index",
                 str(scenes[0]["image_index"]), "--out", str(out), "--compare", str(path)]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["mad"] < 12
    big = [o for o in figures["objects"] if o["area_real"] > 150]
    assert big and all(abs(o["area_ratio"] - 1) < 0.15 for o in big), figures["objects"]


def test_outline_objects_finds_the_true_silhouettes():
    """Seeded with masks that are too big by two pixels, the outlines follow the picture."""
    cam = Camera((7.5, -6.5, 5.3), width=240, height=160)
    lights = sample_lights(np.random.default_rng(1))
    scene, image = make_scene(np.random.default_rng(7), width=240, height=160, split="val",
                              image_index=0, camera=cam, lights=lights)
    truth = object_id_map(scene["objects"], cam)
    seed = truth.copy()
    for _ in range(2):   # grow every object by 2 px into the floor
        grown = seed.copy()
        for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
            shifted = np.roll(seed, step, axis)
            grown = np.where((grown < 0) & (shifted >= 0), shifted, grown)
        seed = grown
    labels = F.outline_objects(image, seed)
    band = seed != truth
    assert band.sum() > 100
    assert (labels[band] == truth[band]).mean() > 0.8
    errors = [abs((labels == k).sum() / (truth == k).sum() - 1)
              for k in range(len(scene["objects"])) if (truth == k).sum() > 150]
    assert len(errors) >= 3 and np.mean(errors) < 0.08 and max(errors) < 0.2, errors


def test_compare_figures():
    cam = Camera((7.5, -6.5, 5.3), width=120, height=80)
    objects = [{"shape": "sphere", "color": "red", "material": "rubber", "size": "large",
                "3d_coords": [0, 0, 0.7], "rotation": 0.0}]
    result = render_scene(objects, cam, F.base_lights())
    same = F.compare(result.image, result, result.object_id, objects)
    assert same["mad"] == 0 and same["colour_diff_mean"] == 0 and same["area_error_max"] == 0
    assert same["objects"][0]["object"] == "large red rubber sphere"
    brighter = np.clip(result.image.astype(int) + 10, 0, 255).astype(np.uint8)
    fig = F.compare(brighter, result)
    assert 9 < fig["mad"] <= 10 and 9 < fig["colour_diff_mean"] <= 10
    assert "area_real" not in fig["objects"][0]
    with pytest.raises(ValueError, match="render at the real image's size"):
        F.compare(brighter[:40], result)


def test_labels_round_trip(tmp_path):
    labels = np.full((8, 12), -1, np.int16)
    labels[2:5, 3:7] = 0
    labels[6, :] = 4
    path = tmp_path / "masks.png"
    F.save_labels(labels, path)
    assert np.array_equal(F.load_labels(path), labels)
    assert [p.name for p in tmp_path.iterdir()] == ["masks.png"]


def test_render_command(tmp_path, capsys, references):
    scenes = F.REFERENCE_DIR / F.REFERENCE_SCENES
    real = references[0].path
    out = tmp_path / "side.png"
    assert main(["render", "--scenes", str(scenes), "--index", "3", "--out", str(out),
                 "--compare", str(real)]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["scene"] == "CLEVR_val_000003.png" and figures["mad"] <= MAD_BUDGET
    assert len(figures["objects"]) == 7 and "area_ratio" in figures["objects"][0]
    with Image.open(out) as im:
        assert im.size == (3 * 480, 320)
    # stored outlines give the same figures as the test above
    masks = F.mask_path("CLEVR_val_000003.png")
    assert main(["render", "--scenes", str(scenes), "--index", "3", "--out", str(out),
                 "--compare", str(real), "--masks", str(masks)]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["area_error_max"] <= AREA_BUDGET
    # a plain render at another size
    plain = tmp_path / "plain.png"
    assert main(["render", "--scenes", str(scenes), "--index", "10", "--out", str(plain),
                 "--width", "240", "--height", "160"]) == 0
    capsys.readouterr()
    with Image.open(plain) as im:
        assert im.size == (240, 160)
    # bad input: one clear line naming the file
    assert main(["render", "--scenes", str(scenes), "--index", "4", "--out", str(plain)]) == 1
    assert "no scene with image_index 4" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"info": {}, "scenes": []}))
    assert main(["render", "--scenes", str(empty), "--index", "0", "--out", str(plain)]) == 1
    assert "empty.json: holds no scenes" in capsys.readouterr().err
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    assert main(["render", "--scenes", str(scenes), "--index", "3", "--out", str(out),
                 "--compare", str(junk)]) == 1
    assert "junk.png" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.tmp"))


def test_fit_studio_recovers_a_known_studio():
    """Targets drawn with a brighter sky and a dimmer key lamp: the fit finds them again."""
    pytest.importorskip("scipy")  # the notebooks extra, which `make test` installs
    scene, _ = make_scene(np.random.default_rng(11), width=480, height=320, split="val",
                          image_index=0, max_objects=5)
    truth = F.STUDIO.replace(ambient=(0.2, 0.2, 0.2), metal_reflect=0.6)
    result, _ = F.render_record(scene, 120, 80, studio=truth)
    target = F.Target(scene, result.image, result.object_id)   # a 480x320 record
    studio, lights, report = F.fit_studio([target], names=(("ambient", None), "metal_reflect"),
                                          fit_lights=False, downscale=1, max_evaluations=30)
    assert report["cost_after"] < 0.1 * report["cost_before"], report
    assert studio.ambient == pytest.approx((0.2,) * 3, rel=0.05)
    assert [lt.intensity for lt in lights] == [lt.intensity for lt in F.base_lights()]
    # with the lamps free as well, the picture is matched again (lamps and sky trade off)
    dim = F.base_lights()
    dim[0] = F.Light(dim[0].position, (0.25, 0.24, 0.21), dim[0].penumbra, "key")
    result, _ = F.render_record(scene, 120, 80, lights=dim)
    target = F.Target(scene, result.image, result.object_id)
    _, lights, report = F.fit_studio([target], names=(("ambient", None),), downscale=1,
                                     max_evaluations=30)
    assert report["cost_after"] < 0.15 * report["cost_before"], report
    assert lights[0].intensity[0] < 0.3
    with pytest.raises(ValueError, match="divisible"):
        F.fit_studio([target], downscale=3)
