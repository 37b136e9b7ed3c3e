"""Vocabularies and tokenisation, in the FiLM authors' conventions (their ``vocab.json`` loads).

* A question is split on spaces; ``;`` and ``,`` become tokens of their own; ``?`` and ``.``
  are dropped; case is kept ("Is there a red cube; what size is it?" ->
  ``Is there a red cube ; what size is it``).
* Every vocabulary starts ``<NULL>`` 0, ``<START>`` 1, ``<END>`` 2, ``<UNK>`` 3, then its tokens
  in sorted order. That holds for answers too, so answer indices start at 4 and a classifier
  has ``len(answer_token_to_idx)`` outputs.
* A program is written in prefix order (the answer node first), one token per node: the
  function with its value input, ``filter_color[red]``, ``relate[left]``, ``count``.
* An encoded sequence is ``<START> ... <END>``; unknown tokens become ``<UNK>``.

Two deliberate differences from the authors' ``tokenize``: runs of spaces give no empty tokens,
and ``a;b`` splits into three tokens (theirs gives ``a``, ``;b``). CLEVR's text has neither case,
so encoded CLEVR questions are identical.

Standard library only, so ``import filmlib.data`` stays light.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from filmlib.programs import normalize_program

NULL, START, END, UNK = "<NULL>", "<START>", "<END>", "<UNK>"
SPECIAL_TOKENS = {NULL: 0, START: 1, END: 2, UNK: 3}
NULL_IDX, START_IDX, END_IDX, UNK_IDX = 0, 1, 2, 3

PUNCT_TO_KEEP = (";", ",")
PUNCT_TO_REMOVE = ("?", ".")
VOCAB_KEYS = ("question_token_to_idx", "program_token_to_idx", "answer_token_to_idx")


def tokenize(text: str) -> list[str]:
    """Question text -> tokens (no ``<START>``/``<END>``)."""
    for p in PUNCT_TO_KEEP:
        text = text.replace(p, f" {p} ")
    for p in PUNCT_TO_REMOVE:
        text = text.replace(p, "")
    return text.split()


def program_tokens(program: list) -> list[str]:
    """A CLEVR program (list of nodes, either spelling) -> prefix-order tokens.

    The tree is read from the last node down, parent before children, children in input
    order, as the authors' ``list_to_prefix`` does. A node that several nodes use (never the
    case in CLEVR's trees) is written once per use.
    """
    nodes = program
    if not all(type(n) is dict and "function" in n and "type" not in n and "side_inputs" not in n
               for n in nodes):
        nodes = normalize_program(program)   # the generator's type/side_inputs spelling
    if not nodes:
        return []
    out: list[str] = []
    stack = [len(nodes) - 1]
    while stack:
        node = nodes[stack.pop()]
        values = node.get("value_inputs")
        out.append(node["function"] + (f"[{','.join(values)}]" if values else ""))
        stack.extend(reversed(node.get("inputs", ())))
    return out


def build_token_to_idx(token_lists: Iterable[Iterable[str]], min_count: int = 1) -> dict[str, int]:
    """The 4 special tokens, then every token seen at least ``min_count`` times, sorted."""
    counts = Counter(t for tokens in token_lists for t in tokens)
    token_to_idx = dict(SPECIAL_TOKENS)
    for token in sorted(counts):
        if counts[token] >= min_count and token not in token_to_idx:
            token_to_idx[token] = len(token_to_idx)
    return token_to_idx


def _question_text(q) -> str:
    return q["question"] if isinstance(q, dict) else q


def _check_token_to_idx(mapping, name: str, where: str) -> dict[str, int]:
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: {name} must be an object mapping tokens to indices, "
                         f"got {type(mapping).__name__}")
    for token, idx in SPECIAL_TOKENS.items():
        if mapping.get(token) != idx:
            raise ValueError(f"{where}: {name} must map {token} to {idx}, "
                             f"got {mapping.get(token)!r}")
    indices = sorted(mapping.values())
    if not all(type(i) is int for i in indices) or indices != list(range(len(indices))):
        raise ValueError(f"{where}: {name} indices must be 0..{len(mapping) - 1}, each once")
    return dict(mapping)


@dataclass
class Vocab:
    """Question, program and answer vocabularies (the three dicts of the authors' vocab.json)."""

    question_token_to_idx: dict[str, int]
    program_token_to_idx: dict[str, int]
    answer_token_to_idx: dict[str, int]

    def __post_init__(self):
        for name in VOCAB_KEYS:
            setattr(self, name, _check_token_to_idx(getattr(self, name), name, "Vocab"))
        self._inverse = {}

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, questions: Iterable, *, min_count: int = 1) -> "Vocab":
        """From question records (dicts with ``question``, and ``answer``/``program`` if known).

        ``min_count`` applies to question words only (the authors' ``unk_threshold``).
        """
        questions = list(questions)
        q_tokens = [tokenize(_question_text(q)) for q in questions]
        programs = [program_tokens(q["program"]) for q in questions
                    if isinstance(q, dict) and q.get("program")]
        answers = [[q["answer"]] for q in questions if isinstance(q, dict) and "answer" in q]
        return cls(build_token_to_idx(q_tokens, min_count), build_token_to_idx(programs),
                   build_token_to_idx(answers))

    def extend(self, questions: Iterable, min_count: int = 5) -> "Vocab":
        """A copy with question words seen ``>= min_count`` times in ``questions`` appended
        (sorted) after the existing ones; every existing index is kept. Programs and answers
        are unchanged. (CLEVR-Humans fine-tuning: new words get new embedding rows.)
        """
        counts = Counter(t for q in questions for t in tokenize(_question_text(q)))
        grown = dict(self.question_token_to_idx)
        for token in sorted(counts):
            if counts[token] >= min_count and token not in grown:
                grown[token] = len(grown)
        return Vocab(grown, dict(self.program_token_to_idx), dict(self.answer_token_to_idx))

    # -- lookups ----------------------------------------------------------------------------
    def _idx_to_token(self, name: str) -> list[str]:
        mapping = getattr(self, name)
        cached = self._inverse.get(name)
        if cached is None or len(cached) != len(mapping):
            cached = [""] * len(mapping)
            for token, idx in mapping.items():
                cached[idx] = token
            self._inverse[name] = cached
        return cached

    @property
    def question_idx_to_token(self) -> list[str]:
        return self._idx_to_token("question_token_to_idx")

    @property
    def program_idx_to_token(self) -> list[str]:
        return self._idx_to_token("program_token_to_idx")

    @property
    def answer_idx_to_token(self) -> list[str]:
        return self._idx_to_token("answer_token_to_idx")

    @property
    def num_answers(self) -> int:
        """Classifier outputs (special tokens included, as in the authors' models)."""
        return len(self.answer_token_to_idx)

    def encode_question(self, text: str, max_len: int | None = None) -> list[int]:
        return encode_tokens(tokenize(text), self.question_token_to_idx, max_len)

    def encode_program(self, program: list, max_len: int | None = None) -> list[int]:
        return encode_tokens(program_tokens(program), self.program_token_to_idx, max_len)

    def encode_answer(self, answer: str) -> int:
        return self.answer_token_to_idx.get(answer, UNK_IDX)

    def decode_question(self, indices: Iterable[int]) -> list[str]:
        return decode_tokens(indices, self.question_idx_to_token)

    def decode_program(self, indices: Iterable[int]) -> list[str]:
        return decode_tokens(indices, self.program_idx_to_token)

    def decode_answer(self, index: int) -> str:
        return self.answer_idx_to_token[index]

    # -- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {k: dict(getattr(self, k)) for k in VOCAB_KEYS}

    @classmethod
    def from_dict(cls, data, where: str = "vocab") -> "Vocab":
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
        missing = [k for k in VOCAB_KEYS if k not in data]
        if missing:
            raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
        return cls(*(_check_token_to_idx(data[k], k, where) for k in VOCAB_KEYS))

    def save(self, path) -> Path:
        """Write ``vocab.json`` (the authors' three keys) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=1)
                f.write("\n")
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; give a plain file's mode
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path) -> "Vocab":
        """Read a ``vocab.json`` (ours or the authors'); extra keys are ignored."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
        return cls.from_dict(data, str(path))


def encode_tokens(tokens: list[str], token_to_idx: dict[str, int],
                  max_len: int | None = None) -> list[int]:
    """``<START> tokens <END>`` as indices, unknown tokens as ``<UNK>``.

    With ``max_len``, a longer sequence is cut to ``max_len`` indices, still ending in ``<END>``.
    """
    if max_len is not None and max_len < 2:
        raise ValueError(f"max_len must be at least 2 (<START> and <END>), got {max_len}")
    body = [token_to_idx.get(t, UNK_IDX) for t in tokens]
    if max_len is not None:
        body = body[:max_len - 2]
    return [START_IDX, *body, END_IDX]


def decode_tokens(indices: Iterable[int], idx_to_token: list[str]) -> list[str]:
    """Indices -> tokens, without ``<START>``, stopping at ``<END>`` or ``<NULL>``."""
    out = []
    for i in indices:
        i = int(i)
        if i == START_IDX:
            continue
        if i in (END_IDX, NULL_IDX):
            break
        out.append(idx_to_token[i] if 0 <= i < len(idx_to_token) else UNK)
    return out


def encode_question(text: str, vocab: Vocab, max_len: int | None = None) -> list[int]:
    """``<START> ... <END>`` indices of a question; unknown words -> ``<UNK>``."""
    return vocab.encode_question(text, max_len)


def load_vocab(path) -> Vocab:
    return Vocab.load(path)
