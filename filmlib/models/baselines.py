"""The baselines of the paper's Table 1, as in the CLEVR paper (Johnson et al. 2017) and its
authors' public code (the facts: layer sizes, pooling, attention equations, learning rate).

- ``QTypeBaseline``: the most frequent training answer of the question's family (no image, no
  words: a lookup table filled by ``fit``; it is counted, not trained).
- ``LSTMBaseline``: question only. Word vectors 300 -> 2-layer LSTM 256 -> the state at the last
  real token -> MLP 1024 -> answers.
- ``CNNLSTMBaseline``: image maps -> 1x1 conv to 512 -> ReLU -> 2x2 max-pool -> flatten,
  concatenated with the LSTM's state -> MLP 1024 -> answers.
- ``CNNLSTMSABaseline``: image maps -> 1x1 conv to the question size (256), no activation; two
  stacked-attention hops (attention dim 512): ``h = tanh(Wv v + Wu u)``,
  ``p = softmax over positions of Wp h``, ``u <- u + sum p v``; MLP 1024 -> answers.

The neural ones take the same visual input as FiLM: ``stem="features"`` reads ResNet-101 conv4
maps (1024x14x14) directly, as the CLEVR authors' baselines did; ``stem="pixels"`` puts FiLM's
pixel stem (``stem_layers`` x [4x4 conv stride 2 -> BN -> ReLU]) in front, trained end to end.
All have ``forward(visual, questions) -> logits``, so ``filmlib.train.Trainer`` and
``filmlib.evaluate`` treat them exactly as FiLM.

The sizes are those of the authors' released code (facebookresearch/clevr-iep), which differ from
the CLEVR paper's tuned runs in places (there, only CNN+LSTM+SA read conv4 maps, the others pooled
2048-d ResNet features; LSTMs of 512 or 1024 units; MLPs with dropout). The CLEVR paper's Q-type
groups questions by *type* (the program's last function, 13 of them); Table 1's issue asks for the
*family* (90), the default here; ``qtype_by="final_function"`` gives the paper's grouping. Every model is built from one
``BaselineConfig``; ``baseline_preset(kind, scale, ...)`` sizes it like FiLM's preset of the scale.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import PRESETS, STEMS, VisualInput, preset
from .filmed_network import pixel_stem
from .generator import question_lengths

__all__ = ["BASELINES", "BaselineConfig", "baseline_preset", "build_baseline", "QTypeBaseline",
           "LSTMBaseline", "CNNLSTMBaseline", "CNNLSTMSABaseline", "StackedAttention"]

BASELINES = ("qtype", "lstm", "cnn_lstm", "cnn_lstm_sa")
# the row names of the paper's Table 1
LABELS = {"qtype": "Q-type baseline", "lstm": "LSTM", "cnn_lstm": "CNN+LSTM", "cnn_lstm_sa": "CNN+LSTM+SA"}


@dataclass(frozen=True)
class BaselineConfig(VisualInput):
    """One baseline (defaults: the CLEVR paper's sizes, on ResNet-101 conv4 features)."""
    kind: str = "cnn_lstm_sa"          # qtype | lstm | cnn_lstm | cnn_lstm_sa
    vocab_size: int = 93
    num_answers: int = 28
    num_families: int = 90             # qtype: one answer per question family (or per final function)
    qtype_by: str = "family"           # qtype: "family" (90 groups) | "final_function" (13, the CLEVR paper's "type")
    # question encoder
    wordvec_dim: int = 300
    rnn_dim: int = 256
    rnn_layers: int = 2
    # visual input, as FiLMConfig
    stem: str = "features"
    image_size: int = 224
    in_channels: int = 3
    stem_layers: int = 4
    channels: int = 128                # pixels: width of the stem's maps
    feature_channels: int = 1024
    feature_size: int = 14
    # heads
    proj_dim: int = 512                # CNN+LSTM: 1x1 conv width before the 2x2 max-pool
    attn_dim: int = 512                # CNN+LSTM+SA: attention hidden size
    attn_hops: int = 2
    fc_dim: int = 1024                 # the classifier's hidden layer
    # the authors' optimiser for these models (the Trainer's lr and weight decay)
    lr: float = 5e-4
    weight_decay: float = 0.0

    def __post_init__(self):
        problems = []
        if self.qtype_by not in ("family", "final_function"):
            problems.append(f"qtype_by={self.qtype_by!r} is not 'family' or 'final_function'")
        if self.kind not in BASELINES:
            problems.append(f"kind={self.kind!r} is not one of {BASELINES}")
        if self.stem not in STEMS:
            problems.append(f"stem={self.stem!r} is not one of {STEMS}")
        for name in ("vocab_size", "num_answers", "num_families", "wordvec_dim", "rnn_dim", "rnn_layers",
                     "proj_dim", "attn_dim", "fc_dim", "channels", "stem_layers"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.attn_hops < 0:
            problems.append(f"attn_hops={self.attn_hops} must be >= 0")
        if self.stem == "pixels" and self.image_size // 2 ** self.stem_layers < 2 and self.kind == "cnn_lstm":
            problems.append(f"image_size={self.image_size} leaves maps too small for the 2x2 max-pool")
        if problems:
            raise ValueError("invalid BaselineConfig: " + "; ".join(problems))

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    @property
    def map_channels(self) -> int:
        """Channels of the image maps the heads read."""
        return self.channels if self.stem == "pixels" else self.feature_channels

    def variant(self, **changes) -> "BaselineConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {"model": "baseline", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "BaselineConfig":
        d = {k: v for k, v in d.items() if k != "model"}
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown BaselineConfig fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def baseline_preset(kind: str, scale: str, vocab_size: int, num_answers: int, stem: str | None = None,
                    num_families: int = 90) -> BaselineConfig:
    """``kind`` at a scale, with the visual input of FiLM's preset of that scale.

    - paper: the CLEVR paper's sizes (word vectors 300, LSTM 2x256, conv 512, attention 512, MLP 1024).
    - cpu:   every part narrowed as FiLM's cpu preset narrows its own, so that all models of
             Table 1 are sized alike: the question encoder (word vectors 128, one LSTM layer of
             256: FiLM's cpu GRU has 128-d embeddings and 256 units) and the heads (FiLM's cpu
             classifier is a 1x1 conv of 256 and an MLP of 256, the paper's 512 and 1024: so
             CNN+LSTM's conv is 256, the attention dim 256, every MLP 256). At the paper's head
             sizes CNN+LSTM had 14M parameters (its MLP over 512 x 5 x 5 pooled maps), most of its
             step on 2 cores and a checkpoint of 170 MB (docs/performance.md). FiLM's cpu visual
             input (80x80 pixels, or the 64x10x10 maps).
    - smoke: tiny widths; plumbing only.
    """
    if scale not in PRESETS:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(PRESETS)}")
    film = preset(scale, vocab_size, num_answers, stem)
    cfg = BaselineConfig(kind=kind, vocab_size=vocab_size, num_answers=num_answers, num_families=num_families,
                         stem=film.stem, image_size=film.image_size, in_channels=film.in_channels,
                         stem_layers=film.stem_layers, channels=film.channels,
                         feature_channels=film.feature_channels, feature_size=film.feature_size)
    if scale == "cpu":
        cfg = cfg.variant(wordvec_dim=film.embed_dim, rnn_dim=film.rnn_dim, rnn_layers=1,
                          proj_dim=film.classifier_channels, attn_dim=film.classifier_channels,
                          fc_dim=film.classifier_hidden)
    if scale == "smoke":
        cfg = cfg.variant(wordvec_dim=16, rnn_dim=16, rnn_layers=2, proj_dim=16, attn_dim=16, fc_dim=32)
    return cfg


def build_baseline(cfg: BaselineConfig | dict) -> nn.Module:
    if isinstance(cfg, dict):
        cfg = BaselineConfig.from_dict(cfg)
    return {"qtype": QTypeBaseline, "lstm": LSTMBaseline, "cnn_lstm": CNNLSTMBaseline,
            "cnn_lstm_sa": CNNLSTMSABaseline}[cfg.kind](cfg)


def _check_questions(questions: Tensor):
    if questions.dim() != 2 or questions.is_floating_point():
        raise ValueError(f"questions must be an integer tensor (N, T); got {questions.dtype} {tuple(questions.shape)}")


class QuestionLSTM(nn.Module):
    """Word vectors -> multi-layer LSTM -> the last layer's state at each question's last real token."""

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.wordvec_dim)
        self.rnn = nn.LSTM(cfg.wordvec_dim, cfg.rnn_dim, num_layers=cfg.rnn_layers, batch_first=True)

    def forward(self, questions: Tensor) -> Tensor:
        _check_questions(questions)
        lengths = question_lengths(questions).clamp(min=1).to(questions.device)
        # One pass over the padded batch, then each question's state at its last real token: the
        # same numbers as a packed sequence's final state (the LSTM runs forward only, so trailing
        # padding never reaches earlier steps), and on the CPU about twice as fast (oneDNN runs a
        # packed batch step by step per length).
        out, _ = self.rnn(self.embed(questions.long()))        # (N, T, rnn_dim): the last layer
        return out[torch.arange(len(lengths), device=out.device), lengths - 1]


