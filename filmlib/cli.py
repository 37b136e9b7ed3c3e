"""``python -m filmlib <command>``: the command line. The notebooks call the same functions."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N (e.g. 0/4), not {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= I < N")
    return i, n


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m filmlib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate a SynthCLEVR split in the CLEVR v1.0 layout",
                       description="Generate a SynthCLEVR split (rendered scenes, scene graphs, "
                       "questions with programs) under --out, in CLEVR v1.0's layout. The same "
                       "--seed gives byte-identical files whatever --workers or --shard.")
    g.add_argument("--out", required=True, type=Path, help="dataset root (images/, scenes/, questions/)")
    g.add_argument("--split", required=True, choices=("train", "val", "test"), help="which split to write")
    g.add_argument("--images", required=True, type=_positive, help="number of images")
    g.add_argument("--questions-per-image", type=int, default=10, help="questions per image (default 10)")
    g.add_argument("--width", type=_positive, default=480, help="image width in pixels (default 480)")
    g.add_argument("--height", type=_positive, default=320, help="image height in pixels (default 320)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--workers", type=_positive, default=1, help="worker processes (default 1)")
    g.add_argument("--cogent", choices=("A", "B"),
                   help="CLEVR-CoGenT condition: cubes and cylinders take condition A's or B's colour "
                   "sets; the split is named trainA, valB... (CoGenT ships trainA, valA, valB, testA, "
                   "testB; others, e.g. trainB for fine-tuning, are allowed)")
    g.add_argument("--shard", type=_shard, help="generate only shard I of N (join them with `merge`)")
    g.add_argument("--humans-per-image", type=int, default=0,
                   help="also write the paraphrase split (stand-in for CLEVR-Humans) with this "
                   "many questions per image to questions/CLEVR-Humans-<split>.json")
    g.add_argument("--reset-every", type=_positive, default=1000,
                   help="images per question chunk; answer-balancing counts reset at each (default 1000)")
    g.add_argument("--min-objects", type=_positive, default=3, help="fewest objects per scene (default 3)")
    g.add_argument("--max-objects", type=_positive, default=10,
                   help="most objects per scene, at most 10 (default 10)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    m = sub.add_parser("merge", help="join the finished shards of a split")
    m.add_argument("--out", required=True, type=Path, help="the dataset root the shards were written to")
    m.add_argument("--split", required=True, help="split name, e.g. train or trainA")
    m.add_argument("--shards", required=True, type=_positive, help="N, the number of shards")

    q = sub.add_parser("questions", help="generate questions for an existing CLEVR scenes file")
    q.add_argument("--scenes", required=True, type=Path, help="a CLEVR scenes JSON")
    q.add_argument("--out", required=True, type=Path, help="questions JSON to write")
    q.add_argument("--per-image", type=int, default=10, help="questions per scene (default 10)")
    q.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    q.add_argument("--paraphrase", action="store_true", help="paraphrase wording, no programs")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = _run(args)
    except (ValueError, OSError) as e:   # bad input or a bad path: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    return 0


def _run(args) -> dict:
    if args.command == "generate":
        from .synth.generate import SplitSpec, generate_split
        spec = SplitSpec(split=args.split, num_images=args.images,
                         questions_per_image=args.questions_per_image, width=args.width,
                         height=args.height, seed=args.seed, cogent=args.cogent,
                         reset_every=args.reset_every, humans_per_image=args.humans_per_image,
                         min_objects=args.min_objects, max_objects=args.max_objects)
        summary = generate_split(args.out, spec, workers=args.workers, progress=not args.quiet,
                                 shard=args.shard)
    elif args.command == "merge":
        from .synth.generate import merge_shards
        summary = merge_shards(args.out, args.split, args.shards)
    elif args.command == "questions":
        from .data import clevr
        from .synth.generate import questions_for_scenes
        info, scenes = clevr.load_scenes_file(args.scenes)
        records, rejected = questions_for_scenes(scenes, per_image=args.per_image, seed=args.seed,
                                                 paraphrase=args.paraphrase)
        out_info = {"split": info.get("split"), "source_scenes": str(args.scenes),
                    "generator": "SynthCLEVR question engine (filmlib)", "rejected": rejected}
        if args.paraphrase:
            out_info["synthetic"] = True
        clevr.save_questions(args.out, records, out_info)
        summary = {"questions": len(records), "out": str(args.out), "rejected": rejected}
    return summary


if __name__ == "__main__":
    sys.exit(main())
