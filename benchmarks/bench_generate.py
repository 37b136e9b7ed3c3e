"""SynthCLEVR generation speed on this machine: images/s per size, questions/s.

    python benchmarks/bench_generate.py [--workers 2] [--images-small 1000] [--images-large 150]

Images/s is end to end (scene sampling, visibility rule, rendering, PNG encoding, writing),
with the process pool's start-up included. Questions/s runs the question engine (search,
balancing, text, executor re-check) over the scenes of the small run, one chunk per worker.
Writes results/bench/generate.json and generate.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from filmlib.data import clevr
from filmlib.synth.generate import SplitSpec, generate_split, questions_for_chunk

OUT = Path(__file__).resolve().parents[1] / "results" / "bench"


def time_images(root: Path, width: int, height: int, n: int, workers: int) -> float:
    spec = SplitSpec(split="train", num_images=n, questions_per_image=0, width=width, height=height, seed=123)
    t = time.perf_counter()
    generate_split(root, spec, workers=workers, progress=False)
    return n / (time.perf_counter() - t)


def _chunk(args):
    spec, chunk, scenes = args
    return len(questions_for_chunk(spec, chunk, scenes)["questions"])


def time_questions(scenes: list[dict], per_image: int, workers: int) -> float:
    size = -(-len(scenes) // workers)
    spec = SplitSpec(split="train", num_images=len(scenes), questions_per_image=per_image, reset_every=size)
    jobs = [(spec, c, scenes[c * size:(c + 1) * size]) for c in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_chunk, [(spec, 0, scenes[:8])] * workers))    # warm the workers up
        t = time.perf_counter()
        total = sum(pool.map(_chunk, jobs))
    return total / (time.perf_counter() - t)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images-small", type=int, default=1000)
    p.add_argument("--images-large", type=int, default=150)
    p.add_argument("--questions-per-image", type=int, default=10)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small"
        result = {"images_per_s": {
            "128x128": round(time_images(small, 128, 128, args.images_small, args.workers), 2),
            "480x320": round(time_images(Path(tmp) / "large", 480, 320, args.images_large, args.workers), 2),
        }}
        scenes = clevr.load_scenes(clevr.scenes_path(small, "train"))
        result["questions_per_s"] = round(time_questions(scenes, args.questions_per_image, args.workers), 1)
    result["machine"] = {"cpus": os.cpu_count(), "workers": args.workers, "python": sys.version.split()[0],
                         "platform": platform.platform()}
    result["settings"] = vars(args)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "generate.json").write_text(json.dumps(result, indent=1) + "\n")
    md = ["# SynthCLEVR generation speed", "",
          f"`python benchmarks/bench_generate.py` on {os.cpu_count()} CPUs, {args.workers} workers.", "",
          "| measure | value | target |", "|---|---|---|",
          f"| images/s at 128x128 | {result['images_per_s']['128x128']} | >= 50 |",
          f"| images/s at 480x320 | {result['images_per_s']['480x320']} | >= 5 |",
          f"| questions/s | {result['questions_per_s']} | >= 1000 |", "",
          "For scale: CLEVR's Blender pipeline takes about 4 s per 320x240 image on a GPU."]
    (OUT / "generate.md").write_text("\n".join(md) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
