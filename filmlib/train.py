"""One trainer for every model of the project (FiLM and the baselines).

Plain and linear, in the spirit of nanoGPT's ``train.py``: Adam (lr 3e-4, weight decay 1e-5 on
everything), batch 64, cross-entropy, no schedule, no clipping (the paper's settings, the
defaults); early stopping on val accuracy; after every epoch ``last.pt`` (and ``best.pt`` when
val improves) are written atomically, each a single dict that :meth:`Trainer.fit` reads back to
resume exactly where a killed run stopped: the epoch's shuffling comes from (seed, epoch), so a
resumed run replays the interrupted epoch and ends with bit-identical weights on the CPU.

For time-to-accuracy runs, three switches (all off by default):

- ``schedule``: a learning-rate warm-up over ``warmup_samples`` questions, then constant,
  cosine or linear decay to ``min_lr_ratio * lr`` at ``schedule_samples`` (default
  ``max_samples``); the factor is a function of the questions seen, so it survives resume.
- ``max_samples``: a budget of questions seen; training stops mid-epoch when it is spent.
- ``eval_every_samples``: every that many questions, accuracy on a fixed ``curve_set``
  (default: the val set) goes to ``curve.jsonl`` with the questions seen, the training
  minutes (evaluation excluded) and the learning rate, and ``last.pt`` is written there too:
  a run killed mid-epoch resumes from the last curve point, skipping the batches it had done.
- ``curriculum_samples`` with a per-question ``difficulty`` (any integer level: program
  length, number of objects, zero-hop or not): for the first ``curriculum_samples``
  questions, each epoch draws only from the questions up to a level that rises with the
  questions seen (level k of L opens at k/L of the way); after that, from all of them.
  Those short pool epochs are not scored on val (the curve points are) and never become
  ``best.pt``.

DistributedDataParallel is switched on by the environment ``torchrun`` sets; ``bf16`` autocasts
to bfloat16 on a GPU, and on a CPU that multiplies bf16 in hardware (AMX, AVX512-BF16: oneDNN's
bf16 products run several times faster than fp32 there; elsewhere it warns and trains fp32);
``compile`` runs ``torch.compile`` on the model's compilable parts (a
model's ``compile_parts()``, else the whole model), on the CPU too: it fuses FiLM's batch norm,
affine and ReLU and their gradients, about a third faster on 2 threads (benchmarks/bench_maps.py). Metrics go to ``metrics.jsonl`` and
``metrics.csv``; a NaN loss stops the run with a clear message and leaves the last good
checkpoint in place.
"""
from __future__ import annotations

import errno
import functools
import json
import math
import os
import pickle
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from .io import atomic_path, atomic_write_text, naming_disk_full
from .memory import retain_freed_memory


def _empty_window() -> dict:
    """Running sums of the train questions since the last curve point."""
    return {"correct": 0, "seen": 0, "loss_sum": 0.0}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    out_dir: str = "results/run"
    epochs: int = 80
    batch_size: int = 64              # global batch: split across DDP processes
    lr: float = 3e-4
    weight_decay: float = 1e-5
    patience: int | None = 10         # epochs without a val improvement before stopping
    time_limit_minutes: float | None = None   # training time budget: stops mid-epoch when spent
    max_steps_per_epoch: int | None = None    # for smoke runs
    seed: int = 0
    num_workers: int | None = None    # loader processes (None: 0 on the CPU, up to 4 on a GPU, which
                                      # then prefetch 2 batches each into pinned memory)
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    bf16: bool = False                # autocast to bfloat16 (GPU; CPU with native bf16: AMX / AVX512-BF16)
    compile: bool = False             # torch.compile the model's compile_parts() (else the model)
    threads: int | None = None        # torch CPU threads (None: torch's default)
    channels_last: bool | None = None # NHWC images and conv weights (None: yes, on the CPU (oneDNN's
                                      # convolutions run faster in that layout) and on a GPU (cuDNN's
                                      # tensor-core kernels take NHWC))
    fused_adam: bool = True           # one fused Adam kernel over each tensor (same update rule)
    retain_memory: bool | None = None # keep freed memory for reuse (filmlib.memory; None: on the CPU)
    flush_denormal: bool = True       # on the CPU, treat subnormal floats as zero (3x faster late in training)
    schedule: str = "constant"        # constant | warmup_constant | warmup_cosine | warmup_linear
    warmup_samples: int = 0           # linear warm-up from 0 over this many questions
    schedule_samples: int | None = None   # where the decay ends (default: max_samples)
    min_lr_ratio: float = 0.0         # the decay's floor, as a fraction of lr
    max_samples: int | None = None    # budget of questions seen: stops mid-epoch when spent
    eval_every_samples: int | None = None  # curve points (curve.jsonl) and mid-epoch checkpoints
    grad_clip: float | None = None    # clip the global gradient norm (None: no clipping)
    curriculum_samples: int | None = None  # easy-first over this many questions (needs difficulty)
    progress: bool = True
    extra: dict = field(default_factory=dict)   # recorded in checkpoints (e.g. the model preset)


