"""FiLMModel = FiLMGenerator (question -> γ, β) + FiLMedNetwork (visual input, γ, β -> answer)."""
from __future__ import annotations

from torch import Tensor, nn

from .config import FiLMConfig
from .filmed_network import FiLMedNetwork
from .generator import FiLMGenerator


class FiLMModel(nn.Module):
    """forward(visual, questions) -> logits (N, num_answers).

    ``visual`` is (N, 3, S, S) normalised images for the pixels stem or (N, 1024, 14, 14)
    ResNet-101 conv4 features; ``questions`` is (N, T) long, <START> ... <END> padded with 0.

    Test-time ablations: pass ``gammas`` and/or ``betas`` (N or 1, n_filmed, C) to use them
    instead of the generator's, e.g. the training-set mean of β, or γ plus Gaussian noise
    (``g, b = model.film_params(q); model(v, q, gammas=g + 0.1 * torch.randn_like(g))``).
    """

    def __init__(self, cfg: FiLMConfig):
        super().__init__()
        self.cfg = cfg
        self.generator = FiLMGenerator(cfg)
        self.network = FiLMedNetwork(cfg)

    def compile_parts(self) -> tuple[nn.Module, ...]:
        """What ``torch.compile`` should compile for training: the FiLM-ed network, where it fuses
        batch norm, FiLM's affine, ReLU and the residual sum (forward and backward). Not the
        generator: its GRU recurrence is a hand-written autograd function (filmlib.models.gru),
        which TorchDynamo cannot trace (it crashed the process in torch 2.14)."""
        return (self.network,)

    def film_params(self, questions: Tensor) -> tuple[Tensor, Tensor]:
        """(gammas, betas), each (N, n_filmed, C): the values FiLM multiplies by and adds."""
        return self.generator(questions)

    def forward(self, visual: Tensor, questions: Tensor | None = None,
                gammas: Tensor | None = None, betas: Tensor | None = None,
                return_features: bool = False):
        """logits, or (logits, features) with ``return_features`` (see FiLMedNetwork), where
        features also holds the ``gammas`` and ``betas`` used."""
        if self.cfg.n_filmed and (gammas is None or betas is None):
            if questions is None:
                raise ValueError("questions are needed unless both gammas and betas are given")
            g, b = self.generator(questions)
            gammas = g if gammas is None else gammas
            betas = b if betas is None else betas
        out = self.network(visual, gammas, betas, return_features=return_features)
        if return_features:
            logits, features = out
            return logits, dict(features, gammas=gammas, betas=betas)
        return out


def param_count(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
