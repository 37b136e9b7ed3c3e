"""CLEVR's functional programs: normalising, checking and executing them on a scene.

A program is a list of nodes ``{"function": str, "inputs": [int], "value_inputs": [str]}`` in
topological order: every input is the index of an *earlier* node. The answer is the last node's
output. CLEVR's released files spell nodes this way; the original generator wrote
``type``/``side_inputs`` instead, and :func:`normalize_program` accepts both.

While a program runs, node outputs are plain Python values:

=========  ===================================================  ====================
kind       meaning                                              Python value
=========  ===================================================  ====================
set        a set of objects                                     ``frozenset`` of object indices
object     one object                                           its index (``int``)
integer    a count                                              ``int``
bool       yes / no                                             ``bool``
size ...   an attribute value (size, color, material, shape)    ``str``
=========  ===================================================  ====================

This module imports only the standard library and :mod:`filmlib.synth.attributes`, so the
data loaders and the question engine can both use it.
"""
from __future__ import annotations

from dataclasses import dataclass

from filmlib.synth.attributes import ATTRIBUTE_NAMES, ATTRIBUTES

RELATIONS = ("left", "right", "front", "behind")

# Node output kinds (attribute values use the attribute's name as their kind).
SET, OBJECT, INTEGER, BOOL = "set", "object", "integer", "bool"

#: The allowed values of each value-input kind.
VALUE_KINDS: dict[str, tuple[str, ...]] = {**ATTRIBUTES, "relation": RELATIONS}


class ProgramError(ValueError):
    """An invalid program, or one that cannot run on a scene (e.g. ``unique`` on two objects).

    ``node`` and ``function`` say where, when known; ``reason`` is the message without them.
    """

    def __init__(self, reason: str, node: int | None = None, function: str | None = None):
        where = ""
        if node is not None:
            where = f"node {node} ({function}): " if function else f"node {node}: "
        super().__init__(where + reason)
        self.reason, self.node, self.function = reason, node, function


@dataclass(frozen=True)
class FunctionSpec:
    """What a program function takes and gives."""

    name: str
    inputs: tuple[str, ...]  # the kind of each input node, in order
    output: str  # the kind of the output
    value_input: str | None = None  # the kind of its single value input, if it takes one

    @property
    def arity(self) -> int:
        return len(self.inputs)


def _function_table() -> dict[str, FunctionSpec]:
    specs = [
        FunctionSpec("scene", (), SET),
        FunctionSpec("unique", (SET,), OBJECT),
        FunctionSpec("relate", (OBJECT,), SET, "relation"),
        FunctionSpec("union", (SET, SET), SET),
        FunctionSpec("intersect", (SET, SET), SET),
        FunctionSpec("count", (SET,), INTEGER),
        FunctionSpec("exist", (SET,), BOOL),
        FunctionSpec("equal_integer", (INTEGER, INTEGER), BOOL),
        FunctionSpec("less_than", (INTEGER, INTEGER), BOOL),
        FunctionSpec("greater_than", (INTEGER, INTEGER), BOOL),
    ]
    for a in ATTRIBUTE_NAMES:
        specs += [
            FunctionSpec(f"filter_{a}", (SET,), SET, a),
            FunctionSpec(f"query_{a}", (OBJECT,), a),
            FunctionSpec(f"same_{a}", (OBJECT,), SET),
            FunctionSpec(f"equal_{a}", (a, a), BOOL),
        ]
    return {s.name: s for s in specs}


#: Every program function by name.
FUNCTIONS: dict[str, FunctionSpec] = _function_table()


# --- normalising and checking -------------------------------------------------------------

def normalize_node(node: dict, index: int = 0) -> dict:
    """One node as ``{"function", "inputs", "value_inputs"}`` (accepts ``type``/``side_inputs``)."""
    if not isinstance(node, dict):
        raise ProgramError(f"a node must be an object, not {type(node).__name__}", index)
    function = node.get("function", node.get("type"))
    if "function" in node and "type" in node and node["type"] != node["function"]:
        raise ProgramError(f"'function' {node['function']!r} and 'type' {node['type']!r} disagree",
                           index)
    if not isinstance(function, str):
        raise ProgramError("missing or non-string 'function' (or 'type')", index)
    inputs = node.get("inputs", [])
    values = node.get("value_inputs", node.get("side_inputs", []))
    if not isinstance(inputs, list):
        raise ProgramError(f"'inputs' must be a list, not {type(inputs).__name__}", index, function)
    if not isinstance(values, list):
        raise ProgramError(f"'value_inputs' must be a list, not {type(values).__name__}",
                           index, function)
    return {"function": function, "inputs": list(inputs), "value_inputs": list(values)}


def normalize_program(program: list) -> list[dict]:
    """A copy of ``program`` with every node as ``{"function", "inputs", "value_inputs"}``."""
    if not isinstance(program, list):
        raise ProgramError(f"a program must be a list of nodes, not {type(program).__name__}")
    return [normalize_node(node, i) for i, node in enumerate(program)]


