"""Turning a filled question skeleton into English.

A :class:`Lexicon` holds the words (with synonyms) and the question frames; the renderer
builds noun phrases recursively from the skeleton ("the small cube [that is] left of the
red metal sphere") and drops them into a frame chosen at random. Two lexicons ship:
``CLEVR_LEXICON``, CLEVR-style wording, and ``PARAPHRASE_LEXICON``, wording and vocabulary
the CLEVR-style templates never use (the stand-in for CLEVR-Humans).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from .attributes import ATTRIBUTE_NAMES
from .templates import Family


@dataclass(frozen=True)
class Lexicon:
    name: str
    words: dict          # attribute value (or "thing") -> (singular synonyms, plural synonyms)
    relations: dict      # relation -> synonyms (a preposition phrase: "left of")
    same: dict           # attribute -> (verb sg, verb pl, phrase): ("has", "have", "the same color as")
    frames: dict         # frame key -> tuple of format strings
    that_is_optional: bool = True


def _w(*sg, pl=None):
    return (tuple(sg), tuple(pl) if pl else tuple(s + "s" for s in sg))


CLEVR_LEXICON = Lexicon(
    name="clevr",
    words={
        "large": _w("large", "big"), "small": _w("small", "tiny"),
        "metal": _w("metal", "metallic", "shiny"), "rubber": _w("rubber", "matte"),
        **{c: _w(c) for c in ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")},
        "cube": _w("cube", "block"), "sphere": _w("sphere", "ball"), "cylinder": _w("cylinder"),
        "thing": _w("thing", "object"),
    },
    relations={"left": ("left of", "to the left of", "on the left side of"),
               "right": ("right of", "to the right of", "on the right side of"),
               "front": ("in front of",), "behind": ("behind",)},
    same={"size": ("is", "are", "the same size as"), "color": ("has", "have", "the same color as"),
          "material": ("is", "are", "made of the same material as"),
          "shape": ("has", "have", "the same shape as")},
    frames={
        "count": ("How many {H} are there?", "What number of {H} are there?",
                  "How many {H} are in the scene?", "What is the number of {H}?"),
        "count_pred": ("How many {H} {PV}?", "What number of {H} {PV}?",
                       "How many {Np} are there?", "What is the number of {Np}?"),
        "count_union": ("How many things are either {U1} or {U2}?", "How many objects are {U1} or {U2}?",
                        "What number of things are either {U1} or {U2}?",
                        "What number of objects are {U1} or {U2}?"),
        "exist": ("Are there any {Np}?", "Is there a {N}?", "Is there any {N}?",
                  "Are any {Np} visible?"),
        "exist_pred": ("Are there any {Np}?", "Is there a {N}?", "Does a {N} exist?",
                       "Is there at least one {N}?"),
        "query_color": ("What color is the {N}?", "What is the color of the {N}?",
                        "The {N} has what color?", "There is a {N}; what color is it?"),
        "query_size": ("What size is the {N}?", "How big is the {N}?", "What is the size of the {N}?",
                       "There is a {N}; how big is it?"),
        "query_material": ("What material is the {N}?", "What is the {N} made of?",
                           "What is the material of the {N}?", "There is a {N}; what is it made of?"),
        "query_shape": ("What shape is the {N}?", "What is the shape of the {N}?",
                        "The {N} has what shape?", "There is a {N}; what shape is it?"),
        "equal_color": ("Does the {T1} have the same color as the {T2}?",
                        "Is the color of the {T1} the same as the {T2}?",
                        "Do the {T1} and the {T2} have the same color?",
                        "Is the {T1} the same color as the {T2}?"),
        "equal_size": ("Is the {T1} the same size as the {T2}?", "Does the {T1} have the same size as the {T2}?",
                       "Are the {T1} and the {T2} the same size?",
                       "Is the size of the {T1} the same as the {T2}?"),
        "equal_material": ("Is the {T1} made of the same material as the {T2}?",
                           "Do the {T1} and the {T2} have the same material?",
                           "Does the {T1} have the same material as the {T2}?",
                           "Is the material of the {T1} the same as the {T2}?"),
        "equal_shape": ("Does the {T1} have the same shape as the {T2}?", "Is the {T1} the same shape as the {T2}?",
                        "Do the {T1} and the {T2} have the same shape?",
                        "Is the shape of the {T1} the same as the {T2}?"),
        "equal_integer": ("Is the number of {S1} the same as the number of {S2}?",
                          "Are there the same number of {S1} and {S2}?",
                          "Are there an equal number of {S1} and {S2}?",
                          "Is the number of {S1} equal to the number of {S2}?"),
        "less_than": ("Are there fewer {S1} than {S2}?", "Is the number of {S1} less than the number of {S2}?",
                      "Are there less {S1} than {S2}?", "Is the number of {S1} smaller than the number of {S2}?"),
        "greater_than": ("Are there more {S1} than {S2}?",
                         "Is the number of {S1} greater than the number of {S2}?",
                         "Is the number of {S1} larger than the number of {S2}?",
                         "Are there more {S1} than there are {S2}?"),
    },
)

PARAPHRASE_LEXICON = Lexicon(
    name="paraphrase",
    words={
        "large": _w("huge", "giant", "massive"), "small": _w("little", "miniature", "mini"),
        "metal": _w("glossy", "reflective", "chrome"), "rubber": _w("dull", "non-reflective", "plastic"),
        "gray": _w("grey", "ash-coloured", "slate"), "red": _w("crimson", "scarlet", "tomato-coloured"),
        "blue": _w("cobalt", "sapphire", "ocean-coloured"),
        "green": _w("grass-coloured", "emerald", "leafy"),
        "brown": _w("chocolate", "coffee-coloured", "rust-coloured"),
        "purple": _w("violet", "plum", "lilac"), "cyan": _w("turquoise", "teal", "aqua"),
        "yellow": _w("lemon", "golden", "banana-coloured"),
        "cube": _w("box", "die", "brick", pl=("boxes", "dice", "bricks")),
        "sphere": _w("orb", "globe", "marble"), "cylinder": _w("can", "tube", "drum"),
        "thing": _w("item", "piece", "toy"),
    },
    relations={"left": ("to the left-hand side of", "leftward of"),
               "right": ("to the right-hand side of", "rightward of"),
               "front": ("further forward than", "nearer the front than"),
               "behind": ("further back than", "deeper in the scene than")},
    same={"size": ("matches", "match", "the size of"), "color": ("shares", "share", "the colour of"),
          "material": ("shares", "share", "the substance of"),
          "shape": ("shares", "share", "the form of")},
    frames={
        "count": ("Count the {H}.", "Tell me how many {H} you can see.", "What's the total of {H}?"),
        "count_pred": ("Count the {Np}.", "Tell me how many {Np} you can see.", "What's the total of {Np}?"),
        "count_union": ("How many distinct items are among the {U1} and the {U2}?",
                        "Taking the {U1} together with the {U2}, how many different items is that?",
                        "Tell me how many items are {U1} or {U2}, counting each item only once."),
        "exist": ("Can you see any {Np}?", "Does the picture contain a {N}?", "Is a {N} present?"),
        "exist_pred": ("Can you see any {Np}?", "Does the picture contain a {N}?", "Is a {N} present?"),
        "query_color": ("Which hue does the {N} have?", "Name the colour of the {N}.",
                        "Tell me the colour of the {N}."),
        "query_size": ("Would you call the {N} huge or little?", "Describe the dimensions of the {N}.",
                       "Tell me the size of the {N}."),
        "query_material": ("What substance is the {N} made from?", "Name the material of the {N}.",
                           "Tell me what the {N} is made out of."),
        "query_shape": ("Which form does the {N} have?", "Name the shape of the {N}.",
                        "Tell me the geometric form of the {N}."),
        "equal_color": ("Do the {T1} and the {T2} share a colour?", "Are the {T1} and the {T2} coloured alike?",
                        "Would you say the {T1} matches the {T2} in colour?"),
        "equal_size": ("Are the {T1} and the {T2} of equal bulk?", "Do the {T1} and the {T2} match in size?",
                       "Would you say the {T1} is as bulky as the {T2}?"),
        "equal_material": ("Are the {T1} and the {T2} made from the same stuff?",
                           "Do the {T1} and the {T2} share a substance?",
                           "Would you say the {T1} matches the {T2} in substance?"),
        "equal_shape": ("Do the {T1} and the {T2} share a form?", "Are the {T1} and the {T2} shaped alike?",
                        "Would you say the {T1} matches the {T2} in form?"),
        "equal_integer": ("Do the {S1} and the {S2} appear in equal numbers?",
                          "Is the tally of {S1} identical to the tally of {S2}?",
                          "Would you say there are just as many {S1} as {S2}?"),
        "less_than": ("Do the {S1} number fewer than the {S2}?", "Is the tally of {S1} below that of {S2}?",
                      "Would you say the {S2} outnumber the {S1}?"),
        "greater_than": ("Do the {S1} outnumber the {S2}?", "Is the tally of {S1} above that of {S2}?",
                         "Would you say the {S1} are more numerous than the {S2}?"),
    },
    that_is_optional=False,
)


class _Renderer:
    def __init__(self, family: Family, values: dict, lex: Lexicon, rng: random.Random):
        self.f, self.v, self.lex, self.rng = family, values, lex, rng
        self.mentioned: set[int] = set()   # unique nodes already named: later mentions read "it"

    def pick(self, options):
        return options[self.rng.randrange(len(options))]

    def head(self, desc, plural: bool, other: bool = False) -> str:
        """Description words, CLEVR's order: size colour material shape ('thing' if unnamed)."""
        values = [x for x in desc[:3] if x is not None] + [desc[3] or "thing"]
        words = [self.pick(self.lex.words[x][0]) for x in values[:-1]]
        sg, pl = self.lex.words[values[-1]]
        k = self.rng.randrange(len(sg))
        words.append(pl[k] if plural else sg[k])
        return ("other " if other else "") + " ".join(words)

    def pred(self, i: int, plural: bool):
        """(verb, rest) describing membership of set node ``i``; None for the whole scene."""
        n = self.f.nodes[i]
        verb = "are" if plural else "is"
        if n.fn == "scene":
            return None
        if n.fn == "relate":
            return verb, f"{self.pick(self.lex.relations[self.v[n.slot]])} {self.the(n.inputs[0])}"
        if n.fn.startswith("same_"):
            sg, pl, phrase = self.lex.same[n.fn[5:]]
            return (pl if plural else sg), f"{phrase} {self.the(n.inputs[0])}"
        if n.fn in ("intersect", "union"):
            (_, a), (_, b) = self.pred(n.inputs[0], plural), self.pred(n.inputs[1], plural)
            return verb, (f"both {a} and {b}" if n.fn == "intersect" else f"either {a} or {b}")
        raise ValueError(f"no phrase for {n.fn}")

    def the(self, i: int) -> str:
        """Definite reference to unique node ``i``: 'the <np>' the first time, then 'it'."""
        if i in self.mentioned:
            return "it"
        self.mentioned.add(i)
        return f"the {self.np(i)}"

    def np(self, i: int, plural: bool = False) -> str:
        """Noun phrase (no article) for a unique node or a set node."""
        n = self.f.nodes[i]
        if n.fn == "unique":
            return self.np(n.inputs[0], False)
        if n.fn == "filter":
            inner, desc = n.inputs[0], self.v[n.slot]
        else:
            inner, desc = i, (None, None, None, None)
        other = self.f.nodes[inner].fn.startswith("same_")
        head = self.head(desc, plural, other)
        p = self.pred(inner, plural)
        if p is None:
            return head
        verb, rest = p
        if verb in ("is", "are") and self.lex.that_is_optional and self.rng.random() < 0.5:
            return f"{head} {rest}"
        return f"{head} that {verb} {rest}"

    def fields(self) -> tuple[str, dict]:
        nodes, final = self.f.nodes, self.f.final
        last = nodes[-1]
        if final in ("count", "exist"):
            s = last.inputs[0]
            if nodes[s].fn == "union":
                return "count_union", {"U1": self.branch(nodes[s].inputs[0]),
                                       "U2": self.branch(nodes[s].inputs[1])}
            inner = nodes[s].inputs[0] if nodes[s].fn == "filter" else s
            has_pred = nodes[inner].fn != "scene"
            key = final + ("_pred" if has_pred else "")
            out = {"Np": self.np(s, True)}
            self.mentioned.clear()
            out["N"] = self.np(s, False)
            self.mentioned.clear()
            if final == "count":
                desc = self.v[nodes[s].slot] if nodes[s].fn == "filter" else (None,) * 4
                out["H"] = self.head(desc, True, nodes[inner].fn.startswith("same_"))
                if has_pred:
                    verb, rest = self.pred(inner, True)
                    out["PV"] = f"{verb} {rest}"
            return key, out
        if final.startswith("query_"):
            return final, {"N": self.np(last.inputs[0])}
        a, b = last.inputs
        if final.startswith("equal_") and final != "equal_integer":
            return final, {"T1": self.np(nodes[a].inputs[0]), "T2": self.np(nodes[b].inputs[0])}
        return final, {"S1": self.np(nodes[a].inputs[0], True), "S2": self.np(nodes[b].inputs[0], True)}

    def branch(self, i: int) -> str:
        """One side of a union, as a plural noun phrase ('red cubes', 'things left of the cube')."""
        return self.np(i, True)


