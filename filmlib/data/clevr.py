"""Reading and writing the CLEVR v1.0 file layout.

::

    <root>/images/{split}/CLEVR_{split}_{index:06d}.png
    <root>/scenes/CLEVR_{split}_scenes.json        {"info": {...}, "scenes": [...]}
    <root>/questions/CLEVR_{split}_questions.json  {"info": {...}, "questions": [...]}

The same code reads the real CLEVR, CLEVR-CoGenT, CLEVR-Humans (questions without programs)
and SynthCLEVR. Every record is checked on load, so a malformed file fails at once with a
:class:`CLEVRFormatError` that names the file, the record (``questions[17].program``,
``scenes[3].objects[2].color``) and the defect, rather than deep inside a training run.
Programs are normalised to ``{"function", "inputs", "value_inputs"}`` on load.

Writing is deterministic (same records, same bytes) and atomic (a temporary file in the same
directory replaces the target only once it is complete and synced).
"""
from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import re
import tempfile
from pathlib import Path

from filmlib.programs import (  # noqa: F401  (normalize_program is re-exported)
    FUNCTIONS, RELATIONS, ProgramError, check_program, normalize_program,
)
from filmlib.synth.attributes import ATTRIBUTES

PathLike = str | os.PathLike


class CLEVRFormatError(ValueError):
    """A CLEVR file that does not follow the v1.0 format."""


# --- paths --------------------------------------------------------------------------------

def image_filename(split: str, index: int) -> str:
    return f"CLEVR_{split}_{index:06d}.png"


def image_path(root: PathLike, split: str, index: int) -> Path:
    return Path(root) / "images" / split / image_filename(split, index)


def scenes_path(root: PathLike, split: str) -> Path:
    return Path(root) / "scenes" / f"CLEVR_{split}_scenes.json"


def questions_path(root: PathLike, split: str) -> Path:
    return Path(root) / "questions" / f"CLEVR_{split}_questions.json"


# --- question types -----------------------------------------------------------------------

QUESTION_TYPES = ("count", "exist", "compare_numbers", "query_attribute", "compare_attribute")
TYPE_NAMES = {"count": "Count", "exist": "Exist", "compare_numbers": "Compare Numbers",
              "query_attribute": "Query Attribute", "compare_attribute": "Compare Attribute"}

#: The question type of each function a CLEVR program can end in.
FINAL_FUNCTION_TYPES = {
    "count": "count",
    "exist": "exist",
    "equal_integer": "compare_numbers",
    "less_than": "compare_numbers",
    "greater_than": "compare_numbers",
    **{f"query_{a}": "query_attribute" for a in ATTRIBUTES},
    **{f"equal_{a}": "compare_attribute" for a in ATTRIBUTES},
}
FINAL_FUNCTIONS = tuple(FINAL_FUNCTION_TYPES)


def _canonical_function(name: str) -> str:
    """Map spellings seen in CLEVR-like files to the released function names.

    The original generator's templates use macros such as ``filter_count``,
    ``relate_filter_exist`` or ``relate_filter_unique``; their last step names the function.
    """
    name = name.strip().lower().replace("colour", "color")
    if name != "unique" and name.endswith("_unique"):
        name = name[: -len("_unique")]
    for final in ("count", "exist"):
        if name.endswith("_" + final) and name not in FUNCTIONS:
            return final
    return name


def final_function(program: list) -> str:
    """The function of the program's last node, in its released spelling."""
    if not isinstance(program, list) or not program:
        raise ValueError("a program must be a non-empty list of nodes")
    return _node_function(program[-1], "the last node")


def _node_function(node, where: str) -> str:
    """A program node's function (either key style), in its released spelling."""
    name = node.get("function", node.get("type")) if isinstance(node, dict) else None
    if not isinstance(name, str):
        raise ValueError(f"{where} has no function: {node!r}")
    return _canonical_function(name)


#: The kinds of step :func:`reasoning_kind` tells apart, from the simplest.
REASONING_KINDS = ("filters only", "and/or", "same attribute", "1 relation", "2+ relations")


def reasoning_kind(program: list) -> str:
    """The hardest kind of step a program takes, one of :data:`REASONING_KINDS`: two or more
    spatial relations (``relate``), one, a ``same_<attribute>`` step, an ``and``/``or`` of two
    sets (``intersect``, ``union``), or filters only."""
    names = [_node_function(node, f"node {k}") for k, node in enumerate(program)]
    relations = sum(n.startswith("relate") for n in names)
    if relations:
        return "2+ relations" if relations > 1 else "1 relation"
    if any(n.startswith("same_") for n in names):
        return "same attribute"
    return "and/or" if any(n in ("union", "intersect") for n in names) else "filters only"


def question_type(program: list) -> str:
    """One of :data:`QUESTION_TYPES`, from the program's last function."""
    name = final_function(program)
    try:
        return FINAL_FUNCTION_TYPES[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a function a CLEVR question ends in "
                         f"(expected one of {', '.join(FINAL_FUNCTIONS)})") from None


