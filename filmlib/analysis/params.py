"""The γ and β a FiLM generator predicts for a set of questions (Fig 5, the γ-β scatter).

:func:`collect` runs the generator only (no image is read), so it is cheap: the whole val split
of the cpu scale takes seconds. The values are the ones FiLM multiplies by and adds (the
generator applies the γ parameterisation, e.g. γ = 1 + Δγ).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.clevr import FINAL_FUNCTIONS, QUESTION_TYPES
from ..data.datasets import collate

#: The paper's Fig 5 (CLEVR val, all FiLM layers of the best model pooled).
PAPER_FIG5 = {"gamma_min": -15.0, "gamma_max": 19.0, "gamma_negative": 0.36,
              "beta_min": -9.0, "beta_max": 16.0, "beta_negative": 0.76}


@dataclass
class FiLMParams:
    """γ and β of ``N`` questions for every FiLM layer, with what each question is.

    ``gammas``, ``betas``: (N, K, C) float32, K FiLM-ed blocks of C feature maps;
    ``blocks``: the 0-based ResBlock each of the K layers modulates; ``meta``: per-question
    arrays ``question_index``, ``image_index``, ``family``, ``type``, ``final_function``
    (indices; -1 when unknown), row i describing gammas[i].
    """
    gammas: np.ndarray
    betas: np.ndarray
    blocks: tuple[int, ...]
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.gammas)

    @property
    def final_function_names(self) -> np.ndarray:
        """The last function of each question's program, as a name ("unknown" for -1)."""
        names = np.array(list(FINAL_FUNCTIONS) + ["unknown"])
        return names[self.meta["final_function"]]

    @property
    def type_names(self) -> np.ndarray:
        names = np.array(list(QUESTION_TYPES) + ["unknown"])
        return names[self.meta["type"]]

    def mean(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(γ mean, β mean), each (1, K, C): the per-feature means over these questions (the
        test-time ablation's replacement values when these are training questions)."""
        return (torch.from_numpy(self.gammas.mean(0, keepdims=True)),
                torch.from_numpy(self.betas.mean(0, keepdims=True)))


_META = {"question_indices": "question_index", "image_indices": "image_index", "families": "family",
         "types": "type", "final_functions": "final_function"}


@torch.no_grad()
def collect(model, dataset, *, max_questions: int | None = None, batch_size: int = 512) -> FiLMParams:
    """γ and β of the first ``max_questions`` questions of ``dataset`` (all by default).

    ``dataset`` is a :class:`~filmlib.data.datasets.ClevrQuestionsDataset`; only its questions
    are used, but a dataset with a visual file still reads each item's visual input, so a
    question-only one (no visual file) is the fast choice.
    """
    if model.cfg.n_filmed == 0:
        raise ValueError("this model FiLMs no block: it has no γ and β to collect")
    model.eval()
    n = len(dataset) if max_questions is None else min(max_questions, len(dataset))
    if n == 0:
        raise ValueError("no questions to collect γ and β for (empty dataset)")
    gammas, betas, meta = [], [], {name: [] for name in _META.values()}
    for start in range(0, n, batch_size):
        rows = range(start, min(start + batch_size, n))
        batch = collate([_question_item(dataset, i) for i in rows])
        g, b = model.film_params(batch["questions"].to(_device(model)))
        gammas.append(g.float().cpu().numpy())
        betas.append(b.float().cpu().numpy())
        for key, name in _META.items():
            meta[name].append(batch[key].numpy() if key in batch else np.full(len(rows), -1))
    return FiLMParams(np.concatenate(gammas), np.concatenate(betas), tuple(model.cfg.filmed),
                      {k: np.concatenate(v) for k, v in meta.items()})


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _question_item(dataset, i: int) -> dict:
    """Item ``i`` without its visual input (the questions and their metadata)."""
    item = dataset[i]
    item.pop("visual", None)
    return item


def _stats(values: np.ndarray) -> dict:
    return {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean()),
            "std": float(values.std()), "negative": float((values < 0).mean())}


def param_summary(params: FiLMParams) -> list[dict]:
    """One row per FiLM layer and one for all layers pooled (the paper's Fig 5): the range,
    mean, standard deviation and share of negative values of γ and of β."""
    rows = []
    layers = [(f"block {b + 1}", params.gammas[:, k], params.betas[:, k]) for k, b in enumerate(params.blocks)]
    for name, g, b in layers + [("all", params.gammas, params.betas)]:
        row = {"layer": name}
        row.update({f"gamma_{k}": v for k, v in _stats(g).items()})
        row.update({f"beta_{k}": v for k, v in _stats(b).items()})
        rows.append(row)
    return rows


def plot_histograms(params: FiLMParams, axes=None, bins: int = 100):
    """Fig 5: histograms of γ and of β over all FiLM layers (one step line per layer and the
    pooled histogram filled), log-scaled counts so the tails show."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    K, C = params.gammas.shape[1:]
    layer = np.repeat([f"block {b + 1}" for b in params.blocks], C)[None].repeat(len(params), 0).ravel()
    for ax, name, values in ((axes[0], "γ", params.gammas), (axes[1], "β", params.betas)):
        frame = pd.DataFrame({name: values.ravel(), "layer": layer})
        sns.histplot(frame, x=name, bins=bins, ax=ax, element="step", fill=True, color="0.6", alpha=0.3,
                     linewidth=0, log_scale=(False, True))
        sns.histplot(frame, x=name, hue="layer", bins=bins, ax=ax, element="step", fill=False,
                     log_scale=(False, True), legend=ax is axes[1])
        neg = float((values < 0).mean())
        ax.set_title(f"{name}: range {values.min():.1f} … {values.max():.1f}, {100 * neg:.0f}% negative")
        ax.set_ylabel("count (log)")
        ax.set_ylim(bottom=0.8)
    return axes


def plot_gamma_beta(params: FiLMParams, layer: int = 0, channels=None, ax=None, max_points: int = 2000):
    """γ against β of one FiLM layer: each colour one feature map, each point one question."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.5))
    C = params.gammas.shape[2]
    channels = range(min(C, 8)) if channels is None else channels
    n = min(max_points, len(params))
    for c in channels:
        ax.scatter(params.gammas[:n, layer, c], params.betas[:n, layer, c], s=3, alpha=0.5, label=f"map {c}")
    ax.axhline(0, color="0.6", lw=0.5)
    ax.axvline(0, color="0.6", lw=0.5)
    ax.set(xlabel="γ", ylabel="β", title=f"γ vs β per feature map, block {params.blocks[layer] + 1}")
    ax.legend(markerscale=3, fontsize=7, ncol=2)
    return ax
