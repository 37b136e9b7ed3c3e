"""Every user mistake on the command line ends in one clear line, not a traceback.

Each kind of bad input below runs `python -m filmlib ...` as a subprocess and checks: the exit
status (2: a bad command line, 1: a missing, damaged or busy file, 130: Ctrl-C), one line on
stderr naming the culprit (the option or the file), no "Traceback", and nothing written or left
half-written where the command writes. The simple kinds run a few at a time (each pays for
importing torch). Then Ctrl-C, two concurrent writers and a full disk, one test each.
"""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch

from filmlib import cli
from filmlib.data import clevr
from filmlib.data.preprocess import LOCK, preprocess_root
from filmlib.experiment import train_film
from filmlib.io import output_lock
from filmlib.synth.generate import SplitSpec, generate_split

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "filmlib", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def files(path: Path) -> dict:
    """Every file under ``path`` (or ``path`` itself) with its bytes."""
    path = Path(path)
    if path.is_file():
        return {path.name: path.read_bytes()}
    if not path.is_dir():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_one_line(stderr: str, culprit: str):
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert culprit in lines[0], (culprit, stderr)


# --- a tiny dataset and run, made once ----------------------------------------------------------

@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    raw, h5, run = base / "raw", base / "h5", base / "run"
    for split, n in (("train", 8), ("val", 4)):
        generate_split(raw, SplitSpec(split=split, num_images=n, questions_per_image=3, width=48,
                                      height=32, seed=1), progress=False)
    preprocess_root(raw, h5, splits=("train", "val"), image_size=(32, 32))
    train_film(h5, run, preset_name="smoke", epochs=1, batch_size=8, threads=1, progress=False)
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    return {"base": base, "raw": raw, "h5": h5, "run": run}


# --- the kinds of bad input ------------------------------------------------------------------

CASES = {}


def case(status):
    """Register a kind of bad input: ``fn(ctx, tmp)`` returns {"args", "culprit"} and optionally
    "watch" (where nothing may change; default ``tmp``), "during" (a context manager held while
    the command runs) and "skip" (a reason)."""
    def register(fn):
        CASES[fn.__name__] = (status, fn)
        return fn
    return register


def gen(out, *extra):
    return ["generate", "--out", out, "--split", "val", "--images", "2", "--width", "48",
            "--height", "32", "--quiet", *extra]


@case(2)
def generate_image_too_small(c, tmp):
    return {"args": gen(tmp / "ds", "--width", "8", "--height", "8"), "culprit": "--width"}


@case(2)
def generate_zero_images(c, tmp):
    return {"args": gen(tmp / "ds", "--images", "0"), "culprit": "--images"}


@case(2)
def generate_images_not_a_number(c, tmp):
    return {"args": gen(tmp / "ds", "--images", "ten"), "culprit": "--images"}


@case(2)
def generate_negative_questions_per_image(c, tmp):
    return {"args": gen(tmp / "ds", "--questions-per-image", "-1"), "culprit": "--questions-per-image"}


@case(2)
def generate_negative_humans_per_image(c, tmp):
    return {"args": gen(tmp / "ds", "--humans-per-image", "-1"), "culprit": "--humans-per-image"}


@case(2)
def generate_negative_seed(c, tmp):
    return {"args": gen(tmp / "ds", "--seed", "-1"), "culprit": "--seed"}


@case(2)
def generate_min_objects_above_max(c, tmp):
    return {"args": gen(tmp / "ds", "--min-objects", "5", "--max-objects", "3"), "culprit": "--min-objects"}


@case(2)
def generate_too_many_objects(c, tmp):
    return {"args": gen(tmp / "ds", "--max-objects", "11"), "culprit": "--max-objects"}


@case(2)
def generate_bad_shard(c, tmp):
    return {"args": gen(tmp / "ds", "--shard", "3/2"), "culprit": "--shard"}


@case(2)
def generate_unknown_split(c, tmp):
    args = gen(tmp / "ds")
    args[args.index("val")] = "dev"
    return {"args": args, "culprit": "--split"}


@case(2)
def generate_unknown_option(c, tmp):
    return {"args": gen(tmp / "ds", "--colour", "red"), "culprit": "--colour"}


