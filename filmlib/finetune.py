"""Fine-tuning a trained model's question encoder only (CLEVR-Humans, Table 4).

The paper fine-tunes FiLM on CLEVR-Humans by training only the linguistic pipeline (the FiLM
generator), and the baselines likewise (only their LSTM question encoder); the visual pipeline
and the classifier stay as trained on CLEVR. Human questions use words the templates never
do, so the vocabulary grows (words seen at least 5 times in the Humans train questions,
:meth:`filmlib.data.vocab.Vocab.extend`) and the embedding gets new rows drawn small and random;
every existing index and row is kept.

Batch norm: the frozen layers stay in eval mode for the whole fine-tune, so their running
statistics (collected on CLEVR's images) are neither used per batch nor updated; the images
are the same kind as before, only the questions change. :class:`QuestionFineTune` enforces it
whatever ``train()`` the trainer calls.
"""
from __future__ import annotations

import torch
from torch import nn

from .models import FiLMModel


def question_encoder(model: nn.Module) -> nn.Module:
    """The part of ``model`` that reads the question: FiLM's generator, a baseline's LSTM."""
    if isinstance(model, FiLMModel):
        if model.generator.embed is None:
            raise ValueError("this FiLM model FiLMs no block: it has no question encoder to fine-tune")
        return model.generator
    encoder = getattr(model, "question", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"{type(model).__name__} has no trainable question encoder (Q-type counts answers)")
    return encoder


def grow_vocabulary(model: nn.Module, vocab_size: int, *, std: float = 0.01, seed: int = 0) -> nn.Module:
    """Give ``model``'s word embedding ``vocab_size`` rows (in place): the old rows unchanged, each
    new one drawn from N(0, std²) with ``seed``. ``model.cfg.vocab_size`` follows. Returns ``model``."""
    encoder = question_encoder(model)
    old = encoder.embed
    if vocab_size < old.num_embeddings:
        raise ValueError(f"vocab_size={vocab_size} is smaller than the model's {old.num_embeddings} words")
    if vocab_size == old.num_embeddings:
        return model
    new = nn.Embedding(vocab_size, old.embedding_dim).to(old.weight.device, old.weight.dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        new.weight[:old.num_embeddings] = old.weight
        extra = torch.randn(vocab_size - old.num_embeddings, old.embedding_dim, generator=gen) * std
        new.weight[old.num_embeddings:] = extra.to(new.weight)
    encoder.embed = new
    model.cfg = model.cfg.variant(vocab_size=vocab_size)
    if hasattr(encoder, "cfg"):
        encoder.cfg = model.cfg
    return model


class QuestionFineTune(nn.Module):
    """``model`` with only its question encoder trainable: every other parameter frozen and every
    other module kept in eval mode (batch norm's running statistics fixed). ``state_dict`` and
    ``load_state_dict`` are the inner model's, so checkpoints load as ordinary runs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.cfg = model.cfg
        self.encoder = question_encoder(model)
        trainable = {id(p) for p in self.encoder.parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in trainable)

    def train(self, mode: bool = True):
        self.training = mode
        self.model.eval()
        self.encoder.train(mode)
        return self

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def state_dict(self, *args, **kwargs):
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)

    def compile_parts(self) -> tuple[nn.Module, ...]:
        return ()                         # the frozen network gains little; the encoder is not traced


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def finetune_questions(run_dir, data_dir, out_dir, *, which: str = "best", lr: float = 3e-4,
                       batch_size: int = 64, epochs: int = 20, patience: int | None = 3,
                       seed: int = 0, embed_std: float = 0.01, progress: bool = True, **train_kw) -> dict:
    """Fine-tune the question encoder of a trained run (FiLM or an LSTM baseline) on the
    CLEVR-Humans questions of ``data_dir`` (``train_humans_questions.h5``; early stopping on
    ``val_humans_questions.h5``), into ``out_dir``, resuming there when interrupted.

    The vocabulary grows to ``vocab_humans.json`` (new embedding rows from N(0, embed_std²));
    everything but the question encoder is frozen, batch norm included (:class:`QuestionFineTune`).
    ``train_kw``: other :class:`~filmlib.train.TrainConfig` fields (``threads``, ``device``,
    ``max_samples`` ...). Returns the Trainer's summary with ``trainable_parameters``."""
    from pathlib import Path

    from .data.datasets import collate
    from .data.vocab import Vocab
    from .experiment import batch_fn_for, load_run, run_features, split_for
    from .train import Trainer, TrainConfig

    model, ckpt = load_run(run_dir, which)
    vocab = Vocab.load(Path(data_dir) / "vocab_humans.json")
    grow_vocabulary(model, len(vocab.question_token_to_idx), std=embed_std, seed=seed)
    wrapped = QuestionFineTune(model)
    features = run_features(ckpt)
    train_set = split_for(model, data_dir, "train", features=features, humans=True)
    val_set = split_for(model, data_dir, "val", features=features, humans=True)
    cfg = TrainConfig(out_dir=str(out_dir), lr=lr, batch_size=batch_size, epochs=epochs, patience=patience,
                      seed=seed, progress=progress, **train_kw)
    extra = ckpt["train_config"].get("extra", {})
    cfg.extra.update(preset=extra.get("preset"), model=extra.get("model"), data_dir=str(data_dir),
                     features=features, finetuned_from=str(Path(run_dir) / f"{which}.pt"),
                     finetune="question encoder only; frozen layers in eval mode (batch norm statistics fixed)")
    trainer = Trainer(wrapped, train_set, val_set, cfg, collate_fn=collate, batch_fn=batch_fn_for(train_set),
                      model_config=model.cfg.to_dict())
    summary = trainer.fit()
    summary["trainable_parameters"] = trainable_parameters(wrapped)
    return summary
