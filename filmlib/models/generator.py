"""The FiLM generator: question -> (γ, β) for every FiLM-ed ResBlock.

word embedding -> GRU -> hidden state at the question's last real token -> one linear layer
to 2 x channels per FiLM-ed block, then the γ/β parameterisation (γ = 1 + Δγ by default).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from ..film import parameterise
from .config import FiLMConfig
from .gru import fast_gru_supported, last_states

NULL = 0  # padding token (the authors' vocab: <NULL> 0, <START> 1, <END> 2, <UNK> 3)


def question_lengths(questions: Tensor) -> Tensor:
    """Index of the last non-<NULL> token + 1, per question (N,); errors on an all-padding row."""
    real = questions != NULL                                   # (N, T)
    positions = torch.arange(1, questions.shape[1] + 1, device=questions.device)
    lengths = (real * positions).amax(dim=1)                   # (N,)
    if bool((lengths == 0).any()):
        rows = (lengths == 0).nonzero().flatten().tolist()
        raise ValueError(f"questions {rows[:10]} are all padding (<NULL>=0); every question needs a token")
    return lengths


def init_kaiming(module: nn.Module) -> None:
    """Kaiming-uniform weights for every conv and linear layer (as the authors' code); biases keep
    PyTorch's defaults."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight)


class FiLMGenerator(nn.Module):
    """forward(questions (N, T) long, padded with 0) -> (gammas, betas), each (N, n_filmed, C).

    The γ and β returned are the ones that multiply and add (the parameterisation is applied
    here), so analyses and test-time overrides work on real values.
    """

    def __init__(self, cfg: FiLMConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.n_filmed == 0:  # no FiLM-ed block ("no FiLM in ResBlocks 1-4"): nothing reads the question
            self.embed = self.rnn = self.proj = None
            return
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.rnn = nn.GRU(cfg.embed_dim, cfg.rnn_dim, num_layers=cfg.rnn_layers, batch_first=True)
        self.proj = nn.Linear(cfg.rnn_dim, cfg.n_filmed * 2 * cfg.channels)
        init_kaiming(self)

    def encode(self, questions: Tensor) -> Tensor:
        """The question embedding: the GRU's last-layer state at the last real token, (N, rnn_dim)."""
        if self.rnn is None:
            raise RuntimeError("this model FiLMs no block, so its generator has no question encoder")
        if questions.dim() != 2 or questions.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise ValueError(f"questions must be an integer tensor (N, T); got {questions.dtype} {tuple(questions.shape)}")
        lengths = question_lengths(questions)                  # (N,)
        x = self.embed(questions.long())                       # (N, T, E)
        if fast_gru_supported(self.rnn, x.device):             # CPU: same numbers, ~3x faster
            return last_states(self.rnn, x, lengths)
        # Packing makes the GRU stop at each question's own length: no work on padding, and
        # the final state is the one at the last real token.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)                                # (layers, N, rnn_dim), original order
        return h[-1]                                           # (N, rnn_dim)

    def forward(self, questions: Tensor) -> tuple[Tensor, Tensor]:
        N, C, K = questions.shape[0], self.cfg.channels, self.cfg.n_filmed
        if K == 0:
            empty = torch.zeros(N, 0, C, device=questions.device)
            return empty, empty
        film = self.proj(self.encode(questions)).view(N, K, 2, C)  # (N, K, 2, C)
        gammas, betas = parameterise(film[:, :, 0], film[:, :, 1], self.cfg.gamma, self.cfg.beta)
        if gammas is None:                                     # gamma="one": γ := 1
            gammas = torch.ones_like(film[:, :, 0])
        if betas is None:                                      # beta="zero": β := 0
            betas = torch.zeros_like(film[:, :, 1])
        return gammas, betas                                   # (N, K, C) each
