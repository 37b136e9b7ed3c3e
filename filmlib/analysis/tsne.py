"""Fig 6: t-SNE of one FiLM layer's (γ, β), coloured by the question's last function.

The paper (a 6-block model): in the first layer the points cluster by low-level functions, in
the last layer by high-level ones. Each point is one question: the concatenation of the
layer's γ and β (2C values), embedded in 2-D by scikit-learn's t-SNE.
"""
from __future__ import annotations

import numpy as np

from .params import FiLMParams


def tsne_points(params: FiLMParams, layer: int, *, max_points: int = 2000, perplexity: float = 30.0,
                seed: int = 0) -> dict:
    """2-D t-SNE of layer ``layer``'s (γ, β) for a seeded sample of at most ``max_points``
    questions: ``xy`` (n, 2), ``rows`` (n,: rows of ``params``), ``question_index`` and
    ``final_function`` (names) of each point."""
    from sklearn.manifold import TSNE
    K = params.gammas.shape[1]
    if not -K <= layer < K:
        raise ValueError(f"layer={layer}: this model has {K} FiLM layers")
    n = len(params)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_points), replace=False))
    if len(rows) < 3:
        raise ValueError(f"t-SNE needs at least 3 questions, got {len(rows)}")
    x = np.concatenate([params.gammas[rows, layer], params.betas[rows, layer]], axis=1)
    perplexity = min(perplexity, (len(rows) - 1) / 3)     # scikit-learn requires perplexity < n
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return {"xy": xy, "rows": rows, "question_index": params.meta["question_index"][rows],
            "final_function": params.final_function_names[rows], "layer": layer,
            "block": params.blocks[layer]}


def plot_tsne(points: dict, ax=None, title: str | None = None):
    """Scatter of :func:`tsne_points`, one colour per last function."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5))
    sns.scatterplot(x=points["xy"][:, 0], y=points["xy"][:, 1], hue=points["final_function"], s=8,
                    hue_order=sorted(set(points["final_function"])),
                    linewidth=0, ax=ax, palette="tab20")
    ax.set(xticks=[], yticks=[], title=title or f"t-SNE of (γ, β), FiLM layer of block {points['block'] + 1}")
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    return ax