def classifier(in_dim: int, cfg: BaselineConfig) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, cfg.fc_dim), nn.ReLU(inplace=True), nn.Linear(cfg.fc_dim, cfg.num_answers))


class _Visual(nn.Module):
    """The image maps a baseline reads: features as given, or FiLM's pixel stem on images."""

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = pixel_stem(cfg) if cfg.stem == "pixels" else nn.Identity()

    def forward(self, visual: Tensor) -> Tensor:
        if visual.dim() != 4 or tuple(visual.shape[1:]) != self.cfg.input_shape:
            what = "images" if self.cfg.stem == "pixels" else "features"
            raise ValueError(f"expected {what} of shape (N, {', '.join(map(str, self.cfg.input_shape))}); "
                             f"got {tuple(visual.shape)}")
        return self.stem(visual)


class QTypeBaseline(nn.Module):
    """Answers each question with the most frequent training answer of its family.

    ``fit(families, answers)`` counts; ``answer_families(families)`` looks up. Families never
    seen in training get the most frequent answer overall. ``forward(visual, questions,
    families)`` returns one-hot scores so the evaluator can treat it as any model; it needs the
    families, which ``filmlib.experiment`` passes from the dataset.
    """

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("table", torch.full((cfg.num_families,), -1, dtype=torch.long))
        self.register_buffer("fallback", torch.tensor(-1, dtype=torch.long))

    @property
    def fitted(self) -> bool:
        return int(self.fallback) >= 0

    def fit(self, families, answers) -> "QTypeBaseline":
        families, answers = np.asarray(families, np.int64), np.asarray(answers, np.int64)
        if families.shape != answers.shape or families.size == 0:
            raise ValueError(f"need as many families as answers, at least one; got {families.shape} and {answers.shape}")
        if families.min() < 0 or families.max() >= self.cfg.num_families:
            raise ValueError(f"families must lie in 0..{self.cfg.num_families - 1}; got {families.min()}..{families.max()}")
        if answers.min() < 0 or answers.max() >= self.cfg.num_answers:
            raise ValueError(f"answers must lie in 0..{self.cfg.num_answers - 1}; got {answers.min()}..{answers.max()}")
        counts = np.zeros((self.cfg.num_families, self.cfg.num_answers), np.int64)
        np.add.at(counts, (families, answers), 1)
        table = counts.argmax(1)                              # ties: the smallest answer index
        table[counts.sum(1) == 0] = -1
        self.table.copy_(torch.from_numpy(table))
        self.fallback.fill_(int(counts.sum(0).argmax()))
        return self

    def answer_families(self, families) -> Tensor:
        if not self.fitted:
            raise RuntimeError("QTypeBaseline.fit(families, answers) must run before it answers")
        f = torch.as_tensor(families, dtype=torch.long, device=self.table.device)
        known = (f >= 0) & (f < self.cfg.num_families)
        out = torch.where(known, self.table[f.clamp(0, self.cfg.num_families - 1)], self.fallback)
        return torch.where(out >= 0, out, self.fallback)

    def forward(self, visual: Tensor | None, questions: Tensor | None, families: Tensor | None = None) -> Tensor:
        if families is None:
            raise ValueError("the Q-type baseline answers from the question family: pass families")
        return F.one_hot(self.answer_families(families), self.cfg.num_answers).float()


