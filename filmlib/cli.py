"""``python -m filmlib <command>``: the command line. The notebooks call the same functions.

A mistake ends the command with one line on stderr that names the option or file and says
what to do: exit status 2 for a bad command line, 1 for a missing, damaged or busy file (or any
other failure), 130 for Ctrl-C. ``--debug`` prints the traceback as well.
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import sys
import traceback
from pathlib import Path

#: Smallest image side ``generate`` and ``render`` accept. CLEVR's small objects are about 1/12
#: of its 480-pixel width across, so at 32 pixels they still cover a few pixels; below that they
#: vanish, and the generator retries layouts for a long time to keep every object visible.
MIN_SIDE = 32
MAX_SIDE = 4096
MAX_SEED = 2**32 - 1


class UsageError(Exception):
    """A bad command line found after parsing (options that do not fit together, a name
    that does not exist); exit status 2 like argparse's own errors."""


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (with where to read more), not the usage text."""

    def error(self, message):
        m = re.match(r"argument (\S+): (.*)", message)
        if m and m.group(2).startswith(m.group(1).split("/")[-1]):
            message = m.group(2)        # the type's message already names the option
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


# --- option types: each refuses a bad value with a message argparse prefixes with the option --

def _integer(low: int | None = None, high: int | None = None, why: str = ""):
    """An int option type within [low, high]."""
    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            if high is None:
                bounds = f"{low} or more"
            elif low is None:
                bounds = f"{high} or less"
            else:
                bounds = f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bounds}{why}, not {value}")
        return value
    return integer


def _number(low: float, *, above: bool = False, high: float | None = None, what: str = "a number"):
    """A float option type: finite, ``>= low`` (``> low`` with ``above``), ``<= high``."""
    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}") from None
        too_low = value <= low if above else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            bounds = f"more than {low:g}" if above else f"{low:g} or more"
            if high is not None:
                bounds += f" and at most {high:g}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {text}")
        return value
    return number


_positive = _integer(1)
_count = _integer(0)
_seed = _integer(0, MAX_SEED)
_workers = _integer(1, 256)
_side = _integer(MIN_SIDE, MAX_SIDE, f" pixels (below {MIN_SIDE}, CLEVR's small objects vanish)")
_minutes = _number(0, above=True, what="a number of minutes")
_lr = _number(0, above=True, what="a learning rate")
_non_negative = _number(0)
_ratio = _number(0, high=1, what="a fraction")
_seconds = _number(0, above=True, what="a number of seconds")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N (e.g. 0/4), not {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= I < N")
    return i, n


def _device(text: str) -> str:
    """auto | cpu | cuda | cuda:N, a GPU only if this machine has it."""
    if text in ("auto", "cpu"):
        return text
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use auto, cpu, cuda or cuda:N")
    import torch
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text} asks for a GPU, but torch sees no CUDA GPU here; "
                                         f"use --device cpu (or auto)")
    n = torch.cuda.device_count()
    if m.group(1) is not None and int(m.group(1)) >= n:
        raise argparse.ArgumentTypeError(f"{text}: this machine has {n} GPU(s): cuda:0..cuda:{n - 1}")
    return text


def _ablation(text: str) -> str:
    from .models import ABLATIONS
    if text not in ABLATIONS:
        raise argparse.ArgumentTypeError(f"unknown Table 2 row {text!r}; valid names: {', '.join(ABLATIONS)}")
    return text


def _recipe(text: str) -> str:
    from .study import RECIPES
    if text not in RECIPES:
        raise argparse.ArgumentTypeError(f"unknown recipe {text!r}; valid names: {', '.join(RECIPES)}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m filmlib", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="on an error, print the traceback too")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, print the traceback too")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, **kw):
        return sub.add_parser(name, parents=[common], **kw)

    d = command("data", help="make the data the notebooks read at a scale (generate, preprocess, maps)",
                description="Make what notebooks 02-06 and 08 read at --scale in one step: SynthCLEVR at the "
                "scale's size (notebook 00's step), its splits preprocessed to HDF5 at FiLM's image size, "
                "and the perception maps where FiLM reads them (the perception CNN is pre-trained only if "
                "results/perception_<scale>/perception.pt is missing). Finished steps are kept. At cpu: "
                "about 25 minutes on 2 cores with --workers 2.")
    d.add_argument("--scale", required=True, choices=("smoke", "cpu", "paper"), help="which scale's data")
    d.add_argument("--root", type=Path, help="dataset folder (default: the scale's, e.g. data/synthclevr)")
    d.add_argument("--results", type=Path, help="results folder (default: results/)")
    d.add_argument("--workers", type=_workers, default=1, help="processes (default 1)")
    d.add_argument("--seed", type=_seed, default=0, help=f"random seed, 0..{MAX_SEED} (default 0)")
    d.add_argument("--device", type=_device, default="auto",
                   help="auto | cpu | cuda | cuda:N (where ResNet-101 features are computed, at scale paper)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")

    g = command("generate", help="generate a SynthCLEVR split in the CLEVR v1.0 layout",
                description="Generate a SynthCLEVR split (rendered scenes, scene graphs, "
                "questions with programs) under --out, in CLEVR v1.0's layout. The same "
                "--seed gives byte-identical files whatever --workers or --shard. A split is "
                "assembled in a hidden staging folder (removed if the run fails or is "
                "interrupted); a second process writing the same split is refused.")
    g.add_argument("--out", required=True, type=Path, help="dataset root (images/, scenes/, questions/)")
    g.add_argument("--split", required=True, choices=("train", "val", "test"), help="which split to write")
    g.add_argument("--images", required=True, type=_positive, help="number of images")
    g.add_argument("--questions-per-image", type=_count, default=10, help="questions per image (default 10)")
    g.add_argument("--width", type=_side, default=480,
                   help=f"image width in pixels, {MIN_SIDE}..{MAX_SIDE} (default 480, CLEVR's); below "
                   f"{MIN_SIDE} pixels CLEVR's small objects (about 1/12 of the width across) vanish")
    g.add_argument("--height", type=_side, default=320,
                   help=f"image height in pixels, {MIN_SIDE}..{MAX_SIDE} (default 320, CLEVR's)")
    g.add_argument("--seed", type=_seed, default=0, help=f"random seed, 0..{MAX_SEED} (default 0)")
    g.add_argument("--workers", type=_workers, default=1, help="worker processes (default 1)")
    g.add_argument("--cogent", choices=("A", "B"),
                   help="CLEVR-CoGenT condition: cubes and cylinders take condition A's or B's colour "
                   "sets; the split is named trainA, valB... (CoGenT ships trainA, valA, valB, testA, "
                   "testB; others, e.g. trainB for fine-tuning, are allowed)")
    g.add_argument("--shard", type=_shard, help="generate only shard I of N (join them with `merge`)")
    g.add_argument("--humans-per-image", type=_count, default=0,
                   help="also write the paraphrase split (stand-in for CLEVR-Humans) with this "
                   "many questions per image to questions/CLEVR-Humans-<split>.json")
    g.add_argument("--reset-every", type=_positive, default=1000,
                   help="images per question chunk; answer-balancing counts reset at each (default 1000)")
    g.add_argument("--min-objects", type=_integer(1, 10), default=3, help="fewest objects per scene, 1..10 (default 3)")
    g.add_argument("--max-objects", type=_integer(1, 10), default=10,
                   help="most objects per scene, at most 10 (default 10)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    m = command("merge", help="join the finished shards of a split")
    m.add_argument("--out", required=True, type=Path, help="the dataset root the shards were written to")
    m.add_argument("--split", required=True, help="split name, e.g. train or trainA")
    m.add_argument("--shards", required=True, type=_positive, help="N, the number of shards")

    q = command("questions", help="generate questions for an existing CLEVR scenes file")
    q.add_argument("--scenes", required=True, type=Path, help="a CLEVR scenes JSON")
    q.add_argument("--out", required=True, type=Path, help="questions JSON to write")
    q.add_argument("--per-image", type=_count, default=10, help="questions per scene (default 10)")
    q.add_argument("--seed", type=_seed, default=0, help=f"random seed, 0..{MAX_SEED} (default 0)")
    q.add_argument("--paraphrase", action="store_true", help="paraphrase wording, no programs")

    r = command("render", help="draw any CLEVR scene record, optionally beside its real image",
                description="Render one scene record of a CLEVR scenes JSON (real CLEVR or "
                "SynthCLEVR) through the camera that took it, fitted from its objects' "
                "pixel_coords. With --compare, the PNG shows the real image, the render and "
                "their difference, and the figures (mean absolute difference, each object's "
                "pixel area and mean colour inside its mask) are printed.")
    r.add_argument("--scenes", required=True, type=Path, help="a CLEVR scenes JSON")
    r.add_argument("--index", required=True, type=_count, help="the scene's image_index")
    r.add_argument("--out", required=True, type=Path, help="PNG to write")
    r.add_argument("--compare", type=Path, help="the real image of that scene, to draw beside the render")
    r.add_argument("--masks", type=Path, help="stored outlines of the real objects (grey PNG, level k+1 "
                   "for object k); default: outlined from the real image (filmlib.synth.fidelity)")
    r.add_argument("--width", type=_side, default=480, help=f"width of the render, at least {MIN_SIDE} "
                   "(default 480; with --compare, the real image's)")
    r.add_argument("--height", type=_side, default=320, help=f"height, at least {MIN_SIDE} (default 320)")

    pp = command("preprocess", help="tokenise questions and cache images/features in HDF5",
                 description="Write vocab.json and <split>_questions.h5 / <split>_images.h5 "
                 "(and <split>_features.h5) for a CLEVR-layout dataset, in the authors' formats. "
                 "A second process writing to the same --out is refused.")
    pp.add_argument("--root", required=True, type=Path, help="dataset root (images/, questions/, scenes/)")
    pp.add_argument("--out", required=True, type=Path, help="folder for the HDF5 files")
    pp.add_argument("--splits", nargs="+", help="splits to preprocess, each present under --root "
                    "(default: those of train, val, test that are)")
    pp.add_argument("--image-size", type=_integer(8, MAX_SIDE), default=80,
                    help="square image side for the pixels stem (default 80)")
    pp.add_argument("--features", action="store_true", help="also extract ResNet-101 conv4 features")
    pp.add_argument("--weights", type=Path, help="ResNet-101 ImageNet weights file (.pth or .safetensors) "
                    "for --features; without it the extractor is randomly initialised (plumbing only)")
    pp.add_argument("--features-dtype", choices=("float32", "float16"), default="float32",
                    help="how --features are stored (float16 halves the file; default float32)")
    pp.add_argument("--device", type=_device, default="cpu", help="where --features are computed: cpu (default), "
                    "auto, cuda or cuda:N")
    pp.add_argument("--workers", type=_workers, default=1, help="image-loading processes (default 1)")
    pp.add_argument("--force", action="store_true", help="redo outputs even if up to date")
    pp.add_argument("--quiet", action="store_true", help="no progress bar")

    sm = command("scene-maps", help="write the scene-graph ('perfect perception') maps of each split",
                 description="Write <split>_oracle.h5 into --out for each split: 19 x 10 x 10 maps "
                 "drawn from the split's scene graphs (one-hot colour, shape, material, size, "
                 "objectness, depth, centre offset at each object's cell). A FiLM model reads "
                 "them with --stem features --features oracle.")
    sm.add_argument("--root", required=True, type=Path, help="dataset root (scenes/)")
    sm.add_argument("--out", required=True, type=Path, help="preprocessed folder to write into")
    sm.add_argument("--splits", nargs="+", default=["train", "val"], help="splits (default train val)")
    sm.add_argument("--grid", type=_positive, default=10, help="cells per side (default 10)")

    pc = command("perception", help="pre-train the perception CNN on the scene graphs; cache its maps",
                 description="Train a small CNN (the FiLM pixel stem's shape) with dense per-cell "
                 "targets from the train scene graphs, report per-attribute accuracy on val "
                 "objects, and write its frozen maps as <split>_perception.h5 into --cache for "
                 "each split. A finished pre-training in --out is kept.")
    pc.add_argument("--cache", required=True, type=Path, help="preprocessed folder with <split>_images.h5")
    pc.add_argument("--root", required=True, type=Path, help="dataset root (scenes/)")
    pc.add_argument("--out", required=True, type=Path, help="folder for perception.pt and metrics.json")
    pc.add_argument("--splits", nargs="+", help="splits to extract, each with <split>_images.h5 in "
                    "--cache (default: those of train, val, test that have one)")
    pc.add_argument("--epochs", type=_positive, default=6, help="epochs over the train images (default 6)")
    pc.add_argument("--minutes", type=_minutes, help="time budget for the pre-training (more than 0)")
    pc.add_argument("--batch-size", type=_positive, default=64, help="batch (default 64)")
    pc.add_argument("--lr", type=_lr, default=1e-3, help="Adam peak learning rate (cosine decay; default 1e-3)")
    pc.add_argument("--threads", type=_positive, help="torch CPU threads")
    pc.add_argument("--seed", type=_seed, default=0, help=f"random seed, 0..{MAX_SEED} (default 0)")
    pc.add_argument("--quiet", action="store_true", help="no progress bar")

    st = command("study", help="train one recipe of the time-to-accuracy study (resumable)",
                 description="Train a recipe of filmlib.study.RECIPES into --out/<recipe>, with "
                 "val accuracy on a fixed subset every --eval-every questions; resumes an "
                 "interrupted run; prints the study table of --out.")
    st.add_argument("--data", required=True, type=Path, help="preprocessed folder")
    st.add_argument("--out", required=True, type=Path, help="study folder (one run directory per recipe)")
    st.add_argument("--recipe", required=True, type=_recipe, help="a name of filmlib.study.RECIPES")
    st.add_argument("--max-samples", type=_positive, help="question budget (default: the recipe's)")
    st.add_argument("--eval-every", type=_positive, default=50_000, help="questions between curve points")
    st.add_argument("--curve-samples", type=_positive, default=5_000, help="val questions scored at each point")
    st.add_argument("--perception", type=Path, help="perception.pt (for the finetune stem)")
    st.add_argument("--threads", type=_positive, help="torch CPU threads")
    st.add_argument("--compile", action="store_true", help="torch.compile the FiLM-ed network (speed only)")
    st.add_argument("--seed", type=_seed, default=0, help=f"random seed, 0..{MAX_SEED} (default 0)")
    st.add_argument("--quiet", action="store_true", help="no progress bar")

    sh = command("ship", help="write a trained FiLM run as the shipped weights (safetensors + manifest)",
                 description="Write <out>/<name>.safetensors, <name>_perception.safetensors and <name>.json "
                 "(configs, vocabulary, SHA-256 of each file, provenance) from --run/best.pt, a perception "
                 "checkpoint and the data's vocabulary; filmlib.shipped.load reads and checks them.")
    sh.add_argument("--run", required=True, type=Path, help="FiLM run directory (its best.pt)")
    sh.add_argument("--perception", required=True, type=Path, help="perception.pt whose maps the run read")
    sh.add_argument("--vocab", required=True, type=Path, help="the data's vocab.json")
    sh.add_argument("--out", type=Path, help="folder (default: the package's filmlib/weights)")
    sh.add_argument("--name", default="film_cpu", help="file stem (default film_cpu)")

    t = command("train", help="train FiLM (or a Table 1 baseline) on a preprocessed dataset",
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
    t.add_argument("--ablation", type=_ablation, help="FiLM: a Table 2 row name (see filmlib.models.ABLATIONS)")
    t.add_argument("--num-blocks", type=_positive, help="FiLM: number of FiLM-ed ResBlocks (Table 3)")
    t.add_argument("--classifier-pool", choices=("max", "max+mean"),
                   help="FiLM: what the classifier reads of its map (default: the preset's, max; the cpu "
                   "scale's recipe uses max+mean)")
    t.add_argument("--epochs", type=_positive, default=80, help="most epochs (default 80)")
    t.add_argument("--batch-size", type=_positive, default=64, help="global batch (default 64)")
    t.add_argument("--lr", type=_lr, help="Adam learning rate, more than 0 (default: FiLM 3e-4, baselines 5e-4)")
    t.add_argument("--weight-decay", type=_non_negative,
                   help="Adam weight decay, 0 or more (default: FiLM 1e-5, baselines 0)")
    t.add_argument("--patience", type=int, default=10,
                   help="epochs without val improvement before stopping (negative: never stop early)")
    t.add_argument("--time-limit", type=_minutes,
                   help="training-time budget in minutes (more than 0): stops (mid-epoch) when spent")
    t.add_argument("--max-samples", type=_positive, help="budget of questions seen: stops (mid-epoch) when spent")
    t.add_argument("--schedule", default="constant",
                   choices=("constant", "warmup_constant", "warmup_cosine", "warmup_linear"),
                   help="learning-rate schedule (default constant, the paper's); decays end at --max-samples")
    t.add_argument("--warmup", type=_count, default=0, help="warm-up length in questions (default 0)")
    t.add_argument("--min-lr-ratio", type=_ratio, default=0.0, help="floor of the decay, as a fraction of --lr (0..1)")
    t.add_argument("--eval-every", type=_positive,
                   help="a curve point (val subset accuracy, curve.jsonl) and a checkpoint every N questions")
    t.add_argument("--curve-samples", type=_positive,
                   help="val questions a curve point scores (default 5000; needs --eval-every)")
    t.add_argument("--max-steps-per-epoch", type=_positive, help="cap steps per epoch (smoke runs)")
    t.add_argument("--val-samples", type=_positive, help="score only the first N val questions each epoch")
    t.add_argument("--seed", type=_seed, default=0, help=f"random seed, 0..{MAX_SEED} (default 0)")
    t.add_argument("--workers", type=_integer(0, 256), default=None,
                   help="DataLoader worker processes (default: 0 on the CPU, up to 4 on a GPU, prefetching into pinned memory)")
    t.add_argument("--threads", type=_positive, help="torch CPU threads")
    t.add_argument("--device", type=_device, default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--bf16", action="store_true", help="bfloat16 autocast: on a GPU, or a CPU with AMX / AVX512-BF16 "
                   "(elsewhere it warns and trains fp32)")
    t.add_argument("--compile", action="store_true", help="torch.compile the model (FiLM: its FiLM-ed network), on a GPU or the CPU")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    dl = command("download", help="download and extract the real CLEVR v1.0, CLEVR-CoGenT or CLEVR-Humans",
                 description="Download a released dataset's zip and extract it under --to "
                 "(clevr -> CLEVR_v1.0/, about 18 GB; cogent -> CLEVR_CoGenT_v1.0/, about 24 GB; "
                 "humans -> CLEVR-Humans/). An interrupted transfer resumes where it stopped; the "
                 "archive is checked (size, published MD5, the SHA-256 recorded beside it on the "
                 "first complete download, every entry's CRC) and a corrupted one removed; free space "
                 "is checked first; extraction refuses entries that would land outside --to and "
                 "goes through a staging folder. A complete dataset already there is kept.")
    dl.add_argument("dataset", choices=("clevr", "cogent", "humans"), help="which dataset")
    dl.add_argument("--to", type=Path, default=Path("data"), help="folder to put it in (default data/)")
    dl.add_argument("--url", help="another address for the same archive (a mirror, a local copy over HTTP)")
    dl.add_argument("--keep-archive", action="store_true", help="keep the zip after extracting it")
    dl.add_argument("--timeout", type=_seconds, default=60.0, help="seconds to wait for the server (default 60)")
    dl.add_argument("--retries", type=_integer(0, 100), default=5,
                    help="tries after a failed request or a broken transfer (default 5)")
    dl.add_argument("--quiet", action="store_true", help="no progress bars")

    er = command("errors", help="where a scored run's errors are: by the reasoning a question needs, and by perception",
                 description="Split a scored run's answers (its predictions_<split>.jsonl) by question type and "
                 "the kind of step each program takes (filters only, and/or, same attribute, one or more "
                 "spatial relations); with --perception and --data, also by whether the perception CNN's "
                 "heads got each scene exactly right (every object found in a cell of its own, no false "
                 "object, every attribute right), at each number of objects. Writes errors_<split>.json and .md into the run.")
    er.add_argument("--run", required=True, type=Path, help="a run scored on --split")
    er.add_argument("--root", required=True, type=Path, help="dataset root (questions/, scenes/)")
    er.add_argument("--perception", type=Path, help="folder with perception.pt (the perception CNN)")
    er.add_argument("--data", type=Path, help="preprocessed folder with the <split>_images.h5 the CNN reads (with --perception)")
    er.add_argument("--split", default="val", help="split (default val)")

    e = command("evaluate", help="score a training run on a split")
    e.add_argument("--run", required=True, type=Path, help="run directory")
    e.add_argument("--data", required=True, type=Path, help="preprocessed folder")
    e.add_argument("--split", default="val", help="split to score (default val)")
    e.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)")
    e.add_argument("--device", type=_device, default="auto", help="auto | cpu | cuda | cuda:N")
    return p


# --- running a command ----------------------------------------------------------------------

#: What a Ctrl-C leaves behind, by command.
AFTER_INTERRUPT = {
    "generate": "the unfinished split was removed; run the same command again to start it over",
    "merge": "the unfinished split was removed and the shards kept; run the same command again",
    "preprocess": "finished files are kept, and an unfinished image or feature file is kept to continue from; run the same command again to go on",
    "train": "run the same command again to resume from the last checkpoint (last.pt)",
    "study": "run the same command again to resume from the last checkpoint",
    "download": "what was received is kept (<archive>.part); run the same command again to continue",
}



def main(argv=None) -> int:
    """Run the command line; returns the exit status (0, 1, 2 or 130)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:             # --help (0) or a usage error, already printed (2)
        return e.code if isinstance(e.code, int) else 2
    debug = getattr(args, "debug", False)
    try:
        summary = _run(args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        more = AFTER_INTERRUPT.get(args.command, "nothing half-written was left; run the same command again")
        print(f"error: interrupted (Ctrl-C); {more}", file=sys.stderr)
        return 130
    except UsageError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(str(e))} (see `python -m filmlib {args.command} --help`)", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one line for every failure; --debug for the traceback
        if debug:
            traceback.print_exc()
        print(f"error: {describe(e, debug)}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=1))
    return 0


def describe(error: BaseException, debug: bool = False) -> str:
    """One line for an error: its message, with the file it is about."""
    from .io import DiskFullError, FolderBusyError
    from .train import TrainingDiverged
    expected = (ValueError, OSError, FolderBusyError, TrainingDiverged)   # messages meant for users
    if isinstance(error, OSError) and not isinstance(error, DiskFullError) and error.filename:
        text = f"{error.filename}: {error.strerror or error}"
        hint = _OS_HINTS.get(error.errno)
        if hint and error.errno and error.strerror == os.strerror(error.errno):   # the system's words
            text += f"; {hint}"
    else:
        text = str(error) or type(error).__name__
    if not isinstance(error, expected):
        text += f" ({type(error).__name__}" + ("" if debug else "; rerun with --debug for the traceback") + ")"
    return _one_line(text)


_OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.EACCES: "check its permissions, or choose another path",
    errno.EPERM: "check its permissions, or choose another path",
    errno.EROFS: "choose a path on a writable disk",
    errno.ENOTDIR: "a folder in this path is a file; check the path",
    errno.EISDIR: "this is a folder; give a file name",
}


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _need_folder(path: Path, option: str, hint: str):
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, f"no such folder ({option}); {hint}", str(path))
    if not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{option} must be a folder, and this is a file", str(path))


