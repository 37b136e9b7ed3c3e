"""``torch.utils.data`` access to the HDF5 caches (ours or the FiLM authors').

:class:`ClevrQuestionsDataset` pairs a questions file with an images or features file. The
per-question integers (image index, answer, family, type) are read once; question rows are
kept in RAM by default (small: 700k x 46 int32 is 130 MB) and the visual array is read per
item from HDF5, unless it is small enough to cache (``cache_visual``). HDF5 files are opened
lazily in whichever process reads them (a DataLoader worker, forked or spawned) and never
shared across a fork; pickling the dataset carries paths and small arrays, not file handles.

An item and a batch are dicts with the same keys (a batch adds ``question_lengths``)::

    questions        LongTensor [T]   <START> ... <END> (a batch: [B, T_max], padded with 0)
    visual           FloatTensor [C, H, W]   images: uint8 -> [0, 1] -> (x - mean) / std;
                                             features: as stored, as float32
    answers          answer index (-1 when unknown)
    image_indices, question_indices (row in the source JSON), families, types
    (index into QUESTION_TYPES), final_functions (index into FINAL_FUNCTIONS); -1 when unknown
    programs         LongTensor [P], only with ``return_programs=True``
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from filmlib.data.clevr import FINAL_FUNCTION_TYPES, FINAL_FUNCTIONS, QUESTION_TYPES, final_function
from filmlib.data.features import IMAGENET_MEAN, IMAGENET_STD
from filmlib.data.preprocess import DataFileError
from filmlib.data.vocab import UNK_IDX, Vocab

SCALAR_KEYS = ("answers", "image_indices", "question_indices", "families", "types",
               "final_functions")
_OPTIONAL = {"answers": "answers", "families": "question_families", "types": "question_types",
             "final_functions": "final_functions"}


def _open_h5(path: Path) -> h5py.File:
    if not path.is_file():
        raise DataFileError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DataFileError(f"{path}: not a readable HDF5 file ({e})") from None


def _read_1d(f: h5py.File, name: str, n: int, path: Path) -> np.ndarray:
    ds = f[name]
    if ds.shape != (n,):
        raise DataFileError(f"{path}: '{name}' has shape {ds.shape}, expected ({n},) "
                            f"(one entry per question)")
    return ds[()].astype(np.int64)


def _last_nonzero_lengths(rows: np.ndarray) -> np.ndarray:
    """Length of each row up to its last non-<NULL> token."""
    nz = rows != 0
    return np.where(nz.any(1), rows.shape[1] - np.argmax(nz[:, ::-1], axis=1), 0)


def _finals_from_programs(programs: np.ndarray, vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """Final function and type indices from prefix programs (the root is the first token)."""
    idx_to_token = vocab.program_idx_to_token
    finals = np.full(len(programs), -1, np.int64)
    types = np.full(len(programs), -1, np.int64)
    for tok in np.unique(programs[:, 1]):
        if not 0 <= tok < len(idx_to_token):
            continue
        name = final_function([{"function": idx_to_token[tok].split("[")[0]}])
        if name in FINAL_FUNCTION_TYPES:
            rows = programs[:, 1] == tok
            finals[rows] = FINAL_FUNCTIONS.index(name)
            types[rows] = QUESTION_TYPES.index(FINAL_FUNCTION_TYPES[name])
    return finals, types


class ClevrQuestionsDataset(Dataset):
    """Questions from ``questions_h5`` with the image (or features) each refers to.

    ``visual_h5``: an images file (``images`` uint8) or a features file (``features`` float),
    or None for questions only (the language-only baselines). ``visual_key`` picks another
    dataset name.
    ``normalize``: for uint8 images, ``"imagenet"`` (default), None (just [0, 1]) or a
    ``(mean, std)`` pair of 3-tuples; features are never changed.
    ``cache_visual``: True loads the whole visual array into RAM now, False reads per item,
    ``"auto"`` caches when it takes at most ``cache_limit_bytes``.
    ``cache_questions``: keep question rows in RAM (default) or read them per item.
    ``indices`` / ``max_samples``: use a subset of question rows (in that order).
    ``vocab_size``: question tokens at or above it read as ``<UNK>`` (a model trained on the
    CLEVR vocabulary evaluated on questions encoded with a grown CLEVR-Humans one).
    ``vocab``: a Vocab or vocab.json path; defaults to the one stored in the questions file
    (ours store it; the authors' do not). Used to derive types from programs when the file
    has no ``question_types`` (the authors' files).
    """

    def __init__(self, questions_h5, visual_h5=None, *, normalize="imagenet",
                 cache_visual: bool | str = "auto", cache_limit_bytes: int = 1 << 30,
                 cache_questions: bool = True, indices=None, max_samples: int | None = None,
                 vocab_size: int | None = None, vocab=None, visual_key: str | None = None,
                 return_programs: bool = False):
        self.questions_h5 = Path(questions_h5)
        self.visual_h5 = Path(visual_h5) if visual_h5 is not None else None
        self.cache_questions, self.vocab_size = cache_questions, vocab_size
        self.return_programs = return_programs
        self._pid, self._qfile, self._vfile = None, None, None
        self._questions = self._programs = self._visual_cache = None

        with _open_h5(self.questions_h5) as f:
            self._read_questions(f, indices, max_samples, vocab)
        if self.visual_h5 is not None:
            with _open_h5(self.visual_h5) as f:
                self._read_visual(f, visual_key, cache_visual, cache_limit_bytes)
        self._set_normalization(normalize)

    # -- set-up -----------------------------------------------------------------------------
    def _read_questions(self, f: h5py.File, indices, max_samples, vocab) -> None:
        path = self.questions_h5
        for name in ("questions", "image_idxs"):
            if name not in f or not isinstance(f[name], h5py.Dataset):
                raise DataFileError(f"{path}: no '{name}' dataset; a questions file needs "
                                    f"'questions' [N, T] and 'image_idxs' [N] "
                                    f"(found: {', '.join(sorted(f)) or 'nothing'})")
        q = f["questions"]
        if q.ndim != 2 or q.shape[0] == 0 or q.dtype.kind not in "iu":
            raise DataFileError(f"{path}: 'questions' must be a non-empty 2-D integer array, got "
                                f"shape {q.shape} dtype {q.dtype}")
        n = q.shape[0]
        rows = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(rows) and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"{path}: indices must lie in 0..{n - 1}")
        rows = rows % n
        if max_samples is not None:
            rows = rows[:max_samples]
        self.rows = rows

        if vocab is None and "vocab" in f.attrs:
            vocab = Vocab.from_dict(json.loads(f.attrs["vocab"]), f"{path} (vocab attribute)")
        self.vocab = vocab if vocab is None or isinstance(vocab, Vocab) else Vocab.load(vocab)

        self.image_idxs = _read_1d(f, "image_idxs", n, path)[rows]
        self.orig_idxs = (_read_1d(f, "orig_idxs", n, path) if "orig_idxs" in f
                          else np.arange(n, dtype=np.int64))[rows]
        for attr, name in _OPTIONAL.items():
            values = _read_1d(f, name, n, path) if name in f else np.full(n, -1, np.int64)
            setattr(self, attr, values[rows])
        self.has_programs = "programs" in f
        if self.has_programs and "final_functions" not in f and self.vocab is not None:
            finals, types = _finals_from_programs(f["programs"][()], self.vocab)
            self.final_functions, self.types = finals[rows], types[rows]
        if self.return_programs and not self.has_programs:
            raise DataFileError(f"{path}: return_programs=True but the file has no 'programs'")
        if self.cache_questions:
            self._questions = q[()][rows]
            self.question_lengths = _last_nonzero_lengths(self._questions)
            if self.return_programs:
                self._programs = f["programs"][()][rows]
        self.max_question_length = q.shape[1]

    def _read_visual(self, f: h5py.File, key, cache, limit) -> None:
        path = self.visual_h5
        if key is None:
            key = next((k for k in ("features", "images") if k in f), None)
            if key is None:
                raise DataFileError(f"{path}: no 'features' or 'images' dataset "
                                    f"(found: {', '.join(sorted(f)) or 'nothing'})")
        elif key not in f:
            raise DataFileError(f"{path}: no '{key}' dataset (found: {', '.join(sorted(f))})")
        ds = f[key]
        if ds.ndim != 4:
            raise DataFileError(f"{path}: '{key}' must be [N, C, H, W], got shape {ds.shape}")
        self.visual_key = key
        self.is_images = ds.dtype == np.uint8
        self.num_images, self.visual_shape = ds.shape[0], tuple(ds.shape[1:])
        if len(self.image_idxs):
            bad = np.flatnonzero((self.image_idxs < 0) | (self.image_idxs >= self.num_images))
            if len(bad):
                i = int(self.rows[bad[0]])
                raise DataFileError(
                    f"{self.questions_h5}: question {i} refers to image {self.image_idxs[bad[0]]}, "
                    f"out of range for {path} ({self.num_images} images); "
                    f"{len(bad)} question(s) in all")
        nbytes = ds.size * ds.dtype.itemsize
        if cache is True or (cache == "auto" and nbytes <= limit):
            self._visual_cache = ds[()]
        elif cache not in (False, "auto"):
            raise ValueError(f"cache_visual must be True, False or 'auto', not {cache!r}")

    def _set_normalization(self, normalize) -> None:
        """uint8 images become ``x * scale + shift`` = ``(x / 255 - mean) / std``."""
        self.normalize = normalize
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        if normalize == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        elif normalize is not None:
            mean, std = normalize
        mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self._scale, self._shift = 1 / (255 * std), -mean / std

    # -- lazy files -------------------------------------------------------------------------
    def _files(self) -> tuple[h5py.File | None, h5py.File | None]:
        if self._pid != os.getpid():
            # Handles opened before a fork belong to the parent; open our own.
            self._qfile = self._vfile = None
            self._pid = os.getpid()
        if self._qfile is None and not self.cache_questions:
            self._qfile = _open_h5(self.questions_h5)
        if self._vfile is None and self.visual_h5 is not None and self._visual_cache is None:
            self._vfile = _open_h5(self.visual_h5)
        return self._qfile, self._vfile

    def close(self) -> None:
        for name in ("_qfile", "_vfile"):
            handle = getattr(self, name, None)
            if handle is not None and self._pid == os.getpid():
                handle.close()
            setattr(self, name, None)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 — interpreter shutdown
            pass

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_pid=None, _qfile=None, _vfile=None)
        return state

    # -- items ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    def _question(self, i: int) -> np.ndarray:
        if self._questions is not None:
            return self._questions[i, :self.question_lengths[i]]
        row = self._files()[0]["questions"][self.rows[i]]
        return row[:_last_nonzero_lengths(row[None])[0]]

    def visual_batch(self, image_indices) -> torch.Tensor:
        """The (normalised) images or the features of several images, float32 [B, C, H, W]."""
        idx = np.asarray(image_indices, dtype=np.int64)
        if self._visual_cache is not None:
            x = self._visual_cache[idx]
        else:   # one read per image: h5py's fancy indexing is far slower than this loop
            ds = self._files()[1][self.visual_key]
            x = np.stack([ds[j] for j in idx])
        x = torch.from_numpy(np.ascontiguousarray(x)).float()
        if self.is_images:
            x = torch.addcmul(self._shift, x, self._scale)        # (x / 255 - mean) / std
        return x

    def visual(self, image_index: int) -> torch.Tensor:
        """The (normalised) image or the features of one image, float32 [C, H, W]."""
        return self.visual_batch([image_index])[0]

    def _meta(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} questions")
        i = int(i) % len(self)
        q = torch.from_numpy(self._question(i).astype(np.int64))
        if self.vocab_size is not None:
            q = torch.where(q >= self.vocab_size, UNK_IDX, q)
        item = {"questions": q, "answers": int(self.answers[i]),
                "image_indices": int(self.image_idxs[i]),
                "question_indices": int(self.orig_idxs[i]), "families": int(self.families[i]),
                "types": int(self.types[i]), "final_functions": int(self.final_functions[i])}
        if self.return_programs:
            p = (self._programs[i] if self._programs is not None
                 else self._files()[0]["programs"][self.rows[i]])
            n = _last_nonzero_lengths(p[None])[0]
            item["programs"] = torch.from_numpy(p[:n].astype(np.int64))
        return item

    def __getitem__(self, i: int) -> dict:
        item = self._meta(i)
        if self.visual_h5 is not None:
            item["visual"] = self.visual(item["image_indices"])
        return item

    def __getitems__(self, indices) -> list[dict]:
        """A batch of items (the DataLoader's batched fetch): one visual read for all."""
        items = [self._meta(i) for i in indices]
        if self.visual_h5 is not None and items:
            for item, x in zip(items, self.visual_batch([it["image_indices"] for it in items])):
                item["visual"] = x
        return items


def _pad_stack(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences (possibly with trailing <NULL> padding) -> [B, T_max] and their lengths."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.zeros(len(seqs), width, dtype=torch.long)
    for k, s in enumerate(seqs):
        out[k, :len(s)] = s
    nonzero = out != 0
    lengths = torch.where(nonzero.any(1), width - nonzero.flip(1).to(torch.uint8).argmax(1), 0)
    longest = int(lengths.max()) if len(seqs) else 0
    return out[:, :longest].contiguous(), lengths


def collate(items: list[dict]) -> dict:
    """Stack items; questions (and programs) padded with 0 to the batch's longest one."""
    batch = {}
    batch["questions"], batch["question_lengths"] = _pad_stack([it["questions"] for it in items])
    if "programs" in items[0]:
        batch["programs"], batch["program_lengths"] = _pad_stack([it["programs"] for it in items])
    if "visual" in items[0]:
        batch["visual"] = torch.stack([it["visual"] for it in items])
    for key in SCALAR_KEYS:
        if key in items[0]:
            batch[key] = torch.tensor([int(it[key]) for it in items], dtype=torch.long)
    return batch


def make_loader(dataset, batch_size: int = 64, *, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, distributed: bool = False, rank: int | None = None,
                world_size: int | None = None, drop_last: bool = False, pin_memory: bool = False,
                persistent_workers: bool = False, prefetch_factor: int | None = None,
                multiprocessing_context=None, collate_fn=collate) -> DataLoader:
    """A DataLoader with :func:`collate` and a seeded order.

    Without ``distributed``, shuffling draws from ``torch.Generator().manual_seed(seed)``: the
    same seed gives the same sequence of epochs. With ``distributed``, a ``DistributedSampler``
    (seeded; call ``loader.sampler.set_epoch(epoch)`` each epoch) gives each rank its share;
    ``rank``/``world_size`` default to the initialised process group.
    """
    kwargs = {}
    if num_workers > 0:
        kwargs.update(persistent_workers=persistent_workers,
                      multiprocessing_context=multiprocessing_context)
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    if distributed:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                     shuffle=shuffle, seed=seed, drop_last=drop_last)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                          num_workers=num_workers, collate_fn=collate_fn, drop_last=drop_last,
                          pin_memory=pin_memory, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, collate_fn=collate_fn, drop_last=drop_last,
                      pin_memory=pin_memory, **kwargs)
