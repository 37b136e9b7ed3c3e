"""Fig 4: where the globally max-pooled features come from.

The classifier max-pools each of its P feature maps over the whole grid, so each pooled value
comes from one cell. The share of the P values each cell supplies, drawn over the image, shows
which regions the answer is read from; the paper finds them near the objects the question is
about. (A model with ``classifier_pool="max+mean"`` also reads each map's mean, which comes from
every cell; this shows its max half only.)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


@torch.no_grad()
def pooled_sources(model, visual: Tensor, questions: Tensor | None, *, gammas: Tensor | None = None,
                   betas: Tensor | None = None) -> Tensor:
    """(N, H, W): for each question, the fraction of the classifier's max-pooled features whose
    maximum lies in each cell of the final grid (each map sums to 1). A feature map that is zero
    everywhere (it follows a ReLU) has no place its maximum comes from and is left out; a question
    with no positive feature gets a map of zeros. ``gammas``/``betas``: use these instead of the
    generator's (both given: ``questions`` may be None)."""
    model.eval()
    _, features = model(visual, questions, gammas=gammas, betas=betas, return_features=True)
    fmap = features["classifier_map"].float().cpu()            # (N, P, H, W)
    N, P, H, W = fmap.shape
    flat = fmap.flatten(2)
    where = flat.argmax(2)                                     # (N, P): the cell of each max
    counted = (flat.amax(2) > 0).float()                       # (N, P): maps with a positive maximum
    counts = torch.zeros(N, H * W).scatter_add_(1, where, counted)
    return (counts / counted.sum(1, keepdim=True).clamp(min=1)).view(N, H, W)


def overlay(image: np.ndarray, heat, ax=None, alpha: float = 0.55, cmap: str = "magma"):
    """Draw ``image`` (H, W, 3 uint8, the original frame) with ``heat`` (h, w) stretched over
    it, as the model's square input stretches the frame."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3))
    heat = np.asarray(heat, dtype=np.float32)
    h, w = image.shape[:2]
    ax.imshow(image)
    ax.imshow(heat / max(float(heat.max()), 1e-12), cmap=cmap, alpha=alpha, extent=(0, w, h, 0),
              interpolation="bilinear")
    ax.set_axis_off()
    return ax
