"""filmlib.shipped: the committed model loads and is checked; export/load round-trips a run; a
changed, damaged or ill-fitting file is refused with a message naming it."""
import json
import shutil

import pytest
import torch

from filmlib import shipped
from filmlib.experiment import load_run, train_film

from test_experiment import prepared  # noqa: F401  (the module-scoped tiny dataset)


def test_the_committed_model_loads_checked_and_small():
    s = shipped.load()
    files = [shipped.WEIGHTS_DIR / f for f in s.info["files"].values()]
    assert sum(f.stat().st_size for f in files) < 20 * 2**20
    assert s.film.cfg.vocab_size == len(s.vocab.question_token_to_idx) and not s.film.training
    assert s.info["source"]["questions_seen"] > 1_000_000 and s.info["source"]["features"] == "perception"
    maps = s.perception.trunk(torch.zeros(1, 3, 80, 80))           # what the FiLM model reads
    assert maps.shape == (1, s.film.cfg.feature_channels, s.film.cfg.feature_size, s.film.cfg.feature_size)
    q = torch.tensor([s.vocab.encode_question("Are there any cubes?")])
    assert s.film(maps, q).shape == (1, s.vocab.num_answers)


@pytest.fixture(scope="module")
def exported(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("ship")
    run = out / "run"
    train_film(prepared / "h5", run, preset_name="smoke", stem="pixels", epochs=1, batch_size=8, progress=False)
    perc = shipped.WEIGHTS_DIR / "film_cpu_perception.safetensors"
    # a perception checkpoint in the trainer's format, from the committed one's tensors
    from safetensors.torch import load_file
    from filmlib.train import atomic_save
    info = json.loads((shipped.WEIGHTS_DIR / "film_cpu.json").read_text())
    atomic_save({"model": load_file(str(perc)), "config": info["perception_config"]}, out / "perception.pt")
    shipped.export(run, out / "perception.pt", prepared / "h5" / "vocab.json", out / "w", "tiny")
    return run, out / "w"


def test_export_then_load_gives_the_runs_model(exported):
    run, w = exported
    s = shipped.load("tiny", w)
    model, _ = load_run(run)
    for k, v in model.state_dict().items():
        assert torch.equal(v, s.film.state_dict()[k]), k
    assert json.loads((w / "tiny.json").read_text())["source"]["run"] == "run"


def _copy(w, tmp_path):
    d = tmp_path / "w"
    shutil.copytree(w, d)
    return d


def test_a_changed_file_is_refused(exported, tmp_path):
    d = _copy(exported[1], tmp_path)
    f = d / "tiny.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(shipped.ShippedWeightsError, match=r"tiny\.safetensors: SHA-256 .* differs from the manifest"):
        shipped.load("tiny", d)


def test_a_file_that_does_not_fit_its_config_is_refused(exported, tmp_path):
    d = _copy(exported[1], tmp_path)
    info = json.loads((d / "tiny.json").read_text())
    info["film_config"]["classifier_hidden"] += 1
    (d / "tiny.json").write_text(json.dumps(info))
    with pytest.raises(shipped.ShippedWeightsError, match=r"tiny\.safetensors: .* has shape"):
        shipped.load("tiny", d)
    info["film_config"]["vocab_size"] += 1
    (d / "tiny.json").write_text(json.dumps(info))
    with pytest.raises(shipped.ShippedWeightsError, match="does not fit the model's config"):
        shipped.load("tiny", d)
    (d / "tiny.json").write_text("{not json")
    with pytest.raises(shipped.ShippedWeightsError, match=r"tiny\.json: not a valid manifest"):
        shipped.load("tiny", d)
    (d / "tiny_perception.safetensors").unlink()
    with pytest.raises(shipped.ShippedWeightsError, match="no such shipped model"):
        shipped.load("nope", d)


def test_a_missing_weights_file_is_named(exported, tmp_path):
    d = _copy(exported[1], tmp_path)
    (d / "tiny_perception.safetensors").unlink()
    with pytest.raises(shipped.ShippedWeightsError, match=r"tiny_perception\.safetensors: missing"):
        shipped.load("tiny", d)


def test_maps_made_by_another_perception_cnn_are_told_apart(tmp_path):
    import h5py
    import numpy as np
    s = shipped.load()
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 80, 80), dtype=np.uint8)
    from filmlib.data.features import normalize_images
    maps = s.perception.trunk(normalize_images(torch.from_numpy(images))).detach().numpy().astype(np.float16)
    with h5py.File(tmp_path / "val_images.h5", "w") as f:
        f["images"] = images
    with h5py.File(tmp_path / "val_perception.h5", "w") as f:
        f["features"] = maps
    assert shipped.reads_these_maps(s, tmp_path, n=4)
    with h5py.File(tmp_path / "val_perception.h5", "w") as f:
        f["features"] = maps * 1.5
    assert not shipped.reads_these_maps(s, tmp_path, n=4)
    assert not shipped.reads_these_maps(s, tmp_path / "nowhere")
