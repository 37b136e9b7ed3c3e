"""Scene-graph maps, the perception CNN (pre-training, scoring, cached maps), features stems
that read them, and the time-to-accuracy study's runner."""
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from filmlib import perception, study
from filmlib.data import scene_maps as sm
from filmlib.data.clevr import ATTRIBUTES
from filmlib.data.preprocess import DataFileError
from filmlib.experiment import build_model, evaluate_run, train_film
from filmlib.models.perception import PerceptionConfig, PerceptionNet, perception_loss, stem_state_dict
from filmlib.synth.generate import SplitSpec, generate_split
from filmlib.train import load_checkpoint

from synth_helpers import layout_scenes


def cli(*args):
    return subprocess.run([sys.executable, "-m", "filmlib", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("perc")
    for split, n in (("train", 40), ("val", 12)):
        generate_split(root / "raw", SplitSpec(split=split, num_images=n, questions_per_image=4,
                                               width=72, height=48, seed=4), progress=False)
    r = cli("preprocess", "--root", str(root / "raw"), "--out", str(root / "h5"), "--image-size", "32",
            "--splits", "train", "val")
    assert r.returncode == 0, r.stderr
    return root


# --- scene maps ----------------------------------------------------------------------------------

def test_oracle_maps_carry_every_object():
    scenes = layout_scenes(20, seed=3)
    size = (480, 320)
    maps = sm.oracle_maps(scenes, size)
    assert maps.shape == (20, sm.CHANNELS, sm.GRID, sm.GRID) and sm.CHANNELS == 19
    names = sm.channel_names()
    for i, scene in enumerate(scenes):
        assert maps[i, names.index("objectness")].sum() == len(scene["objects"])
        for o, cell in zip(scene["objects"], sm.object_cells(scene, size)):
            for a in sm.ATTRIBUTE_ORDER:               # each object's attributes are on at its cell
                assert maps[i, names.index(f"{a}={o[a]}"), cell["row"], cell["col"]] >= 1
            assert cell["col"] == int(10 * o["pixel_coords"][0] / 480)
            assert -1 <= cell["offset"][0] <= 1 and -1 <= cell["offset"][1] <= 1
        # one-hot groups add up to objectness cell by cell
        for a in sm.ATTRIBUTE_ORDER:
            rows = [names.index(f"{a}={v}") for v in ATTRIBUTES[a]]
            assert np.array_equal(maps[i, rows].sum(0), maps[i, names.index("objectness")])


def test_targets_keep_the_nearer_object_of_a_shared_cell():
    scene = {"image_index": 0, "objects": [
        {"color": "red", "shape": "cube", "material": "metal", "size": "large", "pixel_coords": [55, 35, 12.0]},
        {"color": "blue", "shape": "sphere", "material": "rubber", "size": "small", "pixel_coords": [52, 38, 9.0]},
        {"color": "gray", "shape": "cylinder", "material": "rubber", "size": "small", "pixel_coords": [470, 310, 14.0]}]}
    t = sm.scene_targets([scene], (480, 320))
    assert t["objectness"].sum() == 2
    assert [ATTRIBUTES[a][v] for a, v in zip(sm.ATTRIBUTE_ORDER, t["attributes"][0, :, 1, 1])] == \
        ["blue", "sphere", "rubber", "small"]
    assert t["attributes"][0, 0, 9, 9] == ATTRIBUTES["color"].index("gray")
    assert (t["attributes"][0, :, 0, 0] == -1).all()
    assert t["depth"][0, 1, 1] == pytest.approx((9.0 - sm.DEPTH_MEAN) / sm.DEPTH_STD)
    bad = {**scene, "objects": [{**scene["objects"][0], "color": "pink"}]}
    with pytest.raises(DataFileError, match="color='pink'"):
        sm.scene_targets([bad], (480, 320))


def test_scene_maps_cli_writes_features_files(prepared):
    r = cli("scene-maps", "--root", str(prepared / "raw"), "--out", str(prepared / "h5"))
    assert r.returncode == 0, r.stderr
    with h5py.File(prepared / "h5" / "train_oracle.h5", "r") as f:
        assert f["features"].shape == (40, 19, 10, 10)
        assert json.loads(f.attrs["channels"])[15] == "objectness"
    r = cli("scene-maps", "--root", str(prepared / "nowhere"), "--out", str(prepared / "h5"))
    assert r.returncode == 1 and "scenes file not found" in r.stderr and "Traceback" not in r.stderr


# --- the perception CNN --------------------------------------------------------------------------

def test_perception_net_shapes_and_loss():
    net = PerceptionNet(PerceptionConfig(image_size=32, channels=16, stem_layers=2))
    out = net(torch.randn(3, 3, 32, 32))
    assert out["maps"].shape == (3, 16, 8, 8) and out["color"].shape == (3, 8, 8, 8)
    t = sm.scene_targets(layout_scenes(3, seed=1), (480, 320), grid=8)
    loss, parts = perception_loss(out, {k: torch.from_numpy(v) for k, v in t.items()})
    assert torch.isfinite(loss) and set(parts) == {"objectness", "color", "shape", "material", "size", "offset", "depth"}
    loss.backward()
    with pytest.raises(ValueError, match="not divisible"):
        PerceptionConfig(image_size=30, stem_layers=2)


def test_pretrain_scores_and_extracts(prepared, tmp_path):
    cfg = PerceptionConfig(image_size=32, channels=16, stem_layers=2)
    run = perception.pretrain(prepared / "h5", prepared / "raw", tmp_path / "p", cfg=cfg, epochs=3,
                              batch_size=8, lr=3e-3, threads=1, progress=False)
    losses = [h["train_loss"] for h in run["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    val = run["val"]
    assert val["objects"] > 12 and all(0 <= val[a] <= 1 for a in sm.ATTRIBUTE_ORDER)
    ckpt = load_checkpoint(tmp_path / "p" / "perception.pt")       # weights_only load
    assert ckpt["config"] == cfg.to_dict()
    net = perception.load_perception(tmp_path / "p" / "perception.pt")
    out = perception.extract(net, prepared / "h5", "val", tmp_path / "val_perception.h5", dtype="float32")
    assert out["shape"] == [12, 16, 8, 8]
    images = perception.load_images(prepared / "h5", "val")
    from filmlib.data.features import normalize_images
    with torch.no_grad():
        want = net.trunk(normalize_images(torch.from_numpy(images[:2])))
    with h5py.File(tmp_path / "val_perception.h5", "r") as f:
        assert np.allclose(f["features"][:2], want.numpy(), atol=1e-5)
    # a finished pre-training is kept, not redone
    again = perception.pretrain(prepared / "h5", prepared / "raw", tmp_path / "p", cfg=cfg, epochs=5)
    assert again["epochs"] == 3


def test_pretrain_with_a_batch_larger_than_the_split_uses_the_whole_split(prepared, tmp_path):
    cfg = PerceptionConfig(image_size=32, channels=8, stem_layers=2)
    run = perception.pretrain(prepared / "h5", prepared / "raw", tmp_path / "p", cfg=cfg, epochs=2,
                              batch_size=1000, threads=1, progress=False)      # 40 train images
    assert run["batch_size"] == 40 and len(run["history"]) == 2
    assert all(np.isfinite(h["train_loss"]) for h in run["history"])


def test_pretrain_rejects_mismatched_scenes(prepared, tmp_path):
    with pytest.raises(DataFileError, match="expects"):
        perception.pretrain(prepared / "h5", prepared / "raw", tmp_path, cfg=PerceptionConfig(image_size=64),
                            epochs=1, progress=False)
    with pytest.raises(DataFileError, match="perception checkpoint not found"):
        perception.load_perception(tmp_path / "missing.pt")


# --- FiLM on the maps ----------------------------------------------------------------------------

def test_film_reads_oracle_maps_and_is_scored(prepared, tmp_path):
    r = cli("scene-maps", "--root", str(prepared / "raw"), "--out", str(prepared / "h5"))
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    summary = train_film(prepared / "h5", run, preset_name="smoke", stem="features", features="oracle",
                         epochs=2, threads=1, progress=False, eval_every_samples=32, curve_samples=20,
                         schedule="warmup_linear", warmup_samples=16, max_samples=96, batch_size=16)
    assert summary["samples"] == 96 and [p["samples"] for p in summary["curve"]] == [32, 64, 96]
    model, ckpt = build_model(prepared / "h5", "smoke", "features", feature_channels=19, feature_size=10), \
        load_checkpoint(run / "best.pt")
    assert ckpt["model_config"]["feature_channels"] == 19 and ckpt["train_config"]["extra"]["features"] == "oracle"
    metrics = evaluate_run(run, prepared / "h5", "val")        # finds the oracle file from the checkpoint
    assert metrics["epoch"] >= 1 and 0 <= metrics["val_accuracy"] <= 1
    with pytest.raises(FileNotFoundError, match="python -m filmlib perception"):
        train_film(prepared / "h5", tmp_path / "r2", preset_name="smoke", stem="features",
                   features="perception", epochs=1, progress=False)


def test_perception_trunk_initialises_the_pixel_stem(prepared, tmp_path):
    cfg = PerceptionConfig(image_size=32, channels=16, stem_layers=2)    # the smoke preset's stem
    net = PerceptionNet(cfg)
    torch.save({"model": net.state_dict(), "config": cfg.to_dict()}, tmp_path / "perception.pt")
    run = tmp_path / "ft"
    train_film(prepared / "h5", run, preset_name="smoke", stem="pixels", init_stem=tmp_path / "perception.pt",
               epochs=1, max_steps_per_epoch=1, threads=1, progress=False, lr=0.0, weight_decay=0.0)
    ckpt = load_checkpoint(run / "last.pt")
    for k, v in stem_state_dict(net).items():
        if "running" in k or "num_batches" in k:            # BN statistics move even at lr 0
            continue
        assert torch.equal(ckpt["model"][k], v), k
    with pytest.raises(ValueError, match="does not fit"):
        wide = PerceptionConfig(image_size=32, channels=24, stem_layers=2)
        torch.save({"model": PerceptionNet(wide).state_dict(), "config": wide.to_dict()}, tmp_path / "wide.pt")
        train_film(prepared / "h5", tmp_path / "ft2", preset_name="smoke", stem="pixels",
                   init_stem=tmp_path / "wide.pt", epochs=1, progress=False)


def test_study_recipe_runs_resumes_and_tabulates(prepared, tmp_path):
    cli("scene-maps", "--root", str(prepared / "raw"), "--out", str(prepared / "h5"))
    recipe = study.Recipe(name="tiny", lr=1e-3, schedule="warmup_cosine", warmup_samples=32, batch_size=16,
                          max_samples=128)
    s = study.run_recipe(recipe, prepared / "h5", tmp_path, eval_every=32, curve_samples=16, threads=1,
                         preset_name="smoke", progress=False)
    assert s["samples"] == 128 and s["finished"] is True and len(study.load_curve(tmp_path / "tiny")) == 4
    assert set(s["reached"]) == {f"{t:.2f}" for t in study.THRESHOLDS}
    assert study.run_recipe(recipe, prepared / "h5", tmp_path, preset_name="smoke") == s   # kept
    text = study.table(tmp_path)
    assert "| tiny | oracle | Adam 0.001, warm-up 0k, cosine | 16 | random |" in text and "128" in text
    paused = tmp_path / "paused"                       # a summary written for a run stopped before its budget
    paused.mkdir()
    (paused / "curve.jsonl").write_text((tmp_path / "tiny" / "curve.jsonl").read_text())
    (paused / "summary.json").write_text(json.dumps({**s, "recipe": {**s["recipe"], "name": "paused"},
                                                      "finished": False}))
    assert "| paused (unfinished) | oracle |" in study.table(tmp_path)
    with pytest.raises(ValueError, match="stem must be one of"):
        study.Recipe(name="x", stem="resnet")
    with pytest.raises(ValueError, match="unknown FiLMConfig fields: chanels"):
        study.Recipe(name="x", model={"chanels": 32})
    with pytest.raises(ValueError, match="curriculum must be one of"):
        study.Recipe(name="x", curriculum="objects", curriculum_samples=10)
    with pytest.raises(ValueError, match="needs curriculum_samples"):
        study.Recipe(name="x", curriculum="program_length")


def test_train_cli_reads_named_features_with_a_schedule(prepared, tmp_path):
    cli("scene-maps", "--root", str(prepared / "raw"), "--out", str(prepared / "h5"))
    r = cli("train", "--data", str(prepared / "h5"), "--out", str(tmp_path), "--preset", "smoke", "--stem", "features",
            "--features", "oracle", "--schedule", "warmup_cosine", "--warmup", "16", "--max-samples", "64",
            "--eval-every", "32", "--curve-samples", "20", "--batch-size", "16", "--threads", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["samples"] == 64
    curve = study.load_curve(tmp_path)
    assert [p["samples"] for p in curve] == [32, 64] and curve[1]["lr"] < curve[0]["lr"]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["train_config"]["schedule_samples"] == 64 and ckpt["train_config"]["extra"]["features"] == "oracle"


def test_bench_maps_rows_with_and_without_compile_and_bf16(prepared, tmp_path):
    """benchmarks/bench_maps.py trains real rows (FiLM plain and compiled, each in fp32 and under a
    bf16 autocast) through the Trainer and records each row's matmul speed next to its samples/s."""
    from filmlib.train import cpu_bf16_native
    from pathlib import Path
    if not (prepared / "h5" / "train_oracle.h5").is_file():
        assert cli("scene-maps", "--root", str(prepared / "raw"), "--out", str(prepared / "h5")).returncode == 0
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_maps.py"
    r = subprocess.run([sys.executable, str(bench), "--data", str(prepared / "h5"), "--features", "oracle",
                        "--batch-sizes", "16", "--threads", "1", "--samples", "64", "--compile", "off", "on",
                        "--bf16", "off", "on", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "maps.json").read_text())["rows"]
    modes = [(False, False), (False, True), (True, False), (True, True)]
    assert [(row["compile"], row["bf16"]) for row in rows] == [m for m in modes if cpu_bf16_native() or not m[1]]
    assert all(row["samples"] == 64 and row["samples_per_s"] > 0 and row["matmul_gflops"] > 0 for row in rows)
    table = (tmp_path / "maps.md").read_text()
    assert "| compiled | bf16 |" in table and "| yes |" in table and "| no |" in table


# --- how much of a model's error is perception's -------------------------------------------------

class _HeadsFromTargets:
    """A stand-in perception net whose heads read the targets of the images it is given in order,
    with ``edit(heads, rows)`` changing them: a perception that is right except where told."""

    def __init__(self, targets, edit=lambda heads, rows: None):
        self.targets, self.edit, self.seen = targets, edit, 0

    def eval(self):
        return self

    def __call__(self, x):
        rows = np.arange(self.seen, self.seen + len(x))
        self.seen += len(x)
        t = {k: torch.from_numpy(v[rows]) for k, v in self.targets.items()}
        heads = {"objectness": (t["objectness"] * 20 - 10)[:, None], "offset": t["offset"].clone(),
                 "depth": t["depth"][:, None].clone()}
        for j, a in enumerate(sm.ATTRIBUTE_ORDER):
            heads[a] = torch.nn.functional.one_hot(t["attributes"][:, j].clamp(min=0),
                                                   len(ATTRIBUTES[a])).permute(0, 3, 1, 2).float()
        self.edit(heads, rows)
        return heads


def test_scene_errors_count_missed_false_and_wrong_cells(prepared):
    images = perception.load_images(prepared / "h5", "val")
    targets = perception.load_targets(prepared / "raw", "val", 8, len(images))
    cells = [np.argwhere(targets["objectness"][i] > 0.5) for i in range(len(images))]
    empty = np.argwhere(targets["objectness"][7] < 0.5)[0]

    def edit(heads, rows):
        for k, i in enumerate(rows):
            if i == 1:                                             # one object missed
                r, c = cells[1][0]
                heads["objectness"][k, 0, r, c] = -10
            if i == 7:                                             # an object where there is none
                heads["objectness"][k, 0, empty[0], empty[1]] = 10
            if i == 3:                                             # one object's colour wrong
                r, c = cells[3][0]
                heads["color"][k, :, r, c] = heads["color"][k, :, r, c].roll(1)

    perfect = perception.evaluate_perception(_HeadsFromTargets(targets), images, targets, batch_size=5)
    assert perfect["objectness_precision"] == perfect["objectness_recall"] == 1.0
    assert all(perfect[a] == 1.0 for a in sm.ATTRIBUTE_ORDER)
    errs = perception.scene_errors(_HeadsFromTargets(targets, edit), images, targets, batch_size=5)
    assert errs["objects"].tolist() == errs["cells"].tolist() == [len(c) for c in cells]
    assert np.flatnonzero(errs["missed"]).tolist() == [1] and errs["missed"][1] == 1
    assert np.flatnonzero(errs["false"]).tolist() == [7]
    assert np.flatnonzero(errs["wrong"]).tolist() == [3]
    assert np.flatnonzero(~errs["perfect"]).tolist() == [1, 3, 7]
    # a scene with one more object than occupied cells: two objects share a cell, and the heads
    # cannot report the farther one, so the scene is not perceived exactly
    objects = [len(c) + (i == 5) for i, c in enumerate(cells)]
    errs = perception.scene_errors(_HeadsFromTargets(targets, edit), images, targets, objects=objects, batch_size=5)
    assert errs["objects"].tolist() == objects and np.flatnonzero(errs["merged"]).tolist() == [5]
    assert np.flatnonzero(~errs["perfect"]).tolist() == [1, 3, 5, 7]
    with pytest.raises(ValueError, match="at least as many objects"):
        perception.scene_errors(_HeadsFromTargets(targets), images, targets, objects=[0] * len(images))
    scored = perception.evaluate_perception(_HeadsFromTargets(targets, edit), images, targets, batch_size=5)
    total = sum(len(c) for c in cells)
    assert scored["objectness_recall"] == pytest.approx((total - 1) / total)
    assert scored["color"] == pytest.approx((total - 1) / total) and scored["shape"] == 1.0


def test_accuracy_by_perception_splits_by_scene_and_object_count():
    from filmlib.analysis.errors import accuracy_by_perception, markdown
    errors = {"objects": np.array([3, 3, 5, 5]), "missed": np.array([0, 1, 0, 0]),
              "false": np.array([0, 0, 0, 2]), "wrong": np.array([0, 0, 0, 0]), "merged": np.array([0, 0, 0, 0])}
    errors["perfect"] = (errors["missed"] == 0) & (errors["false"] == 0)
    row = lambda i, t, p, a: {"image_index": i, "type": t, "prediction": p, "answer": a}   # noqa: E731
    rows = [row(0, 0, "3", "3"), row(0, 1, "yes", "no"), row(1, 0, "1", "2"), row(1, 3, "red", "red"),
            row(2, 0, "4", "4"), row(3, 0, "6", "5"), row(3, 0, "5", "5"),
            {**row(3, 0, "5", "5"), "answer": None}, row(3, -1, "5", "5")]     # neither is scored
    t = accuracy_by_perception(rows, errors)
    assert t["perfect_scenes"] == 0.5 and t["scenes_with"] == {"missed": 0.25, "false": 0.25, "wrong": 0.0, "merged": 0.0}
    assert t["all"]["perfect"] == {"accuracy": 2 / 3, "questions": 3}
    assert t["all"]["imperfect"] == {"accuracy": 2 / 4, "questions": 4}
    assert t["by_type"]["count"]["imperfect"] == {"accuracy": 1 / 3, "questions": 3}
    assert set(t["by_type"]) == {"count", "exist", "query_attribute"}
    assert t["by_objects"]["all"][5]["imperfect"] == {"accuracy": 0.5, "questions": 2}
    assert t["by_objects"]["count"][3]["perfect"] == {"accuracy": 1.0, "questions": 1}
    assert t["count_errors"]["missed only"] == {"under": 1, "right": 0, "over": 0}
    assert t["count_errors"]["false only"] == {"under": 0, "right": 1, "over": 1}
    assert t["count_errors"]["neither"] == {"under": 0, "right": 2, "over": 0}
    assert "| 5 | 100.0 (1) | 50.0 (2) | 100.0 (1) | 50.0 (2) |" in markdown(perception=t)
    with pytest.raises(ValueError, match="cover 4 images"):
        accuracy_by_perception([row(4, 0, "1", "1")], errors)


def test_accuracy_by_reasoning_sorts_questions_by_their_hardest_step():
    from filmlib.analysis.errors import accuracy_by_reasoning, markdown
    from filmlib.data.clevr import reasoning_kind
    scene = [{"function": "scene", "inputs": [], "value_inputs": []}]
    relate = [*scene, {"function": "unique", "inputs": [0]}, {"function": "relate", "inputs": [1], "value_inputs": ["left"]}]
    programs = [
        [*scene, {"function": "filter_color", "inputs": [0], "value_inputs": ["red"]}, {"function": "count", "inputs": [1]}],
        [*relate, {"function": "count", "inputs": [2]}],
        [*relate, {"function": "unique", "inputs": [2]}, {"type": "relate", "inputs": [3], "value_inputs": ["front"]},
         {"function": "exist", "inputs": [4]}],
        [*scene, {"function": "unique", "inputs": [0]}, {"function": "same_shape", "inputs": [1]},
         {"function": "count", "inputs": [2]}],
        [*scene, *scene, {"function": "union", "inputs": [0, 1]}, {"function": "count", "inputs": [2]}],
    ]
    assert [reasoning_kind(p) for p in programs] == ["filters only", "1 relation", "2+ relations",
                                                    "same attribute", "and/or"]
    questions = [{"question_index": i, "program": p} for i, p in enumerate(programs)]
    rows = [{"question_index": 0, "type": 0, "prediction": "1", "answer": "1"},
            {"question_index": 1, "type": 0, "prediction": "2", "answer": "1"},
            {"question_index": 2, "type": 1, "prediction": "yes", "answer": "yes"},
            {"question_index": 3, "type": 0, "prediction": "0", "answer": "0"},
            {"question_index": 4, "type": 0, "prediction": "3", "answer": "2"}]
    t = accuracy_by_reasoning(rows, questions)
    assert t["count"] == {"filters only": {"accuracy": 1.0, "questions": 1}, "and/or": {"accuracy": 0.0, "questions": 1},
                          "same attribute": {"accuracy": 1.0, "questions": 1},
                          "1 relation": {"accuracy": 0.0, "questions": 1}}
    assert t["exist"] == {"2+ relations": {"accuracy": 1.0, "questions": 1}} and set(t) == {"all", "count", "exist"}
    assert "| count | 100.0 (1) | 0.0 (1) | 100.0 (1) | 0.0 (1) | — |" in markdown(reasoning=t)
    with pytest.raises(ValueError, match="holds 5"):
        accuracy_by_reasoning([{**rows[0], "question_index": 5}], questions)
    unscored = [{**rows[0], "answer": None}, {**rows[1], "type": -1}]
    assert accuracy_by_reasoning(unscored, questions) == {"all": {}}
    with pytest.raises(ValueError, match="has no program"):
        accuracy_by_reasoning(rows, [*questions[:4], {"question_index": 4}])


def test_errors_cli_writes_the_report_beside_the_run(prepared, tmp_path):
    cfg = PerceptionConfig(image_size=32, channels=8, stem_layers=2)
    perception.pretrain(prepared / "h5", prepared / "raw", tmp_path / "p", cfg=cfg, epochs=1, batch_size=8,
                        threads=1, progress=False)
    run = tmp_path / "run"
    run.mkdir()
    args = ("errors", "--run", str(run), "--root", str(prepared / "raw"))
    with_perception = (*args, "--data", str(prepared / "h5"), "--perception", str(tmp_path / "p"))
    r = cli(*with_perception)
    assert r.returncode == 1 and "predictions_val.jsonl" in r.stderr and "evaluate" in r.stderr
    questions = json.loads(next((prepared / "raw" / "questions").glob("*_val_questions.json")).read_text())
    from filmlib.data.clevr import QUESTION_TYPES, question_type
    lines = [json.dumps({"prediction": q["answer"] if k % 2 else "no", "answer": q["answer"],
                         "type": QUESTION_TYPES.index(question_type(q["program"])),
                         "image_index": q["image_index"], "question_index": k})
             for k, q in enumerate(questions["questions"])]
    (run / "predictions_val.jsonl").write_text("\n".join(lines) + "\n")
    r = cli(*args)                                                # the reasoning table alone
    assert r.returncode == 0, r.stderr
    report = json.loads((run / "errors_val.json").read_text())
    assert "perception" not in report
    assert sum(c["questions"] for c in report["reasoning"]["all"].values()) == len(lines)
    r = cli(*with_perception)
    assert r.returncode == 0, r.stderr
    report = json.loads((run / "errors_val.json").read_text())
    table = report["perception"]
    assert table["scenes"] == 12 and report["split"] == "val" and json.loads(r.stdout)["perception"]["all"]
    assert table["all"]["perfect"]["questions"] + table["all"]["imperfect"]["questions"] == len(lines)
    md = (run / "errors_val.md").read_text()
    assert md.startswith("Accuracy % (questions) by question type") and "Scenes the perception heads get" in md
    r = cli(*args, "--perception", str(tmp_path / "p"))
    assert r.returncode == 2 and "--perception and --data go together" in r.stderr
    (run / "predictions_val.jsonl").write_text('{"prediction": "yes"}\n')
    r = cli(*args)
    assert r.returncode == 1 and "predictions_val.jsonl, line 1: not a predictions row" in r.stderr
