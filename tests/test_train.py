"""The trainer: exact resume after a real kill, DDP equivalence, NaN stop, early stopping."""
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from filmlib.train import EpochSampler, Trainer, TrainConfig, TrainingDiverged, load_checkpoint

from tiny_run import TinyData, TinyModel

HERE = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def run_tiny(out, *extra, env=None, torchrun=False):
    cmd = [sys.executable, str(HERE / "tiny_run.py"), str(out), *extra]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", "29533", *cmd[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=300)


def weights(out):
    return torch.load(Path(out) / "final.pt", weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    r = run_tiny(out)
    assert r.returncode == 0, r.stderr
    return out


def test_killed_run_resumes_to_identical_weights(reference, tmp_path):
    # 96 samples / batch 8 = 12 steps an epoch: step 17 is in the middle of epoch 2
    r = run_tiny(tmp_path, env={"FILMLIB_KILL_AT_STEP": "17"})
    assert r.returncode != 0                                  # really killed (SIGKILL)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 12
    r = run_tiny(tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = weights(reference), weights(tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]            # no repeated or lost rows
    ref_rows = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_accuracy"] for r in rows] == [r["val_accuracy"] for r in ref_rows]


def test_ddp_two_processes_match_one_process(reference, tmp_path):
    r = run_tiny(tmp_path, torchrun=True)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = weights(reference), weights(tmp_path)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    assert not (tmp_path / "final.pt.tmp").exists()


def test_epoch_sampler_shares_partition_the_permutation():
    whole = list(EpochSampler(20, seed=1))
    s0, s1 = EpochSampler(20, seed=1, rank=0, world=2), EpochSampler(20, seed=1, rank=1, world=2)
    assert sorted(list(s0) + list(s1)) == sorted(whole) == list(range(20))
    assert [x for pair in zip(s0, s1) for x in pair] == whole
    s0.set_epoch(1)
    assert list(s0) != whole[0::2]


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    class Exploding(TinyModel):
        def forward(self, visual, questions):
            out = super().forward(visual, questions)
            return out * float("nan") if self.training and self.head.weight.grad is not None else out

    cfg = TrainConfig(out_dir=str(tmp_path), epochs=3, batch_size=8, progress=False)
    trainer = Trainer(Exploding(), TinyData(), TinyData(16, seed=1), cfg)
    with pytest.raises(TrainingDiverged, match="loss is nan at epoch 1, step 1"):
        trainer.fit()
    assert not (tmp_path / "last.pt").exists()                # nothing half-written


def test_early_stopping_and_best_checkpoint(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=50, batch_size=8, lr=0.0, weight_decay=0.0,
                      patience=2, progress=False)
    summary = Trainer(TinyModel(), TinyData(), TinyData(16, seed=1), cfg).fit()
    assert summary["epochs"] == 3 and summary["best_epoch"] == 1     # lr 0: val never improves
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("train_loss") and len(csv_lines) == 4


def test_checkpoint_loads_with_weights_only(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=1, batch_size=8, progress=False,
                      extra={"preset": "tiny"})
    Trainer(TinyModel(), TinyData(), None, cfg, model_config={"width": 8}).fit()
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["model_config"] == {"width": 8} and ckpt["train_config"]["extra"] == {"preset": "tiny"}


class SlowData(TinyData):
    def __getitem__(self, i):
        time.sleep(0.01)
        return super().__getitem__(i)


def test_time_limit_stops_inside_an_epoch(tmp_path):
    # 96 samples, batch 8: a full epoch is 12 steps of >= 80 ms; the budget is 0.3 s
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=5, batch_size=8, progress=False,
                      time_limit_minutes=0.3 / 60)
    summary = Trainer(TinyModel(), SlowData(), TinyData(16, seed=1), cfg).fit()
    assert summary["epochs"] == 1 and 0 < summary["steps"] < 12
    assert summary["history"][0]["partial_epoch"] is True
    assert "val_accuracy" in summary["history"][0]                # the partial epoch is evaluated
    assert load_checkpoint(tmp_path / "last.pt")["step"] == summary["steps"]


def test_cpu_trainer_uses_fused_adam_and_channels_last(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=1, batch_size=8, progress=False, device="cpu")
    trainer = Trainer(TinyModel(), TinyData(), None, cfg)
    assert trainer.optimizer.param_groups[0]["fused"] is True
    assert trainer.model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    off = Trainer(TinyModel(), TinyData(), None,
                  TrainConfig(out_dir=str(tmp_path), channels_last=False, fused_adam=False, progress=False))
    assert not off.optimizer.param_groups[0]["fused"]
    assert not off.model.conv.weight.is_contiguous(memory_format=torch.channels_last)


FLUSH_CHECK = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from tiny_run import TinyData, TinyModel
from filmlib.train import Trainer, TrainConfig, _openmp_runtime
torch.set_num_threads(2)
many = torch.full((2_000_000,), 1e-39)               # below float32's normal range; split over 2 threads
kept = lambda: int(((many * 1.0) != 0).sum())
out = {"libgomp": _openmp_runtime() is not None, "before": kept()}   # the pool exists from here on
Trainer(TinyModel(), TinyData(), None, TrainConfig(out_dir=sys.argv[2], progress=False, device="cpu",
                                                   flush_denormal=False))
out["off"] = kept()
Trainer(TinyModel(), TinyData(), None, TrainConfig(out_dir=sys.argv[2], progress=False, device="cpu", threads=2))
out["on"] = kept()
torch.set_flush_denormal(False)                      # this thread only: the pool's other thread still flushes
out["main_only_off"] = kept()
print(json.dumps(out))
"""


def test_cpu_trainer_flushes_subnormal_floats(tmp_path):
    """Subnormals made late-training steps 3x slower on the CPU; the Trainer treats them as zero
    on every thread of torch's pool, also when the pool was made before it (a notebook that
    computed on 2 threads first: the flush mode is per thread). In a fresh process: the mode is
    process state that other tests change."""
    r = subprocess.run([sys.executable, "-c", FLUSH_CHECK, str(HERE), str(tmp_path)], capture_output=True,
                       text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if not out["libgomp"]:
        pytest.skip("torch's OpenMP runtime here is not libgomp (each pool thread cannot be reached)")
    n = 2_000_000
    assert out["before"] == n and out["off"] == n          # kept while the flush is off
    assert out["on"] == 0                                   # every thread's share flushed
    assert 0 < out["main_only_off"] < n                     # per thread: the old bug's shape


def test_loader_workers_default_to_none_on_the_cpu_and_some_on_a_gpu(tmp_path):
    trainer = Trainer(TinyModel(), TinyData(), None, TrainConfig(out_dir=str(tmp_path), progress=False, device="cpu"))
    loader = trainer._loader(trainer.train_set)
    assert loader.num_workers == 0 and not loader.pin_memory
    trainer.device = torch.device("cuda")          # what the defaults become on a GPU (none is needed to ask)
    assert trainer._workers() == min(4, max(len(os.sched_getaffinity(0)) - 1, 0))
    trainer.cfg.num_workers = 3                     # an explicit number is kept
    assert trainer._workers() == 3


# --- schedules, question budgets, curve points and resuming inside an epoch ---------------------

SCHEDULED = ("--schedule", "warmup_cosine", "--warmup", "48", "--eval-every", "40", "--max-samples", "352")


@pytest.fixture(scope="module")
def scheduled_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("sched")
    r = run_tiny(out, *SCHEDULED)
    assert r.returncode == 0, r.stderr
    return out


def test_question_budget_and_curve_points(scheduled_reference):
    ckpt = load_checkpoint(scheduled_reference / "last.pt")
    assert ckpt["samples"] == 352 and ckpt["step"] == 44          # 352 / batch 8, mid-epoch 4
    curve = [json.loads(x) for x in (scheduled_reference / "curve.jsonl").read_text().splitlines()]
    assert [p["samples"] for p in curve] == [40 * k for k in range(1, 9)]
    assert all(0 <= p["val_accuracy"] <= 1 and p["train_minutes"] >= 0 for p in curve)
    assert all(0 < p["train_loss"] < 10 for p in curve)      # mean loss of the questions since the last point
    lrs = [p["lr"] for p in curve]
    assert lrs[0] < lrs[1] and lrs[1] > lrs[-1]                   # warm-up, then decay
    rows = [json.loads(x) for x in (scheduled_reference / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["partial_epoch"] and rows[-1]["epoch"] == 4


def test_killed_mid_epoch_resumes_from_the_curve_point(scheduled_reference, tmp_path):
    # 12 steps an epoch; curve points every 5 steps; killed at step 18 -> last point at step 15
    r = run_tiny(tmp_path, *SCHEDULED, env={"FILMLIB_KILL_AT_STEP": "18"})
    assert r.returncode != 0
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["step"] == 15 and ckpt["epoch"] == 1 and ckpt["epoch_batches"] == 3
    r = run_tiny(tmp_path, *SCHEDULED)
    assert r.returncode == 0, r.stderr
    a, b = weights(scheduled_reference), weights(tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref = [json.loads(x) for x in (scheduled_reference / "curve.jsonl").read_text().splitlines()]
    got = [json.loads(x) for x in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert [(p["samples"], p["val_accuracy"], p["lr"]) for p in got] == \
        [(p["samples"], p["val_accuracy"], p["lr"]) for p in ref]
    ref_rows = [json.loads(x) for x in (scheduled_reference / "metrics.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["train_accuracy"], r["val_accuracy"]) for r in rows] == \
        [(r["epoch"], r["train_accuracy"], r["val_accuracy"]) for r in ref_rows]


def run_tiny_jobs(jobs, tmp_path, name):
    """Run many tiny runs in one process that forks one child per run (see tiny_run.py)."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(jobs))
    r = subprocess.run([sys.executable, str(HERE / "tiny_run.py"), "--jobs", str(path)],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1])


