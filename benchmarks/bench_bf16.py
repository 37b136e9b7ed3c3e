"""fp32 against a bfloat16 autocast on this CPU: products, and the cpu preset's training step.

    python benchmarks/bench_bf16.py [--threads 1 2] [--stems features pixels] [--compile off on]
                                    [--steps 20] [--rounds 2]

A CPU with AMX or AVX512-BF16 multiplies bfloat16 in hardware; elsewhere torch emulates it.
Rows:

- ``matmul``: a 1024 x 1024 product, GFLOP/s, fp32 and bf16;
- ``step``: one training step of the ``cpu`` preset's FiLM at batch 64 (forward, backward, fused
  Adam, the Trainer's channels-last layout and subnormal flush) on random inputs: the perception
  maps' shape (64 x 10 x 10, ``features``) or 80 x 80 pixels (``pixels``), questions of 20
  tokens, eager or with the FiLM-ed network compiled as the Trainer compiles it; samples/s,
  fp32 and under ``torch.autocast("cpu", torch.bfloat16)``.

Each (stem, compile, threads) runs in a process of its own and times fp32 and bf16 in turn,
``--rounds`` times (the machine's speed drifts; every round is kept, the table shows the range).
Writes results/bench/bf16.json and bf16.md. The Trainer's own rates, data loading included, are
``bench_maps.py --bf16 off on``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH, TOKENS, VOCAB, ANSWERS = 64, 20, 90, 28


def _timed_rate(fn, warm: int, steps: int, per_call: float) -> float:
    for _ in range(warm):
        fn()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return per_call * steps / (time.perf_counter() - t)


def matmul_rows(threads: int, rounds: int) -> list[dict]:
    import torch
    torch.set_num_threads(threads)
    n, rows = 1024, []
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        rates = [_timed_rate(lambda: a @ b, 3, 20, 2 * n ** 3) / 1e9 for _ in range(rounds)]
        rows.append({"what": "matmul", "threads": threads, "dtype": str(dtype).removeprefix("torch."),
                     "gflop_per_s": [round(r, 1) for r in rates]})
    return rows


def step_row(stem: str, compiled: bool, threads: int, steps: int, rounds: int) -> dict:
    import torch
    import torch.nn.functional as F
    from filmlib.models import FiLMModel, preset
    from filmlib.train import flush_denormal_all_threads
    torch.set_num_threads(threads)
    flush_denormal_all_threads()
    torch.manual_seed(0)
    cfg = preset("cpu", VOCAB, ANSWERS, stem)
    if stem == "features":
        cfg = cfg.variant(feature_channels=64, feature_size=10)        # the perception maps
    model = FiLMModel(cfg).to(memory_format=torch.channels_last)
    if compiled:
        for part in model.compile_parts():
            part.compile()
    visual = torch.randn(BATCH, *cfg.input_shape).contiguous(memory_format=torch.channels_last)
    questions = torch.randint(4, VOCAB, (BATCH, TOKENS))
    answers = torch.randint(0, ANSWERS, (BATCH,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, fused=True)

    def step(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(visual, questions).float(), answers)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rates = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        for mode in rates:
            rates[mode].append(round(_timed_rate(lambda: step(mode == "bf16"), 5, steps, BATCH), 1))
    return {"what": "step", "stem": stem, "compiled": compiled, "threads": threads, "batch": BATCH,
            "samples_per_s": rates}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--stems", nargs="+", default=["features", "pixels"], choices=["features", "pixels"])
    p.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "results/bench"))
    p.add_argument("--row", help=argparse.SUPPRESS)      # internal: one process's rows, as JSON
    a = p.parse_args(argv)
    if a.row:
        kind, *rest = a.row.split(",")
        if kind == "matmul":
            print(json.dumps(matmul_rows(int(rest[0]), a.rounds)))
        else:
            stem, comp, threads = rest
            print(json.dumps([step_row(stem, comp == "on", int(threads), a.steps, a.rounds)]))
        return 0
    jobs = [f"matmul,{t}" for t in a.threads]
    jobs += [f"step,{s},{c},{t}" for s in a.stems for c in a.compile for t in a.threads]
    rows = []
    for job in jobs:
        r = subprocess.run([sys.executable, __file__, "--row", job, "--steps", str(a.steps), "--rounds", str(a.rounds)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if r.returncode:
            raise SystemExit(f"{job}: {r.stderr[-2000:]}")
        rows += json.loads(r.stdout.strip().splitlines()[-1])
        print(rows[-1], flush=True)
    from filmlib.io import atomic_write_text
    from filmlib.train import cpu_bf16_native
    meta = {"cpu_bf16_native": cpu_bf16_native(), "cpus": os.cpu_count(), "steps": a.steps, "rounds": a.rounds}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bf16.json", json.dumps({"meta": meta, "rows": rows}, indent=1))

    def span(values) -> str:
        lo, hi = min(values), max(values)
        return f"{lo:,.0f}" if round(lo) == round(hi) else f"{lo:,.0f}–{hi:,.0f}"

    lines = ["# fp32 against a bf16 autocast on this CPU", "",
             f"`python benchmarks/bench_bf16.py`; native bf16 (AMX / AVX512-BF16): "
             f"{'yes' if meta['cpu_bf16_native'] else 'no'}. Each cell: the range over {a.rounds} rounds "
             f"taken in turn.", "",
             "| what | stem | compiled | threads | fp32 | bf16 | unit |", "|---|---|---|---|---|---|---|"]
    mm = {(r["threads"], r["dtype"]): r["gflop_per_s"] for r in rows if r["what"] == "matmul"}
    for t in a.threads:
        lines.append(f"| matmul 1024² | | | {t} | {span(mm[(t, 'float32')])} | {span(mm[(t, 'bfloat16')])} | GFLOP/s |")
    for r in rows:
        if r["what"] == "step":
            lines.append(f"| training step, batch {r['batch']} | {r['stem']} | {'yes' if r['compiled'] else 'no'} | "
                         f"{r['threads']} | {span(r['samples_per_s']['fp32'])} | {span(r['samples_per_s']['bf16'])} | "
                         f"samples/s |")
    atomic_write_text(out / "bf16.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
