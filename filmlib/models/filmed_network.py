"""The FiLM-ed network: visual input + (γ, β) -> answer logits.

stem -> N x FiLMedResBlock -> classifier, with coordinate maps concatenated to the input of
every ResBlock, of the classifier and of the features stem (the paper's Figure 3).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..film import FiLM
from .config import FiLMConfig
from .generator import init_kaiming
from .stem_conv import StemConv2d


def coord_maps(x: Tensor) -> Tensor:
    """(N, 2, H, W) maps of x then y position, each in [-1, 1], for a (N, *, H, W) input."""
    N, _, H, W = x.shape
    xs = torch.linspace(-1, 1, W, device=x.device, dtype=x.dtype).view(1, W).expand(H, W)
    ys = torch.linspace(-1, 1, H, device=x.device, dtype=x.dtype).view(H, 1).expand(H, W)
    return torch.stack([xs, ys]).expand(N, 2, H, W)


def pixel_stem(cfg: FiLMConfig) -> nn.Sequential:
    """stem_layers x [4x4 conv stride 2 pad 1 -> BN -> ReLU]: each layer halves the side."""
    layers, c_in = [], cfg.in_channels
    for _ in range(cfg.stem_layers):
        layers += [StemConv2d(c_in, cfg.channels), nn.BatchNorm2d(cfg.channels),
                   nn.ReLU(inplace=True)]  # in place: BN's backward needs its input only
        c_in = cfg.channels
    return nn.Sequential(*layers)


def feature_stem(cfg: FiLMConfig) -> nn.Sequential:
    """[features + coords] -> k x k conv to `channels` -> BN -> ReLU."""
    c_in = cfg.feature_channels + (2 if cfg.coords else 0)
    k = cfg.stem_kernel
    return nn.Sequential(nn.Conv2d(c_in, cfg.channels, k, padding=k // 2), nn.BatchNorm2d(cfg.channels), nn.ReLU())


class FiLMedResBlock(nn.Module):
    """[x + coords] -> 1x1 conv -> ReLU (= residual) -> k x k conv -> BN -> FiLM -> ReLU -> + residual.

    ``film_position`` moves FiLM (Table 2). In a FiLM-ed block the BN has no affine of its own
    (FiLM supplies it); a block without FiLM gets an ordinary affine BN (as the authors' code).
    """

    def __init__(self, cfg: FiLMConfig, filmed: bool):
        super().__init__()
        C, k = cfg.channels, cfg.block_kernel
        self.position = cfg.film_position if filmed else None
        self.residual = cfg.residual
        self.conv1 = nn.Conv2d(C + (2 if cfg.coords else 0), C, 1)
        self.conv2 = nn.Conv2d(C, C, k, padding=k // 2)
        self.bn = nn.BatchNorm2d(C, affine=not filmed) if cfg.batchnorm else nn.Identity()
        self.film = FiLM(gamma="linear", beta="linear", dim=1) if filmed else None  # γ, β come ready-made

    def forward(self, x: Tensor, gamma: Tensor | None = None, beta: Tensor | None = None,
                coords: Tensor | None = None) -> Tensor:
        at = self.position                                     # None: no FiLM in this block
        if at == "before_conv1":
            x = self.film(x, gamma, beta)
        if coords is not None:
            x = torch.cat([x, coords], dim=1)                  # (N, C+2, H, W)
        res = F.relu(self.conv1(x))                            # (N, C, H, W)
        out = self.conv2(res)
        if at == "after_conv2":
            out = self.film(out, gamma, beta)
        out = self.bn(out)
        if at == "after_bn":
            out = self.film(out, gamma, beta)
        out = F.relu(out)
        if at == "after_relu2":
            out = self.film(out, gamma, beta)
        if self.residual:
            out = out + res
        if at == "after_residual":
            out = self.film(out, gamma, beta)
        return out                                             # (N, C, H, W)


class Classifier(nn.Module):
    """[x + coords] -> 1x1 conv -> BN -> ReLU -> global max-pool -> FC -> BN -> ReLU -> answers.
    With ``classifier_pool="max+mean"`` the FC reads the global max and the global mean side by
    side (twice the inputs)."""

    def __init__(self, cfg: FiLMConfig):
        super().__init__()
        P, Hd = cfg.classifier_channels, cfg.classifier_hidden
        self.with_mean = cfg.classifier_pool == "max+mean"
        self.project = nn.Sequential(nn.Conv2d(cfg.channels + (2 if cfg.coords else 0), P, 1), nn.BatchNorm2d(P), nn.ReLU())
        self.mlp = nn.Sequential(nn.Linear(P * (2 if self.with_mean else 1), Hd), nn.BatchNorm1d(Hd), nn.ReLU(),
                                 nn.Linear(Hd, cfg.num_answers))

    def pool(self, fmap: Tensor) -> Tensor:
        """(N, P, H, W) -> (N, P) global max, or (N, 2P) max then mean."""
        top = fmap.amax(dim=(2, 3))
        return torch.cat([top, fmap.mean(dim=(2, 3))], 1) if self.with_mean else top

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.pool(self.project(x)))


class FiLMedNetwork(nn.Module):
    """forward(visual (N, *cfg.input_shape), gammas, betas (N or 1, n_filmed, C)) -> logits (N, A).

    With ``return_features=True`` returns ``(logits, features)``; features holds ``stem``
    (N, C, H, W), ``blocks`` (a list of each block's output), ``classifier_map`` (N, P, H, W: the
    map the global max-pool reads, for localisation plots) and ``pooled`` (N, P; N, 2P with the mean).
    """

    def __init__(self, cfg: FiLMConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = pixel_stem(cfg) if cfg.stem == "pixels" else feature_stem(cfg)
        self.blocks = nn.ModuleList(FiLMedResBlock(cfg, i in cfg.filmed) for i in range(cfg.num_blocks))
        # block i reads (γ, β) number film_slot[i] of the generator's output; None: not FiLM-ed
        self.film_slot = [cfg.filmed.index(i) if i in cfg.filmed else None for i in range(cfg.num_blocks)]
        self.classifier = Classifier(cfg)
        init_kaiming(self)

    def _check_inputs(self, visual: Tensor, gammas: Tensor | None, betas: Tensor | None) -> None:
        c = self.cfg.input_shape[0]
        if visual.dim() != 4 or visual.shape[1] != c:
            what = "images" if self.cfg.stem == "pixels" else "features"
            raise ValueError(f"expected {what} of shape (N, {c}, H, W), e.g. (N, {', '.join(map(str, self.cfg.input_shape))}); "
                             f"got {tuple(visual.shape)}")
        want = (self.cfg.n_filmed, self.cfg.channels)
        for name, p in (("gammas", gammas), ("betas", betas)):
            if self.cfg.n_filmed == 0 and p is None:
                continue
            if p is None or p.dim() != 3 or p.shape[0] not in (1, visual.shape[0]) or tuple(p.shape[1:]) != want:
                got = None if p is None else tuple(p.shape)
                raise ValueError(f"{name} must have shape ({visual.shape[0]} or 1, {want[0]}, {want[1]}); got {got}")

    def forward(self, visual: Tensor, gammas: Tensor | None, betas: Tensor | None,
                return_features: bool = False):
        self._check_inputs(visual, gammas, betas)
        x = visual
        if self.cfg.stem == "features" and self.cfg.coords:
            x = torch.cat([x, coord_maps(x)], dim=1)           # (N, 1024+2, 14, 14)
        x = self.stem(x)                                       # (N, C, H, W)
        stem_out = x
        coords = coord_maps(x) if self.cfg.coords else None    # (N, 2, H, W)
        block_outs = []
        for block, j in zip(self.blocks, self.film_slot):
            g, b = (None, None) if j is None else (gammas[:, j], betas[:, j])  # (N, C) each
            x = block(x, g, b, coords)                         # (N, C, H, W)
            block_outs.append(x)
        if coords is not None:
            x = torch.cat([x, coords], dim=1)                  # (N, C+2, H, W)
        fmap = self.classifier.project(x)                      # (N, P, H, W)
        pooled = self.classifier.pool(fmap)                    # (N, P), or (N, 2P) with the mean
        logits = self.classifier.mlp(pooled)                   # (N, A)
        if not return_features:
            return logits
        return logits, dict(stem=stem_out, blocks=block_outs, classifier_map=fmap, pooled=pooled)
