"""One dataclass holds every knob of the FiLM model; every ablation of Tables 2 and 3 is a field.

Make a variant with ``cfg.variant(num_blocks=6)`` or ``cfg.ablation("beta=0")`` (both are
``dataclasses.replace`` plus validation); never fork the code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..film import BETA_PARAMETERISATIONS, GAMMA_PARAMETERISATIONS

STEMS = ("features", "pixels")
#: How the classifier pools its map over positions: the paper's global max-pool, or the max and
#: the mean side by side (the mean of a ReLU map grows with how many positions fire: a count).
CLASSIFIER_POOLS = ("max", "max+mean")
FILM_POSITIONS = ("after_bn", "after_residual", "after_relu2", "after_conv2", "before_conv1")


class VisualInput:
    """What a config with a stem (``stem``, ``image_size``, ``in_channels``, ``stem_layers``,
    ``feature_channels``, ``feature_size``) derives from it: FiLM's and the baselines' alike."""

    @property
    def map_size(self) -> int:
        """Side of the maps after the stem (for square inputs of the configured size)."""
        return self.image_size // 2 ** self.stem_layers if self.stem == "pixels" else self.feature_size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one visual input: an image (pixels stem) or a feature map (features)."""
        if self.stem == "pixels":
            return (self.in_channels, self.image_size, self.image_size)
        return (self.feature_channels, self.feature_size, self.feature_size)


@dataclass(frozen=True)
class FiLMConfig(VisualInput):
    """The FiLM model (defaults: the paper's best model on ResNet-101 conv4 features)."""
    vocab_size: int = 93               # question tokens, <NULL>=0 <START>=1 <END>=2 <UNK>=3 first
    num_answers: int = 28
    # FiLM generator (linguistic pipeline)
    embed_dim: int = 200
    rnn_dim: int = 4096                # GRU hidden size
    rnn_layers: int = 1
    # stem (visual input -> `channels` maps)
    stem: str = "features"             # "features": ResNet-101 conv4 maps | "pixels": raw image
    image_size: int = 224              # pixels: input side (images are square)
    in_channels: int = 3               # pixels: RGB
    stem_layers: int = 4               # pixels: number of [4x4 conv stride 2 -> BN -> ReLU]
    feature_channels: int = 1024       # features: ResNet-101 conv4 channels
    feature_size: int = 14             # features: map side (ResNet input side = 16 * feature_size)
    stem_kernel: int = 3               # features: [features + coords] -> k x k conv -> BN -> ReLU
    # FiLM-ed network
    channels: int = 128                # width of the stem output and every ResBlock
    num_blocks: int = 4                # Table 3: 1..12
    film_blocks: tuple[int, ...] | None = None  # 0-based indices of FiLM-ed blocks; None = all
    gamma: str = "1+delta"             # see filmlib.film: 1+delta linear sigmoid tanh exp one
    beta: str = "linear"               # linear | zero
    film_position: str = "after_bn"    # where FiLM sits in a ResBlock (Table 2)
    coords: bool = True                # x,y maps in [-1,1] into features stem, blocks, classifier
    block_kernel: int = 3              # the ResBlock's second conv
    residual: bool = True
    batchnorm: bool = True             # the BN inside each ResBlock (the one FiLM follows)
    # classifier
    classifier_channels: int = 512     # 1x1 conv before the global max-pool
    classifier_hidden: int = 1024      # hidden FC layer
    classifier_pool: str = "max"       # "max" (the paper's) | "max+mean" (see CLASSIFIER_POOLS)

    def __post_init__(self):
        if self.film_blocks is not None:  # accept lists (e.g. from JSON), store a sorted tuple
            object.__setattr__(self, "film_blocks", tuple(sorted(set(int(i) for i in self.film_blocks))))
        problems = []
        if self.stem not in STEMS:
            problems.append(f"stem={self.stem!r} is not one of {STEMS}")
        if self.gamma not in GAMMA_PARAMETERISATIONS:
            problems.append(f"gamma={self.gamma!r} is not one of {tuple(GAMMA_PARAMETERISATIONS)}")
        if self.beta not in BETA_PARAMETERISATIONS:
            problems.append(f"beta={self.beta!r} is not one of {tuple(BETA_PARAMETERISATIONS)}")
        if self.classifier_pool not in CLASSIFIER_POOLS:
            problems.append(f"classifier_pool={self.classifier_pool!r} is not one of {CLASSIFIER_POOLS}")
        if self.film_position not in FILM_POSITIONS:
            problems.append(f"film_position={self.film_position!r} is not one of {FILM_POSITIONS}")
        for name in ("block_kernel", "stem_kernel"):
            k = getattr(self, name)
            if k < 1 or k % 2 == 0:
                problems.append(f"{name}={k} must be odd and positive (same-size padding)")
        for name in ("vocab_size", "num_answers", "embed_dim", "rnn_dim", "rnn_layers", "image_size",
                     "in_channels", "feature_channels", "feature_size", "channels", "num_blocks",
                     "classifier_channels", "classifier_hidden"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.stem_layers < 1:
            problems.append(f"stem_layers={self.stem_layers} must be >= 1")
        elif self.stem == "pixels" and self.image_size // 2 ** self.stem_layers < 1:
            problems.append(f"image_size={self.image_size} is too small for {self.stem_layers} stride-2 layers")
        if self.film_blocks is not None and any(not 0 <= i < self.num_blocks for i in self.film_blocks):
            problems.append(f"film_blocks={self.film_blocks} must index blocks 0..{self.num_blocks - 1}")
        if problems:
            raise ValueError("invalid FiLMConfig: " + "; ".join(problems))

    @property
    def filmed(self) -> tuple[int, ...]:
        """The 0-based indices of the FiLM-ed ResBlocks."""
        return tuple(range(self.num_blocks)) if self.film_blocks is None else self.film_blocks

    @property
    def n_filmed(self) -> int:
        return len(self.filmed)

    def variant(self, **changes) -> "FiLMConfig":
        """A copy with some fields changed (validated), e.g. ``cfg.variant(num_blocks=6)``."""
        return dataclasses.replace(self, **changes)

    def ablation(self, name: str) -> "FiLMConfig":
        """The Table 2 variant ``name`` (a key of ``ABLATIONS``) of this config."""
        if name not in ABLATIONS:
            raise KeyError(f"unknown ablation {name!r}; expected one of {', '.join(ABLATIONS)}")
        return self.variant(**ABLATIONS[name])

    def to_dict(self) -> dict:
        """Plain types only (for JSON and ``torch.load(weights_only=True)`` checkpoints)."""
        d = dataclasses.asdict(self)
        d["film_blocks"] = None if self.film_blocks is None else list(self.film_blocks)
        return d

    @classmethod
    def check_fields(cls, names, where: str = "") -> None:
        """Refuse names that are not fields, all named at once (``where``: what holds them)."""
        unknown = set(names) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{where}unknown FiLMConfig fields: {', '.join(sorted(unknown))}")

    @classmethod
    def from_dict(cls, d: dict) -> "FiLMConfig":
        cls.check_fields(d)
        return cls(**d)


# Table 2: each row as changes to the best model. Block numbers in names are the paper's (1-based).
ABLATIONS: dict[str, dict] = {
    "beta=0": dict(beta="zero"),
    "gamma=1": dict(gamma="one"),
    "gamma=sigmoid": dict(gamma="sigmoid"),
    "gamma=tanh": dict(gamma="tanh"),
    "gamma=exp": dict(gamma="exp"),
    "film_after_residual": dict(film_position="after_residual"),
    "film_after_relu2": dict(film_position="after_relu2"),
    "film_after_conv2": dict(film_position="after_conv2"),
    "film_before_conv1": dict(film_position="before_conv1"),
    "no_film_block4": dict(film_blocks=(0, 1, 2)),
    "no_film_blocks3-4": dict(film_blocks=(0, 1)),
    "no_film_blocks2-4": dict(film_blocks=(0,)),
    "no_film_blocks1-4": dict(film_blocks=()),
    # "1x1 conv only": no conv mixes neighbouring positions, so the features stem is 1x1 too.
    "1x1_no_coords": dict(block_kernel=1, stem_kernel=1, coords=False),
    "no_residual": dict(residual=False),
    "no_batchnorm": dict(batchnorm=False),
    "raw_pixels": dict(stem="pixels"),
}

# Table 3: number of ResBlocks (all FiLM-ed): cfg.variant(num_blocks=d) for d in DEPTHS.
DEPTHS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 12)