def frame_keys(family: Family) -> str:
    """The frame key a family's questions are phrased with (used to count phrasings)."""
    r = _Renderer(family, _dummy_values(family), CLEVR_LEXICON, random.Random(0))
    return r.fields()[0]


def _dummy_values(family: Family) -> dict:
    vals = {}
    for n in family.nodes:
        if n.fn == "filter":
            vals[n.slot] = (None, None, None, None)
        elif n.fn == "relate":
            vals[n.slot] = "left"
    return vals


def render_question(family: Family, values: dict, rng: random.Random,
                    lexicon: Lexicon = CLEVR_LEXICON) -> tuple[str, int]:
    """English text for a filled skeleton, and the index of the phrasing (frame) used."""
    r = _Renderer(family, values, lexicon, rng)
    key, fields = r.fields()
    frames = lexicon.frames[key]
    k = rng.randrange(len(frames))
    text = frames[k].format(**fields)
    return tidy(text), k


def tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\ba other\b", "another", text)
    text = re.sub(r"\ba ([aeiou])", r"an \1", text)
    return text[0].upper() + text[1:]


def vocabulary(lexicon: Lexicon) -> set[str]:
    """Every word the lexicon can produce (lower case)."""
    words: set[str] = set()
    chunks = [s for sg, pl in lexicon.words.values() for s in sg + pl]
    chunks += [s for v in lexicon.relations.values() for s in v]
    chunks += [s for v in lexicon.same.values() for s in v]
    chunks += [re.sub(r"\{\w+\}", " ", s) for v in lexicon.frames.values() for s in v]
    for c in chunks:
        words.update(w for w in re.findall(r"[a-z][a-z\-']*", c.lower()))
    return words


__all__ = ["Lexicon", "CLEVR_LEXICON", "PARAPHRASE_LEXICON", "render_question", "frame_keys",
           "vocabulary", "ATTRIBUTE_NAMES"]