def random_kill_points(seed=20261129):
    """Ten kill points drawn at random: eight training steps (of the 44 the run makes) and two
    checkpoint writes (of the first 13, all last.pt / best.pt ones), killed half-way through."""
    rng = random.Random(seed)
    steps = sorted(rng.sample(range(1, 44), 8))
    saves = sorted(rng.sample(range(1, 14), 2))
    return ([("FILMLIB_KILL_AT_STEP", s) for s in steps] +
            [("FILMLIB_KILL_IN_SAVE", n) for n in saves])


def test_ten_random_kills_each_resume_to_identical_weights(scheduled_reference, tmp_path):
    points = random_kill_points()
    assert len(points) == 10 and sum(var == "FILMLIB_KILL_IN_SAVE" for var, _ in points) >= 1
    runs = [tmp_path / f"{var.split('_')[-1].lower()}-{n}" for var, n in points]
    killed = run_tiny_jobs([{"argv": [str(out), *SCHEDULED], "env": {var: str(n)}}
                            for out, (var, n) in zip(runs, points)], tmp_path, "kill")
    assert killed == [-9] * 10, list(zip(points, killed))         # every run really SIGKILLed
    for out, (var, n) in zip(runs, points):
        if var == "FILMLIB_KILL_IN_SAVE":       # half a temporary file, the checkpoints intact
            assert list(out.glob(".*.pt.tmp*")), (n, sorted(p.name for p in out.iterdir()))
        if (out / "last.pt").exists():
            load_checkpoint(out / "last.pt")
    resumed = run_tiny_jobs([{"argv": [str(out), *SCHEDULED]} for out in runs], tmp_path, "resume")
    assert resumed == [0] * 10
    a = weights(scheduled_reference)
    ref_curve = (scheduled_reference / "curve.jsonl").read_text()
    for out, point in zip(runs, points):
        b = weights(out)
        assert all(torch.equal(a[k], b[k]) for k in a), point
        got = [json.loads(x) for x in (out / "curve.jsonl").read_text().splitlines()]
        ref = [json.loads(x) for x in ref_curve.splitlines()]
        assert [(p["samples"], p["val_accuracy"], p["lr"]) for p in got] == \
            [(p["samples"], p["val_accuracy"], p["lr"]) for p in ref], point
        assert not list(out.glob(".*.tmp*")), point                # the dead run's temp file is gone


