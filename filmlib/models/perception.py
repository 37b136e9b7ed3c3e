"""A small perception CNN pre-trained on scene graphs: the role ImageNet ResNet-101 plays in the paper.

The trunk has exactly the shape of the FiLM model's pixel stem (``stem_layers`` x [4x4 conv
stride 2 -> BN -> ReLU], ``channels`` wide): 80x80 images become ``channels`` x 10 x 10 maps.
Linear per-cell heads (1x1 convolutions) read the trunk's maps and predict, for each cell of
the grid, what the scene graph says about it (:func:`filmlib.data.scene_maps.scene_targets`):
objectness, the colour, shape, material and size of the object whose centre falls in the cell,
the centre's offset inside the cell and its depth. Because the heads are linear, the trained
trunk's maps carry those facts linearly; frozen, they are the "pre-trained perception maps"
a FiLM model reads through its features stem; and because the trunk is the pixel stem's
twin, its weights can also initialise a pixel-stem FiLM model for fine-tuning
(:func:`stem_state_dict`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.clevr import ATTRIBUTES
from ..data.scene_maps import ATTRIBUTE_ORDER
from .generator import init_kaiming
from .stem_conv import StemConv2d

#: Head outputs, in channel order: objectness logit, attribute logits, offset (x, y), depth.
HEAD_SIZES = {"objectness": 1, **{a: len(ATTRIBUTES[a]) for a in ATTRIBUTE_ORDER}, "offset": 2, "depth": 1}


@dataclass(frozen=True)
class PerceptionConfig:
    image_size: int = 80       # square input side
    in_channels: int = 3
    channels: int = 64         # trunk width = channels of the cached maps
    stem_layers: int = 3       # stride-2 layers: 80 -> 10

    def __post_init__(self):
        for name in ("image_size", "in_channels", "channels", "stem_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"invalid PerceptionConfig: {name}={getattr(self, name)} must be >= 1")
        if self.image_size % 2 ** self.stem_layers:
            raise ValueError(f"invalid PerceptionConfig: image_size={self.image_size} is not divisible "
                             f"by 2**stem_layers={2 ** self.stem_layers}")

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** self.stem_layers

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PerceptionConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown PerceptionConfig fields: {', '.join(sorted(unknown))}")
        return cls(**d)


class PerceptionNet(nn.Module):
    """forward(images (N, 3, S, S), normalised) -> dict of per-cell outputs, each (N, k, g, g):
    ``maps`` (the trunk's, ``channels`` wide), ``objectness`` (logits, k=1), ``color`` /
    ``shape`` / ``material`` / ``size`` (logits), ``offset`` (k=2), ``depth`` (k=1)."""

    def __init__(self, cfg: PerceptionConfig = PerceptionConfig()):
        super().__init__()
        self.cfg = cfg
        layers, c_in = [], cfg.in_channels
        for _ in range(cfg.stem_layers):           # the FiLM pixel stem's layers, same names
            layers += [StemConv2d(c_in, cfg.channels), nn.BatchNorm2d(cfg.channels), nn.ReLU(inplace=True)]
            c_in = cfg.channels
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.Conv2d(cfg.channels, sum(HEAD_SIZES.values()), 1)
        init_kaiming(self)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        maps = self.trunk(images)
        out = {"maps": maps}
        for name, part in zip(HEAD_SIZES, self.heads(maps).split(list(HEAD_SIZES.values()), dim=1)):
            out[name] = part
        return out


def perception_loss(out: dict[str, Tensor], targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Sum of: binary cross-entropy of objectness over every cell; cross-entropy of each
    attribute over the cells that hold an object; smooth-L1 of offset and depth there.
    ``targets`` as :func:`filmlib.data.scene_maps.scene_targets` gives them (as tensors)."""
    obj = targets["objectness"]                                    # (N, g, g)
    parts = {"objectness": F.binary_cross_entropy_with_logits(out["objectness"][:, 0], obj)}
    attrs = targets["attributes"]                                  # (N, 4, g, g), -1 = none
    for j, name in enumerate(ATTRIBUTE_ORDER):
        parts[name] = F.cross_entropy(out[name], attrs[:, j], ignore_index=-1)
    mask = (attrs[:, 0] >= 0).unsqueeze(1).float()                 # (N, 1, g, g)
    denom = mask.sum().clamp_min(1)
    parts["offset"] = (F.smooth_l1_loss(out["offset"], targets["offset"], reduction="none") * mask).sum() / (2 * denom)
    parts["depth"] = (F.smooth_l1_loss(out["depth"], targets["depth"].unsqueeze(1), reduction="none") * mask).sum() / denom
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def stem_state_dict(net: PerceptionNet) -> dict[str, Tensor]:
    """The trunk's weights under the names of a FiLM model's pixel stem (``network.stem.*``),
    for ``FiLMModel.load_state_dict(..., strict=False)`` when the widths agree."""
    return {f"network.stem.{k}": v.clone() for k, v in net.trunk.state_dict().items()}


__all__ = ["HEAD_SIZES", "PerceptionConfig", "PerceptionNet", "perception_loss", "stem_state_dict"]