class LSTMBaseline(nn.Module):
    """Question only: LSTM state -> MLP -> answers (``visual`` is accepted and ignored)."""

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.question = QuestionLSTM(cfg)
        self.classifier = classifier(cfg.rnn_dim, cfg)

    def forward(self, visual: Tensor | None, questions: Tensor) -> Tensor:
        return self.classifier(self.question(questions))


class CNNLSTMBaseline(nn.Module):
    """[1x1 conv -> ReLU -> 2x2 max-pool -> flatten] of the image maps, next to the LSTM state -> MLP."""

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = _Visual(cfg)
        self.project = nn.Sequential(nn.Conv2d(cfg.map_channels, cfg.proj_dim, 1), nn.ReLU(inplace=True),
                                     nn.MaxPool2d(2))
        self.question = QuestionLSTM(cfg)
        side = cfg.map_size // 2
        self.classifier = classifier(cfg.proj_dim * side * side + cfg.rnn_dim, cfg)

    def forward(self, visual: Tensor, questions: Tensor) -> Tensor:
        v = self.project(self.visual(visual)).flatten(1)       # (N, proj * side * side)
        return self.classifier(torch.cat([v, self.question(questions)], 1))


class StackedAttention(nn.Module):
    """One hop: ``h = tanh(Wv v + Wu u)``, ``p = softmax_positions(Wp h)``, returns ``u + sum p v``
    and the attention map ``p`` (N, H, W)."""

    def __init__(self, dim: int, attn_dim: int):
        super().__init__()
        self.Wv = nn.Conv2d(dim, attn_dim, 1)
        self.Wu = nn.Linear(dim, attn_dim)
        self.Wp = nn.Conv2d(attn_dim, 1, 1)

    def forward(self, v: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        N, _, H, W = v.shape
        h = torch.tanh(self.Wv(v) + self.Wu(u)[:, :, None, None])      # (N, A, H, W)
        p = torch.softmax(self.Wp(h).flatten(1), dim=1)               # (N, H*W)
        attended = torch.bmm(v.flatten(2), p.unsqueeze(2)).squeeze(2)  # (N, D): sum over positions
        return u + attended, p.view(N, H, W)


class CNNLSTMSABaseline(nn.Module):
    """Image maps projected to the question size, ``attn_hops`` stacked-attention hops, MLP.
    ``forward(..., return_attention=True)`` also returns the hops' maps (N, hops, H, W)."""

    def __init__(self, cfg: BaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.visual = _Visual(cfg)
        self.project = nn.Conv2d(cfg.map_channels, cfg.rnn_dim, 1)     # linear, as the authors' code
        self.question = QuestionLSTM(cfg)
        self.hops = nn.ModuleList(StackedAttention(cfg.rnn_dim, cfg.attn_dim) for _ in range(cfg.attn_hops))
        self.classifier = classifier(cfg.rnn_dim, cfg)

    def forward(self, visual: Tensor, questions: Tensor, return_attention: bool = False):
        v = self.project(self.visual(visual))                  # (N, D, H, W)
        u = self.question(questions)                           # (N, D)
        maps = []
        for hop in self.hops:
            u, p = hop(v, u)
            maps.append(p)
        logits = self.classifier(u)
        if return_attention:
            return logits, torch.stack(maps, 1) if maps else v.new_zeros(v.shape[0], 0, *v.shape[2:])
        return logits
