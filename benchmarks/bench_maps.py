"""Training throughput of FiLM on cached 10x10 maps (the cpu preset's features stem), end to end.

    python benchmarks/bench_maps.py [--data data/cache/synthclevr-80] [--features oracle perception]
                                    [--batch-sizes 64 256] [--threads 1 2] [--samples 40000]

Each row trains the ``cpu`` preset's FiLM through the project's own path (``train_film``: the
HDF5 datasets, the DataLoader, the Trainer with fused Adam) for ``--samples`` questions of the
real train split, in a process of its own, and reports the Trainer's samples/s (the epoch's
training time: data loading included, evaluation and start-up excluded). Rows run one at a
time, so each has the machine's cores to itself. Writes results/bench/maps.json and maps.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_row(data: str, features: str, batch: int, threads: int, samples: int) -> dict:
    from filmlib.experiment import feature_shape, train_film
    with tempfile.TemporaryDirectory() as out:
        s = train_film(data, out, preset_name="cpu", stem="features", features=features, epochs=1,
                       batch_size=batch, threads=threads, max_samples=samples, val_samples=256,
                       patience=None, progress=False)
    row = s["history"][-1]
    return {"features": features, "channels": feature_shape(data, features)["feature_channels"], "batch_size": batch, "threads": threads, "samples": row["train_samples"],
            "seconds": row["epoch_seconds"], "samples_per_s": row["samples_per_s"],
            "parameters": s["parameters"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data/cache/synthclevr-80"))
    p.add_argument("--features", nargs="+", default=["oracle", "perception"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--samples", type=int, default=40_000)
    p.add_argument("--row", help=argparse.SUPPRESS)      # internal: run one row, print JSON
    p.add_argument("--out", default=str(ROOT / "results/bench"))
    a = p.parse_args(argv)
    if a.row:
        features, batch, threads = a.row.split(",")
        print(json.dumps(one_row(a.data, features, int(batch), int(threads), a.samples)))
        return 0
    rows = []
    for features in a.features:
        if not (Path(a.data) / f"train_{features}.h5").is_file():
            print(f"skipping {features}: {a.data}/train_{features}.h5 not found", file=sys.stderr)
            continue
        for threads in a.threads:
            for batch in a.batch_sizes:
                r = subprocess.run([sys.executable, __file__, "--data", a.data, "--samples", str(a.samples),
                                    "--row", f"{features},{batch},{threads}"],
                                   capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
                if r.returncode:
                    raise SystemExit(r.stderr[-2000:])
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "data": a.data, "samples_per_row": a.samples}
    from filmlib.io import atomic_write_text
    atomic_write_text(out / "maps.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# FiLM (cpu preset) on cached 10x10 maps: training throughput", "",
             f"`python benchmarks/bench_maps.py` — {a.samples:,} train questions a row, the Trainer's "
             "samples/s (data loading included, evaluation excluded), one row at a time.", "",
             "| maps | channels | batch | threads | samples/s |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['features']} | {r['channels']} | {r['batch_size']} | {r['threads']} | {r['samples_per_s']:,.0f} |")
    atomic_write_text(out / "maps.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