def family_index(question: dict) -> int | None:
    """The question's template family (0-89 in CLEVR), or None (CLEVR-Humans, test files)."""
    return question.get("question_family_index")


# --- validation ---------------------------------------------------------------------------

_SCENE_KEYS = ("split", "image_index", "image_filename", "objects", "relationships", "directions")
_OBJECT_KEYS = ("shape", "color", "material", "size", "3d_coords", "pixel_coords")
_DIRECTIONS = ("behind", "front", "left", "right", "above", "below")
_ANSWER_KINDS = ("bool", "integer", *ATTRIBUTES)


class _Invalid(Exception):
    """A defect at a location inside one record (``where`` is relative to the record)."""

    def __init__(self, where: str, what: str):
        super().__init__(what)
        self.where, self.what = where, what


def _is_int(x) -> bool:
    return type(x) is int  # bool is not an index


def _is_number(x) -> bool:
    return (type(x) is int or type(x) is float) and math.isfinite(x)


def _check_vector(value, n: int, where: str) -> None:
    if not (isinstance(value, list) and len(value) == n and all(map(_is_number, value))):
        raise _Invalid(where, f"expected a list of {n} finite numbers, got {value!r}")


def _require(record: dict, keys, where: str) -> None:
    if not isinstance(record, dict):
        raise _Invalid(where, f"expected an object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise _Invalid(where, f"missing key(s) {', '.join(map(repr, missing))}")


def _check_type(record: dict, key: str, kind, where: str, optional: bool = False) -> None:
    if key not in record and optional:
        return
    value = record[key]
    ok = _is_int(value) and value >= 0 if kind is int else isinstance(value, kind)
    if not ok:
        expected = "a non-negative integer" if kind is int else f"a {kind.__name__}"
        raise _Invalid(f"{where}.{key}".lstrip("."), f"expected {expected}, got {value!r}")


def _check_object(obj: dict, where: str) -> None:
    _require(obj, _OBJECT_KEYS, where)
    for attribute, allowed in ATTRIBUTES.items():
        if obj[attribute] not in allowed:
            raise _Invalid(f"{where}.{attribute}", f"unknown {attribute} {obj[attribute]!r} "
                                                   f"(expected one of {', '.join(allowed)})")
    _check_vector(obj["3d_coords"], 3, f"{where}.3d_coords")
    _check_vector(obj["pixel_coords"], 3, f"{where}.pixel_coords")
    if "rotation" in obj and not _is_number(obj["rotation"]):
        raise _Invalid(f"{where}.rotation", f"expected a number, got {obj['rotation']!r}")


def _check_scene(scene: dict) -> None:
    _require(scene, _SCENE_KEYS, "")
    for key, kind in (("split", str), ("image_index", int), ("image_filename", str),
                      ("objects", list), ("relationships", dict), ("directions", dict)):
        _check_type(scene, key, kind, "")
    objects = scene["objects"]
    for i, obj in enumerate(objects):
        _check_object(obj, f"objects[{i}]")
    n = len(objects)
    rels = scene["relationships"]
    _require(rels, RELATIONS, "relationships")
    for rel in RELATIONS:
        lists = rels[rel]
        if not isinstance(lists, list) or len(lists) != n:
            length = len(lists) if isinstance(lists, list) else type(lists).__name__
            raise _Invalid(f"relationships.{rel}",
                           f"expected a list with one entry per object ({n}), got {length}")
        for i, related in enumerate(lists):
            if not isinstance(related, list):
                raise _Invalid(f"relationships.{rel}[{i}]", f"expected a list, got {related!r}")
            for j in related:
                if not _is_int(j) or not 0 <= j < n or j == i:
                    raise _Invalid(f"relationships.{rel}[{i}]",
                                   f"{j!r} is not the index of another object (0..{n - 1})")
    _require(scene["directions"], _DIRECTIONS, "directions")
    for d in _DIRECTIONS:
        _check_vector(scene["directions"][d], 3, f"directions.{d}")


def _check_question(question: dict) -> None:
    _require(question, ("image_index", "question"), "")
    _check_type(question, "image_index", int, "")
    _check_type(question, "question", str, "")
    for key in ("split", "image_filename", "answer"):
        _check_type(question, key, str, "", optional=True)
    for key in ("question_family_index", "question_index"):
        _check_type(question, key, int, "", optional=True)
    if "program" in question:
        try:
            program = check_program(question["program"])
        except ProgramError as e:
            if e.node is None:
                raise _Invalid("program", e.reason) from None
            what = f"{e.function}: {e.reason}" if e.function else e.reason
            raise _Invalid(f"program[{e.node}]", what) from None
        kind = FUNCTIONS[program[-1]["function"]].output
        if kind not in _ANSWER_KINDS:
            raise _Invalid("program", f"ends in a {kind}, not an answer")
        question["program"] = program


def _join(where: str, inner: str) -> str:
    return f"{where}.{inner}" if inner and not inner.startswith("[") else where + inner


def _check_records(records, key: str, check, path) -> None:
    for i, record in enumerate(records):
        try:
            check(record)
        except _Invalid as e:
            raise CLEVRFormatError(f"{path}: {_join(f'{key}[{i}]', e.where)}: {e.what}") from None


def _normalize_programs(questions, path) -> None:
    for i, q in enumerate(questions):
        if isinstance(q, dict) and "program" in q:
            try:
                q["program"] = normalize_program(q["program"])
            except ProgramError as e:
                raise CLEVRFormatError(f"{path}: questions[{i}].program: {e}") from None


# --- reading ------------------------------------------------------------------------------

@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector: parsing creates millions of containers that are
    all kept, and repeated collections over them made loading 100,000 questions twice as
    slow. JSON cannot create reference cycles, so nothing is missed."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_json(path: PathLike):
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CLEVRFormatError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: "
                               f"{e.msg}") from None