def test_lr_factor_shapes():
    from filmlib.train import lr_factor
    cfg = TrainConfig(schedule="warmup_cosine", warmup_samples=100, max_samples=1100, min_lr_ratio=0.1)
    assert lr_factor(cfg, 0) == pytest.approx(0.01) and lr_factor(cfg, 99) == pytest.approx(1.0)
    assert lr_factor(cfg, 600) == pytest.approx(0.55) and lr_factor(cfg, 1100) == pytest.approx(0.1)
    assert lr_factor(cfg, 5000) == pytest.approx(0.1)
    lin = TrainConfig(schedule="warmup_linear", warmup_samples=0, schedule_samples=1000)
    assert lr_factor(lin, 250) == pytest.approx(0.75)
    assert lr_factor(TrainConfig(), 10**9) == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_factor(TrainConfig(schedule="step"), 0)
    with pytest.raises(ValueError, match="needs schedule_samples or max_samples"):
        lr_factor(TrainConfig(schedule="warmup_cosine"), 10)


def test_curriculum_opens_up_by_level(tmp_path):
    torch.manual_seed(0)
    data = TinyData()                                   # 96 questions
    difficulty = [i % 3 for i in range(96)]             # levels 0, 1, 2: 32 questions each
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=5, batch_size=8, patience=None, progress=False,
                      curriculum_samples=150, threads=1)
    trainer = Trainer(TinyModel(), data, None, cfg, difficulty=difficulty)
    pools = []
    for epoch_start in (0, 32, 64, 128, 150):
        pool = trainer.curriculum_pool(epoch_start)
        pools.append(None if pool is None else sorted({difficulty[i] for i in pool}))
    assert pools == [[0], [0], [0, 1], [0, 1, 2], None]
    summary = trainer.fit(resume=False)
    rows = summary["history"]
    assert [r.get("curriculum_pool") for r in rows] == [32, 32, 64, 96, None]
    assert [r["train_samples"] for r in rows] == [32, 32, 64, 96, 96]
    with pytest.raises(ValueError, match="difficulty level for every train question"):
        Trainer(TinyModel(), data, None, cfg)


