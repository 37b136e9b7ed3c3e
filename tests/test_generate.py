"""Writing splits: layout, determinism across workers and shards, atomicity, CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from filmlib.data import clevr
from filmlib.programs import execute
from filmlib.synth import generate as gen
from filmlib.synth.attributes import COGENT
from filmlib.synth.generate import (REVISION_DATE, SplitSpec, generate_split, humans_path,
                                    merge_shards)
from filmlib.synth.text import CLEVR_LEXICON, vocabulary

from synth_helpers import layout_scenes

SPEC = SplitSpec(split="val", num_images=12, questions_per_image=4, width=64, height=48, seed=5,
                 reset_every=5, humans_per_image=1)


def tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    summary = generate_split(root, SPEC, workers=1, progress=False)
    return root, summary


def test_layout_and_contents(made):
    root, summary = made
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == sorted([f"images/val/CLEVR_val_{i:06d}.png" for i in range(12)] + [
        "scenes/CLEVR_val_scenes.json", "questions/CLEVR_val_questions.json",
        "questions/CLEVR-Humans-val.json"])
    scenes = clevr.load_scenes(clevr.scenes_path(root, "val"))      # validates every record
    questions = clevr.load_questions(clevr.questions_path(root, "val"))
    assert [s["image_index"] for s in scenes] == list(range(12))
    assert len(questions) == 48 == summary["questions"]
    assert [q["question_index"] for q in questions] == list(range(48))
    for q in questions:
        assert set(q) == {"split", "image_index", "image_filename", "question", "answer", "program",
                          "question_family_index", "question_index"}
        assert execute(q["program"], scenes[q["image_index"]]) == q["answer"]
    with Image.open(clevr.image_path(root, "val", 3)) as im:   # opaque RGBA, as CLEVR's
        assert im.size == (64, 48) and im.mode == "RGBA"
        assert np.asarray(im)[..., 3].min() == 255
    info = clevr.read_info(clevr.questions_path(root, "val"))
    assert info["split"] == "val" and info["synthclevr"]["seed"] == 5
    # CLEVR's info keys, with a date fixed by the generator's revision (bytes stay reproducible)
    assert {"split", "version", "date", "license"} <= set(info)
    assert info["date"] == REVISION_DATE and clevr.read_info(clevr.scenes_path(root, "val"))["date"]
    rejected = info["question_engine"]["rejected"]
    assert rejected["degenerate_pruned"] > 0 and rejected["constraint"] > 0
    used = info["question_engine"]["phrasings"]           # family -> phrasing -> questions
    assert sum(n for p in used.values() for n in p.values()) == 48
    assert {int(f) for f in used} == {q["question_family_index"] for q in questions}


def test_paraphrase_split_is_labelled_and_has_no_programs(made):
    root, _ = made
    info, humans = clevr.load_questions_file(humans_path(root, "val"))
    assert info["synthetic"] is True and "NOT human-written" in info["description"]
    assert len(humans) == 12
    clevr_words = vocabulary(CLEVR_LEXICON)
    for q in humans:
        assert "program" not in q and "question_family_index" not in q
        words = set(q["question"].lower().strip("?.").replace(";", " ").split())
        assert words - clevr_words


def test_same_seed_same_bytes_whatever_workers(made, tmp_path):
    root, _ = made
    generate_split(tmp_path, SPEC, workers=2, progress=False)
    assert tree_bytes(tmp_path) == tree_bytes(root)
    other = tmp_path / "other-seed"
    generate_split(other, SplitSpec(**{**SPEC.__dict__, "seed": 6}), workers=1, progress=False)
    assert tree_bytes(other) != tree_bytes(root)


def test_shards_merge_to_the_same_bytes(made, tmp_path):
    root, _ = made
    for i in range(3):
        generate_split(tmp_path, SPEC, shard=(i, 3), progress=False)
    assert not clevr.questions_path(tmp_path, "val").exists()        # nothing published yet
    merge_shards(tmp_path, "val", 3)
    assert tree_bytes(tmp_path) == tree_bytes(root)


def test_interrupted_merge_can_be_retried(made, tmp_path, monkeypatch):
    root, _ = made
    for i in range(2):
        generate_split(tmp_path, SPEC, shard=(i, 2), progress=False)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen.clevr, "save_questions", boom)
    with pytest.raises(KeyboardInterrupt):
        merge_shards(tmp_path, "val", 2)
    monkeypatch.undo()
    merge_shards(tmp_path, "val", 2)
    assert tree_bytes(tmp_path) == tree_bytes(root)


def test_corrupt_shard_record_is_named(tmp_path):
    for i in range(2):
        generate_split(tmp_path, SPEC, shard=(i, 2), progress=False)
    part = tmp_path / ".shards" / "val" / "done-1-of-2" / "part.json"
    part.write_text('{"spec": {"nonsense": 1}}')
    with pytest.raises(ValueError, match="done-1-of-2/part.json"):
        merge_shards(tmp_path, "val", 2)


def test_merge_refuses_missing_shard(tmp_path):
    generate_split(tmp_path, SPEC, shard=(0, 2), progress=False)
    with pytest.raises(FileNotFoundError, match="shard 1/2"):
        merge_shards(tmp_path, "val", 2)


def test_interrupted_run_leaves_no_half_written_split(made, tmp_path, monkeypatch):
    root, _ = made

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen, "questions_for_chunk", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_split(tmp_path, SPEC, workers=1, progress=False)
    published = [p for p in tmp_path.rglob("*") if ".staging" not in str(p)]
    assert published == [], published                         # only the hidden staging folder
    monkeypatch.undo()
    generate_split(tmp_path, SPEC, workers=1, progress=False)  # a rerun clears it and completes
    assert tree_bytes(tmp_path) == tree_bytes(root)
    # a failed regeneration keeps the previous complete split intact
    monkeypatch.setattr(gen, "questions_for_chunk", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_split(tmp_path, SPEC, workers=1, progress=False)
    assert {k: v for k, v in tree_bytes(tmp_path).items() if ".staging" not in k} == tree_bytes(root)


def test_cogent_split_names_and_colours(tmp_path):
    spec = SplitSpec(split="train", num_images=10, questions_per_image=2, width=48, height=48, cogent="B")
    generate_split(tmp_path, spec, progress=False)
    scenes = clevr.load_scenes(clevr.scenes_path(tmp_path, "trainB"))
    assert clevr.image_path(tmp_path, "trainB", 0).exists()
    for s in scenes:
        assert s["split"] == "trainB"
        for o in s["objects"]:
            assert o["color"] in COGENT["B"][o["shape"]]


def test_split_is_current_and_dataset_keeps_existing(made):
    root, _ = made
    assert gen.split_is_current(root, SPEC)
    assert not gen.split_is_current(root, SplitSpec(**{**SPEC.__dict__, "width": 65}))


@pytest.mark.parametrize("bad, message", [
    ({"split": "dev"}, "split must be"), ({"cogent": "C"}, "cogent"), ({"num_images": 0}, "num_images"),
    ({"min_objects": 5, "max_objects": 3}, "min_objects"), ({"max_objects": 11}, "max_objects"),
])
def test_bad_specs_are_refused(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        generate_split(tmp_path, SplitSpec(**{**SPEC.__dict__, **bad}), progress=False)
    assert list(tmp_path.iterdir()) == []


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "filmlib", *args], capture_output=True, text=True)


def test_cli_help_lists_every_option():
    out = run_cli("generate", "--help").stdout
    documented = {line.split()[0].rstrip(",") for line in out.splitlines()
                  if line.startswith("  --")}
    assert documented >= {"--out", "--split", "--images", "--questions-per-image", "--width",
                          "--height", "--seed", "--workers", "--cogent", "--shard",
                          "--humans-per-image", "--reset-every", "--min-objects", "--max-objects"}
    for line in out.split("\n  --")[1:]:            # every option carries a help text
        assert len(line.split()) > 2, line


def test_cli_generate_and_bad_shard(tmp_path):
    r = run_cli("generate", "--out", str(tmp_path), "--split", "test", "--images", "3", "--width", "32",
                "--height", "32", "--questions-per-image", "2", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["questions"] == 6
    assert clevr.image_path(tmp_path, "test", 2).exists()
    r = run_cli("generate", "--out", str(tmp_path), "--split", "test", "--images", "3", "--shard", "3/2")
    assert r.returncode == 2 and "--shard 3/2" in r.stderr
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    r = run_cli("generate", "--out", str(a_file), "--split", "test", "--images", "1", "--quiet")
    assert r.returncode == 1 and r.stderr.startswith("error:") and "a-file" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_questions_on_foreign_scenes(tmp_path):
    """The engine runs on scene files it did not make (here: written by hand-rolled code,
    with the generator's type/side_inputs-free CLEVR keys)."""
    scenes = layout_scenes(30, seed=11, split="val")
    src = tmp_path / "CLEVR_val_scenes.json"
    src.write_text(json.dumps({"info": {"split": "val"}, "scenes": scenes}))
    out = tmp_path / "q.json"
    r = run_cli("questions", "--scenes", str(src), "--out", str(out), "--per-image", "3")
    assert r.returncode == 0, r.stderr
    questions = clevr.load_questions(out)
    assert len(questions) == 90
    for q in questions:
        assert execute(q["program"], scenes[q["image_index"]]) == q["answer"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"scenes": [{"split": "val"}]}')
    r = run_cli("questions", "--scenes", str(bad), "--out", str(out))
    assert r.returncode != 0 and "bad.json" in r.stderr and "scenes[0]" in r.stderr


def test_same_bytes_across_interpreters_and_hash_seeds(tmp_path):
    """Nothing may depend on str hashing (set/dict order of strings) or process state."""
    import os
    trees = []
    for hash_seed in ("1", "987"):
        out = tmp_path / hash_seed
        r = subprocess.run([sys.executable, "-m", "filmlib", "generate", "--out", str(out), "--split", "val",
                            "--images", "6", "--width", "48", "--height", "32", "--questions-per-image", "3",
                            "--humans-per-image", "1", "--seed", "4", "--quiet"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert r.returncode == 0, r.stderr
        trees.append(tree_bytes(out))
    assert trees[0] == trees[1] and len(trees[0]) == 9