def _need_file(path: Path | None, option: str, hint: str = "check the path"):
    if path is None:
        return
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, f"no such file ({option}); {hint}", str(path))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{option} must be a file, and this is a folder", str(path))


def _out_folder(path: Path, option: str = "--out"):
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{option} must be a folder, and this is a file; "
                                 f"choose another path", str(path))


def _out_file(path: Path, option: str = "--out"):
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{option} must be a file name, and this is a folder",
                                str(path))


def _need_data(data: Path, splits=(), option: str = "--data"):
    """A preprocessed folder with a readable vocab.json, and readable HDF5 files for ``splits``."""
    import h5py

    from .data.vocab import Vocab
    remake = f"`python -m filmlib preprocess --root <dataset> --out {data}`"
    _need_folder(data, option, f"make it with {remake}")
    vocab = data / "vocab.json"
    if not vocab.is_file():
        raise FileNotFoundError(errno.ENOENT, f"missing; run {remake} first", str(vocab))
    try:
        Vocab.load(vocab)
    except UnicodeDecodeError:
        raise ValueError(f"{vocab} is damaged (not text); remake it with {remake} --force") from None
    for split in splits:
        for path in sorted(data.glob(f"{split}_*.h5")):
            try:
                h5py.File(path, "r").close()
            except OSError:
                raise ValueError(f"{path} is damaged (not a readable HDF5 file); remake it with "
                                 f"{remake} --force") from None


