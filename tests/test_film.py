"""The FiLM layer alone: γ·x + β over the right axis, each parameterisation, clear errors."""
import math

import pytest
import torch

from filmlib import FiLM
from filmlib.film import BETA_PARAMETERISATIONS, GAMMA_PARAMETERISATIONS, feature_axis, film, parameterise

N, C = 3, 5


@pytest.fixture
def gb():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, C, generator=g), torch.randn(N, C, generator=g)


def by_hand(x, gamma, beta, axis):
    """Loop over samples and features: out[n, ..., c, ...] = γ[n, c] x[n, ..., c, ...] + β[n, c]."""
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[axis]):
            idx = [slice(None)] * x.dim()
            idx[0], idx[axis] = n, c
            out[tuple(idx)] = gamma[n, c] * x[tuple(idx)] + beta[n, c]
    return out


@pytest.mark.parametrize("shape, dim, axis", [
    ((N, C, 4, 6), None, 1),      # images: channels first
    ((N, 7, C), None, 2),         # sequences: channels last
    ((N, C), None, 1),            # vectors
    ((N, C, 9), 1, 1),            # Conv1d layout needs an explicit dim
    ((N, 4, 6, C), -1, 3),        # channels-last images
    ((N, 4, C, 6), 2, 2),         # any explicit axis
])
def test_film_is_gamma_x_plus_beta_over_the_feature_axis(gb, shape, dim, axis):
    gamma, beta = gb
    x = torch.randn(shape)
    expected = by_hand(x, gamma, beta, axis)
    torch.testing.assert_close(film(x, gamma, beta, dim), expected)
    torch.testing.assert_close(FiLM("linear", "linear", dim=dim)(x, gamma, beta), expected)


def test_default_axis_rule():
    assert feature_axis(torch.zeros(2, 3, 4, 5)) == 1
    assert feature_axis(torch.zeros(2, 3, 4)) == 2
    assert feature_axis(torch.zeros(2, 3)) == 1
    assert feature_axis(torch.zeros(2, 3, 4), dim=1) == 1


def test_one_pair_for_the_whole_batch(gb):
    gamma, beta = gb
    x = torch.randn(N, C, 4, 4)
    out = film(x, gamma[:1], beta[:1])
    torch.testing.assert_close(out, by_hand(x, gamma[:1].expand(N, C), beta[:1].expand(N, C), 1))


@pytest.mark.parametrize("kind, formula", [
    ("1+delta", lambda g: 1 + g),
    ("linear", lambda g: g),
    ("sigmoid", lambda g: 1 / (1 + math.e ** -g)),
    ("tanh", lambda g: (math.e ** g - math.e ** -g) / (math.e ** g + math.e ** -g)),
    ("exp", lambda g: math.e ** g),
    ("one", lambda g: torch.ones_like(g)),
])
def test_gamma_parameterisations(gb, kind, formula):
    raw_gamma, beta = gb
    x = torch.randn(N, C, 2, 3)
    out = FiLM(gamma=kind)(x, raw_gamma, beta)
    torch.testing.assert_close(out, by_hand(x, formula(raw_gamma), beta, 1))


@pytest.mark.parametrize("kind, formula", [("linear", lambda b: b), ("zero", torch.zeros_like)])
def test_beta_parameterisations(gb, kind, formula):
    gamma, raw_beta = gb
    x = torch.randn(N, 6, C)
    out = FiLM(gamma="linear", beta=kind)(x, gamma, raw_beta)
    torch.testing.assert_close(out, by_hand(x, gamma, formula(raw_beta), 2))


def test_every_parameterisation_is_tested():
    assert set(GAMMA_PARAMETERISATIONS) == {"1+delta", "linear", "sigmoid", "tanh", "exp", "one"}
    assert set(BETA_PARAMETERISATIONS) == {"linear", "zero"}


def test_default_layer_with_zero_delta_and_zero_beta_is_identity():
    x = torch.randn(N, C, 4, 4)
    zeros = torch.zeros(N, C)
    assert torch.equal(FiLM()(x, zeros, zeros), x)
    assert not torch.equal(FiLM()(x, zeros + 0.5, zeros), x)


def test_fixed_parameterisations_ignore_their_input(gb):
    gamma, beta = gb
    x = torch.randn(N, C)
    layer = FiLM(gamma="one", beta="zero")
    assert torch.equal(layer(x, gamma, beta), x)
    assert torch.equal(layer(x, None, None), x)
    with pytest.raises(ValueError, match="needs a gamma"):
        FiLM()(x, None, beta)


def test_gradients_reach_gamma_and_beta():
    x = torch.randn(N, C, 2, 2)
    gamma = torch.randn(N, C, requires_grad=True)
    beta = torch.randn(N, C, requires_grad=True)
    film(x, gamma, beta).sum().backward()
    torch.testing.assert_close(gamma.grad, x.sum(dim=(2, 3)))
    torch.testing.assert_close(beta.grad, torch.full((N, C), 4.0))


@pytest.mark.parametrize("x_shape, p_shape, dim", [
    ((N, C, 4, 4), (N, C + 1), None),   # wrong feature count
    ((N, C, 4, 4), (N + 1, C), None),   # wrong batch
    ((N, 4, C), (N, 4), None),          # 3-D: features are last by default
    ((N, C, 4, 4), (N, C, 1, 1), None), # gamma must be 2-D
])
def test_shape_mismatch_errors_name_the_shapes(x_shape, p_shape, dim):
    x, p = torch.zeros(x_shape), torch.zeros(p_shape)
    with pytest.raises(ValueError) as err:
        film(x, p, None, dim)
    assert str(tuple(x_shape)) in str(err.value) and str(tuple(p_shape)) in str(err.value)
    with pytest.raises(ValueError, match="beta"):
        film(x, None, p, dim)


def test_bad_axis_and_kind_errors():
    with pytest.raises(ValueError, match="batch axis"):
        film(torch.zeros(N, C), torch.zeros(N, C), None, dim=0)
    with pytest.raises(ValueError, match="out of range"):
        film(torch.zeros(N, C), torch.zeros(N, C), None, dim=2)
    with pytest.raises(ValueError, match="feature axis"):
        film(torch.zeros(N), torch.zeros(N, 1), None)
    with pytest.raises(ValueError, match="unknown gamma"):
        FiLM(gamma="softplus")
    with pytest.raises(ValueError, match="unknown beta"):
        parameterise(None, None, "one", "relu")
