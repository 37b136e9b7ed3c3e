"""CLEVR's attribute vocabulary, as the original generator defines it.

Everything else in :mod:`filmlib.synth` (sampler, renderer, question engine) reads its
attribute sets from here, so a change of vocabulary happens in one place.
"""
from __future__ import annotations

SHAPES = ("cube", "sphere", "cylinder")
COLORS = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
MATERIALS = ("rubber", "metal")
SIZES = ("large", "small")

#: Base albedo of each colour, RGB 0-255 (CLEVR's ``properties.json``).
COLOR_RGB = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}

#: Bounding radius of each size in scene units (the Blender scale of the unit primitive).
SIZE_RADIUS = {"large": 0.7, "small": 0.35}

#: The attribute sets by attribute name (the keys of a scene object).
ATTRIBUTES = {"size": SIZES, "color": COLORS, "material": MATERIALS, "shape": SHAPES}
ATTRIBUTE_NAMES = ("size", "color", "material", "shape")

#: CLEVR-CoGenT: which colours each shape may take in condition A and B. Spheres take any.
COGENT = {
    "A": {"cube": ("gray", "blue", "brown", "yellow"),
          "cylinder": ("red", "green", "purple", "cyan"),
          "sphere": COLORS},
    "B": {"cube": ("red", "green", "purple", "cyan"),
          "cylinder": ("gray", "blue", "brown", "yellow"),
          "sphere": COLORS},
}

#: The 28 answers a CLEVR question can have.
ANSWERS = ("yes", "no") + tuple(str(i) for i in range(11)) + COLORS + SHAPES + MATERIALS + SIZES


def half_extent(shape: str, size: str) -> float:
    """Half the height of an object: its centre's z when it rests on the ground.

    Every shape is CLEVR's unit primitive scaled by the size's ``r``: a sphere of radius r,
    a cylinder of radius r and half-height r, a cube of half-side r. The released scene files
    put every object, cubes included, at z = r, and real cubes measured in the images have
    half-side r (so a cube's footprint reaches r * sqrt(2) at its corners, beyond the radius
    the placement rules use).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return SIZE_RADIUS[size]


def allowed_colors(shape: str, cogent: str | None) -> tuple[str, ...]:
    """Colours a shape may take under a CoGenT condition (``None``: all eight)."""
    if cogent is None:
        return COLORS
    try:
        return COGENT[cogent][shape]
    except KeyError:
        raise ValueError(f"unknown CoGenT condition {cogent!r}; expected 'A' or 'B'") from None
