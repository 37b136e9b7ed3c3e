"""The 90 SynthCLEVR question families, in CLEVR's 9 template groups.

A family is a *program skeleton*: a small graph of nodes whose open parameters are
description slots (``A``, ``B``, ...: a choice of size, colour, material and shape, any of
them possibly left out) and relation slots (``R1``, ``R2``...). The question engine
(:mod:`filmlib.synth.questions`) fills the slots by search; :mod:`filmlib.synth.text` turns
the filled skeleton into English; :func:`expand_program` turns it into a CLEVR program.

These are the project's own templates, written from the published description of CLEVR's
groups (zero/one/two/three hop, single and/or, same relate, integer and attribute
comparison); the per-type totals match CLEVR's: Count 21, Exist 12, Compare Numbers 9,
Query Attribute 32, Compare Attribute 16.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .attributes import ATTRIBUTE_NAMES

RELATIONS = ("left", "right", "front", "behind")
GROUPS = ("zero_hop", "one_hop", "two_hop", "three_hop", "single_and", "single_or",
          "same_relate", "compare_integer", "comparison")


@dataclass(frozen=True)
class Node:
    """One step of a skeleton. ``fn`` is a CLEVR function name, except ``filter`` (a whole
    description slot, expanded to up to four ``filter_*`` nodes) and ``relate`` (whose
    relation is the slot ``slot``)."""
    fn: str
    inputs: tuple[int, ...] = ()
    slot: str | None = None


@dataclass(frozen=True)
class Family:
    index: int
    group: str
    name: str
    nodes: tuple[Node, ...]
    #: description slot -> attributes that must stay unnamed (e.g. the queried one)
    null: dict = field(default_factory=dict)
    #: pairs of ``unique`` node indices that must pick different objects
    distinct: tuple = ()
    #: pairs of slots whose values must differ; for two descriptions, neither may name a
    #: subset of what the other names ("cubes" vs "red cubes" could be answered from the text)
    different: tuple = ()
    #: description slots that must name at least one attribute (else the program would be
    #: another family's)
    named: tuple = ()

    @property
    def final(self) -> str:
        return self.nodes[-1].fn

    @property
    def desc_slots(self) -> tuple[str, ...]:
        return tuple(n.slot for n in self.nodes if n.fn == "filter")


class _Builder:
    """Appends nodes and hands back their indices, so skeletons read like code."""

    def __init__(self):
        self.nodes: list[Node] = []
        self._slots = iter("ABCDEFGH")
        self._rels = iter(("R1", "R2", "R3", "R4"))

    def add(self, fn, *inputs, slot=None) -> int:
        self.nodes.append(Node(fn, tuple(inputs), slot))
        return len(self.nodes) - 1

    def filt(self, inp=None, slot=None) -> int:
        inp = self.add("scene") if inp is None else inp
        return self.add("filter", inp, slot=slot or next(self._slots))

    def obj(self, inp=None, slot=None) -> int:
        return self.add("unique", self.filt(inp, slot))

    def relate(self, obj) -> int:
        return self.add("relate", obj, slot=next(self._rels))

    def slot_of(self, node: int) -> str:
        """Description slot behind a ``unique`` or ``filter`` node."""
        n = self.nodes[node]
        return n.slot if n.fn == "filter" else self.nodes[n.inputs[0]].slot


def _families() -> list[Family]:
    out: list[Family] = []

    def add(group, name, b: _Builder, **kw):
        out.append(Family(len(out), group, name, tuple(b.nodes), **kw))

    def finish(group, stem, b: _Builder, target_set: int, with_exist=True):
        """Count / exist / query x4 on a final set (the hop groups)."""
        for fn in ("count",) + (("exist",) if with_exist else ()):
            bb = _copy(b)
            bb.add(fn, target_set)
            add(group, f"{stem}_{fn}", bb)
        for attr in ATTRIBUTE_NAMES:
            bb = _copy(b)
            u = bb.add("unique", target_set)
            bb.add(f"query_{attr}", u)
            add(group, f"{stem}_query_{attr}", bb, null={bb.slot_of(target_set): (attr,)})

    # zero / one / two / three hop: a chain of relations from a unique anchor.
    for hops, group in enumerate(("zero_hop", "one_hop", "two_hop", "three_hop")):
        b = _Builder()
        cur = None
        for _ in range(hops):
            anchor = b.obj(cur)
            cur = b.relate(anchor)
        target = b.filt(cur)
        finish(group, group, b, target)

    # single_and: objects related to two different anchors at once.
    b = _Builder()
    x, y = b.obj(), b.obj()
    both = b.add("intersect", b.relate(x), b.relate(y))
    target = b.filt(both)
    start = len(out)
    finish("single_and", "and", b, target, with_exist=False)
    for k in range(start, len(out)):
        out[k] = _with(out[k], distinct=((x, y),))

    # single_or: counts over a union, eight shapes of union.
    def or_family(name, make, **kw):
        b = _Builder()
        s = make(b)
        b.add("count", s)
        add("single_or", name, b, **kw)

    or_family("or_filters", lambda b: b.add("union", b.filt(), b.filt()), different=(("A", "B"),))
    or_family("or_related_first", lambda b: b.add("union", b.filt(b.relate(b.obj())), b.filt()),
              named=("B",))
    or_family("or_related_second", lambda b: b.add("union", b.filt(), b.filt(b.relate(b.obj()))),
              named=("C",))

    def same_anchor(b):
        x = b.obj()
        return b.add("union", b.filt(b.relate(x)), b.filt(b.relate(x)))
    or_family("or_same_anchor", same_anchor, different=(("R1", "R2"),), named=("B", "C"))

    def two_anchors(b):
        x = b.obj()
        left = b.filt(b.relate(x))
        y = b.obj()
        return b.add("union", left, b.filt(b.relate(y)))
    or_family("or_two_anchors", two_anchors, named=("B", "D"))

    def filtered_two_anchors(b):
        x, y = b.obj(), b.obj()
        return b.filt(b.add("union", b.relate(x), b.relate(y)))
    or_family("or_either_relation", filtered_two_anchors)
    or_family("or_filter_or_relation", lambda b: b.add("union", b.filt(), b.relate(b.obj())))

    def filtered_one_anchor(b):
        x = b.obj()
        return b.filt(b.add("union", b.relate(x), b.relate(x)))
    or_family("or_two_relations", filtered_one_anchor, different=(("R1", "R2"),))

    # same_relate: other objects sharing an attribute with a unique anchor.
    for attr in ATTRIBUTE_NAMES:
        for fn in ("exist", "count"):
            b = _Builder()
            x = b.obj()
            b.add(fn, b.add(f"same_{attr}", x))
            add("same_relate", f"same_{attr}_{fn}_any", b, null={"A": (attr,)})
            b = _Builder()
            x = b.obj()
            b.add(fn, b.filt(b.add(f"same_{attr}", x)))
            add("same_relate", f"same_{attr}_{fn}", b, null={"A": (attr,), "B": (attr,)},
                named=("B",))
        for q in ATTRIBUTE_NAMES:
            if q == attr:
                continue
            b = _Builder()
            x = b.obj()
            u = b.obj(b.add(f"same_{attr}", x))
            b.add(f"query_{q}", u)
            add("same_relate", f"same_{attr}_query_{q}", b, null={"A": (attr,), "B": (attr, q)})

    # compare_integer: two counts.
    def count_side(b, related):
        return b.add("count", b.filt(b.relate(b.obj())) if related else b.filt())

    for fn in ("equal_integer", "less_than", "greater_than"):
        for name, rel in (("plain", (False, False)), ("one_related", (True, False)),
                          ("both_related", (True, True))):
            b = _Builder()
            c1 = count_side(b, rel[0])
            c2 = count_side(b, rel[1])
            b.add(fn, c1, c2)
            # a plain side must not be a superset of the other side's description
            kw = {"plain": {"different": (("A", "B"),)},
                  "one_related": {"different": (("B", "C"),)}}.get(name, {})
            add("compare_integer", f"{fn}_{name}", b, **kw)

    # comparison: one attribute of two different unique objects.
    for attr in ATTRIBUTE_NAMES:
        for name, rel in (("plain", (False, False)), ("first_related", (True, False)),
                          ("second_related", (False, True)), ("both_related", (True, True))):
            b = _Builder()
            u1 = b.obj(b.relate(b.obj())) if rel[0] else b.obj()
            u2 = b.obj(b.relate(b.obj())) if rel[1] else b.obj()
            b.add(f"equal_{attr}", b.add(f"query_{attr}", u1), b.add(f"query_{attr}", u2))
            add("comparison", f"equal_{attr}_{name}", b, distinct=((u1, u2),),
                null={b.slot_of(u1): (attr,), b.slot_of(u2): (attr,)})
    return out


def _copy(b: _Builder) -> _Builder:
    c = _Builder()
    c.nodes = list(b.nodes)
    used_slots = {n.slot for n in b.nodes if n.slot}
    c._slots = iter([s for s in "ABCDEFGH" if s not in used_slots])
    c._rels = iter([r for r in ("R1", "R2", "R3", "R4") if r not in used_slots])
    return c


def _with(f: Family, **kw) -> Family:
    d = dict(f.__dict__)
    d.update(kw)
    return Family(**d)


FAMILIES: tuple[Family, ...] = tuple(_families())
assert len(FAMILIES) == 90, len(FAMILIES)


def expand_program(family: Family, values: dict) -> list[dict]:
    """The CLEVR program (``function``/``inputs``/``value_inputs`` nodes) of a filled skeleton.

    A description slot becomes one ``filter_<attr>`` node per named attribute, in CLEVR's
    order (size, colour, material, shape); an all-unnamed slot becomes no node at all.
    """
    program: list[dict] = []
    where: list[int] = []           # skeleton node index -> program node index
    for node in family.nodes:
        inputs = [where[i] for i in node.inputs]
        if node.fn == "filter":
            cur = inputs[0]
            for attr, value in zip(ATTRIBUTE_NAMES, values[node.slot]):
                if value is not None:
                    program.append({"function": f"filter_{attr}", "inputs": [cur],
                                    "value_inputs": [value]})
                    cur = len(program) - 1
            where.append(cur)
            continue
        value_inputs = [values[node.slot]] if node.fn == "relate" else []
        program.append({"function": node.fn, "inputs": inputs, "value_inputs": value_inputs})
        where.append(len(program) - 1)
    return program
