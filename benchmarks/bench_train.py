"""Training speed of the FiLM presets on this machine: samples/s, peak memory, useful FLOP/s.

    python benchmarks/bench_train.py [--threads 2] [--presets smoke cpu paper] [--stems pixels features]
                                     [--repeats 3] [--no-reference]

Each (preset, stem) runs in its own process (so peak RSS is its own): batch 64 of random
images (or 1024x14x14 features) and questions whose lengths follow SynthCLEVR's (read from
data/cache/*/train_questions.h5 when present, else CLEVR's mean of ~20 tokens), forward +
backward + Adam, timed after warm-up steps.

Warm-up runs to the steady state a long training run works in. The `filmlib` runs keep freed
memory for reuse (filmlib.memory); with PyTorch's 2 MB-aligned huge-page blocks, glibc's heap
still grows for the first several paper-size steps (about 700 fresh huge pages, 0.5-0.8 s of
system time, a step) before every block finds a freed one to reuse, and a single fault-free
step does not yet mean it has stopped. So after the preset's minimum, warm-up goes on until
SETTLED steps in a row take no minor page fault (at most MAX_WARMUP steps); every warm-up
step's seconds and faults, and each timed step's faults, are kept in the row.
The reference runs use glibc's default allocation, which gives large blocks back on free: they
fault at the same rate every step, so their warm-up is the minimum.

Useful FLOPs count only real work, as torch's FlopCounterMode sees one training step: the
convolutions, the linear layers, and the GRU's gate products over each question's real tokens
(filmlib's GRU sorts questions by length and never touches padding). The FLOPs are counted on
one step taken with the GRU's per-step products on oneDNN's linear kernel (registered with the
counter below; filmlib's compiled panel GEMM, which the timed steps use, does the same
arithmetic out of the counter's sight) and the stem convolutions on oneDNN's path. They are
compared with this machine's fp32 matmul peak
(2048x2048, torch's matmul), measured before and after the whole run and just before and after
each row's steps; the highest is used (the machine is shared and its speed drifts by tens of
percent, within minutes as well as over a day), and each row keeps its own pair, which says how
fast the machine was while that row ran.

The paper rows run ``--repeats`` times (default 3), in turn with each other, and report the
median run; every run is kept under ``runs`` with the machine's matmul speed around it.

For the paper preset a second, "reference" run trains the same model and batch the way the
authors' code does (nn.GRU over 46 padded positions, NCHW, unfused Adam, no huge pages, glibc's
default allocation), so the speed-up over it comes from one run on one machine.
Writes results/bench/train.json and train.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula

from filmlib.io import atomic_write_text
from filmlib.memory import retain_freed_memory
from filmlib.models import FiLMModel, param_count, preset
from filmlib.models import question_lengths as question_lengths_of
from filmlib.models import gru as gru_module
from filmlib.models import panel_gemm
from filmlib.models.stem_conv import StemConv2d

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "bench"
VOCAB, ANSWERS, BATCH = 93, 28, 64
STEPS = {"smoke": (3, 30), "cpu": (2, 8), "paper": (1, 5)}        # (least warm-up, timed)
MAX_WARMUP = 14                                # warm-up steps at most, waiting for no page faults
SETTLED = 2                                    # ... in this many steps in a row
AUTHORS = {"features": 7.9, "pixels": 5.2}   # the authors' code on this machine, samples/s
TIMED_FIELDS = ("samples_per_s", "step_seconds", "achieved_gflop_per_s", "peak_rss_mb", "matmul_gflop_per_s_around",
                "warmup_steps", "timed_steps")
CLEVR_PADDED = 46                            # CLEVR's longest question, the authors' padded length


if hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.ops.mkldnn._linear_pointwise not in flop_registry:
    # filmlib's GRU runs its per-step products through oneDNN's linear kernel, which the
    # counter does not know: x (M, K) against a weight (N, K) is 2*M*K*N FLOPs.
    @register_flop_formula(torch.ops.mkldnn._linear_pointwise)
    def _onednn_linear_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * int(np.prod(x_shape[:-1])) * x_shape[-1] * w_shape[0]


def question_lengths(n: int, rng) -> np.ndarray:
    """Token counts (with <START>/<END>) drawn from a preprocessed SynthCLEVR train split."""
    for path in sorted((ROOT / "data").glob("**/cache/*/train_questions.h5")):
        import h5py
        with h5py.File(path) as f:
            q = f["questions"][:20000]
        lengths = (q != 0).sum(1)
        return rng.choice(lengths, n)
    return np.full(n, 20)


def make_batch(cfg, rng):
    lengths = question_lengths(BATCH, rng)
    q = torch.zeros(BATCH, int(lengths.max()), dtype=torch.long)
    for i, n in enumerate(lengths):
        q[i, 0], q[i, 1:n - 1], q[i, n - 1] = 1, torch.randint(4, VOCAB, (n - 2,)), 2
    shape = (BATCH, *cfg.input_shape)
    return torch.randn(shape), q, torch.randint(4, ANSWERS, (BATCH,)), lengths


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _faulted(fn) -> tuple[float, int]:
    """(seconds, minor page faults) of one call."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = _timed(fn)
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def warm_up(step, least: int, most: int, measure=_faulted, settled: int = SETTLED) -> list[tuple[float, int]]:
    """Run `least` steps, then more until the last `settled` in a row took no minor page fault
    (memory has settled), `most` in all at the outside; returns each step's (seconds, faults)."""
    done = []
    while len(done) < most and (len(done) < max(least, settled)
                                or (settled > 0 and any(f for _, f in done[-settled:]))):
        done.append(measure(step))
    return done