SCHEDULES = ("constant", "warmup_constant", "warmup_cosine", "warmup_linear")


def lr_factor(cfg: TrainConfig, samples: int) -> float:
    """The learning-rate multiplier after ``samples`` questions (see the module docstring)."""
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, not {cfg.schedule!r}")
    if cfg.schedule == "constant":
        return 1.0
    warm = max(int(cfg.warmup_samples), 0)
    if samples < warm:
        return (samples + 1) / warm
    if cfg.schedule == "warmup_constant":
        return 1.0
    horizon = cfg.schedule_samples or cfg.max_samples
    if not horizon:
        raise ValueError(f"schedule {cfg.schedule!r} needs schedule_samples or max_samples")
    progress = min(max((samples - warm) / max(horizon - warm, 1), 0.0), 1.0)
    floor = cfg.min_lr_ratio
    if cfg.schedule == "warmup_cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return floor + (1 - floor) * (1 - progress)


@functools.lru_cache(maxsize=None)
def cpp_compiler_available() -> bool:
    """Whether TorchInductor can compile for the CPU here: a C++ compiler it finds, and a tiny
    function compiled and run with it (Python's headers and the rest of the toolchain included;
    a few seconds, once per process)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        get_cpp_compiler()
        x = torch.arange(8.0)
        return bool(torch.equal(torch.compile(lambda t: t.relu() + 1, dynamic=False)(x), x.relu() + 1))
    except Exception:                              # noqa: BLE001 - InvalidCxxCompiler, a failed build, an older torch
        return False


def cpu_bf16_native() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX tiles or AVX512-BF16), where oneDNN's
    bf16 products run several times faster than fp32; elsewhere a CPU autocast to bf16 emulates
    them and is slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        try:
            if bool(getattr(cpu, name)()):
                return True
        except Exception:                          # noqa: BLE001 - a torch without this probe
            pass
    return False


def _openmp_runtime():
    """torch's OpenMP runtime (GNU libgomp) as loaded in this process, or None (not Linux, or
    another runtime)."""
    import ctypes
    try:
        with open("/proc/self/maps") as maps:
            paths = {parts[5].strip() for parts in (line.split(maxsplit=5) for line in maps)
                     if len(parts) == 6 and "libgomp" in parts[5].rsplit("/", 1)[-1]}
    except OSError:
        return None
    if not paths:
        return None
    ours = [p for p in paths if p.startswith(os.path.dirname(torch.__file__))]   # torch's own copy first
    path = (ours or sorted(paths))[0]
    try:
        lib = ctypes.CDLL(path)
        lib.GOMP_parallel, lib.omp_get_thread_num      # noqa: B018 - both must be there
    except (OSError, AttributeError):
        return None
    return lib


_WARNED: set[str] = set()


def _warn_once(message: str):
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=3)


def flush_denormal_all_threads(enabled: bool = True) -> int:
    """``torch.set_flush_denormal(enabled)`` on this thread *and* on every thread of torch's
    OpenMP pool; returns how many threads were set.

    The processor's flush-to-zero mode is per thread, and ``torch.set_flush_denormal`` sets only
    the calling one; threads made later inherit it, but the pool's threads exist from the first
    parallel operation on. In a process that computed anything on 2 threads before training (a
    notebook that caches maps first, say), one core then kept subnormal floats: notebook 02's FiLM
    slowed from 740 to 356 questions/s as it learnt. Here each pool thread runs
    ``torch.set_flush_denormal`` itself, inside one OpenMP parallel region (libgomp's
    ``GOMP_parallel``, through ctypes). Elsewhere (no libgomp) only this thread is set."""
    import ctypes
    torch.set_flush_denormal(enabled)
    lib = _openmp_runtime()
    threads = torch.get_num_threads()
    if threads <= 1:
        return 1
    if lib is None:
        _warn_once("subnormal floats are flushed on this thread only: torch's OpenMP runtime is not "
                   "libgomp here, so its other threads keep them (slower late in training)")
        return 1
    done = []
    callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

    @callback
    def body(_):
        torch.set_flush_denormal(enabled)
        done.append(lib.omp_get_thread_num())

    lib.GOMP_parallel.argtypes = [callback, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    lib.GOMP_parallel.restype = None
    lib.GOMP_parallel(body, None, threads, 0)
    return len(set(done))


def seed_everything(seed: int):
    """Seed Python's, NumPy's and torch's global generators (model initialisation draws from torch's)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochSampler(Sampler[int]):
    """A permutation drawn from (seed, epoch), cut into ``world`` interleaved shares.

    With one process it is a plain seeded shuffle; under DDP, rank r takes every
    ``world``-th index, so the ranks' batches together are exactly the single-process batch.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.epoch, self.start = 0, 0
        self.pool: np.ndarray | None = None     # draw from these indices only (a curriculum)

    def set_pool(self, pool: np.ndarray | None):
        self.pool = None if pool is None else np.asarray(pool, dtype=np.int64)

    def set_epoch(self, epoch: int, start: int = 0):
        """The epoch to draw, and how many of this rank's indices to skip (a resumed epoch)."""
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        n = self.n if self.pool is None else len(self.pool)
        if not self.shuffle:
            order = list(range(n))
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        return order if self.pool is None else self.pool[order].tolist()

    def __iter__(self):
        order = self._order()
        usable = len(order) - len(order) % self.world
        return iter(order[self.rank:usable:self.world][self.start:])

    def __len__(self):
        n = self.n if self.pool is None else len(self.pool)
        return n // self.world - self.start