def _load(path: PathLike, key: str) -> tuple[dict, list]:
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CLEVRFormatError(f"{path}: expected a top-level object with a {key!r} list, "
                               f"found {found}")
    info = data.get("info", {})
    if not isinstance(info, dict):
        raise CLEVRFormatError(f"{path}: 'info' must be an object, got {type(info).__name__}")
    return info, data[key]


def load_scenes_file(path: PathLike, validate: bool = True) -> tuple[dict, list[dict]]:
    """``(info, scenes)`` from a ``CLEVR_{split}_scenes.json`` file."""
    with _gc_paused():
        info, scenes = _load(path, "scenes")
        if validate:
            _check_records(scenes, "scenes", _check_scene, path)
    return info, scenes


def load_questions_file(path: PathLike, validate: bool = True) -> tuple[dict, list[dict]]:
    """``(info, questions)`` from a questions file; programs come back normalised.

    ``validate=False`` skips the record checks (but still normalises programs) for speed on
    files already known to be good.
    """
    with _gc_paused():
        info, questions = _load(path, "questions")
        if validate:
            _check_records(questions, "questions", _check_question, path)
        else:
            _normalize_programs(questions, path)
    return info, questions


def load_scenes(path: PathLike, validate: bool = True) -> list[dict]:
    return load_scenes_file(path, validate)[1]


def load_questions(path: PathLike, validate: bool = True) -> list[dict]:
    return load_questions_file(path, validate)[1]


_INFO_START = re.compile(r'\s*\{\s*"info"\s*:\s*')


def read_info(path: PathLike) -> dict:
    """The file's ``info`` object ({} if it has none).

    When ``info`` comes first (as in CLEVR's files and ours) only the head of the file is
    parsed, so this is quick on a 700,000-question file but does not check the records.
    """
    with open(path, encoding="utf-8") as f:
        head = f.read(1 << 16)
    match = _INFO_START.match(head)
    if match:
        try:
            info = json.JSONDecoder().raw_decode(head, match.end())[0]
        except json.JSONDecodeError:
            pass  # info longer than the head, or broken: parse the whole file below
        else:
            if isinstance(info, dict):
                return info
    data = _read_json(path)
    if not isinstance(data, dict):
        raise CLEVRFormatError(f"{path}: expected a top-level object, found {type(data).__name__}")
    info = data.get("info", {})
    if not isinstance(info, dict):
        raise CLEVRFormatError(f"{path}: 'info' must be an object, got {type(info).__name__}")
    return info


# --- writing ------------------------------------------------------------------------------

def _dumps(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _write_atomic(path: PathLike, info: dict, key: str, records: list) -> None:
    """Write ``{"info": info, key: records}``, one record a line, via a synced temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(f'{{"info":{_dumps(info)},\n"{key}":[')
            for i, record in enumerate(records):
                f.write(("\n" if i == 0 else ",\n") + _dumps(record))
            f.write("\n]}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not every platform can open a directory
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _checked(records, key: str, check, path, validate: bool) -> list:
    if not isinstance(records, list):
        raise CLEVRFormatError(f"{path}: {key} must be a list, got {type(records).__name__}")
    records = [dict(r) if isinstance(r, dict) else r for r in records]  # we normalise copies
    if validate:
        _check_records(records, key, check, path)
    elif key == "questions":
        _normalize_programs(records, path)
    return records


def save_scenes(path: PathLike, scenes: list[dict], info: dict | None = None,
                validate: bool = True) -> None:
    """Write a scenes file; the records are checked first, so what is written loads."""
    with _gc_paused():
        scenes = _checked(scenes, "scenes", _check_scene, path, validate)
    _write_atomic(path, info or {}, "scenes", scenes)


def save_questions(path: PathLike, questions: list[dict], info: dict | None = None,
                   validate: bool = True) -> None:
    """Write a questions file, programs in the released ``function``/``value_inputs`` style."""
    with _gc_paused():
        questions = _checked(questions, "questions", _check_question, path, validate)
    _write_atomic(path, info or {}, "questions", questions)