def test_curriculum_pool_epochs_are_not_scored_on_val(tmp_path):
    # a pool epoch lasts a moment; scoring all of val after each one made curriculum runs crawl
    torch.manual_seed(0)
    data = TinyData()
    scored = []

    class CountingTrainer(Trainer):
        def evaluate(self, dataset):
            scored.append(self.epoch)
            return super().evaluate(dataset)

    cfg = TrainConfig(out_dir=str(tmp_path), epochs=5, batch_size=8, patience=None, progress=False,
                      curriculum_samples=150, threads=1)
    trainer = CountingTrainer(TinyModel(), data, TinyData(), cfg, difficulty=[i % 3 for i in range(96)])
    rows = trainer.fit(resume=False)["history"]
    assert scored == [5]                                 # only the epoch over every question
    assert [("val_accuracy" in r) for r in rows] == [False] * 4 + [True]
    assert trainer.best_epoch == 5 and (tmp_path / "best.pt").is_file()


class FiLMShapedData(torch.utils.data.Dataset):
    """Random 32x32 images and questions for the smoke FiLM preset."""
    def __init__(self, n=64, vocab=12, answers=5):
        g = torch.Generator().manual_seed(0)
        self.visual = torch.randn(n, 3, 32, 32, generator=g)
        self.questions = torch.randint(1, vocab, (n, 7), generator=g)
        self.answers = torch.randint(0, answers, (n,), generator=g)

    def __len__(self):
        return len(self.answers)

    def __getitem__(self, i):
        return {"visual": self.visual[i], "questions": self.questions[i], "answers": self.answers[i]}