def _cpus() -> int:
    """The CPUs this process may run on (its affinity: a container's or a scheduler's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:            # not Linux
        return os.cpu_count() or 1


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


_saves = 0     # atomic_save calls in this process (for the tests' FILMLIB_KILL_IN_SAVE)


def atomic_save(obj, path: Path):
    """``torch.save`` to a temporary file, then renamed: ``path`` is never half-written. The
    temporary files of killed processes (``.<name>.tmp<pid>``) are removed first."""
    global _saves
    _saves += 1
    path = Path(path)
    _remove_dead_temps(path)
    with naming_disk_full(path), atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:           # torch's writer reports a failed write this way
            if "write" not in str(e):
                raise
            raise OSError(f"{path}: could not write the checkpoint ({str(e).splitlines()[0][:120]}); "
                          f"check the free space and permissions there") from e
        _debug_kill_in_save(_saves, tmp)


def _remove_dead_temps(path: Path):
    """Remove ``path``'s temporary files left by processes that no longer run."""
    prefix = f".{path.name}.tmp"
    if not path.parent.is_dir():
        return
    for tmp in path.parent.iterdir():
        pid = tmp.name[len(prefix):]
        if not (tmp.name.startswith(prefix) and pid.isdigit()) or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass                            # alive (another user's): leave it


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read."""


def _checkpoint_advice(path: Path) -> str:
    if path.name == "best.pt":
        return "delete it, or resume from last.pt (evaluate: --checkpoint last)"
    if path.name == "last.pt":
        return ("delete it to train again from the start, or copy best.pt over it to resume "
                "from the best epoch")
    return "delete it and run the step that wrote it again"


def _damage_reason(path: Path, error: Exception) -> str:
    """A short, safe reason for a failed ``torch.load`` (never torch's advice to drop
    ``weights_only``)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "the file is empty"
    if head != b"PK\x03\x04":
        return "not a PyTorch checkpoint file"
    if isinstance(error, pickle.UnpicklingError):
        return "it holds Python objects other than tensors and plain data"
    if "central directory" in str(error):
        return "the file is cut short"
    return "the archive is corrupted"


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint written by :class:`Trainer` (tensors and plain data only: always read with
    ``weights_only=True``). A missing file raises FileNotFoundError, an unreadable one
    :class:`CheckpointError`; both messages name the file and say what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "no such checkpoint: train first, or check the run "
                                "folder", str(path))
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except Exception as e:      # torch raises many types for a bad file; all mean the same here
        raise CheckpointError(f"{path} is damaged ({_damage_reason(path, e)}); "
                              f"{_checkpoint_advice(path)}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is damaged (it holds a {type(ckpt).__name__}, not a "
                              f"checkpoint dict); {_checkpoint_advice(path)}")
    return ckpt


