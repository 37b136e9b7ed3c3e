"""The question engine: instantiate the 90 families on a scene by search with pruning.

For each image the families are tried in ascending order of how often each has been used
(flattening the family distribution, as CLEVR does). A family is filled by depth-first
search over its slots, executing the partial program as it goes (sets are bitmasks over the
scene's objects, so a step is a handful of integer operations) and pruning a state as soon
as a ``unique`` fails or a constraint breaks. A complete candidate is rejected when its
answer would unbalance the family (CLEVR's two rules, see :class:`AnswerBalancer`), when a
relation in it is not needed to reach the answer (degenerate), or when the image already
has the same question. Every accepted question is re-checked by the reference executor
:func:`filmlib.programs.execute`.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from ..programs import execute
from .attributes import ATTRIBUTE_NAMES, ATTRIBUTES, COLORS, MATERIALS, SHAPES, SIZES
from .templates import FAMILIES, RELATIONS, Family, expand_program
from .text import CLEVR_LEXICON, Lexicon, render_question

_SUBSETS = [tuple(a for k, a in enumerate(range(4)) if m >> k & 1) for m in range(16)]
_ANSWER_SPACE = {
    "count": tuple(str(i) for i in range(11)),
    "bool": ("yes", "no"),
    "query_size": SIZES, "query_color": COLORS, "query_material": MATERIALS, "query_shape": SHAPES,
}
#: Why candidates are refused. Complete candidate questions: ``degenerate`` (a relation is
#: not needed), ``unbalanced`` and ``too_common`` (answer balancing), ``duplicate`` (the image
#: already has this question). Partial states pruned during the search: ``degenerate_pruned``
#: (a description that makes the relation before it unnecessary), ``constraint`` (two slots
#: that must differ, a slot that must be named, two objects that must be distinct),
#: ``unique_failed``. ``no_instantiation``: a family tried on an image that yielded nothing.
REJECTION_REASONS = ("degenerate", "unbalanced", "too_common", "duplicate", "degenerate_pruned",
                     "constraint", "unique_failed", "no_instantiation")


def answer_space(family: Family) -> tuple[str, ...]:
    f = family.final
    if f == "count":
        return _ANSWER_SPACE["count"]
    if f in _ANSWER_SPACE:
        return _ANSWER_SPACE[f]
    return _ANSWER_SPACE["bool"]


class SceneIndex:
    """A scene as bitmasks: one int per attribute value, per relation and object."""

    def __init__(self, scene: dict):
        objs = scene["objects"]
        self.n = len(objs)
        self.all = (1 << self.n) - 1
        self.values = [tuple(o[a] for a in ATTRIBUTE_NAMES) for o in objs]
        self.masks = [{v: 0 for v in ATTRIBUTES[a]} for a in ATTRIBUTE_NAMES]
        for i, vals in enumerate(self.values):
            for k, v in enumerate(vals):
                self.masks[k][v] |= 1 << i
        rel = scene["relationships"]
        self.rel = {r: [sum(1 << j for j in rel[r][i]) for i in range(self.n)] for r in RELATIONS}
        self.same = {a: [self.masks[k][self.values[i][k]] & ~(1 << i) for i in range(self.n)]
                     for k, a in enumerate(ATTRIBUTE_NAMES)}

    def filter(self, mask: int, desc) -> int:
        for k, v in enumerate(desc):
            if v is not None:
                mask &= self.masks[k][v]
        return mask


class _Fail(Exception):
    pass


def _bits(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def _step(idx: SceneIndex, node, outs, values):
    """Execute one skeleton node on already-computed inputs; raises _Fail on a bad unique."""
    fn, ins = node.fn, node.inputs
    if fn == "scene":
        return idx.all
    if fn == "filter":
        return idx.filter(outs[ins[0]], values[node.slot])
    if fn == "unique":
        m = outs[ins[0]]
        if m == 0 or m & (m - 1):
            raise _Fail("unique_failed")
        return m.bit_length() - 1
    if fn == "relate":
        return idx.rel[values[node.slot]][outs[ins[0]]]
    if fn.startswith("same_"):
        return idx.same[fn[5:]][outs[ins[0]]]
    if fn == "union":
        return outs[ins[0]] | outs[ins[1]]
    if fn == "intersect":
        return outs[ins[0]] & outs[ins[1]]
    if fn == "count":
        return bin(outs[ins[0]]).count("1")
    if fn == "exist":
        return outs[ins[0]] != 0
    if fn.startswith("query_"):
        return idx.values[outs[ins[0]]][ATTRIBUTE_NAMES.index(fn[6:])]
    a, b = outs[ins[0]], outs[ins[1]]
    if fn.startswith("equal_"):
        return a == b
    if fn == "less_than":
        return a < b
    if fn == "greater_than":
        return a > b
    raise ValueError(f"unknown function {fn}")


def _answer_str(x) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    return str(x)


class AnswerBalancer:
    """CLEVR's per-family answer balancing.

    A candidate is refused if its answer already occurs more than ``ratio`` times as often as
    the family's second most common answer (``unbalanced``), or more than ``cap`` times
    max(median count, 5) (``too_common``). Counts start at zero for every possible answer and
    are reset with :meth:`reset` (the generator does it at each chunk of images).
    """

    def __init__(self, ratio: float = 1.1, cap: float = 5.0):
        self.ratio, self.cap = ratio, cap
        self.counts: dict[int, Counter] = {}

    def reset(self):
        self.counts.clear()

    def _family(self, family: Family) -> Counter:
        c = self.counts.get(family.index)
        if c is None:
            c = self.counts[family.index] = Counter({a: 0 for a in answer_space(family)})
        return c

    def verdict(self, family: Family, answer: str) -> str | None:
        c = self._family(family)
        ordered = sorted(c.values())
        if c[answer] > self.ratio * ordered[-2]:
            return "unbalanced"
        median = ordered[len(ordered) // 2]
        if c[answer] > self.cap * max(median, 5):
            return "too_common"
        return None

    def add(self, family: Family, answer: str):
        self._family(family)[answer] += 1


@dataclass
class GeneratedQuestion:
    family: Family
    values: dict
    answer: str
    program: list
    text: str
    phrasing: int


@dataclass
class QuestionEngine:
    """Generates balanced questions, one image at a time. Not thread-safe; one per process."""
    rng: random.Random
    lexicon: Lexicon = CLEVR_LEXICON
    families: tuple = FAMILIES
    max_states: int = 400
    balancer: AnswerBalancer = field(default_factory=AnswerBalancer)
    usage: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    check: bool = True

    def reset_counts(self):
        self.balancer.reset()

    # -- search ---------------------------------------------------------------------------
    def _desc_candidates(self, idx: SceneIndex, family: Family, node_i: int, inp: int):
        """Candidate descriptions for a filter slot given its input set."""
        node = family.nodes[node_i]
        banned = {ATTRIBUTE_NAMES.index(a) for a in family.null.get(node.slot, ())}
        members = _bits(inp)
        if self._after_relate[node_i]:
            # The relation just before this filter must be needed: with the whole scene in its
            # place the filter must resolve differently (the degeneracy rule, applied early).
            for desc in self._desc_options(idx, inp, members, banned, node_i):
                here, everywhere = idx.filter(inp, desc), idx.filter(idx.all, desc)
                if here == everywhere and not (here and self._resolves_to[node_i] == "exist"):
                    self.rejected["degenerate_pruned"] += 1
                    continue
                yield desc
            return
        yield from self._desc_options(idx, inp, members, banned, node_i)

    def _desc_options(self, idx, inp, members, banned, node_i):
        rng = self.rng
        if self._feeds_unique[node_i]:
            rng.shuffle(members)
            for o in members:
                vals = idx.values[o]
                subsets = [s for s in _SUBSETS if not banned.intersection(s)]
                rng.shuffle(subsets)
                found = 0
                for s in subsets:
                    desc = tuple(vals[k] if k in s else None for k in range(4))
                    if idx.filter(inp, desc) == 1 << o:
                        yield desc
                        found += 1
                        if found == 2:
                            break
            return
        seen = set()
        for t in range(10):
            if t % 2 == 0 and members:
                vals = idx.values[rng.choice(members)]
                desc = tuple(vals[k] if (k not in banned and rng.random() < 0.5) else None
                             for k in range(4))
            else:
                desc = tuple(rng.choice(ATTRIBUTES[a]) if (k not in banned and rng.random() < 0.4)
                             else None for k, a in enumerate(ATTRIBUTE_NAMES))
            if desc not in seen:
                seen.add(desc)
                yield desc

    def _constraints_ok(self, family: Family, outs, values) -> bool:
        for a, b in family.distinct:
            if a < len(outs) and b < len(outs) and outs[a] == outs[b]:
                return False
        for a, b in family.different:
            if a in values and b in values:
                va, vb = values[a], values[b]
                if isinstance(va, tuple):
                    na = {(k, v) for k, v in enumerate(va) if v is not None}
                    nb = {(k, v) for k, v in enumerate(vb) if v is not None}
                    if na <= nb or nb <= na:
                        return False
                elif va == vb:
                    return False
        for slot in family.named:
            if slot in values and all(v is None for v in values[slot]):
                return False
        return True

    def _search(self, idx: SceneIndex, family: Family, i: int, outs: list, values: dict):
        self._states += 1
        if self._states > self.max_states:
            return None
        nodes = family.nodes
        if i == len(nodes):
            return self._finish(idx, family, outs, values)
        node = nodes[i]
        if node.fn == "filter":
            options = self._desc_candidates(idx, family, i, outs[node.inputs[0]])
        elif node.fn == "relate":
            options = list(RELATIONS)
            self.rng.shuffle(options)
        else:
            try:
                outs.append(_step(idx, node, outs, values))
            except _Fail as e:
                self.rejected[str(e)] += 1
                return None
            if not self._constraints_ok(family, outs, values):
                self.rejected["constraint"] += 1
                outs.pop()
                return None
            found = self._search(idx, family, i + 1, outs, values)
            outs.pop()
            return found
        for value in options:
            values[node.slot] = value
            if not self._constraints_ok(family, outs, values):
                self.rejected["constraint"] += 1
                continue
            outs.append(_step(idx, node, outs, values))
            found = self._search(idx, family, i + 1, outs, values)
            outs.pop()
            if found is not None:
                return found
            if self._states > self.max_states:
                break
        values.pop(node.slot, None)
        return None

    def _finish(self, idx, family, outs, values):
        answer = _answer_str(outs[-1])
        if self._degenerate(idx, family, values, answer):
            self.rejected["degenerate"] += 1
            return None
        why = self.balancer.verdict(family, answer)
        if why:
            self.rejected[why] += 1
            return None
        return dict(values), answer

    def _degenerate(self, idx, family, values, answer) -> bool:
        """True if some relation is not needed: replacing its output by the whole scene leaves
        unchanged the value where its branch resolves (the next ``unique``, ``count`` or
        ``exist``). An ``exist`` that is already true stays true on a superset, so it is exempt.
        """
        nodes = family.nodes
        for r in self._relates:
            resolve = self._resolve[r]
            outs = []
            try:
                for i in range(resolve + 1):
                    outs.append(idx.all if i == r else _step(idx, nodes[i], outs, values))
                reference = []
                for i in range(resolve + 1):
                    reference.append(_step(idx, nodes[i], reference, values))
            except _Fail:
                continue
            if nodes[resolve].fn == "exist" and reference[resolve]:
                continue
            if outs[resolve] == reference[resolve]:
                return True
        return False

    def instantiate(self, scene_index: SceneIndex, family: Family):
        """Fill one family on a scene; returns (values, answer) or None."""
        self._states = 0
        self._feeds_unique = [False] * len(family.nodes)
        consumer = {}
        for i, n in enumerate(family.nodes):
            if n.fn == "unique":
                self._feeds_unique[n.inputs[0]] = True
            for j in n.inputs:
                consumer.setdefault(j, i)
        self._relates = [i for i, n in enumerate(family.nodes) if n.fn == "relate"]
        self._after_relate = [False] * len(family.nodes)
        self._resolves_to = [None] * len(family.nodes)
        for i, n in enumerate(family.nodes):
            if n.fn == "filter" and family.nodes[n.inputs[0]].fn == "relate" and i in consumer:
                nxt = family.nodes[consumer[i]].fn
                if nxt in ("unique", "count", "exist"):
                    self._after_relate[i], self._resolves_to[i] = True, nxt
        self._resolve = {}
        for r in self._relates:
            i = r
            while family.nodes[i].fn not in ("unique", "count", "exist"):
                i = consumer[i]
            self._resolve[r] = i
        return self._search(scene_index, family, 0, [], {})

    # -- per image ------------------------------------------------------------------------
    def questions_for_scene(self, scene: dict, k: int) -> list[GeneratedQuestion]:
        """Up to ``k`` questions on one scene, each of a different family."""
        idx = SceneIndex(scene)
        order = list(self.families)
        self.rng.shuffle(order)
        order.sort(key=lambda f: self.usage[f.index])
        out: list[GeneratedQuestion] = []
        texts = set()
        for family in order:
            if len(out) >= k:
                break
            found = self.instantiate(idx, family)
            if found is None:
                self.rejected["no_instantiation"] += 1
                continue
            values, answer = found
            program = expand_program(family, values)
            text, phrasing = render_question(family, values, self.rng, self.lexicon)
            if text in texts:
                self.rejected["duplicate"] += 1
                continue
            if self.check:
                checked = execute(program, scene)
                if checked != answer:
                    raise AssertionError(
                        f"engine and executor disagree on family {family.name} "
                        f"(image {scene.get('image_index')}): {answer!r} vs {checked!r}")
            texts.add(text)
            self.balancer.add(family, answer)
            self.usage[family.index] += 1
            out.append(GeneratedQuestion(family, values, answer, program, text, phrasing))
        return out