PRESETS = ("paper", "cpu", "smoke")


def preset(name: str, vocab_size: int, num_answers: int, stem: str | None = None) -> FiLMConfig:
    """The model at a scale; ``stem`` defaults to "features" for paper, "pixels" otherwise.

    - paper: exactly the paper's best model (~59.5M parameters, ~57M of them the generator's).
    - cpu:   the same architecture, narrower, for 2 CPU cores (~0.83M parameters): CLEVR's 3:2
             frames squashed to 80x80 (as the paper squashes to 224x224), 3 stride-2 stem
             layers -> 10x10 maps (a cell is ~24x16 px of a 240x160 frame; objects are 5-13 px
             at 80x80, still resolvable), 64 channels, embedding 128, GRU 256, classifier
             256/256. Forward+backward+Adam at batch 64: ~4.5-7 ms per sample on 2 idle
             threads (~8-12 min per epoch of 100k questions), ~8.5 ms on 1 thread; when another
             process holds a core, 2 threads collapse to ~100 ms per sample: use 1 thread then.
    - smoke: tiny widths and 32x32 images; plumbing only (seconds).
    Every preset's features stem expects 1024x14x14 maps (ResNet-101 conv4 of 224x224 images,
    as ``filmlib.data.features`` computes them); the map size is not built into the weights.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    base = FiLMConfig(vocab_size=vocab_size, num_answers=num_answers)
    if name == "paper":
        return base.variant(stem=stem or "features")
    if name == "cpu":
        return base.variant(stem=stem or "pixels", embed_dim=128, rnn_dim=256, image_size=80,
                            stem_layers=3, channels=64,
                            classifier_channels=256, classifier_hidden=256)
    return base.variant(stem=stem or "pixels", embed_dim=16, rnn_dim=32, image_size=32,
                        stem_layers=2, channels=16,
                        classifier_channels=32, classifier_hidden=32)