#: the settings that decide a run's trajectory: a run resumes only under the same ones (threads,
#: device, compile, time limits and a longer question budget may change)
TRAJECTORY_KEYS = ("batch_size", "lr", "weight_decay", "seed", "schedule", "warmup_samples", "min_lr_ratio",
                   "grad_clip", "curriculum_samples")


def _horizon(cfg: dict):
    """Where a schedule's decay ends (None: a schedule without one)."""
    if cfg.get("schedule", "constant") in ("constant", "warmup_constant"):
        return None
    return cfg.get("schedule_samples") or cfg.get("max_samples")


def _check_same_trajectory(path: Path, saved: dict, cfg: TrainConfig):
    """Refuse to resume ``path`` under settings that would make another run than the one it holds
    (a resumed run must end where an uninterrupted one would): say which, and what to do."""
    now, default = asdict(cfg), asdict(TrainConfig())
    saved = {**{k: default[k] for k in TRAJECTORY_KEYS}, **saved}   # an older checkpoint: the defaults then
    changed = [(k, saved[k], now[k]) for k in TRAJECTORY_KEYS if saved[k] != now[k]]
    if _horizon(saved) != _horizon(now):
        changed.append(("schedule horizon (schedule_samples, else max_samples)", _horizon(saved), _horizon(now)))
    for k in ("features", "curriculum"):                 # what the run reads, and in what order
        a, b = (saved.get("extra") or {}).get(k), (now.get("extra") or {}).get(k)
        if a != b:
            changed.append((k, a, b))
    if changed:
        what = "; ".join(f"{k} {a!r} there, {b!r} now" for k, a, b in changed)
        raise CheckpointError(f"{path}: this run was trained with other settings ({what}); resuming would "
                              f"mix two runs. Train into another folder, or delete {path.parent} to start again.")