@case(1)
def generate_out_is_a_file(c, tmp):
    (tmp / "a-file").write_text("x")
    return {"args": gen(tmp / "a-file"), "culprit": str(tmp / "a-file")}


@case(1)
def merge_without_shards(c, tmp):
    return {"args": ["merge", "--out", tmp, "--split", "val", "--shards", "2"], "culprit": "shard 0/2"}


@case(1)
def merge_damaged_shard_record(c, tmp):
    spec = SplitSpec(split="val", num_images=2, questions_per_image=1, width=32, height=32, reset_every=1)
    for i in range(2):
        generate_split(tmp / "ds", spec, shard=(i, 2), progress=False)
    part = tmp / "ds" / ".shards" / "val" / "done-1-of-2" / "part.json"
    part.write_text('{"spec": {"nonsense": 1}}')
    return {"args": ["merge", "--out", tmp / "ds", "--split", "val", "--shards", "2"], "culprit": str(part)}


@case(2)
def merge_zero_shards(c, tmp):
    return {"args": ["merge", "--out", tmp, "--split", "val", "--shards", "0"], "culprit": "--shards"}


@case(2)
def questions_negative_per_image(c, tmp):
    scenes = clevr.scenes_path(c["raw"], "val")
    return {"args": ["questions", "--scenes", scenes, "--out", tmp / "q.json", "--per-image", "-2"],
            "culprit": "--per-image"}


@case(1)
def questions_missing_scenes_file(c, tmp):
    return {"args": ["questions", "--scenes", tmp / "nope.json", "--out", tmp / "q.json"],
            "culprit": str(tmp / "nope.json")}


@case(1)
def questions_scenes_file_of_random_bytes(c, tmp):
    (tmp / "scenes.json").write_bytes(os.urandom(300) + b"\xff\xfe")
    return {"args": ["questions", "--scenes", tmp / "scenes.json", "--out", tmp / "q.json"],
            "culprit": str(tmp / "scenes.json")}


