"""What FiLM learns (the paper's section 5 and Figures 4-7): one module per figure family.

- :mod:`.params`: the γ and β the generator predicts for a set of questions; their histograms
  and ranges (Fig 5) and the γ-against-β scatter per feature map.
- :mod:`.localisation`: where the globally max-pooled classifier features come from (Fig 4).
- :mod:`.tsne`: t-SNE of a FiLM layer's (γ, β) coloured by the question's last function (Fig 6).
- :mod:`.interventions`: the model run with γ and β changed at test time: γ or β replaced by
  its training-set mean, Gaussian noise on γ, β or both (Fig 7), and the answer distribution
  along an interpolation between two questions' parameters.
- :mod:`.arithmetic` (``zero_shot``): CoGenT questions with an unseen colour–shape pair answered by FiLM
  parameter arithmetic (Figure 10).

Everything here takes a trained :class:`~filmlib.models.FiLMModel` and a
:class:`~filmlib.data.datasets.ClevrQuestionsDataset`; the notebooks only call and plot.
"""
from .interventions import (accuracies, add_noise, interpolate, mean_ablations, noise_curve,
                            replace_with)
from .localisation import overlay, pooled_sources
from .params import PAPER_FIG5, FiLMParams, collect, param_summary, plot_gamma_beta, plot_histograms
from .tsne import plot_tsne, tsne_points
from .arithmetic import swap_questions, zero_shot

__all__ = ["FiLMParams", "PAPER_FIG5", "accuracies", "add_noise", "collect", "interpolate",
           "mean_ablations", "noise_curve", "overlay", "param_summary", "plot_gamma_beta",
           "plot_histograms", "plot_tsne", "pooled_sources", "replace_with", "swap_questions", "tsne_points",
           "zero_shot"]