def test_compile_compiles_the_filmed_network_in_place(tmp_path):
    """cpu-preset FiLM trains with ``compile``: only its FiLM-ed network is compiled (the
    generator's hand-written GRU is not traceable), in place, so checkpoints keep their names and
    load into a plain model; the compiled network computes what the plain one does."""
    from filmlib.models.config import preset
    from filmlib.models.model import FiLMModel
    from filmlib.train import cpp_compiler_available
    if not cpp_compiler_available():
        pytest.skip("TorchInductor cannot compile for the CPU on this machine (no C++ compiler)")
    torch.manual_seed(0)
    model = FiLMModel(preset("smoke", 12, 5, "pixels"))
    names = list(model.state_dict())
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=1, batch_size=16, progress=False, device="cpu", compile=True)
    trainer = Trainer(model, FiLMShapedData(), None, cfg)
    assert trainer._net is model                                   # not wrapped: the model itself
    assert model.network._compiled_call_impl is not None and model.generator._compiled_call_impl is None
    summary = trainer.fit()
    assert summary["compiled"] is True
    assert summary["steps"] == 4 and torch.isfinite(torch.tensor(summary["history"][0]["train_loss"]))
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert list(ckpt["model"]) == names
    plain = FiLMModel(preset("smoke", 12, 5, "pixels"))
    plain.load_state_dict(ckpt["model"])                           # strict: the same names
    model.eval(), plain.eval()
    data = FiLMShapedData()
    v, q = data.visual[:8], data.questions[:8]
    with torch.no_grad():
        torch.testing.assert_close(model(v, q), plain(v, q), rtol=1e-4, atol=1e-4)


def test_resume_refuses_other_settings_but_allows_a_longer_budget(tmp_path):
    """A resumed run must be the run it continues: another lr or schedule horizon is refused
    with a message naming the checkpoint and the settings; a larger budget on the same horizon,
    more threads or a time limit are not settings of the trajectory."""
    from filmlib.train import CheckpointError
    threads = torch.get_num_threads()
    base = dict(out_dir=str(tmp_path), epochs=5, batch_size=8, progress=False, schedule="warmup_cosine",
                warmup_samples=16, schedule_samples=400, max_samples=48)
    Trainer(TinyModel(), TinyData(), None, TrainConfig(**base)).fit()
    for change, words in (({"lr": 1e-3}, "lr 0.0003 there, 0.001 now"),
                          ({"schedule_samples": 800}, "schedule horizon"),
                          ({"batch_size": 16}, "batch_size 8 there, 16 now")):
        with pytest.raises(CheckpointError, match="last.pt") as e:
            Trainer(TinyModel(), TinyData(), None, TrainConfig(**{**base, **change})).fit()
        assert words in str(e.value) and "another folder" in str(e.value)
    summary = Trainer(TinyModel(), TinyData(), None,
                      TrainConfig(**{**base, "max_samples": 96, "threads": 1, "time_limit_minutes": 5})).fit()
    torch.set_num_threads(threads)
    assert summary["samples"] == 96
    # a schedule without a decay has no horizon: its budget may grow
    flat = dict(base, out_dir=str(tmp_path / "flat"), schedule="warmup_constant", schedule_samples=None)
    Trainer(TinyModel(), TinyData(), None, TrainConfig(**flat)).fit()
    assert Trainer(TinyModel(), TinyData(), None, TrainConfig(**{**flat, "max_samples": 96})).fit()["samples"] == 96


