"""HDF5 caches: questions, images, ResNet features, a whole root; atomic writes."""
import json
import os

import shutil

import h5py
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from filmlib.data import clevr
from filmlib.data.clevr import FINAL_FUNCTIONS, QUESTION_TYPES, CLEVRFormatError
from filmlib.data.features import IMAGENET_MEAN, IMAGENET_STD, extract_features
from filmlib.data.preprocess import (
    DataFileError, humans_questions_path, preprocess_images, preprocess_questions,
    preprocess_root, split_image_paths,
)
from filmlib.data.vocab import Vocab, program_tokens, tokenize
from filmlib.synth.generate import SplitSpec, generate_split

SIZE = (16, 24)   # (H, W)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_split(root, SplitSpec(split="train", num_images=6, questions_per_image=3, width=48,
                                   height=32, humans_per_image=1), progress=False)
    return root


@pytest.fixture(scope="module")
def vocab(root):
    return Vocab.build(clevr.load_questions(clevr.questions_path(root, "train")))


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_questions_round_trip(root, vocab, tmp_path):
    src = clevr.questions_path(root, "train")
    questions = clevr.load_questions(src)
    summary = preprocess_questions(src, vocab, tmp_path / "q.h5")
    assert summary["questions"] == len(questions) and summary["unknown_words"] == 0
    with h5py.File(tmp_path / "q.h5") as f:
        rows = f["questions"][()]
        assert rows.dtype == np.int32 and rows.shape[0] == len(questions)
        assert (rows[:, 0] == 1).all()
        for row, q in zip(rows, questions):
            n = int(np.flatnonzero(row)[-1]) + 1
            assert row[n - 1] == 2 and not row[n:].any()           # <END>, then <NULL> padding
            assert vocab.decode_question(row) == tokenize(q["question"])
        for row, q in zip(f["programs"][()], questions):
            assert vocab.decode_program(row) == program_tokens(q["program"])
        answers = [vocab.decode_answer(a) for a in f["answers"][()]]
        assert answers == [q["answer"] for q in questions]
        families = f["question_families"][()].tolist()
        assert families == [q["question_family_index"] for q in questions]
        assert f["image_idxs"][()].tolist() == [q["image_index"] for q in questions]
        assert f["orig_idxs"][()].tolist() == list(range(len(questions)))
        assert [QUESTION_TYPES[t] for t in f["question_types"][()]] == [
            clevr.question_type(q["program"]) for q in questions]
        assert [FINAL_FUNCTIONS[t] for t in f["final_functions"][()]] == [
            clevr.final_function(q["program"]) for q in questions]
        assert Vocab.from_dict(json.loads(f.attrs["vocab"])) == vocab
        assert f.attrs["source"] == str(src.resolve())


def test_humans_and_unanswered_files(root, vocab, tmp_path):
    summary = preprocess_questions(humans_questions_path(root, "train"), vocab, tmp_path / "h.h5")
    humans = clevr.load_questions(humans_questions_path(root, "train"))
    assert summary["programs"] is False and summary["unknown_words"] > 0
    with h5py.File(tmp_path / "h.h5") as f:
        assert "programs" not in f
        assert (f["question_types"][()] == -1).all() and (f["question_families"][()] == -1).all()
        unk = [vocab.decode_question(r) for r in f["questions"][()]]
        assert any("<UNK>" in toks for toks in unk)
        assert len(unk) == len(humans)
    # a test split: no answers, no programs, no families
    bare = [{"question": "Is there a cube?", "image_index": 1},
            {"question": "What is it?", "image_index": 0}]
    clevr.save_questions(tmp_path / "test.json", bare)
    preprocess_questions(tmp_path / "test.json", vocab, tmp_path / "t.h5")
    with h5py.File(tmp_path / "t.h5") as f:
        assert f["answers"][()].tolist() == [-1, -1]
        assert f["image_idxs"][()].tolist() == [1, 0]


def test_questions_failure_leaves_no_file(vocab, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"questions": [{"question": "Is there", "image_index": -3}]}')
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CLEVRFormatError, match="bad.json"):
        preprocess_questions(bad, vocab, out / "q.h5")
    assert listing(out) == []