def padded_encode(generator, questions):
    """The authors' way: nn.GRU over every padded position, then the state at the last real
    token picked out of the output sequence."""
    lengths = question_lengths_of(questions)
    out, _ = generator.rnn(generator.embed(questions))                 # (N, T, H)
    return out[torch.arange(questions.shape[0]), lengths - 1]


def one(preset_name: str, stem: str, threads: int, style: str = "filmlib") -> dict:
    """style "filmlib": as filmlib.train.Trainer runs on the CPU (fast GRU, NHWC, fused Adam,
    THP allocation, freed memory kept for reuse). style "reference": the same model the way the
    authors' code runs it (nn.GRU over questions padded to CLEVR's 46 tokens, NCHW, unfused Adam,
    no THP, glibc's default allocation), so that a speed-up can be read off one run on one machine."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = preset(preset_name, VOCAB, ANSWERS, stem)
    model = FiLMModel(cfg)
    visual, q, y, lengths = make_batch(cfg, rng)
    if style == "reference":
        model.generator.encode = types.MethodType(padded_encode, model.generator)
        q = torch.cat([q, q.new_zeros(BATCH, max(0, CLEVR_PADDED - q.shape[1]))], 1)
        opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-5)
    else:
        retain_freed_memory()                  # as the Trainer does on the CPU (filmlib.memory)
        model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-5, fused=True)
        if visual.dim() == 4:
            visual = visual.contiguous(memory_format=torch.channels_last)

    def step():
        loss = F.cross_entropy(model(visual, q), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    least, timed = STEPS[preset_name]
    # count the stem convolutions' own FLOPs, not those of StemConv2d's weight-gradient products
    # (which also multiply the zero border of the space-to-depth cells), and the GRU's per-step
    # products where the counter sees them (filmlib's panel GEMM is a compiled call it cannot
    # see; oneDNN's linear does the same arithmetic): one step on oneDNN's paths, taken first so
    # that the warm-up below settles memory for the steps that are timed
    stem_convs = [(m, m.fast) for m in model.modules() if isinstance(m, StemConv2d)]
    for m, _ in stem_convs:
        m.fast = False
    panel, gru_module.use_panel_gemm = gru_module.use_panel_gemm, False
    with FlopCounterMode(display=False) as counter:
        step()
    gru_module.use_panel_gemm = panel
    for m, fast in stem_convs:
        m.fast = fast
    flops = counter.get_total_flops()
    warm = warm_up(step, least, MAX_WARMUP, settled=SETTLED) if style == "filmlib" else warm_up(step, least, least, settled=0)
    peak_before = matmul_peak(threads)
    timed_steps = [_faulted(step) for _ in range(timed)]
    seconds = [s for s, _ in timed_steps]
    per_step = float(np.median(seconds))
    peak_after = matmul_peak(threads)
    return {"preset": preset_name, "stem": stem, "style": style, "threads": threads, "batch": BATCH,
            "parameters": param_count(model), "mean_question_tokens": float(np.mean(lengths)),
            "samples_per_s": round(BATCH / per_step, 2), "step_seconds": round(per_step, 4),
            "useful_gflop_per_sample": round(flops / BATCH / 1e9, 4),
            "achieved_gflop_per_s": round(flops / per_step / 1e9, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "gru_steps": ("nn.GRU over padding" if style == "reference"
                          else "panel GEMM" if panel_gemm.available() else "oneDNN"),
            "warmup_steps": [[round(s, 3), f] for s, f in warm],       # [seconds, minor faults] each
            "timed_steps": [[round(s, 3), f] for s, f in timed_steps],
            # the machine's matmul speed just before and after this run's steps: its state at the time
            "matmul_gflop_per_s_around": [round(peak_before / 1e9, 1), round(peak_after / 1e9, 1)]}


def run_one(name: str, stem: str, threads: int, style: str) -> dict:
    thp = "1" if style == "filmlib" else "0"
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": thp, "OMP_NUM_THREADS": str(threads)}
    r = subprocess.run([sys.executable, __file__, "--one", name, stem, style, "--threads", str(threads)],
                       capture_output=True, text=True, check=True, env=env)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--presets", nargs="+", default=["smoke", "cpu", "paper"])
    p.add_argument("--stems", nargs="+", default=["pixels", "features"])
    p.add_argument("--no-reference", action="store_true",
                   help="skip the same-run reference (the paper model run the authors' way)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each paper row (filmlib style), taken in turn; the median is reported")
    p.add_argument("--one", nargs=3, metavar=("PRESET", "STEM", "STYLE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(one(*a.one[:2], a.threads, a.one[2])))
        return
    peaks = [matmul_peak(a.threads)]
    rows, refs = [], {}                        # refs: stem -> the paper reference row
    for name in a.presets:
        for stem in a.stems:
            row = run_one(name, stem, a.threads, "filmlib")
            rows.append(row)
            print(json.dumps(row), flush=True)
            if name == "paper" and not a.no_reference:
                ref = run_one(name, stem, a.threads, "reference")
                # the same useful work (real tokens only), done in the reference's time
                ref["useful_gflop_per_sample"] = row["useful_gflop_per_sample"]
                ref["achieved_gflop_per_s"] = round(row["useful_gflop_per_sample"] * ref["samples_per_s"], 2)
                refs[stem] = ref
                rows.append(ref)
                print(json.dumps(ref), flush=True)
    # the paper rows again, in turn, so that their figure is a median over the machine's moods
    paper = [r for r in rows if r["preset"] == "paper" and r["style"] == "filmlib"]
    runs = [[{k: r[k] for k in TIMED_FIELDS}] for r in paper]    # each row's runs, first its own
    for _ in range(a.repeats - 1):
        for r, each in zip(paper, runs):
            again = run_one("paper", r["stem"], a.threads, "filmlib")
            each.append({k: again[k] for k in TIMED_FIELDS})
            print(json.dumps(again), flush=True)
    for r, each in zip(paper, runs):
        median = sorted(each, key=lambda x: x["samples_per_s"])[(len(each) - 1) // 2]  # lower middle if even
        ref = refs.get(r["stem"])
        r.update(median)
        r["runs"] = each
        r["authors_samples_per_s"] = AUTHORS[r["stem"]]
        r["speedup_vs_authors"] = round(r["samples_per_s"] / AUTHORS[r["stem"]], 2)
        if ref is not None:
            r["speedup_vs_reference"] = round(r["samples_per_s"] / ref["samples_per_s"], 2)
    peaks.append(matmul_peak(a.threads))
    peaks += [p * 1e9 for r in rows for x in r.get("runs", [r]) for p in x["matmul_gflop_per_s_around"]]
    peak = max(peaks)          # the machine's better moment: the conservative denominator
    for row in rows:
        row["fraction_of_matmul_peak"] = round(row["achieved_gflop_per_s"] * 1e9 / peak, 3)
    result = {"fp32_matmul_peak_gflop_per_s": round(peak / 1e9, 1),
              "matmul_peak_measurements_gflop_per_s": [round(x / 1e9, 1) for x in peaks],
              "threads": a.threads, "cpus": os.cpu_count(), "torch": torch.__version__, "runs": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "train.json", json.dumps(result, indent=1) + "\n")
    md = ["# FiLM training speed", "", f"`python benchmarks/bench_train.py --threads {a.threads}`; "
          f"fp32 matmul peak {result['fp32_matmul_peak_gflop_per_s']} GFLOP/s ({a.threads} threads; the "
          f"highest of {len(peaks)} measurements: before and after the whole run, and before and after each row's "
          f"steps, range {min(peaks) / 1e9:.0f}-{peak / 1e9:.0f}). The machine is shared and its speed drifts; "
          "`matmul around` is its matmul GFLOP/s just before and after that row's steps.", "",
          "`filmlib`: how `filmlib.train.Trainer` runs on the CPU. `reference`: the same model and batch "
          "run the authors' way (nn.GRU over 46 padded positions, NCHW, unfused Adam), same run. "
          "The authors' own code, measured on this machine earlier, for comparison.", "",
          "| preset | stem | style | params | samples/s | useful GFLOP/s | of peak | peak RSS MB | authors' code, samples/s | vs authors | vs reference | matmul around |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['preset']} | {r['stem']} | {r['style']} | {r['parameters']:,} | {r['samples_per_s']} | "
                  f"{r['achieved_gflop_per_s']} | {100 * r['fraction_of_matmul_peak']:.0f}% | {r['peak_rss_mb']} | "
                  f"{r.get('authors_samples_per_s', '')} | {_x(r.get('speedup_vs_authors'))} | "
                  f"{_x(r.get('speedup_vs_reference'))} | {' / '.join(f'{v:.0f}' for v in r['matmul_gflop_per_s_around'])} |")
    for r in rows:
        if "runs" in r:
            md.append("")
            md.append(f"`{r['preset']}`/{r['stem']}: the median of {len(r['runs'])} runs taken in turn; samples/s "
                      "(matmul GFLOP/s before / after its steps; warm-up steps): " + ", ".join(
                          f"{x['samples_per_s']} ({x['matmul_gflop_per_s_around'][0]:.0f} / "
                          f"{x['matmul_gflop_per_s_around'][1]:.0f}; {len(x['warmup_steps'])})" for x in r["runs"]) + ".")
    atomic_write_text(OUT / "train.md", "\n".join(md) + "\n")


def _x(v) -> str:
    return "" if v is None else f"{v}×"


if __name__ == "__main__":
    main()