def test_compile_without_a_cpp_compiler_trains_uncompiled_with_a_warning(tmp_path):
    """TorchInductor needs a C++ compiler on the CPU; without one (here: its compiler setting names
    none) the cpu preset's ``compile`` falls back to eager training with a warning instead of failing."""
    from filmlib.models.config import preset
    from filmlib.models.model import FiLMModel
    from filmlib.train import cpp_compiler_available
    import torch._inductor.config as inductor_config
    # inductor's own patch, not monkeypatch: monkeypatch's undo leaves the config entry deleted,
    # and every later compile in this process would fail
    with inductor_config.patch({"cpp.cxx": (None, str(tmp_path / "no-such-compiler"))}):
        cpp_compiler_available.cache_clear()              # the answer is cached per process
        try:
            assert not cpp_compiler_available()
            model = FiLMModel(preset("smoke", 12, 5, "pixels"))
            cfg = TrainConfig(out_dir=str(tmp_path), epochs=1, batch_size=16, progress=False, device="cpu",
                              compile=True)
            with pytest.warns(UserWarning, match="cannot compile for the CPU"):
                trainer = Trainer(model, FiLMShapedData(), None, cfg)
            assert model.network._compiled_call_impl is None
            summary = trainer.fit()
            assert summary["steps"] == 4 and summary["compiled"] is False
        finally:
            cpp_compiler_available.cache_clear()          # later tests ask again, with the real setting
    assert inductor_config.cpp.cxx != (None, str(tmp_path / "no-such-compiler"))


def test_bf16_on_a_cpu_with_native_bfloat16_autocasts_the_steps(tmp_path, monkeypatch):
    """``bf16`` on the CPU: where the CPU multiplies bf16 in hardware, the training steps run under
    a bfloat16 autocast (the pixel stem's convolutions included) with fp32 weights, and the
    checkpoint stays fp32."""
    from filmlib.models.config import preset
    from filmlib.models.model import FiLMModel
    import filmlib.train as train_module
    monkeypatch.setattr(train_module, "cpu_bf16_native", lambda: True)   # the path, not this CPU's speed
    torch.manual_seed(0)
    model = FiLMModel(preset("smoke", 12, 5, "pixels"))
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append((out.dtype, torch.is_autocast_enabled("cpu"))))
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=1, batch_size=16, progress=False, device="cpu", bf16=True)
    summary = Trainer(model, FiLMShapedData(), FiLMShapedData(16), cfg).fit()
    assert summary["bf16"] is True and summary["steps"] == 4
    assert seen[0] == (torch.bfloat16, True)
    assert torch.isfinite(torch.tensor(summary["history"][0]["train_loss"]))
    assert all(v.dtype == torch.float32 for v in load_checkpoint(tmp_path / "last.pt")["model"].values()
               if v.is_floating_point())


def test_bf16_on_a_cpu_without_native_bfloat16_trains_fp32_with_a_warning(tmp_path, monkeypatch):
    import filmlib.train as train_module
    monkeypatch.setattr(train_module, "cpu_bf16_native", lambda: False)
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=1, batch_size=8, progress=False, device="cpu", bf16=True)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        trainer = Trainer(TinyModel(), TinyData(), None, cfg)
    assert trainer.fit()["bf16"] is False


def test_compile_and_bf16_together_as_the_cpu_preset_trains(tmp_path, monkeypatch):
    """The cpu preset's own combination: the FiLM-ed network compiled, the steps under a bf16
    autocast (its products bf16, as on a CPU with AMX)."""
    from filmlib.models.config import preset
    from filmlib.models.model import FiLMModel
    import filmlib.train as train_module
    if not train_module.cpp_compiler_available():
        pytest.skip("TorchInductor cannot compile for the CPU on this machine (no C++ compiler)")
    monkeypatch.setattr(train_module, "cpu_bf16_native", lambda: True)
    torch.manual_seed(0)
    model = FiLMModel(preset("smoke", 12, 5, "pixels"))
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=2, batch_size=16, progress=False, device="cpu",
                      compile=True, bf16=True)
    summary = Trainer(model, FiLMShapedData(), FiLMShapedData(16), cfg).fit()
    assert summary["compiled"] is True and summary["bf16"] is True and summary["steps"] == 8
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in summary["history"])


