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

    r = sub.add_parser("render", help="draw any CLEVR scene record, optionally beside its real image",
                       description="Render one scene record of a CLEVR scenes JSON (real CLEVR or "
                       "SynthCLEVR) through the camera that took it, fitted from its objects' "
                       "pixel_coords. With --compare, the PNG shows the real image, the render and "
                       "their difference, and the figures (mean absolute difference, each object's "
                       "pixel area and mean colour inside its mask) are printed.")
    r.add_argument("--scenes", required=True, type=Path, help="a CLEVR scenes JSON")
    r.add_argument("--index", required=True, type=int, help="the scene's image_index")
    r.add_argument("--out", required=True, type=Path, help="PNG to write")
    r.add_argument("--compare", type=Path, help="the real image of that scene, to draw beside the render")
    r.add_argument("--masks", type=Path, help="stored outlines of the real objects (grey PNG, level k+1 "
                   "for object k); default: outlined from the real image (filmlib.synth.fidelity)")
    r.add_argument("--width", type=_positive, default=480, help="width of the render (default 480; "
                   "with --compare, the real image's)")
    r.add_argument("--height", type=_positive, default=320, help="height (default 320)")

    pp = sub.add_parser("preprocess", help="tokenise questions and cache images/features in HDF5",
                        description="Write vocab.json and <split>_questions.h5 / <split>_images.h5 "
                        "(and <split>_features.h5) for a CLEVR-layout dataset, in the authors' formats.")
    pp.add_argument("--root", required=True, type=Path, help="dataset root (images/, questions/, scenes/)")
    pp.add_argument("--out", required=True, type=Path, help="folder for the HDF5 files")
    pp.add_argument("--splits", nargs="+", default=["train", "val", "test"], help="splits to preprocess")
    pp.add_argument("--image-size", type=_positive, default=80, help="square image side for the pixels stem (default 80)")
    pp.add_argument("--features", action="store_true", help="also extract ResNet-101 conv4 features")
    pp.add_argument("--weights", type=Path, help="ResNet-101 ImageNet weights file (.pth or .safetensors); "
                    "without it the extractor is randomly initialised (plumbing only)")
    pp.add_argument("--workers", type=_positive, default=1, help="image-loading processes (default 1)")
    pp.add_argument("--force", action="store_true", help="redo outputs even if up to date")

    sm = sub.add_parser("scene-maps", help="write the scene-graph ('perfect perception') maps of each split",
                        description="Write <split>_oracle.h5 into --out for each split: 19 x 10 x 10 maps "
                        "drawn from the split's scene graphs (one-hot colour, shape, material, size, "
                        "objectness, depth, centre offset at each object's cell). A FiLM model reads "
                        "them with --stem features --features oracle.")
    sm.add_argument("--root", required=True, type=Path, help="dataset root (scenes/)")
    sm.add_argument("--out", required=True, type=Path, help="preprocessed folder to write into")
    sm.add_argument("--splits", nargs="+", default=["train", "val"], help="splits (default train val)")
    sm.add_argument("--grid", type=_positive, default=10, help="cells per side (default 10)")

    pc = sub.add_parser("perception", help="pre-train the perception CNN on the scene graphs; cache its maps",
                        description="Train a small CNN (the FiLM pixel stem's shape) with dense per-cell "
                        "targets from the train scene graphs, report per-attribute accuracy on val "
                        "objects, and write its frozen maps as <split>_perception.h5 into --cache for "
                        "each split. A finished pre-training in --out is kept.")
    pc.add_argument("--cache", required=True, type=Path, help="preprocessed folder with <split>_images.h5")
    pc.add_argument("--root", required=True, type=Path, help="dataset root (scenes/)")
    pc.add_argument("--out", required=True, type=Path, help="folder for perception.pt and metrics.json")
    pc.add_argument("--splits", nargs="+", default=["train", "val", "test"], help="splits to extract")
    pc.add_argument("--epochs", type=_positive, default=6, help="epochs over the train images (default 6)")
    pc.add_argument("--minutes", type=float, help="time budget for the pre-training")
    pc.add_argument("--batch-size", type=_positive, default=64, help="batch (default 64)")
    pc.add_argument("--lr", type=float, default=1e-3, help="Adam peak learning rate (cosine decay; default 1e-3)")
    pc.add_argument("--threads", type=_positive, help="torch CPU threads")
    pc.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    pc.add_argument("--quiet", action="store_true", help="no progress bar")

    st = sub.add_parser("study", help="train one recipe of the time-to-accuracy study (resumable)",
                        description="Train a recipe of filmlib.study.RECIPES into --out/<recipe>, with "
                        "val accuracy on a fixed subset every --eval-every questions; resumes an "
                        "interrupted run; prints the study table of --out.")
    st.add_argument("--data", required=True, type=Path, help="preprocessed folder")
    st.add_argument("--out", required=True, type=Path, help="study folder (one run directory per recipe)")
    st.add_argument("--recipe", required=True, help="a name of filmlib.study.RECIPES")
    st.add_argument("--max-samples", type=_positive, help="question budget (default: the recipe's)")
    st.add_argument("--eval-every", type=_positive, default=50_000, help="questions between curve points")
    st.add_argument("--curve-samples", type=_positive, default=5_000, help="val questions scored at each point")
    st.add_argument("--perception", type=Path, help="perception.pt (for the finetune stem)")
    st.add_argument("--threads", type=_positive, help="torch CPU threads")
    st.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    st.add_argument("--quiet", action="store_true", help="no progress bar")

    t = sub.add_parser("train", help="train FiLM (or a Table 1 baseline) on a preprocessed dataset",
                       description="Train CNN+GRU+FiLM, or with --model a Table 1 baseline; resumes from "
                       "--out/last.pt if present. Under torchrun it runs DistributedDataParallel.")
    t.add_argument("--model", choices=("film", "qtype", "lstm", "cnn_lstm", "cnn_lstm_sa"), default="film",
                   help="film (default) or a baseline of Table 1 (qtype is counted, not trained)")
    t.add_argument("--data", required=True, type=Path, help="preprocessed folder (from `preprocess`)")
    t.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, metrics)")
    t.add_argument("--preset", choices=("paper", "cpu", "smoke"), default="cpu", help="model preset (default cpu)")
    t.add_argument("--stem", choices=("pixels", "features"), help="visual stem (default: the preset's)")
    t.add_argument("--features", default=None,
                   help="features stem: which <split>_<name>.h5 to read: features (ResNet-101, default), "
                   "perception (`perception` command), oracle (`scene-maps` command)")
    t.add_argument("--ablation", help="FiLM: a Table 2 row name (see filmlib.models.ABLATIONS)")
    t.add_argument("--num-blocks", type=_positive, help="FiLM: number of FiLM-ed ResBlocks (Table 3)")
    t.add_argument("--epochs", type=_positive, default=80, help="most epochs (default 80)")
    t.add_argument("--batch-size", type=_positive, default=64, help="global batch (default 64)")
    t.add_argument("--lr", type=float, help="Adam learning rate (default: FiLM 3e-4, baselines 5e-4)")
    t.add_argument("--weight-decay", type=float, help="Adam weight decay (default: FiLM 1e-5, baselines 0)")
    t.add_argument("--patience", type=int, default=10, help="epochs without val improvement before stopping")
    t.add_argument("--time-limit", type=float, help="training-time budget in minutes: stops (mid-epoch) when spent")
    t.add_argument("--max-samples", type=_positive, help="budget of questions seen: stops (mid-epoch) when spent")
    t.add_argument("--schedule", default="constant",
                   choices=("constant", "warmup_constant", "warmup_cosine", "warmup_linear"),
                   help="learning-rate schedule (default constant, the paper's); decays end at --max-samples")
    t.add_argument("--warmup", type=int, default=0, help="warm-up length in questions (default 0)")
    t.add_argument("--min-lr-ratio", type=float, default=0.0, help="floor of the decay, as a fraction of --lr")
    t.add_argument("--eval-every", type=_positive,
                   help="a curve point (val subset accuracy, curve.jsonl) and a checkpoint every N questions")
    t.add_argument("--curve-samples", type=_positive, default=5000, help="val questions a curve point scores")
    t.add_argument("--max-steps-per-epoch", type=_positive, help="cap steps per epoch (smoke runs)")
    t.add_argument("--val-samples", type=_positive, help="score only the first N val questions each epoch")
    t.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    t.add_argument("--threads", type=_positive, help="torch CPU threads")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--bf16", action="store_true", help="bfloat16 autocast (GPU)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="score a training run on a split")
    e.add_argument("--run", required=True, type=Path, help="run directory")
    e.add_argument("--data", required=True, type=Path, help="preprocessed folder")
    e.add_argument("--split", default="val", help="split to score (default val)")
    e.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
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
    elif args.command == "render":
        from .synth.fidelity import render_command
        summary = render_command(args.scenes, args.index, args.out, compare_with=args.compare,
                                 masks=args.masks, width=args.width, height=args.height)
    elif args.command == "preprocess":
        from .data.preprocess import preprocess_root
        report = preprocess_root(args.root, args.out, splits=tuple(args.splits),
                                 image_size=(args.image_size, args.image_size), features=args.features,
                                 weights=args.weights, workers=args.workers, force=args.force, progress=True)
        summary = report["report"]
    elif args.command == "scene-maps":
        from .data.scene_maps import write_scene_maps
        summary = {split: write_scene_maps(args.root, split, args.out / f"{split}_oracle.h5", args.grid)
                   for split in args.splits}
    elif args.command == "perception":
        from . import perception
        run = perception.pretrain(args.cache, args.root, args.out, epochs=args.epochs,
                                  time_limit_minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                                  threads=args.threads, seed=args.seed, progress=not args.quiet)
        run.pop("history", None)
        ckpt = args.out / perception.CHECKPOINT
        summary = {"pretrain": run, "extracted": {s: perception.extract(ckpt, args.cache, s) for s in args.splits
                                                  if (args.cache / f"{s}_images.h5").is_file()}}
    elif args.command == "study":
        from . import study
        if args.recipe not in study.RECIPES:
            raise ValueError(f"unknown recipe {args.recipe!r}; expected one of {', '.join(study.RECIPES)}")
        summary = study.run_recipe(study.RECIPES[args.recipe], args.data, args.out, eval_every=args.eval_every,
                                   curve_samples=args.curve_samples, threads=args.threads, seed=args.seed,
                                   max_samples=args.max_samples, perception_checkpoint=args.perception,
                                   progress=not args.quiet)
        print(study.table(args.out))
    elif args.command == "train":
        from .experiment import train_baseline, train_film
        optim = {k: v for k, v in (("lr", args.lr), ("weight_decay", args.weight_decay)) if v is not None}
        common = dict(val_samples=args.val_samples, epochs=args.epochs, batch_size=args.batch_size,
                      patience=args.patience if args.patience >= 0 else None, time_limit_minutes=args.time_limit,
                      max_steps_per_epoch=args.max_steps_per_epoch, seed=args.seed, num_workers=args.workers,
                      threads=args.threads, device=args.device, bf16=args.bf16, compile=args.compile,
                      progress=not args.quiet, max_samples=args.max_samples, schedule=args.schedule,
                      warmup_samples=args.warmup, min_lr_ratio=args.min_lr_ratio,
                      eval_every_samples=args.eval_every,
                      curve_samples=args.curve_samples if args.eval_every else None,
                      features=args.features, **optim)
        if args.schedule != "constant" and args.max_samples:
            common["schedule_samples"] = args.max_samples
        if args.model == "film":
            changes = {"num_blocks": args.num_blocks} if args.num_blocks else {}
            summary = train_film(args.data, args.out, preset_name=args.preset, stem=args.stem,
                                 model_changes=changes, ablation=args.ablation, **common)
        else:
            if args.ablation or args.num_blocks:
                raise ValueError("--ablation and --num-blocks change FiLM only, not a baseline")
            summary = train_baseline(args.data, args.out, args.model, preset_name=args.preset, stem=args.stem,
                                     **common)
        summary.pop("history", None)
        summary.pop("curve", None)
    elif args.command == "evaluate":
        from .experiment import evaluate_run
        summary = evaluate_run(args.run, args.data, args.split, which=args.checkpoint, device=args.device)
        summary.pop("by_family", None)
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
