"""The FiLM layer: feature-wise linear modulation, usable in any network.

    FiLM(x) = γ(z) · x + β(z)

One scale γ and one shift β per feature (channel), predicted from some conditioning input z
(here a question) and broadcast over every other axis of x (space, time). The layer itself has
no parameters; whoever predicts γ and β (a "FiLM generator") owns them.

Layouts and the feature axis (``dim``):
- ``(N, C, H, W)`` images / feature maps: feature axis 1 (channels first, as in PyTorch convs).
- ``(N, T, C)`` sequences (RNN / transformer activations): feature axis -1 (channels last).
- ``(N, C)`` vectors: feature axis 1 (== -1).
With ``dim=None`` this rule is applied: **-1 for 3-D inputs, 1 for every other rank**. Pass an
explicit ``dim`` for anything else, e.g. ``dim=1`` for a Conv1d's ``(N, C, L)``. Axis 0 is
always the batch axis.

γ and β have shape ``(N, C)``, or ``(1, C)`` to use one pair for the whole batch (e.g. the
training-set mean in a test-time ablation).

Parameterisations (what the layer does with the γ it is given; Table 2 of the paper):
- gamma: ``"1+delta"`` γ = 1 + Δγ (the paper's appendix: identity at init when Δγ ≈ 0, the
  default), ``"linear"`` γ as given, ``"sigmoid"`` σ(γ), ``"tanh"`` tanh(γ), ``"exp"`` exp(γ),
  ``"one"`` γ := 1 (the input is ignored and may be None).
- beta: ``"linear"`` β as given, ``"zero"`` β := 0 (the input is ignored and may be None).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

GAMMA_PARAMETERISATIONS: dict[str, Callable[[Tensor], Tensor] | None] = {
    "1+delta": lambda g: 1.0 + g,
    "linear": lambda g: g,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "exp": torch.exp,
    "one": None,  # γ := 1
}
BETA_PARAMETERISATIONS: dict[str, Callable[[Tensor], Tensor] | None] = {
    "linear": lambda b: b,
    "zero": None,  # β := 0
}


def _check_choice(kind: str, value: str, choices: dict) -> None:
    if value not in choices:
        raise ValueError(f"unknown {kind} parameterisation {value!r}; expected one of {', '.join(map(repr, choices))}")


def parameterise(gamma: Tensor | None, beta: Tensor | None,
                 gamma_kind: str = "1+delta", beta_kind: str = "linear") -> tuple[Tensor | None, Tensor | None]:
    """Map raw predictions to the γ and β that multiply and add (None means 1 / 0)."""
    _check_choice("gamma", gamma_kind, GAMMA_PARAMETERISATIONS)
    _check_choice("beta", beta_kind, BETA_PARAMETERISATIONS)
    g_fn, b_fn = GAMMA_PARAMETERISATIONS[gamma_kind], BETA_PARAMETERISATIONS[beta_kind]
    if g_fn is not None and gamma is None:
        raise ValueError(f"gamma parameterisation {gamma_kind!r} needs a gamma tensor, got None")
    if b_fn is not None and beta is None:
        raise ValueError(f"beta parameterisation {beta_kind!r} needs a beta tensor, got None")
    return (g_fn(gamma) if g_fn else None), (b_fn(beta) if b_fn else None)


def feature_axis(x: Tensor, dim: int | None = None) -> int:
    """The (non-negative) feature axis of x: ``dim`` if given, else -1 for 3-D and 1 otherwise."""
    if x.dim() < 2:
        raise ValueError(f"FiLM needs a batch axis and a feature axis; got x of shape {tuple(x.shape)}")
    if dim is None:
        dim = -1 if x.dim() == 3 else 1
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"feature axis dim={dim} is out of range for x of shape {tuple(x.shape)}")
    dim %= x.dim()
    if dim == 0:
        raise ValueError(f"feature axis dim=0 is the batch axis (x of shape {tuple(x.shape)})")
    return dim


def _broadcastable(p: Tensor, name: str, x: Tensor, dim: int) -> Tensor:
    """View a (N, C) or (1, C) parameter so it broadcasts against x along the feature axis."""
    n, c = x.shape[0], x.shape[dim]
    if p.dim() != 2 or p.shape[0] not in (1, n) or p.shape[1] != c:
        raise ValueError(f"{name} must have shape ({n}, {c}) or (1, {c}) for x of shape "
                         f"{tuple(x.shape)} with feature axis {dim}; got {tuple(p.shape)}")
    shape = [1] * x.dim()
    shape[0], shape[dim] = p.shape[0], c
    return p.reshape(shape)


def film(x: Tensor, gamma: Tensor | None, beta: Tensor | None, dim: int | None = None) -> Tensor:
    """γ · x + β with γ, β of shape (N, C) broadcast over every axis of x but 0 and ``dim``.

    ``gamma=None`` means γ = 1 and ``beta=None`` means β = 0. No parameterisation is applied:
    use ``FiLM`` (or ``parameterise``) for that.
    """
    d = feature_axis(x, dim)
    out = x if gamma is None else x * _broadcastable(gamma, "gamma", x, d)
    return out if beta is None else out + _broadcastable(beta, "beta", x, d)


class FiLM(nn.Module):
    """FiLM(x) = γ(z) · x + β(z), with γ and β given per sample and feature.

    >>> layer = FiLM()                      # γ = 1 + Δγ, β as given; feature axis by rank
    >>> y = layer(x, delta_gamma, beta)     # x (N, C, H, W) or (N, T, C) or (N, C); γ, β (N, C)
    """

    def __init__(self, gamma: str = "1+delta", beta: str = "linear", dim: int | None = None):
        super().__init__()
        _check_choice("gamma", gamma, GAMMA_PARAMETERISATIONS)
        _check_choice("beta", beta, BETA_PARAMETERISATIONS)
        self.gamma, self.beta, self.dim = gamma, beta, dim

    def forward(self, x: Tensor, gamma: Tensor | None, beta: Tensor | None) -> Tensor:
        gamma, beta = parameterise(gamma, beta, self.gamma, self.beta)
        return film(x, gamma, beta, self.dim)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma!r}, beta={self.beta!r}, dim={self.dim}"
