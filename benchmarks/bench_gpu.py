"""The GPU check: how fast the paper's FiLM trains on this machine's accelerator, and a short
real training run that shows it learns. Run by ``benchmarks/gpu_check.sh`` (about 6 minutes on
one H100/H200-class GPU); ``--smoke`` runs the same steps at smoke size on whatever device there
is (the CPU in CI), to test the script itself.

    bash benchmarks/gpu_check.sh            # -> results/bench/gpu.json, gpu.md
    bash benchmarks/gpu_check.sh --smoke --out /tmp/gpu-smoke.json

1. Speed: the paper preset (``filmlib.models.preset("paper")``: 4 FiLM-ed ResBlocks of 128
   channels, GRU 4096, classifier 1024) on both stems, the ResNet-101 features (1024 x 14 x 14)
   and raw 224 x 224 pixels, each in fp32, bf16 autocast and bf16 + ``torch.compile``: batch 64
   of random inputs (questions of 20 tokens), forward + backward + Adam (fused on CUDA),
   channels-last on CUDA, timed after warm-up (compilation is reported apart). Samples/s, peak
   GPU memory, and the projected minutes of one 700,000-question epoch (CLEVR's train split)
   and of the paper's 80 epochs.
2. Training: SynthCLEVR generated at 336 x 224 (CLEVR's 3:2), squashed to 224 x 224 as the
   paper does, and the paper preset from raw pixels trained for ``--train-minutes`` through
   ``filmlib.experiment.train_film`` (the Trainer, bf16 on CUDA): the train loss at each curve
   point, first against last.

A mode that fails (no compiler for ``torch.compile``, say) is recorded with its error, not hidden.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from filmlib.io import atomic_write_text
from filmlib.models import FiLMModel, param_count, preset

ROOT = Path(__file__).resolve().parents[1]
VOCAB, ANSWERS, TOKENS = 93, 28, 20
CLEVR_TRAIN_QUESTIONS = 699_989
PAPER_EPOCHS = 80
MODES = ("fp32", "bf16", "bf16+compile")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def speed(preset_name: str, stem: str, mode: str, device: torch.device, batch: int, warmup: int,
          steps: int) -> dict:
    torch.manual_seed(0)
    cfg = preset(preset_name, VOCAB, ANSWERS, stem)
    model = FiLMModel(cfg).to(device)
    visual = torch.randn(batch, *cfg.input_shape, device=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        visual = visual.contiguous(memory_format=torch.channels_last)
    q = torch.randint(4, VOCAB, (batch, TOKENS), device=device)
    q[:, 0], q[:, -1] = 1, 2
    y = torch.randint(4, ANSWERS, (batch,), device=device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-5, fused=device.type == "cuda")
    net = torch.compile(model) if "compile" in mode else model
    bf16 = "bf16" in mode

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(visual, q).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warm_seconds = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    per_step = (time.perf_counter() - t) / steps
    row = {"preset": preset_name, "stem": stem, "mode": mode, "batch": batch, "parameters": param_count(model),
           "samples_per_s": round(batch / per_step, 1), "step_ms": round(1000 * per_step, 2),
           "warmup_seconds": round(warm_seconds, 1), "timed_steps": steps}
    if device.type == "cuda":
        row["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    row["epoch_minutes"] = round(CLEVR_TRAIN_QUESTIONS / row["samples_per_s"] / 60, 2)
    row["paper_training_hours"] = round(PAPER_EPOCHS * row["epoch_minutes"] / 60, 2)
    return row


def training_run(work: Path, *, preset_name: str, images: int, val_images: int, width: int, height: int,
                 size: int, minutes: float, device: str, bf16: bool, eval_every: int, workers: int,
                 max_samples: int | None = None) -> dict:
    from filmlib.data.preprocess import preprocess_root
    from filmlib.experiment import train_film
    from filmlib.synth.generate import SplitSpec, generate_split
    raw, cache, run = work / "raw", work / "cache", work / "run"
    t = time.perf_counter()
    for split, n in (("train", images), ("val", val_images)):
        generate_split(raw, SplitSpec(split=split, num_images=n, questions_per_image=10, width=width,
                                      height=height, seed=0), workers=workers, progress=False)
    gen_seconds = time.perf_counter() - t
    t = time.perf_counter()
    preprocess_root(raw, cache, splits=("train", "val"), image_size=(size, size), workers=workers)
    pre_seconds = time.perf_counter() - t
    summary = train_film(cache, run, preset_name=preset_name, stem="pixels", time_limit_minutes=minutes,
                         epochs=10_000, patience=None, max_samples=max_samples, device=device, bf16=bf16,
                         eval_every_samples=eval_every, curve_samples=500, val_samples=500, progress=False,
                         num_workers=min(workers, 8) if device.startswith("cuda") else 0)
    curve = [json.loads(x) for x in (run / "curve.jsonl").read_text().splitlines()]
    losses = [round(p["train_loss"], 4) for p in curve]
    return {"preset": preset_name, "stem": "pixels", "image_size": size, "train_images": images,
            "train_questions": images * 10, "minutes": minutes, "bf16": bf16,
            "generate_seconds": round(gen_seconds, 1), "preprocess_seconds": round(pre_seconds, 1),
            "questions_seen": curve[-1]["samples"] if curve else 0,
            "curve_samples": [p["samples"] for p in curve], "train_loss": losses,
            "val_accuracy": [round(p["val_accuracy"], 4) for p in curve],
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "loss_falls": bool(losses) and len(losses) > 1 and losses[-1] < losses[0],
            "uniform_loss": round(math.log(ANSWERS), 4), "best_val_accuracy": summary.get("best_val_accuracy")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="smoke sizes, any device (tests the script on the CPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "gpu.json")
    p.add_argument("--train-minutes", type=float, help="minutes of the training run (default 2; smoke: 640 "
                   "questions, within 5 minutes)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = p.parse_args(argv)
    from filmlib.train import resolve_device
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    smoke = args.smoke
    preset_name = "smoke" if smoke else "paper"
    warmup, steps = (1, 2) if smoke else (5, 30)
    started = time.time()
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "smoke": smoke, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
              "python": sys.version.split()[0], "cpus": os.cpu_count(), "speed": []}
    for stem in ("features", "pixels"):
        for mode in args.modes:
            try:
                row = speed(preset_name, stem, mode, device, 64 if not smoke else 8, warmup, steps)
            except Exception as e:  # noqa: BLE001 - recorded, the other modes still run
                row = {"preset": preset_name, "stem": stem, "mode": mode,
                       "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]}
                traceback.print_exc()
            result["speed"].append(row)
            print(json.dumps(row), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    ok = [r for r in result["speed"] if "samples_per_s" in r]
    result["best"] = {stem: max((r for r in ok if r["stem"] == stem), key=lambda r: r["samples_per_s"], default=None)
                      for stem in ("features", "pixels")}
    # smoke: a fixed number of questions (the same curve on every machine), the time limit a guard
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")     # the speeds, should training not finish
    minutes = args.train_minutes if args.train_minutes is not None else (5.0 if smoke else 2.0)
    workers = max(1, min(os.cpu_count() or 1, 16))
    with tempfile.TemporaryDirectory() as tmp:
        sizes = dict(images=24, val_images=8, width=48, height=32, size=32, eval_every=64, max_samples=640) if smoke else \
            dict(images=3000, val_images=300, width=336, height=224, size=224, eval_every=6400)
        result["training"] = training_run(Path(tmp), preset_name=preset_name, minutes=minutes, device=str(device),
                                          bf16=device.type == "cuda", workers=workers, **sizes)
    result["seconds"] = round(time.time() - started, 1)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown(result))
    print(json.dumps({k: result[k] for k in ("device_name", "best", "seconds")}, indent=1))
    return 0


def markdown(r: dict) -> str:
    lines = [f"# GPU check ({'smoke, ' if r['smoke'] else ''}{r['device_name']})", "",
             f"`bash benchmarks/gpu_check.sh{' --smoke' if r['smoke'] else ''}`, {r['date']}; torch {r['torch']}, "
             f"CUDA {r['cuda']}, {r['seconds']} s in all.", "",
             "| stem | mode | samples/s | step (ms) | peak GPU memory (MB) | one 700k-question epoch (min) | 80 epochs (h) |",
             "|---|---|---|---|---|---|---|"]
    for s in r["speed"]:
        if "error" in s:
            lines.append(f"| {s['stem']} | {s['mode']} | failed: {s['error']} | | | | |")
        else:
            lines.append(f"| {s['stem']} | {s['mode']} | {s['samples_per_s']} | {s['step_ms']} | "
                         f"{s.get('peak_gpu_memory_mb', '—')} | {s['epoch_minutes']} | {s['paper_training_hours']} |")
    t = r["training"]
    lines += ["", f"Training ({t['preset']} preset, raw pixels {t['image_size']}x{t['image_size']}, "
              f"{t['train_questions']:,} SynthCLEVR questions, {t['minutes']} min, bf16 {t['bf16']}): "
              f"{t['questions_seen']:,} questions seen; train loss {t['loss_first']} -> {t['loss_last']} "
              f"(uniform guess {t['uniform_loss']}); val accuracy at the points {t['val_accuracy']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