def test_resuming_in_another_precision_warns_naming_the_checkpoint(tmp_path, monkeypatch):
    """A run resumes in bf16 or fp32 whatever it began in (the recipe is the same; a CPU without
    native bf16 cannot do otherwise), but says so: the checkpoint records the precision it ran in."""
    import filmlib.train as train_module
    monkeypatch.setattr(train_module, "cpu_bf16_native", lambda: True)
    base = dict(out_dir=str(tmp_path), epochs=1, batch_size=8, progress=False, device="cpu", bf16=True)
    Trainer(TinyModel(), TinyData(), None, TrainConfig(**base)).fit()
    assert load_checkpoint(tmp_path / "last.pt")["bf16_used"] is True
    monkeypatch.setattr(train_module, "cpu_bf16_native", lambda: False)
    with pytest.warns(UserWarning) as caught:
        trainer = Trainer(TinyModel(), TinyData(), None, TrainConfig(**{**base, "epochs": 2}))
        summary = trainer.fit()
    text = " ".join(str(w.message) for w in caught)
    assert "last.pt" in text and "trained in a bf16 autocast; the rest train in fp32" in text
    assert summary["epochs"] == 2 and summary["bf16"] is False


def test_compile_reports_false_where_the_model_offers_no_part_to_compile(tmp_path):
    """A model whose ``compile_parts()`` is empty (question fine-tuning: the frozen network is not
    compiled) trains eager, and the summary says so rather than claiming a compiled run."""
    from filmlib.train import cpp_compiler_available
    if not cpp_compiler_available():
        pytest.skip("TorchInductor cannot compile for the CPU on this machine (no C++ compiler)")

    class NothingToCompile(TinyModel):
        def compile_parts(self):
            return ()

    cfg = TrainConfig(out_dir=str(tmp_path), epochs=1, batch_size=8, progress=False, device="cpu", compile=True)
    trainer = Trainer(NothingToCompile(), TinyData(), None, cfg)
    assert trainer.compiled is False and trainer._net is trainer.model
    assert trainer.fit()["compiled"] is False


def test_a_run_stopped_after_its_last_curve_point_closes_its_epoch_on_resume(tmp_path, monkeypatch):
    """The budget is a multiple of eval_every, so its last curve point writes last.pt before the
    epoch's val pass writes best.pt. A run stopped between the two (here: the val pass raises)
    must, run again, close that epoch (val, best.pt, its history row) instead of seeing its
    budget spent and stopping with no best.pt."""
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=3, batch_size=8, progress=False, max_samples=32,
                      eval_every_samples=16)
    val = TinyData(16, seed=1)
    real_evaluate = Trainer.evaluate

    def interrupted(self, dataset):
        if dataset is val:                           # the epoch's val pass, not a curve point
            raise KeyboardInterrupt
        return real_evaluate(self, dataset)

    monkeypatch.setattr(Trainer, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Trainer(TinyModel(), TinyData(), val, cfg, curve_set=TinyData(16, seed=2)).fit()
    assert (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()
    assert load_checkpoint(tmp_path / "last.pt")["samples"] == 32
    monkeypatch.setattr(Trainer, "evaluate", real_evaluate)
    summary = Trainer(TinyModel(), TinyData(), val, cfg, curve_set=TinyData(16, seed=2)).fit()
    assert (tmp_path / "best.pt").exists()
    assert summary["samples"] == 32 and summary["epochs"] == 1 and summary["steps"] == 4
    assert [r["train_samples"] for r in summary["history"]] == [32]
    assert summary["history"][0]["partial_epoch"] is True and "val_accuracy" in summary["history"][0]
    again = Trainer(TinyModel(), TinyData(), val, cfg, curve_set=TinyData(16, seed=2)).fit()
    assert again["epochs"] == 1 and len(again["history"]) == 1      # spent and closed: nothing more


def test_a_curve_points_train_accuracy_covers_the_questions_since_the_last_point(tmp_path):
    """Each curve point's train accuracy and loss cover the questions since the point before,
    across an epoch's end (96 questions an epoch, a point every 40), not only the new epoch's."""
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=2, batch_size=8, progress=False, eval_every_samples=40)
    summary = Trainer(TinyModel(), TinyData(), TinyData(16, seed=1), cfg).fit()
    points = summary["curve"]
    assert [p["samples"] for p in points] == [40, 80, 120, 160]
    assert [p["train_questions"] for p in points] == [40, 40, 40, 40]