def default_batch(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(visual input, questions, answers) from a dataset batch."""
    return batch["visual"], batch["questions"], batch["answers"]


class Trainer:
    """Fits ``model(visual, questions) -> logits`` on a dataset of question batches."""

    def __init__(self, model: nn.Module, train_set: Dataset, val_set: Dataset | None,
                 cfg: TrainConfig, *, collate_fn: Callable | None = None,
                 batch_fn: Callable = default_batch, model_config: dict | None = None,
                 curve_set: Dataset | None = None, difficulty=None):
        self.cfg, self.batch_fn, self.collate_fn = cfg, batch_fn, collate_fn
        lr_factor(cfg, 0)                      # an unknown schedule fails here, not mid-run
        if cfg.eval_every_samples is not None and cfg.eval_every_samples < 1:
            raise ValueError(f"eval_every_samples must be >= 1, not {cfg.eval_every_samples}")
        self.rank, self.world, local_rank = distributed_env()
        self.distributed = self.world > 1
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device)
        retain = cfg.retain_memory if cfg.retain_memory is not None else self.device.type == "cpu"
        self.retains_memory = retain_freed_memory() if retain else False
        # Subnormal floats (below 1.2e-38) take x86 CPUs tens of times longer per operation. A trained
        # FiLM's activations and gradients produce them: a step of the cpu preset from raw pixels took
        # 0.9 s with them and 0.32 s flushed to zero (the checkpoint at 1.5M questions, one thread).
        # Flushing them changes nothing measurable (they are below float32's normal range).
        if self.device.type == "cpu" and cfg.flush_denormal:
            flush_denormal_all_threads(True)
        if self.distributed:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", local_rank)
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.batch_size % self.world:
            raise ValueError(f"batch_size {cfg.batch_size} does not split over {self.world} processes")
        seed_everything(cfg.seed)
        self.model = model.to(self.device)
        self.channels_last = cfg.channels_last if cfg.channels_last is not None else self.device.type in ("cpu", "cuda")
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model_config = model_config or {}
        self.train_set, self.val_set = train_set, val_set
        self.curve_set = curve_set if curve_set is not None else val_set
        self.difficulty = None if difficulty is None else np.asarray(difficulty)
        if cfg.curriculum_samples and (self.difficulty is None or len(self.difficulty) != len(train_set)):
            raise ValueError("curriculum_samples needs a difficulty level for every train question")
        self.sampler = EpochSampler(len(train_set), cfg.seed, self.rank, self.world)
        self.out = Path(cfg.out_dir)
        fused = cfg.fused_adam and self.device.type in ("cpu", "cuda") and all(
            p.is_floating_point() for p in self.model.parameters())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                          fused=fused or None)
        self.epoch, self.step, self.best_val, self.best_epoch = 0, 0, -1.0, -1
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.samples = 0                  # questions seen (all processes together)
        self.curve: list[dict] = []       # the eval_every_samples points
        self.epoch_batches = 0            # batches of the current epoch already done (resume)
        self.epoch_partial: dict | None = None   # its running sums
        self.epoch_start_samples = 0      # questions seen when this epoch began (its curriculum pool)
        # the train questions since the last curve point (its train accuracy and loss); not in
        # checkpoints: after a resume the next point covers the questions since the resume
        self._window = _empty_window()
        self._net = self.model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.bf16 = cfg.bf16 and (self.device.type == "cuda" or self.device.type == "cpu" and cpu_bf16_native())
        if cfg.bf16 and not self.bf16:
            warnings.warn(f"bf16: this CPU has no native bfloat16 arithmetic (AMX or AVX512-BF16), where "
                          f"autocast would be slower than fp32; training in fp32 on {self.device}", stacklevel=2)
        self.compiled = False             # cfg.compile asks; this says whether it happened
        if cfg.compile and self.device.type == "cpu" and not cpp_compiler_available():
            warnings.warn("compile: TorchInductor cannot compile for the CPU here (no C++ compiler such as "
                          "g++, or a failed test build); training uncompiled (FiLM about 30% slower on 2 "
                          "threads)", stacklevel=2)
        elif cfg.compile:
            parts = getattr(self.model, "compile_parts", None)
            if parts is None:
                self._net = torch.compile(self._net)
                self.compiled = True
            else:
                for part in parts():       # in place: parameter names and checkpoints are unchanged
                    part.compile()
                    self.compiled = True   # a model may offer no part worth compiling

    # -- checkpoints ------------------------------------------------------------------------
    def state(self, train_seconds: float | None = None) -> dict:
        """Everything a resume needs; ``train_seconds`` overrides the clock (a mid-epoch point)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "epoch": self.epoch, "step": self.step, "best_val": self.best_val,
                "best_epoch": self.best_epoch, "history": self.history,
                "train_seconds": self.train_seconds if train_seconds is None else train_seconds,
                "train_config": asdict(self.cfg),
                "model_config": self.model_config, "torch_rng": torch.get_rng_state(),
                "samples": self.samples, "curve": self.curve, "epoch_batches": self.epoch_batches,
                "epoch_partial": self.epoch_partial, "epoch_start_samples": self.epoch_start_samples,
                "bf16_used": self.bf16}

    def load_state(self, ckpt: dict):
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.best_val, self.best_epoch = ckpt["best_val"], ckpt["best_epoch"]
        self.history, self.train_seconds = list(ckpt["history"]), ckpt["train_seconds"]
        torch.set_rng_state(ckpt["torch_rng"])
        self.samples = ckpt.get("samples", self.step * self.cfg.batch_size)
        self.curve = list(ckpt.get("curve", []))
        self.epoch_batches = ckpt.get("epoch_batches", 0)
        self._window = _empty_window()      # the next point covers what follows
        self.epoch_partial = ckpt.get("epoch_partial")
        self.epoch_start_samples = ckpt.get("epoch_start_samples", self.samples)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- the loop ---------------------------------------------------------------------------
    def _workers(self) -> int:
        if self.cfg.num_workers is not None:
            return self.cfg.num_workers
        return min(4, max(_cpus() // self.world - 1, 0)) if self.device.type == "cuda" else 0

    def _loader(self, dataset, sampler=None, batch_size=None) -> DataLoader:
        workers = self._workers()
        return DataLoader(dataset, batch_size=batch_size or self.cfg.batch_size // self.world,
                          sampler=sampler, shuffle=False, num_workers=workers,
                          collate_fn=self.collate_fn, drop_last=sampler is not None,
                          persistent_workers=False, pin_memory=self.device.type == "cuda",
                          prefetch_factor=2 if workers else None)

    def _layout(self, visual: torch.Tensor) -> torch.Tensor:
        if self.channels_last and visual.dim() == 4:
            return visual.contiguous(memory_format=torch.channels_last)
        return visual

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def curriculum_pool(self, samples: int) -> np.ndarray | None:
        """The train questions an epoch starting after ``samples`` questions draws from."""
        limit = self.cfg.curriculum_samples
        if not limit or samples >= limit:
            return None
        levels = np.unique(self.difficulty)
        level = levels[min(int(len(levels) * samples / limit), len(levels) - 1)]
        pool = np.flatnonzero(self.difficulty <= level)
        return pool if len(pool) >= self.cfg.batch_size else None

    def _set_lr(self):
        if self.cfg.schedule != "constant":
            lr = self._current_lr()
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def _current_lr(self) -> float:
        return self.cfg.lr * lr_factor(self.cfg, self.samples)

    def train_epoch(self) -> dict:
        cfg = self.cfg
        self._net.train()
        skip = self.epoch_batches                # > 0: resuming inside this epoch
        if skip == 0:
            self.epoch_start_samples = self.samples
        per_rank = cfg.batch_size // self.world
        pool = self.curriculum_pool(self.epoch_start_samples)
        self.sampler.set_pool(pool)
        self.sampler.set_epoch(self.epoch, start=skip * per_rank)
        loader = self._loader(self.train_set, self.sampler)
        total = len(loader) + skip
        if cfg.max_steps_per_epoch:
            total = min(total, cfg.max_steps_per_epoch)
        sums = self.epoch_partial or {"correct": 0, "loss_sum": 0.0, "seen": 0}
        correct, loss_sum, seen = sums["correct"], sums["loss_sum"], sums["seen"]
        seen_before = seen
        bar = _bar(total, f"epoch {self.epoch + 1}", cfg.progress and self.is_main)
        bar.update(skip)
        limit = cfg.time_limit_minutes
        budget = None if limit is None else 60 * limit - self.train_seconds   # seconds left
        every = cfg.eval_every_samples
        next_eval = None if every is None else (self.samples // every + 1) * every
        window = self._window                 # train accuracy, loss since the last curve point (across epochs)
        t0, paused, partial = time.perf_counter(), 0.0, False
        for i, batch in enumerate(loader, start=skip):
            if i >= total:
                break
            spent = time.perf_counter() - t0 - paused
            if budget is not None and self._out_of_time(spent >= budget):
                partial = True       # the time limit falls inside this epoch: stop here
                break
            if cfg.max_samples is not None and self.samples >= cfg.max_samples:
                partial = True       # the question budget is spent
                break
            visual, questions, answers = (t.to(self.device, non_blocking=True) for t in self.batch_fn(batch))
            visual = self._layout(visual)
            self._set_lr()
            with self._autocast():
                logits = self._net(visual, questions)
                loss = F.cross_entropy(logits.float(), answers)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {self.epoch + 1}, step {self.step}; the last "
                    f"good checkpoint is {self.out / 'last.pt'}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.optimizer.step()
            self.step += 1
            _debug_kill(self.step)
            n = answers.numel()
            self.samples += n * self.world
            seen += n
            value = loss.item()
            loss_sum += value * n
            hits = (logits.argmax(1) == answers).sum().item()
            correct += hits
            window["correct"] += hits
            window["seen"] += n
            window["loss_sum"] += value * n
            bar.update(1)
            if i % 20 == 0:                       # shown at the bar's next refresh, not written now
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
            if next_eval is not None and self.samples >= next_eval:
                t_eval = time.perf_counter()
                self.epoch_batches = i + 1
                self.epoch_partial = {"correct": correct, "loss_sum": loss_sum, "seen": seen}
                self._curve_point(self.train_seconds + (t_eval - t0 - paused), window)
                window = self._window = _empty_window()
                next_eval = (self.samples // every + 1) * every
                self._net.train()
                paused += time.perf_counter() - t_eval
        bar.close()
        self.epoch_batches, self.epoch_partial = 0, None
        self._epoch_train_seconds = time.perf_counter() - t0 - paused
        self._epoch_new_samples = (seen - seen_before) * self.world
        row = {"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
               "train_samples": seen * self.world}
        if partial:
            row["partial_epoch"] = True
        if pool is not None:
            row["curriculum_pool"] = len(pool)
        return row

    def _curve_point(self, train_seconds: float, window: dict):
        """One point of the time-to-accuracy curve; also a mid-epoch ``last.pt``."""
        acc = self.evaluate(self.curve_set) if self.curve_set is not None else None
        point = {"samples": self.samples, "step": self.step, "epoch": self.epoch + 1,
                 "train_minutes": round(train_seconds / 60, 3), "val_accuracy": acc,
                 "train_accuracy": window["correct"] / max(window["seen"], 1),
                 "train_loss": window["loss_sum"] / max(window["seen"], 1),
                 "train_questions": window["seen"] * self.world,   # what the two above cover
                 "lr": self._current_lr()}
        self.curve.append(point)
        if self.is_main:
            atomic_save(self.state(train_seconds), self.out / "last.pt")
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "curve.jsonl", "".join(json.dumps(p) + "\n" for p in self.curve))

    def _out_of_time(self, mine: bool) -> bool:
        """Whether to stop for the time limit; under DDP every process follows rank 0's clock
        (so none waits forever in an all-reduce the others skipped)."""
        if not self.distributed:
            return mine
        flag = torch.tensor([float(mine)], device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    @torch.no_grad()
    def evaluate(self, dataset) -> float:
        """Accuracy on ``dataset`` (each process scores all of it: no sampler)."""
        self.model.eval()
        correct = seen = 0
        for batch in self._loader(dataset, batch_size=256):
            visual, questions, answers = (t.to(self.device) for t in self.batch_fn(batch))
            visual = self._layout(visual)
            with self._autocast():
                pred = self.model(visual, questions).argmax(1)
            correct += (pred == answers).sum().item()
            seen += answers.numel()
        return correct / max(seen, 1)

    def fit(self, resume: bool = True) -> dict:
        cfg = self.cfg
        if self.device.type == "cpu" and cfg.flush_denormal:
            flush_denormal_all_threads(True)       # again: OpenMP's pool belongs to the thread that trains
        last = self.out / "last.pt"
        if resume and last.exists():
            ckpt = load_checkpoint(last)
            _check_same_trajectory(last, ckpt.get("train_config") or {}, cfg)
            if ckpt.get("bf16_used") is not None and ckpt["bf16_used"] != self.bf16:
                precision = {True: "a bf16 autocast", False: "fp32"}
                warnings.warn(f"{last}: its {ckpt.get('samples', 0):,} questions so far were trained in "
                              f"{precision[ckpt['bf16_used']]}; the rest train in {precision[self.bf16]} "
                              f"(bf16 {'off' if not cfg.bf16 else 'unavailable on this CPU'}): the same "
                              f"recipe, with other rounding", stacklevel=2)
            self.load_state(ckpt)
        stale = 0 if self.best_epoch < 0 else self.epoch - self.best_epoch
        while self.epoch < cfg.epochs:
            # a checkpoint written mid-epoch (a curve point) leaves that epoch open: it is closed
            # (val, best.pt, its history row) even when the budget is already spent, else a run
            # killed between its last curve point and the epoch's end would never write best.pt
            if self.epoch_batches == 0 and (
                    (cfg.patience is not None and stale >= cfg.patience)
                    or (cfg.time_limit_minutes is not None and self.train_seconds >= 60 * cfg.time_limit_minutes)
                    or (cfg.max_samples is not None and self.samples >= cfg.max_samples)):
                break
            row = self.train_epoch()
            seconds = self._epoch_train_seconds
            self.train_seconds += seconds
            self.epoch += 1
            row.update(epoch=self.epoch, step=self.step, epoch_seconds=round(seconds, 3),
                       train_minutes=round(self.train_seconds / 60, 3),
                       samples_per_s=round(self._epoch_new_samples / max(seconds, 1e-9), 2))
            # an epoch over a curriculum pool (a few thousand easy questions at first) is not scored:
            # it lasts seconds, and scoring the whole val set after each made a curriculum run
            # spend most of its time on val (the curve points still measure it every
            # eval_every_samples); the first epoch over every question is scored as usual
            if self.val_set is not None and "curriculum_pool" not in row:
                row["val_accuracy"] = self.evaluate(self.val_set)
                if row["val_accuracy"] > self.best_val:
                    self.best_val, self.best_epoch, stale = row["val_accuracy"], self.epoch, 0
                else:
                    stale += 1
            self.history.append(row)
            if self.is_main:
                if self.best_epoch == self.epoch:
                    atomic_save(self.state(), self.out / "best.pt")
                atomic_save(self.state(), last)
                self._log(row)
        return {"epochs": self.epoch, "steps": self.step, "best_val_accuracy": self.best_val,
                "best_epoch": self.best_epoch, "train_minutes": self.train_seconds / 60,
                "samples": self.samples, "history": self.history, "curve": self.curve, "compiled": self.compiled,
                "bf16": self.bf16}

    def _log(self, row: dict):
        """Rewrite metrics.jsonl / metrics.csv from the history (which the checkpoint holds
        too), so a resumed run never repeats or loses a row."""
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))
        keys = list(dict.fromkeys(k for r in self.history for k in r))
        lines = [",".join(keys)] + [",".join(_csv_cell(r.get(k)) for k in keys) for r in self.history]
        atomic_write_text(self.out / "metrics.csv", "\n".join(lines) + "\n")


def _csv_cell(v) -> str:
    return "" if v is None else str(v)


def _bar(total, desc, enabled):
    """The epoch's progress bar, redrawn at most every 2 seconds: in a notebook every redraw is
    kept in the cell's output (at 10 a second, notebook 02's executed copy grew by megabytes an hour)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="batch", disable=not enabled, leave=False, mininterval=2.0)


def _debug_kill(step: int):
    """Tests kill a run for real (SIGKILL) at a chosen step to check that resume is exact."""
    at = os.environ.get("FILMLIB_KILL_AT_STEP")
    if at is not None and step == int(at):
        os.kill(os.getpid(), 9)


def _debug_kill_in_save(save: int, tmp: Path):
    """Tests kill a run (SIGKILL) in the middle of its ``FILMLIB_KILL_IN_SAVE``-th checkpoint
    write: half of the temporary file is on disk, the rename has not happened."""
    at = os.environ.get("FILMLIB_KILL_IN_SAVE")
    if at is not None and save == int(at):
        with open(tmp, "r+b") as f:
            f.truncate(os.path.getsize(tmp) // 2)
        os.kill(os.getpid(), 9)