def test_images_equal_pil_bicubic_resize(root, tmp_path):
    out = tmp_path / "images.h5"
    summary = preprocess_images((root, "train"), out, size=SIZE, batch_size=4)
    assert summary["images"] == 6
    with h5py.File(out) as f:
        images = f["images"][()]
    assert images.dtype == np.uint8 and images.shape == (6, 3, *SIZE)
    for i in range(6):
        with Image.open(clevr.image_path(root, "train", i)) as im:
            expected = np.asarray(im.convert("RGB").resize(SIZE[::-1], Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(images[i], expected.transpose(2, 0, 1))
    # processes give the same array; so does the (root, split=) spelling
    preprocess_images(root, tmp_path / "par.h5", split="train", size=SIZE, batch_size=2,
                      workers=2)
    with h5py.File(tmp_path / "par.h5") as f:
        np.testing.assert_array_equal(f["images"][()], images)


def test_images_failure_is_atomic(root, tmp_path):
    paths = split_image_paths(root, "train")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "out" / "images.h5"
    out.parent.mkdir()
    out.write_bytes(b"previous")
    with pytest.raises(DataFileError, match="broken.png"):
        preprocess_images(paths[:3] + [broken] + paths[3:], out, size=SIZE, batch_size=2)
    assert out.read_bytes() == b"previous"                           # old file untouched
    # what was written is kept under a hidden name, never taken for the output...
    assert listing(out.parent) == [".images.h5.partial", "images.h5"]
    # ... and once the image is fixed (an input changed), the next run starts afresh and replaces it
    shutil.copyfile(paths[0], broken)
    summary = preprocess_images(paths[:3] + [broken] + paths[3:], out, size=SIZE, batch_size=2)
    assert summary["resumed_from"] == 0 and listing(out.parent) == ["images.h5"]


def test_an_interrupted_image_cache_continues_where_it_stopped(root, tmp_path, monkeypatch):
    from filmlib.data import preprocess as pre
    real = pre.iter_image_batches

    def interrupted_after_one_batch(*args, **kwargs):
        yield next(real(*args, **kwargs))
        raise KeyboardInterrupt

    out = tmp_path / "images.h5"
    monkeypatch.setattr(pre, "iter_image_batches", interrupted_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        preprocess_images(root, out, split="train", size=SIZE, batch_size=2)
    assert listing(tmp_path) == [".images.h5.partial"]
    monkeypatch.setattr(pre, "iter_image_batches", real)
    summary = preprocess_images(root, out, split="train", size=SIZE, batch_size=2)
    assert summary["resumed_from"] == 2 and listing(tmp_path) == ["images.h5"]
    preprocess_images(root, tmp_path / "fresh.h5", split="train", size=SIZE, batch_size=2)
    with h5py.File(out) as a, h5py.File(tmp_path / "fresh.h5") as b:
        np.testing.assert_array_equal(a["images"][()], b["images"][()])
        assert "rows_done" not in a.attrs and "resume_key" not in a.attrs


def test_image_folder_with_a_gap(root, tmp_path):
    folder = tmp_path / "images" / "val"
    folder.mkdir(parents=True)
    for i in (0, 1, 3):
        (folder / f"CLEVR_val_{i:06d}.png").write_bytes(b"")
    with pytest.raises(DataFileError, match="CLEVR_val_000002.png is missing"):
        split_image_paths(tmp_path, "val")
    with pytest.raises(DataFileError, match="no such image folder"):
        split_image_paths(tmp_path, "test")


def _reference_features(model, paths, size):
    x = []
    for p in paths:
        with Image.open(p) as im:
            x.append(np.asarray(im.convert("RGB").resize(size[::-1], Image.Resampling.BICUBIC)))
    x = torch.from_numpy(np.stack(x)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    with torch.no_grad():
        return model(x).numpy()


def test_extract_features_matches_truncated_resnet101(root, tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet101(weights=None).eval()
    conv4 = torch.nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                resnet.layer1, resnet.layer2, resnet.layer3).eval()
    paths = split_image_paths(root, "train")[:3]

    # the paper's input size: one image, to keep the test quick
    summary = extract_features(paths[:1], tmp_path / "f.h5", weights=None, seed=0)
    with h5py.File(tmp_path / "f.h5") as f:
        feats = f["features"][()]
    assert summary["shape"] == [1, 1024, 14, 14]
    assert feats.dtype == np.float32 and feats.shape == (1, 1024, 14, 14)
    ref = _reference_features(conv4, paths[:1], (224, 224))
    np.testing.assert_allclose(feats, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())

    # weights from a local file (seed 123 would give other numbers); batches of 2 for 3
    # images; float16 storage
    weights = tmp_path / "resnet101.pt"
    torch.save(resnet.state_dict(), weights)
    extract_features(paths, tmp_path / "w.h5", weights=weights, seed=123, image_size=(32, 32),
                     batch_size=2, dtype="float16")
    with h5py.File(tmp_path / "w.h5") as f:
        small = f["features"][()]
    assert small.dtype == np.float16 and small.shape == (3, 1024, 2, 2)
    ref = _reference_features(conv4, paths, (32, 32))
    np.testing.assert_allclose(small.astype(np.float32), ref, rtol=2e-3,
                               atol=2e-3 * np.abs(ref).max())

    with pytest.raises(DataFileError, match="not found"):
        extract_features(paths, tmp_path / "x.h5", weights=tmp_path / "missing.pt")
    assert not (tmp_path / "x.h5").exists()


_KILLABLE = """
import sys, time
from filmlib.data import features as F
real = F.iter_image_batches
def announced(*args, **kwargs):
    for item in real(*args, **kwargs):
        yield item
        print("wrote", item[0], flush=True)     # the consumer has written (and flushed) that batch
        time.sleep(0.5)
F.iter_image_batches = announced
F.extract_features(sys.argv[1], sys.argv[2], split="train", stage=1, image_size=(32, 32), batch_size=1,
                   dtype="float16")
"""


def test_features_killed_mid_run_continue_from_the_last_written_batch(root, tmp_path):
    import signal
    import subprocess
    import sys
    out = tmp_path / "features.h5"
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(root), str(out)], stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert all(line.startswith("wrote") for line in lines), lines
        proc.send_signal(signal.SIGKILL)          # no cleanup of any kind
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
    assert not out.exists() and (tmp_path / ".features.h5.partial").exists()
    summary = extract_features(root, out, split="train", stage=1, image_size=(32, 32), batch_size=1,
                               dtype="float16")
    assert 2 <= summary["resumed_from"] < 6
    assert not (tmp_path / ".features.h5.partial").exists()
    fresh = extract_features(root, tmp_path / "fresh.h5", split="train", stage=1, image_size=(32, 32),
                             batch_size=1, dtype="float16")
    assert fresh["resumed_from"] == 0
    with h5py.File(out) as a, h5py.File(tmp_path / "fresh.h5") as b:
        np.testing.assert_array_equal(a["features"][()], b["features"][()])
        assert a["features"].chunks == (1, 256, 8, 8) and "rows_done" not in a.attrs


def test_preprocess_root_layout_and_skipping(root, tmp_path):
    out = tmp_path / "cache"
    m = preprocess_root(root, out, splits=("train", "val"), image_size=SIZE, humans_min_count=1)
    assert listing(out) == ["manifest.json", "train_humans_questions.h5", "train_images.h5",
                            "train_questions.h5", "vocab.json", "vocab_humans.json"]
    assert not any(r["skipped"] for r in m["report"].values())
    assert m["image_size"] == list(SIZE)
    assert json.loads((out / "manifest.json").read_text())["outputs"].keys() == m["outputs"].keys()
    vocab, grown = Vocab.load(out / "vocab.json"), Vocab.load(out / "vocab_humans.json")
    assert len(grown.question_token_to_idx) > len(vocab.question_token_to_idx)
    with h5py.File(out / "train_humans_questions.h5") as f:
        assert f["questions"][()].max() >= len(vocab.question_token_to_idx)  # uses new words

    again = preprocess_root(root, out, splits=("train", "val"), image_size=SIZE,
                            humans_min_count=1)
    assert all(r["skipped"] for r in again["report"].values())

    # a changed image size remakes only the images
    third = preprocess_root(root, out, splits=("train",), image_size=(8, 8), humans_min_count=1)
    remade = sorted(k for k, r in third["report"].items() if not r["skipped"])
    assert remade == ["train_images.h5"]
    with h5py.File(out / "train_images.h5") as f:
        assert f["images"].shape == (6, 3, 8, 8)

    # a changed questions file remakes its cache (and the vocabulary built from it)
    src = clevr.questions_path(root, "train")
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fourth = preprocess_root(root, out, splits=("train",), image_size=(8, 8), humans_min_count=1)
    remade = sorted(k for k, r in fourth["report"].items() if not r["skipped"])
    assert remade == ["train_questions.h5", "vocab.json"]


def test_a_partial_file_another_process_is_writing_is_left_alone(root, tmp_path):
    import subprocess
    import sys
    from filmlib.io import FolderBusyError
    partial = tmp_path / ".images.h5.partial"
    h5py.File(partial, "w").close()
    holder = subprocess.Popen([sys.executable, "-c", f"import h5py, time; f = h5py.File({str(partial)!r}, 'a'); "
                               "print('open', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(FolderBusyError, match=r"\.images\.h5\.partial is being written by another process"):
            preprocess_images(root, tmp_path / "images.h5", split="train", size=SIZE)
        assert partial.exists() and not (tmp_path / "images.h5").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_partial_file_of_other_inputs_is_not_resumed(root, tmp_path):
    paths = split_image_paths(root, "train")
    out = tmp_path / "images.h5"
    partial = tmp_path / ".images.h5.partial"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataFileError):                     # stops after the first batch: a partial file
        preprocess_images(paths[:2] + [broken] + paths[3:], out, size=SIZE, batch_size=2)
    assert partial.exists()
    # the same folder and count, but a different list: started afresh
    summary = preprocess_images(paths[::-1], out, size=SIZE, batch_size=2)
    assert summary["resumed_from"] == 0


def test_prepare_maps_makes_the_papers_resnet_features_from_the_weights_file(root, tmp_path, monkeypatch):
    from filmlib.experiment import prepare_maps
    cache = tmp_path / "cache"
    monkeypatch.setenv("FILMLIB_RESNET101", str(tmp_path / "resnet101-63fe2227.pth"))
    with pytest.raises(FileNotFoundError, match=r"resnet101-63fe2227\.pth: no ResNet-101 weights.*curl -L -o"):
        prepare_maps("paper", root, cache, tmp_path / "results", features="features", splits=("train",), device="cpu")
    assert not cache.exists() or not list(cache.iterdir())
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet101(weights=None).state_dict(), tmp_path / "resnet101-63fe2227.pth")
    made = prepare_maps("paper", root, cache, tmp_path / "results", features="features", splits=("train",),
                        device="cpu", progress=False)
    with h5py.File(made["train"]) as f:
        assert f["features"].shape == (6, 1024, 14, 14) and f["features"].dtype == np.float16
        assert f.attrs["weights"] == str((tmp_path / "resnet101-63fe2227.pth").resolve())
    first = os.stat(made["train"]).st_mtime_ns
    prepare_maps("paper", root, cache, tmp_path / "results", features="features", splits=("train",), device="cpu",
                 progress=False)
    assert os.stat(made["train"]).st_mtime_ns == first                     # made from these weights: kept
    # a features file from other weights (here: `preprocess --features` without any, for plumbing) is remade
    extract_features(root, made["train"], split="train", weights=None, stage=1, image_size=(32, 32))
    prepare_maps("paper", root, cache, tmp_path / "results", features="features", splits=("train",), device="cpu",
                 progress=False)
    with h5py.File(made["train"]) as f:
        assert f["features"].shape == (6, 1024, 14, 14) and f.attrs["weights"].endswith("resnet101-63fe2227.pth")
