"""FiLM run with γ and β changed at test time: the paper's test-time ablations and Fig 7.

An *override* is a function ``(gammas, betas, generator) -> (gammas, betas)`` applied to the
generator's output (each (N, K, C)) before the FiLM-ed network reads it; ``generator`` is a
seeded ``torch.Generator`` for the ones that draw noise. :func:`accuracies` scores several
overrides in one pass over a split: each batch's visual input is read and its γ, β computed
once.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..data.datasets import make_loader
from ..train import default_batch

Override = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


def replace_with(gamma: Tensor | None = None, beta: Tensor | None = None) -> Override:
    """γ and/or β replaced by fixed values of shape (1, K, C) (e.g. their training-set mean,
    :meth:`FiLMParams.mean`); None keeps the generator's."""
    def override(g, b, _):
        return (g if gamma is None else gamma.to(g).expand_as(g),
                b if beta is None else beta.to(b).expand_as(b))
    return override


def add_noise(sigma: float, to: str = "gamma") -> Override:
    """Gaussian noise of standard deviation ``sigma`` added to γ, β or both (``to``: "gamma",
    "beta", "both"); each value gets its own draw. ``sigma=0`` changes nothing."""
    if to not in ("gamma", "beta", "both"):
        raise ValueError(f"to={to!r}: expected 'gamma', 'beta' or 'both'")
    if sigma < 0:
        raise ValueError(f"sigma={sigma} must be >= 0")

    def noisy(x, gen):
        return x + sigma * torch.randn(x.shape, generator=gen).to(x)

    def override(g, b, gen):
        if sigma == 0:
            return g, b
        return (noisy(g, gen) if to in ("gamma", "both") else g,
                noisy(b, gen) if to in ("beta", "both") else b)
    return override


@torch.no_grad()
def accuracies(model, dataset, overrides: dict[str, Override | None], *, max_questions: int | None = None,
               batch_size: int = 256, seed: int = 0) -> dict[str, float]:
    """Accuracy of ``model`` on the first ``max_questions`` of ``dataset`` under each override
    (None: the model as trained). The same seed gives the same noise."""
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    correct = {name: 0 for name in overrides}
    n = 0
    for batch in make_loader(dataset, batch_size):
        visual, questions, answers = (t.to(device) for t in default_batch(batch))
        if max_questions is not None and n + len(answers) > max_questions:
            keep = max_questions - n
            visual, questions, answers = visual[:keep], questions[:keep], answers[:keep]
        if len(answers) == 0:
            break
        gammas, betas = model.film_params(questions)
        for name, override in overrides.items():
            g, b = (gammas, betas) if override is None else override(gammas, betas, gen)
            logits = model(visual, gammas=g, betas=b)
            correct[name] += int((logits.argmax(1) == answers).sum())
        n += len(answers)
        if max_questions is not None and n >= max_questions:
            break
    if n == 0:
        raise ValueError("no questions to score (empty dataset)")
    return {name: c / n for name, c in correct.items()}


def mean_ablations(model, dataset, train_params, **kw) -> dict[str, float]:
    """The paper's test-time ablations: accuracy as trained, with γ replaced by its
    training-set mean, and with β replaced by its mean (paper: −65.4 and −1.0 points).
    ``train_params``: :func:`~filmlib.analysis.params.collect` on training questions."""
    g_mean, b_mean = train_params.mean()
    return accuracies(model, dataset, {"as trained": None, "γ := train mean": replace_with(gamma=g_mean),
                                       "β := train mean": replace_with(beta=b_mean)}, **kw)


def noise_curve(model, dataset, sigmas, *, targets=("gamma", "beta", "both"), **kw) -> list[dict]:
    """Fig 7: accuracy against the standard deviation of Gaussian noise added to γ, to β and to
    both; rows ``{"sigma", "target", "accuracy"}``."""
    overrides = {(s, t): add_noise(s, t) for s in sigmas for t in targets}
    acc = accuracies(model, dataset, overrides, **kw)
    return [{"sigma": float(s), "target": t, "accuracy": acc[(s, t)]} for s, t in overrides]


@torch.no_grad()
def interpolate(model, visual: Tensor, question_a: Tensor, question_b: Tensor, steps: int = 11) -> np.ndarray:
    """The answer distribution (steps, num_answers) for one image as FiLM's parameters move in
    a straight line from question A's (first row) to question B's (last row):
    (γ, β) = (1 − t)·(γ_A, β_A) + t·(γ_B, β_B), t = 0 … 1."""
    if steps < 2:
        raise ValueError(f"steps={steps}: need at least the two end points")
    model.eval()
    device = next(model.parameters()).device
    visual = (visual if visual.dim() == 4 else visual[None]).to(device)
    ga, ba = model.film_params(question_a.reshape(1, -1).to(device))
    gb, bb = model.film_params(question_b.reshape(1, -1).to(device))
    t = torch.linspace(0, 1, steps, device=device).view(steps, 1, 1)
    logits = model(visual.expand(steps, *visual.shape[1:]), gammas=(1 - t) * ga + t * gb,
                   betas=(1 - t) * ba + t * bb)
    return torch.softmax(logits.float(), dim=1).cpu().numpy()
