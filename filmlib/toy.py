"""A toy task for the FiLM layer alone (notebook 01): one network, many readouts.

A conditioning input ``task`` (one of K) picks which of K hidden linear rules labels a point
``x``: ``y = [w_task · x > 0]``. Every model shares the same trunk ``h = ReLU(W x)`` of width
H and differs only in how the task enters:

- ``film``:   ``v · ReLU(γ_task ⊙ h + β_task)`` — FiLM: a per-task scale and shift of each feature;
- ``bias``:   ``v · ReLU(h + β_task)``          — conditional biasing only (γ := 1);
- ``concat``: ``v · ReLU(W' [h ; e_task])``     — concatenating a task embedding, then a layer.

Concatenation followed by a linear layer *is* a conditional bias (``W'[h; e] = W'_h h + W'_e e``),
which is the point the FiLM paper and Dumoulin et al. (Distill 2018) make: scaling lets one
set of features serve every task by re-weighting, while a bias can only switch features on
and off, so with the same width the biased models must split the trunk between tasks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .film import FiLM


@dataclass(frozen=True)
class ToyTask:
    num_tasks: int = 32
    dim: int = 12
    seed: int = 0

    def rules(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.num_tasks, self.dim, generator=g)       # (K, D)

    def sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(10_000 + seed)
        x = torch.randn(n, self.dim, generator=g)                        # (N, D)
        task = torch.randint(self.num_tasks, (n,), generator=g)          # (N,)
        y = ((x * self.rules()[task]).sum(1) > 0).long()                 # (N,)
        return x, task, y


class ConditionedNet(nn.Module):
    """Shared trunk + one of three ways to condition on the task."""

    def __init__(self, kind: str, task: ToyTask, hidden: int = 16):
        super().__init__()
        if kind not in ("film", "bias", "concat"):
            raise ValueError(f"kind must be film, bias or concat, not {kind!r}")
        self.kind = kind
        self.trunk = nn.Linear(task.dim, hidden)
        if kind == "concat":
            self.embed = nn.Embedding(task.num_tasks, hidden)
            self.mix = nn.Linear(2 * hidden, hidden)
        else:
            self.params = nn.Embedding(task.num_tasks, 2 * hidden)       # (γ, β) per task
            nn.init.zeros_(self.params.weight)
            self.film = FiLM(gamma="1+delta" if kind == "film" else "one", beta="linear")
        self.out = nn.Linear(hidden, 2)

    def forward(self, x, task):
        h = F.relu(self.trunk(x))                                          # (N, H)
        if self.kind == "concat":
            h = self.mix(torch.cat([h, self.embed(task)], 1))
        else:
            gamma, beta = self.params(task).chunk(2, dim=1)                # (N, H) each
            h = self.film(h, gamma, beta)
        return self.out(F.relu(h))


def train_toy(kind: str, task: ToyTask = ToyTask(), *, hidden: int = 16, steps: int = 2000,
              batch: int = 128, lr: float = 3e-3, eval_every: int = 100, seed: int = 0) -> dict:
    """Train one conditioning scheme; returns its parameter count and test-accuracy curve."""
    torch.manual_seed(seed)
    model = ConditionedNet(kind, task, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, tt, yt = task.sample(4000, seed=1_000 + seed)
    curve = []
    for step in range(1, steps + 1):
        x, t, y = task.sample(batch, seed=step + 100_000 * seed)
        loss = F.cross_entropy(model(x, t), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                acc = (model(xt, tt).argmax(1) == yt).float().mean().item()
            curve.append((step, acc))
    return {"kind": kind, "hidden": hidden, "params": sum(p.numel() for p in model.parameters()),
            "curve": curve, "final_accuracy": curve[-1][1], "model": model}


def compare(task: ToyTask = ToyTask(), kinds=("film", "bias", "concat"), seeds=(0, 1, 2), **kw) -> list[dict]:
    """Every scheme over several seeds (the notebook plots mean and spread)."""
    return [train_toy(k, task, seed=s, **kw) for k in kinds for s in seeds]
