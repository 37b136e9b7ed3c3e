"""HDF5 caches of a CLEVR-layout dataset: encoded questions and resized images.

Files (the questions layout is the FiLM authors', so their files and ours read alike)::

    <split>_questions.h5
        questions          int32 [N, T]  <START> ... <END>, padded with <NULL> (0)
        image_idxs         int64 [N]     image index of each question
        orig_idxs          int64 [N]     position of the question in the source JSON
        programs           int32 [N, P]  prefix-order program tokens (only if the file has programs)
        question_families  int64 [N]     template family, -1 where unknown (CLEVR-Humans)
        answers            int64 [N]     answer vocabulary index, -1 where unknown (test)
        question_types     int64 [N]     index into clevr.QUESTION_TYPES, -1 without a program
        final_functions    int64 [N]     index into clevr.FINAL_FUNCTIONS, -1 without a program
        attrs: vocab (JSON), source, source_size, source_mtime_ns, source_info (JSON),
               question_type_names, final_function_names (JSON lists), format

    <split>_images.h5
        images             uint8 [N_images, 3, H, W]  bicubic resize (PIL), row = image index

Every file is written under a temporary name and renamed when complete, so a failure or an
interrupt leaves the previous file (or none), never half of one, and a full disk is reported
with the file's name. :func:`preprocess_root` runs everything for a root and skips outputs
whose sources and settings are unchanged (``manifest.json``); it holds a lock file in the
output folder, so a second process writing there at the same time is refused at once.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from filmlib.data.clevr import (
    FINAL_FUNCTIONS, QUESTION_TYPES, CLEVRFormatError, final_function, load_questions_file,
    question_type, questions_path,
)
from filmlib.data.vocab import UNK_IDX, Vocab, encode_tokens, tokenize
from filmlib.io import FolderBusyError, disk_full_error, ignore_sigint, naming_disk_full, output_lock

FORMAT = "filmlib-hdf5-1"
MANIFEST = "manifest.json"
LOCK = ".preprocess.lock"


class DataFileError(ValueError):
    """A data file (image, HDF5 cache) that is missing, unreadable or malformed."""


# --- helpers ------------------------------------------------------------------------------

def default_permissions(path) -> None:
    """Give a ``mkstemp`` file (0600) the permissions a plain ``open`` would (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_h5(path):
    """An ``h5py.File`` open for writing under a temporary name; renamed to ``path`` on success,
    deleted on any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full_error(e, path)
        if full is not None:
            raise full from e
        raise


@contextlib.contextmanager
def resumable_h5(path, key: dict):
    """An ``h5py.File`` for a long, row-by-row output that survives being killed.

    It is written at ``.<name>.partial`` beside ``path``, which is kept when the block fails or
    is interrupted (Ctrl-C, a full disk, a SIGKILL); the next call with the same ``key`` reopens
    it and the caller continues after ``f.attrs["rows_done"]`` (advance it, then ``f.flush()``,
    after each batch it writes). A partial file made with another key, or one the kill left
    unreadable, is discarded. On success the file is renamed to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    signature = _json_attr(key)
    f = None
    if partial.exists():
        try:
            f = h5py.File(partial, "a")
            if f.attrs.get("resume_key") != signature or "rows_done" not in f.attrs:
                f.close()
                f = None
        except BlockingIOError:                      # HDF5's file lock: another process writes it
            raise FolderBusyError(f"{partial} is being written by another process; wait until it "
                                  f"finishes, or write {path.name} somewhere else") from None
        except (OSError, KeyError):                  # left unreadable by a kill: start afresh
            f = None
        if f is None:
            partial.unlink()
    if f is None:
        f = h5py.File(partial, "w")
        f.attrs["resume_key"] = signature
        f.attrs["rows_done"] = 0
        f.flush()
    try:
        yield f
    except BaseException as e:
        f.close()                                    # kept: the next run continues from it
        full = disk_full_error(e, path)
        if full is not None:
            raise full from e
        raise
    del f.attrs["resume_key"], f.attrs["rows_done"]
    f.close()
    default_permissions(partial)
    os.replace(partial, path)


def paths_signature(paths: list[Path]) -> list:
    """What a list of input files is, for :func:`resumable_h5` keys: their number and a digest of
    every path, size and modification time (a file replaced in place, or the list reordered,
    gives another signature)."""
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.fspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return [len(paths), h.hexdigest()]


def _pad(rows: list[list[int]], dtype=np.int32) -> np.ndarray:
    out = np.zeros((len(rows), max(map(len, rows), default=0)), dtype)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def _json_attr(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _resolve_vocab(vocab) -> Vocab:
    return vocab if isinstance(vocab, Vocab) else Vocab.load(vocab)


# --- questions ----------------------------------------------------------------------------

def preprocess_questions(questions_json, vocab, out_h5, *, max_question_length: int | None = None,
                         validate: bool = True, loaded: tuple[dict, list] | None = None) -> dict:
    """Encode a CLEVR questions JSON (or a CLEVR-Humans one) into ``out_h5``.

    ``vocab`` is a :class:`Vocab` or a ``vocab.json`` path. Unknown words and program tokens
    become ``<UNK>``, as do answers outside the answer vocabulary (counted in the summary).
    ``max_question_length`` cuts longer questions (still ending in ``<END>``).
    ``loaded``: the file's ``(info, questions)`` if already read with
    :func:`~filmlib.data.clevr.load_questions_file` (saves parsing it twice).
    Returns a summary dict.
    """
    vocab = _resolve_vocab(vocab)
    questions_json = Path(questions_json)
    info, questions = loaded or load_questions_file(questions_json, validate=validate)
    if not questions:
        raise CLEVRFormatError(f"{questions_json}: the file has no questions")

    encoded, unknown_words = [], 0
    q2i = vocab.question_token_to_idx
    for q in questions:
        tokens = tokenize(q["question"])
        unknown_words += sum(t not in q2i for t in tokens)
        encoded.append(encode_tokens(tokens, q2i, max_question_length))

    n = len(questions)
    image_idxs = np.array([q["image_index"] for q in questions], np.int64)
    families = np.array([q.get("question_family_index", -1) for q in questions], np.int64)
    answers = np.full(n, -1, np.int64)
    unknown_answers = 0
    for i, q in enumerate(questions):
        if "answer" in q:
            answers[i] = vocab.encode_answer(q["answer"])
            unknown_answers += answers[i] == UNK_IDX
    has_program = [bool(q.get("program")) for q in questions]
    types = np.full(n, -1, np.int64)
    finals = np.full(n, -1, np.int64)
    programs = []
    for i, q in enumerate(questions):
        if not has_program[i]:
            programs.append([])
            continue
        try:
            name = final_function(q["program"])
            finals[i] = FINAL_FUNCTIONS.index(name)
            types[i] = QUESTION_TYPES.index(question_type(q["program"]))
        except ValueError as e:
            raise CLEVRFormatError(f"{questions_json}: questions[{i}].program: {e}") from None
        programs.append(vocab.encode_program(q["program"]))

    stat = questions_json.stat()
    with atomic_h5(out_h5) as f:
        f.create_dataset("questions", data=_pad(encoded))
        f.create_dataset("image_idxs", data=image_idxs)
        f.create_dataset("orig_idxs", data=np.arange(n, dtype=np.int64))
        if any(has_program):
            f.create_dataset("programs", data=_pad(programs))
        f.create_dataset("question_families", data=families)
        f.create_dataset("answers", data=answers)
        f.create_dataset("question_types", data=types)
        f.create_dataset("final_functions", data=finals)
        f.attrs["format"] = FORMAT
        f.attrs["vocab"] = _json_attr(vocab.to_dict())
        f.attrs["source"] = str(questions_json.resolve())
        f.attrs["source_size"] = stat.st_size
        f.attrs["source_mtime_ns"] = stat.st_mtime_ns
        f.attrs["source_info"] = _json_attr(info)
        f.attrs["question_type_names"] = _json_attr(list(QUESTION_TYPES))
        f.attrs["final_function_names"] = _json_attr(list(FINAL_FUNCTIONS))
    return {"path": str(out_h5), "questions": n, "max_length": int(max(map(len, encoded))),
            "programs": any(has_program), "with_answer": int((answers >= 0).sum()),
            "unknown_words": int(unknown_words), "unknown_answers": int(unknown_answers)}


# --- images -------------------------------------------------------------------------------

def split_image_paths(root, split: str) -> list[Path]:
    """``<root>/images/<split>/CLEVR_<split>_<i>.png`` for i = 0..N-1, in index order.

    Like the authors' scripts, the index comes from the file name and must run 0..N-1 with
    no gap."""
    folder = Path(root) / "images" / split
    if not folder.is_dir():
        raise DataFileError(f"{folder}: no such image folder")
    pattern = re.compile(rf"CLEVR_{re.escape(split)}_(\d+)\.png")
    found = {}
    for entry in os.scandir(folder):
        m = pattern.fullmatch(entry.name)
        if m:
            found[int(m.group(1))] = Path(entry.path)
    if not found:
        raise DataFileError(f"{folder}: no CLEVR_{split}_<index>.png images")
    if len(found) != max(found) + 1:
        missing = next(i for i in range(max(found) + 1) if i not in found)
        raise DataFileError(f"{folder}: image indices must run 0..{max(found)} without gaps; "
                            f"CLEVR_{split}_{missing:06d}.png is missing")
    return [found[i] for i in range(len(found))]


def _image_list(images, split: str | None) -> list[Path]:
    """Image paths from a list of paths, a ``(root, split)`` pair, or ``images=root, split=``."""
    if (split is None and isinstance(images, tuple) and len(images) == 2
            and isinstance(images[1], str) and Path(images[0]).is_dir()):
        images, split = images
    if split is not None:
        return split_image_paths(images, split)
    if isinstance(images, (str, os.PathLike)):
        raise TypeError("pass a list of image paths, or a root folder with split=...")
    paths = [Path(p) for p in images]
    if not paths:
        raise DataFileError("no images given")
    return paths


def resize_image(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A PIL image as RGB uint8 [3, H, W], resized to ``size`` = (H, W) with PIL's bicubic filter
    (how every cached image is made)."""
    h, w = size
    return np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.BICUBIC)).transpose(2, 0, 1)


def load_image(path, size: tuple[int, int]) -> np.ndarray:
    """An image file as uint8 [3, H, W], resized to ``size`` = (H, W) (:func:`resize_image`)."""
    try:
        with Image.open(path) as im:
            return resize_image(im, size)
    except (OSError, ValueError, SyntaxError) as e:
        raise DataFileError(f"{path}: cannot read the image: {e}") from None


def _load_batch(args) -> np.ndarray:
    paths, size = args
    return np.stack([load_image(p, size) for p in paths])


def iter_image_batches(paths: list[Path], size, batch_size: int, workers: int = 1):
    """Yield (start, uint8 [B, 3, H, W]) in order; at most ``2 * workers`` batches in flight."""
    jobs = [(paths[s:s + batch_size], tuple(size)) for s in range(0, len(paths), batch_size)]
    if workers <= 1:
        for k, job in enumerate(jobs):
            yield k * batch_size, _load_batch(job)
        return
    with ProcessPoolExecutor(workers, initializer=ignore_sigint) as pool:
        pending = [pool.submit(_load_batch, job) for job in jobs[:2 * workers]]
        for k in range(len(jobs)):
            batch = pending.pop(0).result()
            if k + len(pending) + 1 < len(jobs):
                pending.append(pool.submit(_load_batch, jobs[k + len(pending) + 1]))
            yield k * batch_size, batch



def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="img")


def preprocess_images(images, out_h5, *, split: str | None = None, size=(64, 64),
                      batch_size: int = 256, workers: int = 1, progress: bool = False) -> dict:
    """Resize images into ``out_h5``: ``images`` uint8 [N, 3, H, W], row i = image index i.

    ``images`` is a list of paths (row i = ``images[i]``), or a CLEVR root whose
    ``images/<split>/`` is read: ``(root, split)`` or ``images=root, split=split``. ``size`` is
    (H, W). Memory holds at most ``2 * workers + 1`` batches; ``workers > 1`` decodes and
    resizes in that many processes. A killed or interrupted run continues from its last written
    batch when called again with the same arguments (:func:`resumable_h5`).
    """
    paths = _image_list(images, split)
    h, w = (int(s) for s in size)
    key = {"what": "images", "source": paths_signature(paths), "size": [h, w], "batch_size": batch_size}
    with (resumable_h5(out_h5, key) as f,
          _progress_bar(len(paths), f"images {split or ''}", progress) as bar):
        done = int(f.attrs["rows_done"])
        ds = f["images"] if "images" in f else f.create_dataset(
            "images", (len(paths), 3, h, w), np.uint8, chunks=(1, 3, h, w))
        if bar is not None:
            bar.update(done)
        for start, batch in iter_image_batches(paths[done:], (h, w), batch_size, workers):
            ds[done + start:done + start + len(batch)] = batch
            f.attrs["rows_done"] = done + start + len(batch)
            f.flush()
            if bar is not None:
                bar.update(len(batch))
        f.attrs["format"] = FORMAT
        f.attrs["size"] = (h, w)
        f.attrs["resample"] = "bicubic"
        f.attrs["source"] = str(paths[0].parent.resolve())
    return {"path": str(out_h5), "images": len(paths), "size": (h, w), "resumed_from": done}


# --- a whole root -------------------------------------------------------------------------

def humans_questions_path(root, split: str) -> Path:
    """Where CLEVR-Humans (or SynthCLEVR's paraphrase split) questions of a root are:
    ``<root>/questions/CLEVR-Humans-<split>.json`` (SynthCLEVR's place, or a copy), else the
    released folder beside the root, ``<root>/../CLEVR-Humans/CLEVR-Humans-<split>.json`` (where
    ``python -m filmlib download humans --to data/`` puts it next to ``data/CLEVR_v1.0``)."""
    inside = Path(root) / "questions" / f"CLEVR-Humans-{split}.json"
    beside = Path(root).parent / "CLEVR-Humans" / f"CLEVR-Humans-{split}.json"
    return beside if not inside.exists() and beside.exists() else inside


def _file_signature(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _folder_signature(folder: Path) -> list:
    h = hashlib.sha1()
    count = 0
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        st = entry.stat()
        h.update(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        count += 1
    return [str(folder.resolve()), count, h.hexdigest()]


def _save(vocab: Vocab, path: Path) -> dict:
    with naming_disk_full(path):
        vocab.save(path)
    return {name: len(getattr(vocab, name)) for name in
            ("question_token_to_idx", "program_token_to_idx", "answer_token_to_idx")}


def _vocab_digest(vocab: Vocab) -> str:
    return hashlib.sha1(_json_attr(vocab.to_dict()).encode()).hexdigest()


class _Manifest:
    """``manifest.json``: for each output, the sources and settings it was made from."""

    def __init__(self, out_dir: Path, force: bool):
        self.path = out_dir / MANIFEST
        self.data = {"format": FORMAT, "outputs": {}}
        if self.path.exists() and not force:
            try:
                self.data = json.loads(self.path.read_text())
            except ValueError:      # not JSON, or not even text
                pass  # rebuilt below
        self.data.setdefault("outputs", {})
        self.report = {}

    def run(self, name: str, out_dir: Path, key: dict, make) -> None:
        """Make ``out_dir/name`` with ``make(path)`` unless it exists with the same ``key``."""
        path = out_dir / name
        entry = self.data["outputs"].get(name)
        if path.exists() and entry is not None and entry.get("key") == key:
            self.report[name] = {"skipped": True, "seconds": 0.0, **entry.get("summary", {})}
            return
        t = time.perf_counter()
        summary = make(path) or {}
        summary = {k: v for k, v in summary.items() if k != "path"}
        self.data["outputs"][name] = {"key": key, "summary": summary}
        self.save()
        self.report[name] = {"skipped": False, "seconds": round(time.perf_counter() - t, 3),
                             **summary}

    def save(self):
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{MANIFEST}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, indent=1, sort_keys=True)
            default_permissions(tmp)
            os.replace(tmp, self.path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            full = disk_full_error(e, self.path)
            if full is not None:
                raise full from e
            raise


def preprocess_root(root, out_dir, splits=("train", "val", "test"), image_size=(64, 64),
                    vocab=None, *, vocab_split: str = "train", humans: bool = True,
                    humans_min_count: int = 5, features: bool = False, weights=None,
                    feature_dtype: str = "float32", feature_device: str = "cpu",
                    workers: int = 1, force: bool = False, progress: bool = False) -> dict:
    """Preprocess a CLEVR-layout ``root`` into ``out_dir``; returns the manifest plus a report.

    Writes ``vocab.json`` (built from ``vocab_split``'s questions unless ``vocab`` — a
    :class:`Vocab` or path — is given), and for each split whose files exist
    ``<split>_questions.h5`` and ``<split>_images.h5`` (``image_size`` = (H, W)); with
    ``features``, ``<split>_features.h5`` (ResNet-101 conv4 from ``weights``; None = random
    init, for plumbing only). With ``humans`` and ``questions/CLEVR-Humans-<split>.json``
    present: ``vocab_humans.json`` (the vocab grown by words seen ``>= humans_min_count``
    times in the Humans ``vocab_split`` questions) and ``<split>_humans_questions.h5``
    encoded with it. Outputs whose sources and settings are unchanged are skipped
    (``force`` remakes them).
    """
    root, out_dir = Path(root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(out_dir / LOCK, f"the preprocessed folder {out_dir}"):
        _remove_dead_temporaries(out_dir)
        return _preprocess_root(root, out_dir, splits, image_size, vocab, vocab_split, humans,
                                humans_min_count, features, weights, feature_dtype, feature_device,
                                workers, force, progress)


def _remove_dead_temporaries(out_dir: Path):
    """Temporary files of a killed run (``.<output>.<random>.tmp``); no other preprocess
    writes here while we hold the lock."""
    outputs = re.compile(r"\.(vocab(_humans)?\.json|manifest\.json|\w+_(questions|images|features)\.h5)"
                         r"\.\w+\.tmp")
    for entry in os.scandir(out_dir):
        if outputs.fullmatch(entry.name) and entry.is_file():
            Path(entry.path).unlink(missing_ok=True)


def _preprocess_root(root, out_dir, splits, image_size, vocab, vocab_split, humans, humans_min_count,
                     features, weights, feature_dtype, feature_device, workers, force, progress):
    manifest = _Manifest(out_dir, force)
    image_size = tuple(int(s) for s in image_size)
    last = {}

    def load(path: Path) -> tuple[dict, list]:
        """Read (and check) a questions file; the last one read is kept for the next step."""
        if path not in last:
            last.clear()
            last[path] = load_questions_file(path)
        return last[path]

    # vocabulary
    if vocab is None:
        src = questions_path(root, vocab_split)
        if not src.exists():
            raise CLEVRFormatError(f"{src}: not found; it is needed to build the vocabulary "
                                   f"(or pass vocab=...)")
        key = {"source": _file_signature(src)}
        manifest.run("vocab.json", out_dir, key,
                     lambda p: _save(Vocab.build(load(src)[1]), p))
    else:
        given = _resolve_vocab(vocab)
        manifest.run("vocab.json", out_dir, {"given": _vocab_digest(given)},
                     lambda p: _save(given, p))
    vocab = Vocab.load(out_dir / "vocab.json")
    digest = _vocab_digest(vocab)

    for split in splits:
        src = questions_path(root, split)
        if src.exists():
            manifest.run(f"{split}_questions.h5", out_dir,
                         {"source": _file_signature(src), "vocab": digest},
                         lambda p, src=src: preprocess_questions(src, vocab, p, loaded=load(src)))
            last.clear()        # do not hold a split's questions while its images are made
        folder = root / "images" / split
        if folder.is_dir():
            key = {"source": _folder_signature(folder), "size": list(image_size)}
            manifest.run(f"{split}_images.h5", out_dir, key,
                         lambda p, split=split: preprocess_images(
                             root, p, split=split, size=image_size, workers=workers,
                             progress=progress))
            if features:
                from filmlib.data.features import extract_features
                wkey = _file_signature(Path(weights)) if weights is not None else None
                manifest.run(f"{split}_features.h5", out_dir,
                             {**key, "size": None, "weights": wkey, "dtype": feature_dtype},
                             lambda p, split=split: extract_features(
                                 root, p, split=split, weights=weights, dtype=feature_dtype,
                                 device=feature_device, workers=workers, progress=progress))

    humans_files = {s: humans_questions_path(root, s) for s in splits}
    humans_files = {s: p for s, p in humans_files.items() if p.exists()}
    if humans and humans_files:
        src = humans_questions_path(root, vocab_split)
        key = {"base": digest, "min_count": humans_min_count,
               "source": _file_signature(src) if src.exists() else None}
        manifest.run("vocab_humans.json", out_dir, key, lambda p: _save(vocab.extend(
            load(src)[1], humans_min_count) if src.exists() else vocab, p))
        grown = Vocab.load(out_dir / "vocab_humans.json")
        for split, src in humans_files.items():
            manifest.run(f"{split}_humans_questions.h5", out_dir,
                         {"source": _file_signature(src), "vocab": _vocab_digest(grown)},
                         lambda p, src=src: preprocess_questions(src, grown, p, loaded=load(src)))

    manifest.data.update({"root": str(root.resolve()), "image_size": list(image_size),
                          "splits": list(splits)})
    manifest.save()
    return {**manifest.data, "report": manifest.report}
