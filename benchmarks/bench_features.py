"""ResNet-101 conv4 feature extraction on this machine: images/s, and peak memory against the
number of images (it must stay flat: a few batches in memory, one-image HDF5 chunks).

    python benchmarks/bench_features.py [--root data/synthclevr] [--counts 500 5000] [--threads 2]

Each count runs `filmlib.data.features.extract_features` in a fresh process on the first N
images of ``--root``'s train split (224x224, the paper's input; seeded random weights: the cost
and memory are the weights' shape's, not their values'), and reads that process's peak resident
size (``ru_maxrss``) and its images/s (model built and first batch excluded: warm-up). Writes
results/bench/features.json and features.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "bench"

_CHILD = r"""
import json, resource, sys, time
import torch
from filmlib.data import features as F
from filmlib.data.preprocess import split_image_paths
root, out, n, threads, batch, dtype, workers = sys.argv[1:8]
torch.set_num_threads(int(threads))
paths = split_image_paths(root, "train")[:int(n)]
stamps = []
real = F.iter_image_batches
def timed(*a, **k):
    for item in real(*a, **k):
        yield item
        stamps.append((time.perf_counter(), len(item[1])))
F.iter_image_batches = timed
t0 = time.perf_counter()
summary = F.extract_features(paths, out, batch_size=int(batch), dtype=dtype, workers=int(workers))
total = time.perf_counter() - t0
warm = sum(k for _, k in stamps[1:]) / (stamps[-1][0] - stamps[0][0]) if len(stamps) > 1 else None
print(json.dumps({"images": len(paths), "seconds": total, "images_per_s": warm,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "file_mb": __import__("os").path.getsize(out) / 2**20, "shape": summary["shape"]}))
"""


def run(root: Path, n: int, threads: int, batch: int, dtype: str, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "features.h5"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        r = subprocess.run([sys.executable, "-c", _CHILD, str(root), str(out), str(n), str(threads), str(batch),
                            dtype, str(workers)], capture_output=True, text=True, env=env, check=False)
        if r.returncode != 0:
            raise SystemExit(f"feature extraction for {n} images failed:\n{r.stderr[-3000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=REPO / "data" / "synthclevr")
    p.add_argument("--counts", type=int, nargs="+", default=[500, 5000])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    p.add_argument("--workers", type=int, default=1, help="image-decoding processes (their memory is not in "
                   "the peak RSS, which is the extracting process's own)")
    args = p.parse_args(argv)
    if not (args.root / "images" / "train").is_dir():
        print(f"skipped: no {args.root}/images/train (generate the data first: notebook 00, or `make reproduce`)")
        return
    runs = [run(args.root, n, args.threads, args.batch_size, args.dtype, args.workers) for n in args.counts]
    first, last = runs[0], runs[-1]
    result = {"runs": runs, "peak_rss_ratio_last_to_first": round(last["peak_rss_mb"] / first["peak_rss_mb"], 4),
              "machine": {"cpus": os.cpu_count(), "threads": args.threads, "python": sys.version.split()[0],
                          "platform": platform.platform()},
              "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "date": time.strftime("%Y-%m-%d")}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "features.json").write_text(json.dumps(result, indent=1) + "\n")
    md = ["# ResNet-101 conv4 feature extraction (CPU)", "",
          f"`python benchmarks/bench_features.py --counts {' '.join(map(str, args.counts))} --threads {args.threads}` "
          f"on {os.cpu_count()} CPUs ({result['date']}); 224x224 inputs, 1024x14x14 {args.dtype} outputs, batch "
          f"{args.batch_size}, {args.workers} decoding process(es).", "",
          "| images | images/s | peak RSS (MB) | file (MB) | wall (s) |", "|---|---|---|---|---|"]
    for r in runs:
        speed = f"{r['images_per_s']:.2f}" if r["images_per_s"] is not None else "—"
        md.append(f"| {r['images']} | {speed} | {r['peak_rss_mb']:.0f} | {r['file_mb']:.0f} | "
                  f"{r['seconds']:.0f} |")
    md += ["", f"Peak RSS at {last['images']} images is {result['peak_rss_ratio_last_to_first']:.3f}x that at "
           f"{first['images']} (the aim: within 10%)."]
    (OUT / "features.md").write_text("\n".join(md) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
