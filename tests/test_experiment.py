"""The command-line pipeline end to end: generate -> preprocess -> train -> evaluate."""
import json
import subprocess
import sys

import pytest

from filmlib.experiment import train_film
from filmlib.synth.generate import SplitSpec, generate_split


def cli(*args):
    r = subprocess.run([sys.executable, "-m", "filmlib", *args], capture_output=True, text=True, timeout=300)
    return r


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    for split, n in (("train", 30), ("val", 10)):
        generate_split(root / "raw", SplitSpec(split=split, num_images=n, questions_per_image=5,
                                               width=60, height=40, seed=2), progress=False)
    r = cli("preprocess", "--root", str(root / "raw"), "--out", str(root / "h5"), "--image-size", "32",
            "--splits", "train", "val")
    assert r.returncode == 0, r.stderr
    return root


def test_train_then_evaluate(prepared):
    run, data = prepared / "run", prepared / "h5"
    r = cli("train", "--data", str(data), "--out", str(run), "--preset", "smoke", "--epochs", "2",
            "--threads", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["epochs"] == 2 and summary["steps"] == 4          # 150 questions // 64 = 2 a epoch
    r = cli("evaluate", "--run", str(run), "--data", str(data), "--split", "val")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    rows = [json.loads(x) for x in (run / "predictions_val.jsonl").read_text().splitlines()]
    assert len(rows) == 50
    assert metrics["val_accuracy"] == pytest.approx(sum(r["prediction"] == r["answer"] for r in rows) / 50)
    assert set(metrics["by_type"]) == {"count", "exist", "compare_numbers", "query_attribute", "compare_attribute"}
    table = (run / "table1.md").read_text()
    assert "(ours) | SynthCLEVR" in table and "(paper) | CLEVR v1.0 test | 97.7" in table


def test_train_takes_the_classifier_pool(prepared, tmp_path):
    """`--classifier-pool max+mean` (the cpu scale's recipe) reaches the model the run saves."""
    import torch
    r = cli("train", "--data", str(prepared / "h5"), "--out", str(tmp_path), "--preset", "smoke", "--epochs", "1",
            "--threads", "1", "--quiet", "--classifier-pool", "max+mean")
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["model_config"]["classifier_pool"] == "max+mean"
    fc = ckpt["model"]["network.classifier.mlp.0.weight"]
    assert fc.shape[1] == 2 * ckpt["model_config"]["classifier_channels"]      # the max and the mean


def test_image_size_mismatch_is_explained(prepared, tmp_path):
    with pytest.raises(ValueError, match="images are 32x32 but the model expects 80x80"):
        train_film(prepared / "h5", tmp_path, preset_name="cpu", epochs=1, progress=False)


def test_missing_preprocessing_is_explained(tmp_path):
    r = cli("train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--preset", "smoke")
    assert r.returncode == 1 and "vocab.json" in r.stderr and "Traceback" not in r.stderr


def test_data_command_makes_what_the_notebooks_read_then_keeps_it(tmp_path):
    """`python -m filmlib data --scale smoke` (what `make data` runs): SynthCLEVR at the scale's
    size, every split preprocessed at FiLM's image size, the perception CNN pre-trained and its
    maps cached; a second run keeps everything (nothing rewritten)."""
    import json
    from filmlib.config import load_scale
    root, results = tmp_path / "synthclevr", tmp_path / "results"
    r = cli("data", "--scale", "smoke", "--root", str(root), "--results", str(results), "--quiet")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    size = load_scale("smoke")["film"]["image_size"]
    cache = tmp_path / "cache" / f"synthclevr-{size}"
    assert out["cache"] == str(cache) and set(out["generated"]) == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        assert (root / "questions" / f"CLEVR_{split}_questions.json").is_file()
        assert (cache / f"{split}_images.h5").is_file() and (cache / f"{split}_perception.h5").is_file()
    assert (cache / "vocab.json").is_file() and (results / "perception_smoke" / "perception.pt").is_file()
    assert 0 <= out["perception_val"]["color"] <= 1
    # the cache's manifest.json is written again on each preprocess; every data file is kept
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file() and p.name != "manifest.json"}
    again = cli("data", "--scale", "smoke", "--root", str(root), "--results", str(results), "--quiet")
    assert again.returncode == 0, again.stderr
    assert set(json.loads(again.stdout)["generated"].values()) == {"kept"}
    assert {p: p.stat().st_mtime_ns for p in files} == files
    bad = cli("data", "--scale", "smoke", "--root", str(cache / "vocab.json"))
    assert bad.returncode == 1 and "vocab.json: --root must be a folder" in bad.stderr


def test_prepare_data_asks_for_the_resnet_weights_before_generating(tmp_path, monkeypatch):
    """At a scale whose FiLM reads ResNet-101 features (paper), missing weights are reported
    first, naming the file, not after hours of rendering."""
    from filmlib.experiment import prepare_data
    monkeypatch.setenv("FILMLIB_RESNET101", str(tmp_path / "no-resnet.pth"))
    with pytest.raises(FileNotFoundError, match="no-resnet.pth: no ResNet-101 weights"):
        prepare_data("paper", tmp_path / "synthclevr", tmp_path / "results", progress=False)
    assert not (tmp_path / "synthclevr").exists()
