"""The `paper` GRU's per-step products: filmlib's panel GEMM against oneDNN's linear kernel.

    python benchmarks/bench_gru_step.py [--threads 2] [--repeats 7]

For the 4096-wide GRU of the `paper` preset (hidden weight 12288 x 4096, 201 MB) it times, for
n rows still running (n = 1 ... 64, batch 64):
- forward: (n x 4096) @ (4096 x 12288) + bias, as ``filmlib.models.panel_gemm.matmul`` on the
  weight packed once, and as oneDNN's ``_linear_pointwise`` on the weight itself;
- backward: (n x 12288) @ (12288 x 4096), the panel GEMM on the other packing, and oneDNN on the
  transposed weight (which the fallback path copies once per backward pass);
- the once-per-pass preparation: each packing, and the fallback's blocked transpose;
- the whole recurrence, forward and backward (``last_states`` on 64 questions whose lengths follow
  SynthCLEVR's, as ``bench_train.py`` draws them), with either path.

The two paths alternate call by call and each figure is the median of ``--repeats`` (the machine
is shared and its speed drifts), with the fp32 matmul speed (2048 x 2048) measured before and
after. Freed memory is kept for reuse, as the Trainer does. Writes results/bench/gru_step.json
and gru_step.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")   # as filmlib sets it, before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import matmul_peak, question_lengths  # noqa: E402

from filmlib.io import atomic_write_text  # noqa: E402
from filmlib.memory import retain_freed_memory  # noqa: E402
from filmlib.models import gru as gru_module  # noqa: E402
from filmlib.models import panel_gemm  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "bench"
H, EMBED, BATCH = 4096, 200, 64
ROWS = [1, 2, 8, 16, 32, 48, 64]


def medians_ms(fns: dict, repeats: int) -> dict:
    """Each function once to warm up, then all of them in turn, `repeats` rounds; median ms each."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t) * 1e3)
    return {name: round(float(np.median(v)), 2) for name, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args(argv)
    if not panel_gemm.available():
        sys.exit("filmlib's panel GEMM is unavailable here (see the warning above); nothing to compare")
    torch.set_num_threads(a.threads)
    retain_freed_memory()
    torch.manual_seed(0)
    before = matmul_peak(a.threads) / 1e9
    w = torch.randn(3 * H, H) / H ** 0.5
    bias = torch.randn(3 * H)
    fwd_packed, bwd_packed = panel_gemm.pack(w, transposed=True), panel_gemm.pack(w, transposed=False)
    w_t = gru_module._transpose(w)
    prep = medians_ms({"pack for forward": lambda: panel_gemm.pack(w, transposed=True),
                       "pack for backward": lambda: panel_gemm.pack(w, transposed=False),
                       "oneDNN fallback: transpose for backward": lambda: gru_module._transpose(w)}, a.repeats)
    rows = []
    for n in ROWS:
        x, g = torch.randn(n, H), torch.randn(n, 3 * H)
        torch.testing.assert_close(panel_gemm.matmul(x, fwd_packed, bias), gru_module._linear(x, w, bias),
                                   atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(panel_gemm.matmul(g, bwd_packed), gru_module._linear(g, w_t, None),
                                   atol=1e-3, rtol=1e-4)
        ms = medians_ms({"forward panel": lambda: panel_gemm.matmul(x, fwd_packed, bias),
                         "forward oneDNN": lambda: gru_module._linear(x, w, bias),
                         "backward panel": lambda: panel_gemm.matmul(g, bwd_packed),
                         "backward oneDNN": lambda: gru_module._linear(g, w_t, None)}, a.repeats)
        flop = 2 * n * H * 3 * H
        rows.append({"rows": n, **ms, "forward panel GFLOP/s": round(flop / ms["forward panel"] / 1e6, 1),
                     "forward oneDNN GFLOP/s": round(flop / ms["forward oneDNN"] / 1e6, 1)})
        print(json.dumps(rows[-1]), flush=True)

    rnn = torch.nn.GRU(EMBED, H, batch_first=True)
    lengths = torch.as_tensor(question_lengths(BATCH, np.random.default_rng(0)))
    xs = torch.randn(BATCH, int(lengths.max()), EMBED, requires_grad=True)

    def recurrence(use: bool):
        def run():
            gru_module.use_panel_gemm = use
            try:
                gru_module.last_states(rnn, xs, lengths).sum().backward()
            finally:
                gru_module.use_panel_gemm = True
        return run
    whole = medians_ms({"panel GEMM": recurrence(True), "oneDNN": recurrence(False)}, max(3, a.repeats // 2))
    after = matmul_peak(a.threads) / 1e9
    result = {"threads": a.threads, "hidden": H, "batch": BATCH, "repeats": a.repeats,
              "matmul_gflop_per_s_before_after": [round(before, 1), round(after, 1)],
              "preparation_ms": prep, "per_step_ms": rows,
              "recurrence_forward_backward_ms": whole,
              "question_tokens": {"mean": float(lengths.float().mean()), "max": int(lengths.max())}}
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / "gru_step.json", json.dumps(result, indent=1) + "\n")
    md = ["# The paper GRU's per-step products", "",
          f"`python benchmarks/bench_gru_step.py --threads {a.threads}`: hidden weight 12288 x 4096 (201 MB); "
          f"medians of {a.repeats} calls, the paths in turn; fp32 matmul {before:.0f} GFLOP/s before, {after:.0f} after.", "",
          "| rows n | forward: panel GEMM, ms | forward: oneDNN, ms | backward: panel GEMM, ms | backward: oneDNN, ms |",
          "|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['rows']} | {r['forward panel']} | {r['forward oneDNN']} | {r['backward panel']} | "
                  f"{r['backward oneDNN']} |")
    md += ["", "Once per pass: " + ", ".join(f"{k} {v} ms" for k, v in prep.items()) + ".", "",
           f"The whole recurrence, forward and backward, on {BATCH} questions (mean {result['question_tokens']['mean']:.1f} "
           f"tokens, longest {result['question_tokens']['max']}): panel GEMM {whole['panel GEMM']} ms, "
           f"oneDNN {whole['oneDNN']} ms."]
    atomic_write_text(OUT / "gru_step.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