@case(1)
def questions_scenes_file_cut_short(c, tmp):
    text = clevr.scenes_path(c["raw"], "val").read_text()
    (tmp / "scenes.json").write_text(text[:len(text) // 2])
    return {"args": ["questions", "--scenes", tmp / "scenes.json", "--out", tmp / "q.json"],
            "culprit": str(tmp / "scenes.json")}


@case(1)
def questions_out_is_a_folder(c, tmp):
    (tmp / "q").mkdir()
    return {"args": ["questions", "--scenes", clevr.scenes_path(c["raw"], "val"), "--out", tmp / "q"],
            "culprit": str(tmp / "q")}


@case(1)
def render_unknown_scene_index(c, tmp):
    scenes = clevr.scenes_path(c["raw"], "val")
    return {"args": ["render", "--scenes", scenes, "--index", "99", "--out", tmp / "r.png"],
            "culprit": str(scenes)}


@case(1)
def render_missing_compare_image(c, tmp):
    scenes = clevr.scenes_path(c["raw"], "val")
    return {"args": ["render", "--scenes", scenes, "--index", "0", "--out", tmp / "r.png",
                     "--compare", tmp / "real.png"], "culprit": str(tmp / "real.png")}


@case(2)
def render_image_too_small(c, tmp):
    scenes = clevr.scenes_path(c["raw"], "val")
    return {"args": ["render", "--scenes", scenes, "--index", "0", "--out", tmp / "r.png", "--height", "4"],
            "culprit": "--height"}


@case(2)
def preprocess_unknown_split(c, tmp):
    return {"args": ["preprocess", "--root", c["raw"], "--out", tmp / "h5", "--splits", "bogus", "--quiet"],
            "culprit": "--splits bogus"}


@case(1)
def preprocess_missing_root(c, tmp):
    return {"args": ["preprocess", "--root", tmp / "nowhere", "--out", tmp / "h5", "--quiet"],
            "culprit": str(tmp / "nowhere")}


@case(2)
def preprocess_zero_image_size(c, tmp):
    return {"args": ["preprocess", "--root", c["raw"], "--out", tmp / "h5", "--image-size", "0"],
            "culprit": "--image-size"}


@case(1)
def preprocess_missing_weights_file(c, tmp):
    return {"args": ["preprocess", "--root", c["raw"], "--out", tmp / "h5", "--features", "--weights",
                     tmp / "resnet.pth", "--quiet"], "culprit": str(tmp / "resnet.pth")}


@case(2)
def preprocess_weights_without_features(c, tmp):
    (tmp / "resnet.pth").write_bytes(b"x")
    return {"args": ["preprocess", "--root", c["raw"], "--out", tmp / "h5", "--weights", tmp / "resnet.pth"],
            "culprit": "--weights"}


@case(1)
def preprocess_out_is_a_file(c, tmp):
    (tmp / "h5").write_text("x")
    return {"args": ["preprocess", "--root", c["raw"], "--out", tmp / "h5", "--quiet"], "culprit": str(tmp / "h5")}


@case(1)
def preprocess_out_busy(c, tmp):
    out = tmp / "h5"
    return {"args": ["preprocess", "--root", c["raw"], "--out", out, "--splits", "val", "--quiet"],
            "culprit": str(out), "during": output_lock(out / LOCK, f"the preprocessed folder {out}")}


@case(2)
def scene_maps_zero_grid(c, tmp):
    return {"args": ["scene-maps", "--root", c["raw"], "--out", tmp, "--grid", "0"], "culprit": "--grid"}


@case(2)
def scene_maps_unknown_split(c, tmp):
    return {"args": ["scene-maps", "--root", c["raw"], "--out", tmp, "--splits", "val", "bogus"],
            "culprit": "--splits bogus"}


@case(2)
def perception_zero_minutes(c, tmp):
    return {"args": ["perception", "--cache", c["h5"], "--root", c["raw"], "--out", tmp / "p", "--minutes", "0"],
            "culprit": "--minutes"}


@case(2)
def perception_unknown_split(c, tmp):
    return {"args": ["perception", "--cache", c["h5"], "--root", c["raw"], "--out", tmp / "p", "--splits", "test"],
            "culprit": "--splits test"}


@case(1)
def perception_missing_cache(c, tmp):
    return {"args": ["perception", "--cache", tmp / "nope", "--root", c["raw"], "--out", tmp / "p"],
            "culprit": str(tmp / "nope")}


def _errors_args(c, run, perception):
    return ["errors", "--run", run, "--data", c["h5"], "--root", c["raw"], "--perception", perception]


def _perception_ckpt(folder, image_size=32):
    from filmlib.models.perception import PerceptionConfig, PerceptionNet
    folder.mkdir()
    cfg = PerceptionConfig(image_size=image_size, channels=8, stem_layers=2)
    torch.save({"model": PerceptionNet(cfg).state_dict(), "config": cfg.to_dict()}, folder / "perception.pt")
    return folder


@case(1)
def errors_unscored_run(c, tmp):
    return {"args": _errors_args(c, c["run"], tmp), "culprit": "predictions_val.jsonl", "watch": c["run"]}


@case(1)
def errors_missing_perception_checkpoint(c, tmp):
    (tmp / "run").mkdir()
    (tmp / "run" / "predictions_val.jsonl").write_text("")
    return {"args": _errors_args(c, tmp / "run", tmp / "nope"), "culprit": str(tmp / "nope" / "perception.pt")}


@case(1)
def errors_images_of_another_size(c, tmp):
    (tmp / "run").mkdir()
    (tmp / "run" / "predictions_val.jsonl").write_text(
        '{"prediction": "yes", "answer": "no", "question_index": 0, "image_index": 0, "type": 1}\n')
    return {"args": _errors_args(c, tmp / "run", _perception_ckpt(tmp / "p", image_size=64)),
            "culprit": "val_images.h5"}


@case(1)
def errors_broken_predictions(c, tmp):
    (tmp / "run").mkdir()
    (tmp / "run" / "predictions_val.jsonl").write_text('{"prediction": "yes", "answer": "no"}\n')
    return {"args": _errors_args(c, tmp / "run", _perception_ckpt(tmp / "p")),
            "culprit": "predictions_val.jsonl, line 1"}


@case(2)
def study_unknown_recipe(c, tmp):
    return {"args": ["study", "--data", c["h5"], "--out", tmp / "s", "--recipe", "no-such-recipe"],
            "culprit": "--recipe"}


def train(c, out, *extra):
    return ["train", "--data", c["h5"], "--out", out, "--preset", "smoke", "--epochs", "1",
            "--threads", "1", "--quiet", *extra]


@case(2)
def train_unknown_ablation(c, tmp):
    return {"args": train(c, tmp / "run", "--ablation", "no_such_row"), "culprit": "--ablation"}


@case(2)
def train_unknown_device(c, tmp):
    return {"args": train(c, tmp / "run", "--device", "banana"), "culprit": "--device"}


@case(2)
def train_cuda_without_gpu(c, tmp):
    return {"args": train(c, tmp / "run", "--device", "cuda"), "culprit": "--device",
            "skip": "this machine has a GPU" if torch.cuda.is_available() else None}


@case(2)
def train_zero_time_limit(c, tmp):
    return {"args": train(c, tmp / "run", "--time-limit", "0"), "culprit": "--time-limit"}


@case(2)
def train_negative_seed(c, tmp):
    return {"args": train(c, tmp / "run", "--seed", "-3"), "culprit": "--seed"}


@case(2)
def train_negative_learning_rate(c, tmp):
    return {"args": train(c, tmp / "run", "--lr", "-1e-3"), "culprit": "--lr"}


@case(2)
def train_schedule_without_budget(c, tmp):
    return {"args": train(c, tmp / "run", "--schedule", "warmup_cosine"), "culprit": "--max-samples"}


@case(2)
def train_curve_samples_without_eval_every(c, tmp):
    return {"args": train(c, tmp / "run", "--curve-samples", "100"), "culprit": "--eval-every"}


@case(1)
def train_missing_data_folder(c, tmp):
    args = train(c, tmp / "run")
    args[args.index(c["h5"])] = tmp / "nope"
    return {"args": args, "culprit": str(tmp / "nope")}


@case(1)
def train_damaged_vocab(c, tmp):
    shutil.copytree(c["h5"], tmp / "h5")
    (tmp / "h5" / "vocab.json").write_bytes(os.urandom(200) + b"\xff")
    args = train(c, tmp / "run")
    args[args.index(c["h5"])] = tmp / "h5"
    return {"args": args, "culprit": str(tmp / "h5" / "vocab.json")}


@case(1)
def train_damaged_questions_file(c, tmp):
    shutil.copytree(c["h5"], tmp / "h5")
    (tmp / "h5" / "train_questions.h5").write_bytes(os.urandom(4096))
    args = train(c, tmp / "run")
    args[args.index(c["h5"])] = tmp / "h5"
    return {"args": args, "culprit": str(tmp / "h5" / "train_questions.h5")}


@case(1)
def train_resume_from_damaged_last_checkpoint(c, tmp):
    shutil.copytree(c["run"], tmp / "run")
    (tmp / "run" / "last.pt").write_bytes(os.urandom(5000))
    return {"args": train(c, tmp / "run", "--epochs", "2"), "culprit": f"{tmp / 'run' / 'last.pt'} is damaged"}


@case(1)
def evaluate_truncated_checkpoint(c, tmp):
    shutil.copytree(c["run"], tmp / "run")
    best = tmp / "run" / "best.pt"
    best.write_bytes(best.read_bytes()[:best.stat().st_size // 2])
    return {"args": ["evaluate", "--run", tmp / "run", "--data", c["h5"]], "culprit": f"{best} is damaged"}


@case(1)
def evaluate_random_bytes_checkpoint(c, tmp):
    shutil.copytree(c["run"], tmp / "run")
    best = tmp / "run" / "best.pt"
    best.write_bytes(os.urandom(best.stat().st_size))
    return {"args": ["evaluate", "--run", tmp / "run", "--data", c["h5"]], "culprit": f"{best} is damaged"}


@case(1)
def evaluate_empty_checkpoint(c, tmp):
    shutil.copytree(c["run"], tmp / "run")
    last = tmp / "run" / "last.pt"
    last.write_bytes(b"")
    return {"args": ["evaluate", "--run", tmp / "run", "--data", c["h5"], "--checkpoint", "last"],
            "culprit": f"{last} is damaged"}


@case(1)
def evaluate_missing_checkpoint(c, tmp):
    (tmp / "run").mkdir()
    return {"args": ["evaluate", "--run", tmp / "run", "--data", c["h5"]], "culprit": str(tmp / "run" / "best.pt")}


@case(1)
def evaluate_unknown_split(c, tmp):
    shutil.copytree(c["run"], tmp / "run")
    return {"args": ["evaluate", "--run", tmp / "run", "--data", c["h5"], "--split", "nosuch"],
            "culprit": "nosuch_questions.h5"}


@case(2)
def evaluate_unknown_device(c, tmp):
    return {"args": ["evaluate", "--run", c["run"], "--data", c["h5"], "--device", "cuda:x"],
            "culprit": "--device", "watch": c["run"]}


@case(2)
def unknown_command(c, tmp):
    return {"args": ["bogus", "--out", tmp], "culprit": "bogus"}


@pytest.fixture(scope="module")
def outcomes(ctx):
    """Run every case's command, a few at a time; each case's spec gains its "result" and the
    files of its "watch" path "before" and "after"."""
    specs = {}
    for name, (_, fn) in CASES.items():
        tmp = ctx["base"] / "cases" / name
        tmp.mkdir(parents=True)
        spec = fn(ctx, tmp)
        spec.setdefault("watch", tmp)
        spec["before"] = files(spec["watch"])
        specs[name] = spec
    todo = {name: spec for name, spec in specs.items() if not spec.get("skip")}
    with ExitStack() as held, ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for spec in todo.values():
            if spec.get("during") is not None:
                held.enter_context(spec["during"])
        results = dict(zip(todo, pool.map(lambda s: run_cli(*s["args"]), todo.values())))
    for name, spec in specs.items():
        spec["result"] = results.get(name)
        spec["after"] = files(spec["watch"])
    return specs


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name, outcomes):
    status, _ = CASES[name]
    spec = outcomes[name]
    if spec.get("skip"):
        pytest.skip(spec["skip"])
    r = spec["result"]
    assert r.returncode == status, (r.returncode, r.stderr)
    assert_one_line(r.stderr, spec["culprit"])
    assert "weights_only" not in r.stderr
    assert r.stdout == ""
    assert spec["after"] == spec["before"], "the command changed or left files: " + \
        str(sorted(set(spec["after"]) ^ set(spec["before"])))


def test_at_least_thirty_kinds():
    assert len(CASES) >= 30
    commands = {name.split("_")[0] for name in CASES}
    assert {"generate", "merge", "questions", "render", "preprocess", "scene", "perception", "study",
            "train", "evaluate"} <= commands


def test_debug_flag_adds_the_traceback(tmp_path):
    r = run_cli("--debug", "questions", "--scenes", tmp_path / "nope.json", "--out", tmp_path / "q.json")
    assert r.returncode == 1 and "Traceback" in r.stderr
    assert r.stderr.splitlines()[-1].startswith("error: ") and "nope.json" in r.stderr


# --- Ctrl-C, two writers at once, a full disk ---------------------------------------------------

def wait_for(predicate, process, timeout=120):
    end = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def staged_images(out: Path, split: str) -> bool:
    folder = out / f".staging-{split}" / "images"
    return folder.is_dir() and any(folder.iterdir())


def test_ctrl_c_during_generate_exits_130_and_removes_the_staging_folder(tmp_path):
    out = tmp_path / "ds"
    p = subprocess.Popen([sys.executable, "-m", "filmlib", "generate", "--out", str(out), "--split", "train",
                          "--images", "5000", "--width", "160", "--height", "120", "--workers", "2", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                         start_new_session=True,
                         # as from a terminal: a shell without job control starts background jobs
                         # (e.g. `make test &`) with SIGINT ignored, and Python keeps it so
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: staged_images(out, "train"), p)
        os.killpg(p.pid, signal.SIGINT)             # as a terminal's Ctrl-C: the whole group
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, stderr
    assert_one_line(stderr, "interrupted")
    assert files(out) == {}                          # no staging folder, no lock, no split


WAIT_THEN_RUN = """\
import sys, time, pathlib
from filmlib.cli import main
go = pathlib.Path(sys.argv[1])
while not go.exists():
    time.sleep(0.01)
sys.exit(main(sys.argv[2:]))
"""


def test_second_generate_on_the_same_out_is_refused_at_once(tmp_path):
    out, go = tmp_path / "ds", tmp_path / "go"
    args = ["generate", "--out", str(out), "--split", "val", "--images", "150", "--width", "160",
            "--height", "120", "--questions-per-image", "2", "--seed", "3", "--quiet"]
    # the second command starts first and waits, torch imported, until the first is writing
    second = subprocess.Popen([sys.executable, "-c", WAIT_THEN_RUN, str(go), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV)
    first = subprocess.Popen([sys.executable, "-m", "filmlib", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        wait_for(lambda: staged_images(out, "val"), first)
        staged = files(out / ".staging-val")
        go.touch()
        t0 = time.monotonic()
        _, stderr = second.communicate(timeout=60)
        assert time.monotonic() - t0 < 10 and first.poll() is None      # refused while the first runs
        assert second.returncode == 1
        assert_one_line(stderr, str(out))
        assert "another process" in stderr
        for name in staged:                                              # the first's files untouched
            assert (out / ".staging-val" / name).exists() or (out / "images" / "val" / Path(name).name).exists()
        stdout, stderr = first.communicate(timeout=300)
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
    assert first.returncode == 0, stderr
    assert len(clevr.load_questions(clevr.questions_path(out, "val"))) == 300
    assert len(list((out / "images" / "val").iterdir())) == 150
    assert not [p for p in out.rglob(".*")]                              # no staging folder or lock left


def test_disk_full_during_generate_names_the_folder(tmp_path, monkeypatch, capsys):
    from filmlib.synth import generate as generate_module
    real = generate_module.render_images

    def full_after_one_image(spec, indices, image_dir):
        real(spec, indices[:1], image_dir)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(generate_module, "render_images", full_after_one_image)
    out = tmp_path / "ds"
    assert cli.main([str(a) for a in gen(out)]) == 1
    err = capsys.readouterr().err
    assert_one_line(err, str(out))
    assert "no space left" in err
    assert files(out) == {}


def test_disk_full_during_preprocess_names_the_file(ctx, tmp_path, monkeypatch, capsys):
    from filmlib.data import preprocess as pre

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield                                           # a generator, like the real one

    monkeypatch.setattr(pre, "iter_image_batches", full)
    out = tmp_path / "h5"
    assert cli.main(["preprocess", "--root", str(ctx["raw"]), "--out", str(out), "--splits", "train",
                     "--quiet"]) == 1
    err = capsys.readouterr().err
    assert_one_line(err, str(out / "train_images.h5"))
    assert "no space left" in err
    left = sorted(p.name for p in out.iterdir())
    assert "train_images.h5" not in left and not [n for n in left if n.endswith(".tmp") or "lock" in n], left


def test_ctrl_c_during_preprocess_keeps_finished_files_and_continues(ctx, tmp_path, monkeypatch, capsys):
    from filmlib.data import preprocess as pre
    real = pre.iter_image_batches

    def interrupted_after_one_batch(*args, **kwargs):
        yield next(real(*args, **kwargs))
        raise KeyboardInterrupt

    monkeypatch.setattr(pre, "iter_image_batches", interrupted_after_one_batch)
    out = tmp_path / "h5"
    assert cli.main(["preprocess", "--root", str(ctx["raw"]), "--out", str(out), "--splits", "train",
                     "--quiet"]) == 130
    assert_one_line(capsys.readouterr().err, "interrupted")
    left = sorted(p.name for p in out.iterdir())
    # finished files, and the unfinished images file under a hidden name, never taken for the output
    assert left == [".train_images.h5.partial", "manifest.json", "train_questions.h5", "vocab.json"], left
    monkeypatch.setattr(pre, "iter_image_batches", real)
    assert cli.main(["preprocess", "--root", str(ctx["raw"]), "--out", str(out), "--splits", "train",
                     "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train_images.h5"]["resumed_from"] > 0 and report["train_questions.h5"]["skipped"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "train_images.h5", "train_questions.h5", "vocab.json"]