def _read_scenes(path: Path):
    from .data import clevr
    try:
        return clevr.load_scenes_file(path)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (UTF-8) file; --scenes takes a CLEVR scenes JSON") from None


def _present_splits(root: Path) -> list[str]:
    """Splits with a questions file or an images folder under a CLEVR-layout root."""
    found = set()
    for f in (root / "questions").glob("CLEVR_*_questions.json"):
        found.add(f.name[len("CLEVR_"):-len("_questions.json")])
    if (root / "images").is_dir():
        found.update(d.name for d in (root / "images").iterdir() if d.is_dir())
    return sorted(found)


def _run(args) -> dict:
    if args.command == "data":
        from .experiment import prepare_data
        if args.root is not None:
            _out_folder(args.root, "--root")
        if args.results is not None:
            _out_folder(args.results, "--results")
        return prepare_data(args.scale, args.root, args.results, seed=args.seed, workers=args.workers,
                            device=args.device, progress=not args.quiet)
    if args.command == "generate":
        from .synth.generate import SplitSpec, generate_split
        if args.min_objects > args.max_objects:
            raise UsageError(f"--min-objects {args.min_objects} is more than --max-objects {args.max_objects}")
        _out_folder(args.out)
        spec = SplitSpec(split=args.split, num_images=args.images,
                         questions_per_image=args.questions_per_image, width=args.width,
                         height=args.height, seed=args.seed, cogent=args.cogent,
                         reset_every=args.reset_every, humans_per_image=args.humans_per_image,
                         min_objects=args.min_objects, max_objects=args.max_objects)
        summary = generate_split(args.out, spec, workers=args.workers, progress=not args.quiet,
                                 shard=args.shard)
    elif args.command == "merge":
        from .synth.generate import merge_shards
        _need_folder(args.out, "--out", "write the shards there first with `generate --shard I/N`")
        summary = merge_shards(args.out, args.split, args.shards)
    elif args.command == "render":
        from .synth.fidelity import render_command
        _need_file(args.scenes, "--scenes")
        _need_file(args.compare, "--compare")
        _need_file(args.masks, "--masks")
        _out_file(args.out)
        try:
            summary = render_command(args.scenes, args.index, args.out, compare_with=args.compare,
                                     masks=args.masks, width=args.width, height=args.height)
        except UnicodeDecodeError:
            raise ValueError(f"{args.scenes}: not a text (UTF-8) file; --scenes takes a CLEVR "
                             f"scenes JSON") from None
    elif args.command == "preprocess":
        from .data.preprocess import preprocess_root
        from .train import resolve_device
        _need_folder(args.root, "--root", "generate a dataset there first (`python -m filmlib generate`)")
        _out_folder(args.out)
        _need_file(args.weights, "--weights")
        if args.weights is not None and not args.features:
            raise UsageError("--weights is for the ResNet-101 features: add --features")
        present = _present_splits(args.root)
        if args.splits is None:
            splits = [s for s in ("train", "val", "test") if s in present] or ["train", "val", "test"]
        else:
            splits = list(dict.fromkeys(args.splits))
            missing = [s for s in splits if s not in present]
            if missing:
                raise UsageError(f"--splits {' '.join(missing)}: no such split under {args.root} (no "
                                 f"questions/CLEVR_{missing[0]}_questions.json, no images/{missing[0]}/); "
                                 f"splits there: {', '.join(present) or 'none'}")
        report = preprocess_root(args.root, args.out, splits=tuple(splits),
                                 image_size=(args.image_size, args.image_size), features=args.features,
                                 weights=args.weights, feature_dtype=args.features_dtype,
                                 feature_device=str(resolve_device(args.device)), workers=args.workers,
                                 force=args.force,
                                 progress=not args.quiet)
        summary = report["report"]
    elif args.command == "scene-maps":
        from .data.clevr import scenes_path
        from .data.scene_maps import write_scene_maps
        _out_folder(args.out)
        if args.root.is_dir():
            missing = [s for s in args.splits if not scenes_path(args.root, s).is_file()]
            if missing:
                raise UsageError(f"--splits {' '.join(missing)}: no such split under {args.root} "
                                 f"({scenes_path(args.root, missing[0])} is missing)")
        summary = {split: write_scene_maps(args.root, split, args.out / f"{split}_oracle.h5", args.grid)
                   for split in args.splits}
    elif args.command == "perception":
        from . import perception
        _need_folder(args.cache, "--cache", "run `python -m filmlib preprocess` to make it")
        _out_folder(args.out)
        if args.splits is None:
            args.splits = [s for s in ("train", "val", "test") if (args.cache / f"{s}_images.h5").is_file()]
        missing = [s for s in args.splits if not (args.cache / f"{s}_images.h5").is_file()]
        if missing:
            raise UsageError(f"--splits {' '.join(missing)}: {args.cache / (missing[0] + '_images.h5')} "
                             f"is missing (preprocess that split first)")
        run = perception.pretrain(args.cache, args.root, args.out, epochs=args.epochs,
                                  time_limit_minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                                  threads=args.threads, seed=args.seed, progress=not args.quiet)
        run.pop("history", None)
        ckpt = args.out / perception.CHECKPOINT
        summary = {"pretrain": run, "extracted": {s: perception.extract(ckpt, args.cache, s) for s in args.splits}}
    elif args.command == "ship":
        from . import shipped
        _need_file(args.run / "best.pt", "--run", "train it first")
        _need_file(args.perception, "--perception", "make it with `python -m filmlib perception`")
        _need_file(args.vocab, "--vocab", "preprocess the data first")
        info = shipped.export(args.run, args.perception, args.vocab, args.out or shipped.WEIGHTS_DIR, args.name)
        summary = {"files": info["files"], "sha256": info["sha256"], "source": info["source"]}
    elif args.command == "study":
        from . import study
        _need_data(args.data, ("train", "val"))
        _need_file(args.perception, "--perception", "make it with `python -m filmlib perception`")
        _out_folder(args.out)
        summary = study.run_recipe(study.RECIPES[args.recipe], args.data, args.out, eval_every=args.eval_every,
                                   curve_samples=args.curve_samples, threads=args.threads, seed=args.seed,
                                   max_samples=args.max_samples, perception_checkpoint=args.perception,
                                   progress=not args.quiet, compile=args.compile)
        print(study.table(args.out))
    elif args.command == "train":
        from .experiment import train_baseline, train_film
        if args.schedule != "constant" and not args.max_samples:
            raise UsageError(f"--schedule {args.schedule} needs --max-samples (where its decay ends)")
        if args.warmup and not args.schedule.startswith("warmup"):
            raise UsageError("--warmup needs a warm-up --schedule (warmup_constant, warmup_cosine, warmup_linear)")
        if args.curve_samples and not args.eval_every:
            raise UsageError("--curve-samples sizes the curve points of --eval-every: add --eval-every N")
        _need_data(args.data, ("train", "val"))
        _out_folder(args.out)
        optim = {k: v for k, v in (("lr", args.lr), ("weight_decay", args.weight_decay)) if v is not None}
        common = dict(val_samples=args.val_samples, epochs=args.epochs, batch_size=args.batch_size,
                      patience=args.patience if args.patience >= 0 else None, time_limit_minutes=args.time_limit,
                      max_steps_per_epoch=args.max_steps_per_epoch, seed=args.seed, num_workers=args.workers,
                      threads=args.threads, device=args.device, bf16=args.bf16, compile=args.compile,
                      progress=not args.quiet, max_samples=args.max_samples, schedule=args.schedule,
                      warmup_samples=args.warmup, min_lr_ratio=args.min_lr_ratio,
                      eval_every_samples=args.eval_every,
                      curve_samples=(args.curve_samples or 5000) if args.eval_every else None,
                      features=args.features, **optim)
        if args.schedule != "constant" and args.max_samples:
            common["schedule_samples"] = args.max_samples
        if args.model == "film":
            changes = {"num_blocks": args.num_blocks} if args.num_blocks else {}
            if args.classifier_pool:
                changes["classifier_pool"] = args.classifier_pool
            summary = train_film(args.data, args.out, preset_name=args.preset, stem=args.stem,
                                 model_changes=changes, ablation=args.ablation, **common)
        else:
            if args.ablation or args.num_blocks or args.classifier_pool:
                raise ValueError("--ablation, --num-blocks and --classifier-pool change FiLM only, not a baseline")
            summary = train_baseline(args.data, args.out, args.model, preset_name=args.preset, stem=args.stem,
                                     **common)
        summary.pop("history", None)
        summary.pop("curve", None)
    elif args.command == "download":
        from .data.download import download
        summary = download(args.dataset, args.to, url=args.url, keep_archive=args.keep_archive,
                           progress=not args.quiet, timeout=args.timeout, retries=args.retries)
    elif args.command == "errors":
        from .data.clevr import questions_path
        from .experiment import error_report
        from .perception import CHECKPOINT
        if (args.perception is None) != (args.data is None):
            raise UsageError("--perception and --data go together (the perception CNN and the images it reads)")
        _need_folder(args.run, "--run", "pass the --out folder of a `train` run")
        _need_file(args.run / f"predictions_{args.split}.jsonl", "--run", f"score it on {args.split} first: "
                   f"`python -m filmlib evaluate --run {args.run} --data DIR --split {args.split}`")
        _need_file(questions_path(args.root, args.split), "--root", f"the {args.split} questions file is missing")
        if args.perception is not None:
            _need_file(args.perception / CHECKPOINT, "--perception", "run `python -m filmlib perception` first")
            _need_file(args.data / f"{args.split}_images.h5", "--data", "preprocess that split first")
        report = error_report(args.run, args.root, args.split, data_dir=args.data, perception_dir=args.perception)
        summary = {"run": report["run"], "split": args.split, "reasoning": report["reasoning"]["all"]}
        if "perception" in report:
            summary["perception"] = {k: report["perception"][k] for k in ("perfect_scenes", "all", "by_type")}
    elif args.command == "evaluate":
        from .experiment import evaluate_run
        _need_folder(args.run, "--run", "pass the --out folder of a `train` run")
        _need_data(args.data, (args.split,))
        summary = evaluate_run(args.run, args.data, args.split, which=args.checkpoint, device=args.device)
        summary.pop("by_family", None)
    elif args.command == "questions":
        from .data import clevr
        from .io import naming_disk_full
        from .synth.generate import questions_for_scenes
        _need_file(args.scenes, "--scenes")
        _out_file(args.out)
        info, scenes = _read_scenes(args.scenes)
        records, rejected = questions_for_scenes(scenes, per_image=args.per_image, seed=args.seed,
                                                 paraphrase=args.paraphrase)
        out_info = {"split": info.get("split"), "source_scenes": str(args.scenes),
                    "generator": "SynthCLEVR question engine (filmlib)", "rejected": rejected}
        if args.paraphrase:
            out_info["synthetic"] = True
        with naming_disk_full(args.out):
            clevr.save_questions(args.out, records, out_info)
        summary = {"questions": len(records), "out": str(args.out), "rejected": rejected}
    return summary


if __name__ == "__main__":
    sys.exit(main())
