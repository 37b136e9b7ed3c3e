"""Where the `paper` pixel stem's backward time goes: one stride-2 4x4 convolution, by memory layout.

    python benchmarks/bench_stem_conv.py [--threads 2] [--repeats 3]

For each stem layer shape of the `paper` preset (batch 64; 3->128 at 224, 128->128 at 112 and
at 56) it times, in NCHW and in channels-last (NHWC): the forward pass, the input gradient, the
weight gradient, and the copy of the input and of the output gradient to NCHW (what computing the
weight gradient in NCHW from NHWC tensors would cost); and the weight gradient as filmlib's
``StemConv2d`` computes it from NHWC tensors (``s2d_weight_grad``: one matrix product over a
space-to-depth copy of the input) and ``im2col_weight_grad`` (one product over the unfolded 4x4
patches, what it uses for image inputs). Freed memory is kept for reuse, as the Trainer does
(``filmlib.memory``). Best of ``--repeats`` after one warm-up. The fp32 matmul peak
is measured in the same run, since this machine's speed drifts by tens of percent.
Writes results/bench/stem_conv.json and stem_conv.md.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")   # as filmlib sets it, before torch loads

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from filmlib.io import atomic_write_text  # noqa: E402
from filmlib.memory import retain_freed_memory  # noqa: E402
from filmlib.models.stem_conv import im2col_weight_grad, s2d_weight_grad  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "bench"
SHAPES = [(3, 224), (128, 112), (128, 56)]        # (input channels, input side) of stem layers 1-3
BATCH, OUT_CHANNELS = 64, 128


def best_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(1e3 * min(times), 1)


def grads(go, x, w, which):
    mask = [which == "input", which == "weight", False]
    return torch.ops.aten.convolution_backward(go, x, w, None, [2, 2], [1, 1], [1, 1], False, [0, 0], 1, mask)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(best_ms(lambda: a @ b, 1) for _ in range(repeats)) / 1e3
    return round(2 * n ** 3 / best / 1e9, 1)


def measure(c_in: int, side: int, repeats: int) -> dict:
    x = torch.randn(BATCH, c_in, side, side)
    w = torch.randn(OUT_CHANNELS, c_in, 4, 4) * 0.05
    go = torch.randn(BATCH, OUT_CHANNELS, side // 2, side // 2)
    row = {"in_channels": c_in, "side": side}
    for name, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
        xf, wf, gf = (t.contiguous(memory_format=fmt) for t in (x, w, go))
        row[f"{name}_forward_ms"] = best_ms(lambda: F.conv2d(xf, wf, stride=2, padding=1), repeats)
        if c_in > 3:                                   # the first layer needs no input gradient
            row[f"{name}_input_grad_ms"] = best_ms(lambda: grads(gf, xf, wf, "input"), repeats)
        row[f"{name}_weight_grad_ms"] = best_ms(lambda: grads(gf, xf, wf, "weight"), repeats)
    xl, gl = x.contiguous(memory_format=torch.channels_last), go.contiguous(memory_format=torch.channels_last)
    row["nhwc_s2d_weight_grad_ms"] = best_ms(lambda: s2d_weight_grad(gl.permute(0, 2, 3, 1),
                                                                      xl.permute(0, 2, 3, 1)), repeats)
    row["nhwc_im2col_weight_grad_ms"] = best_ms(lambda: im2col_weight_grad(gl.permute(0, 2, 3, 1),
                                                                            xl.permute(0, 2, 3, 1)), repeats)
    row["nhwc_to_nchw_input_ms"] = best_ms(lambda: xl.contiguous(), repeats)
    row["nhwc_to_nchw_output_grad_ms"] = best_ms(lambda: gl.contiguous(), repeats)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    retain_freed_memory()
    peak = [matmul_peak_gflops()]
    rows = [measure(c, s, a.repeats) for c, s in SHAPES]
    peak.append(matmul_peak_gflops())
    for r in rows:
        print(json.dumps(r), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"threads": a.threads, "batch": BATCH, "torch": torch.__version__,
              "matmul_peak_gflops_before_after": peak, "runs": rows}
    atomic_write_text(OUT / "stem_conv.json", json.dumps(result, indent=1) + "\n")
    cols = ["forward", "input_grad", "weight_grad"]
    md = ["# Pixel-stem convolution by layout (ms)", "",
          f"`python benchmarks/bench_stem_conv.py --threads {a.threads}`; batch {BATCH}, 4x4 stride 2, "
          f"{OUT_CHANNELS} output channels; best of {a.repeats}; fp32 matmul peak {peak[0]} / {peak[1]} GFLOP/s "
          "(2048x2048, before / after). `weight_grad s2d` / `im2col`: filmlib's `s2d_weight_grad` / "
          "`im2col_weight_grad`, from NHWC tensors; StemConv2d uses the first from 64 input channels, the second "
          "up to 4.", "",
          "| input | " + " | ".join(f"{c} NCHW | {c} NHWC" for c in cols)
          + " | weight_grad s2d | weight_grad im2col | NHWC->NCHW input | NHWC->NCHW grad |",
          "|---|" + "---|" * (2 * len(cols) + 4)]
    for r in rows:
        cells = [str(r.get(f"{f}_{c}_ms", "")) for c in cols for f in ("nchw", "nhwc")]
        md.append(f"| {r['in_channels']}x{r['side']}x{r['side']} | " + " | ".join(cells)
                  + f" | {r['nhwc_s2d_weight_grad_ms']} | {r['nhwc_im2col_weight_grad_ms']} | {r['nhwc_to_nchw_input_ms']} | {r['nhwc_to_nchw_output_grad_ms']} |")
    atomic_write_text(OUT / "stem_conv.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
