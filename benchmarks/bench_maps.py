"""Training throughput on cached 10x10 maps (the cpu preset's features stem), end to end.

    python benchmarks/bench_maps.py [--data data/cache/synthclevr-80] [--features oracle perception]
                                    [--batch-sizes 64 256] [--threads 1 2] [--samples 40000]
                                    [--models film lstm cnn_lstm cnn_lstm_sa] [--compile off on]
                                    [--bf16 off on]

Each row trains a ``cpu``-preset model (FiLM, or a Table 1 baseline reading the same maps)
through the project's own path (``train_film`` / ``train_baseline``: the HDF5 datasets, the
DataLoader, the Trainer with fused Adam) for ``--samples`` questions of the real train split, in
a process of its own, and reports the Trainer's samples/s (the epoch's training time: data
loading included, evaluation and start-up excluded). Rows run one at a time, so each has the
machine's cores to itself. Writes results/bench/maps.json and maps.md; rows measured before
with other settings are kept (a row is replaced only by a new measurement of the same model,
maps, batch, threads, compile and bf16). ``--compile on`` trains FiLM with ``torch.compile`` of its
FiLM-ed network (the cpu preset's setting; the baselines are not compiled); its samples/s
include the compilation (about half a minute), so use at least 40,000 questions. ``--bf16 on``
trains under a bfloat16 autocast (every model; on a CPU without AMX / AVX512-BF16 there are no
bf16 rows, since the Trainer would train fp32; each row's ``bf16`` is what ran). Each row also
records the machine's fp32 matmul GFLOP/s on its threads just before it: this machine's speed
drifts (83-318 GFLOP/s on 2 threads across sessions), and a row is only comparable with rows
measured at a similar speed.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("film", "lstm", "cnn_lstm", "cnn_lstm_sa")


def _key(row: dict) -> tuple:
    return (row.get("model", "film"), row["features"], row["batch_size"], row["threads"], bool(row.get("compile")),
            bool(row.get("bf16")))


def one_row(data: str, model: str, features: str, batch: int, threads: int, samples: int,
            compile: bool = False, bf16: bool = False) -> dict:
    from filmlib.experiment import feature_shape, train_baseline, train_film
    from bench_train import matmul_peak
    gflops = round(matmul_peak(threads) / 1e9, 1)
    common = dict(preset_name="cpu", stem="features", features=features, epochs=1, batch_size=batch,
                  threads=threads, max_samples=samples, val_samples=256, patience=None, progress=False, bf16=bf16)
    with tempfile.TemporaryDirectory() as out:
        s = (train_film(data, out, compile=compile, **common) if model == "film"
             else train_baseline(data, out, model, **common))
    row = s["history"][-1]
    return {"model": model, "features": features, "channels": feature_shape(data, features)["feature_channels"],
            "batch_size": batch, "threads": threads, "compile": bool(s.get("compiled")), "bf16": bool(s.get("bf16")),
            "samples": row["train_samples"],
            "seconds": row["epoch_seconds"], "samples_per_s": row["samples_per_s"],
            "parameters": s["parameters"], "matmul_gflops": gflops}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data/cache/synthclevr-80"))
    p.add_argument("--features", nargs="+", default=["oracle", "perception"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--samples", type=int, default=40_000)
    p.add_argument("--models", nargs="+", default=["film"], choices=MODELS)
    p.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on"],
                   help="FiLM rows without and/or with torch.compile of its FiLM-ed network")
    p.add_argument("--bf16", nargs="+", default=["off"], choices=["off", "on"],
                   help="rows in fp32 and/or under a bfloat16 autocast")
    p.add_argument("--row", help=argparse.SUPPRESS)      # internal: run one row, print JSON
    p.add_argument("--out", default=str(ROOT / "results/bench"))
    a = p.parse_args(argv)
    if a.row:
        model, features, batch, threads, comp, bf16 = a.row.split(",")
        print(json.dumps(one_row(a.data, model, features, int(batch), int(threads), a.samples, comp == "on",
                                 bf16 == "on")))
        return 0
    from filmlib.train import cpu_bf16_native
    if "on" in a.bf16 and not cpu_bf16_native():
        print("no bf16 rows: this CPU has no native bfloat16 (AMX / AVX512-BF16); the Trainer would train fp32",
              file=sys.stderr)
        a.bf16 = ["off"]
    rows = []
    for features in a.features:
        if not (Path(a.data) / f"train_{features}.h5").is_file():
            print(f"skipping {features}: {a.data}/train_{features}.h5 not found", file=sys.stderr)
            continue
        for model in a.models:
            for threads in a.threads:
                for batch in a.batch_sizes:
                    for comp, bf16 in itertools.product(a.compile if model == "film" else ["off"], a.bf16):
                        r = subprocess.run([sys.executable, __file__, "--data", a.data, "--samples", str(a.samples),
                                            "--row", f"{model},{features},{batch},{threads},{comp},{bf16}"],
                                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
                        if r.returncode:
                            raise SystemExit(r.stderr[-2000:])
                        rows.append(json.loads(r.stdout.strip().splitlines()[-1]) | {"samples_per_row": a.samples})
                        print(rows[-1], flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "maps.json").is_file():  # keep earlier rows this run did not measure again
        fresh = {_key(r) for r in rows}
        earlier = json.loads((out / "maps.json").read_text())
        kept = [r | {"samples_per_row": r.get("samples_per_row", earlier["meta"].get("samples_per_row"))}
                for r in earlier["rows"] if _key(r) not in fresh]
        rows = kept + rows
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "cpu_bf16_native": cpu_bf16_native(),
            "data": a.data, "samples_per_row": a.samples}
    from filmlib.io import atomic_write_text
    atomic_write_text(out / "maps.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# The cpu preset's models on cached 10x10 maps: training throughput", "",
             "`python benchmarks/bench_maps.py` — the Trainer's samples/s over the row's train questions "
             "(data loading included, evaluation excluded), one row at a time.", "",
             "| model | parameters | maps | channels | batch | threads | compiled | bf16 | questions | samples/s | matmul GFLOP/s before |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (MODELS.index(r.get("model", "film")), r["features"], r["threads"],
                                         r["batch_size"], bool(r.get("compile")), bool(r.get("bf16")))):
        lines.append(f"| {r.get('model', 'film')} | {r['parameters']:,} | {r['features']} | {r['channels']} | "
                     f"{r['batch_size']} | {r['threads']} | {'yes' if r.get('compile') else 'no'} | "
                     f"{'yes' if r.get('bf16') else 'no'} | "
                     f"{r['samples_per_row']:,} | {r['samples_per_s']:,.0f} | {r.get('matmul_gflops', 'not measured')} |")
    atomic_write_text(out / "maps.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