def _check(program: list) -> tuple[list[dict], list[str]]:
    """Normalise and type-check ``program``; return the nodes and each node's output kind."""
    nodes = normalize_program(program)
    if not nodes:
        raise ProgramError("empty program")
    kinds: list[str] = []
    for i, node in enumerate(nodes):
        name = node["function"]
        spec = FUNCTIONS.get(name)
        if spec is None:
            raise ProgramError(f"unknown function {name!r}", i, name)
        inputs = node["inputs"]
        if len(inputs) != spec.arity:
            raise ProgramError(f"expects {spec.arity} input(s), got {len(inputs)}", i, name)
        for k, j in enumerate(inputs):
            if type(j) is not int or not 0 <= j < i:
                raise ProgramError(f"input {k} is {j!r}, not the index of an earlier node", i, name)
            if kinds[j] != spec.inputs[k]:
                raise ProgramError(f"input {k} (node {j}, {nodes[j]['function']}) gives "
                                   f"{kinds[j]!r}, expected {spec.inputs[k]!r}", i, name)
        values = node["value_inputs"]
        if spec.value_input is None:
            if values:
                raise ProgramError(f"takes no value inputs, got {values!r}", i, name)
        else:
            if len(values) != 1:
                raise ProgramError(f"expects one {spec.value_input} value input, got {values!r}",
                                   i, name)
            allowed = VALUE_KINDS[spec.value_input]
            if values[0] not in allowed:
                raise ProgramError(f"unknown {spec.value_input} {values[0]!r} "
                                   f"(expected one of {', '.join(allowed)})", i, name)
        kinds.append(spec.output)
    return nodes, kinds


def check_program(program: list) -> list[dict]:
    """The normalised program, after checking it statically; raises :class:`ProgramError`.

    Checks: known functions, arity, inputs that point to earlier nodes of the right kind,
    value inputs of the right number and vocabulary. It cannot know whether ``unique`` will
    find exactly one object; that needs a scene.
    """
    return _check(program)[0]


def output_kinds(program: list) -> list[str]:
    """The output kind of every node (``"set"``, ``"object"``, ``"integer"``, ``"bool"``, ...)."""
    return _check(program)[1]


# --- execution ----------------------------------------------------------------------------

class _Failure(Exception):
    """Raised by a handler; :func:`execute_all` adds the node and function."""


def _unique(objects, rels, args, value):
    s = args[0]
    if len(s) != 1:
        raise _Failure(f"expects exactly one object, got {len(s)} {sorted(s)}")
    return next(iter(s))


def _relate(objects, rels, args, value):
    return frozenset(rels[value][args[0]])


def _make_attribute_handlers(a: str) -> dict:
    def filter_(objects, rels, args, value):
        return frozenset(i for i in args[0] if objects[i][a] == value)

    def query(objects, rels, args, value):
        return objects[args[0]][a]

    def same(objects, rels, args, value):
        o = args[0]
        v = objects[o][a]
        return frozenset(j for j, obj in enumerate(objects) if j != o and obj[a] == v)

    def equal(objects, rels, args, value):
        return args[0] == args[1]

    return {f"filter_{a}": filter_, f"query_{a}": query, f"same_{a}": same, f"equal_{a}": equal}


_HANDLERS = {
    "scene": lambda objects, rels, args, value: frozenset(range(len(objects))),
    "unique": _unique,
    "relate": _relate,
    "union": lambda objects, rels, args, value: args[0] | args[1],
    "intersect": lambda objects, rels, args, value: args[0] & args[1],
    "count": lambda objects, rels, args, value: len(args[0]),
    "exist": lambda objects, rels, args, value: len(args[0]) > 0,
    "equal_integer": lambda objects, rels, args, value: args[0] == args[1],
    "less_than": lambda objects, rels, args, value: args[0] < args[1],
    "greater_than": lambda objects, rels, args, value: args[0] > args[1],
}
for _a in ATTRIBUTE_NAMES:
    _HANDLERS.update(_make_attribute_handlers(_a))
assert _HANDLERS.keys() == FUNCTIONS.keys()


def _run(nodes: list[dict], scene: dict) -> list:
    objects = scene["objects"]
    rels = scene["relationships"]
    outputs: list = []
    i = 0
    try:
        for i, node in enumerate(nodes):
            values = node["value_inputs"]
            outputs.append(_HANDLERS[node["function"]](
                objects, rels, [outputs[j] for j in node["inputs"]], values[0] if values else None))
    except _Failure as failure:
        raise ProgramError(str(failure), i, nodes[i]["function"]) from None
    return outputs


def execute_all(program: list, scene: dict) -> list:
    """Every node's output on ``scene`` (sets as ``frozenset`` of object indices, objects as
    their index, counts as ``int``, yes/no as ``bool``, attribute values as ``str``).

    Raises :class:`ProgramError` if the program is invalid or a ``unique`` finds a number of
    objects other than one.
    """
    return _run(check_program(program), scene)


def answer_string(value, kind: str) -> str:
    """A node output of ``kind`` as a CLEVR answer (``"yes"``/``"no"``, ``"3"``, ``"red"``)."""
    if kind == BOOL:
        return "yes" if value else "no"
    if kind == INTEGER:
        return str(value)
    if kind in ATTRIBUTES:
        return value
    raise ProgramError(f"a program must end in an answer, not a {kind}")


def execute(program: list, scene: dict) -> str:
    """The answer of ``program`` on ``scene`` as CLEVR writes it (``"yes"``, ``"2"``, ``"cube"``)."""
    nodes, kinds = _check(program)
    if kinds[-1] not in (BOOL, INTEGER) and kinds[-1] not in ATTRIBUTES:
        raise ProgramError(f"a program must end in an answer, not a {kinds[-1]}",
                           len(nodes) - 1, nodes[-1]["function"])
    return answer_string(_run(nodes, scene)[-1], kinds[-1])
