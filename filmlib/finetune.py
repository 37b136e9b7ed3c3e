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

import csv
import io
import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from .config import load_scale
from .data.download import file_digests
from .data.datasets import collate
from .data.vocab import Vocab
from .experiment import batch_fn_for, evaluate_run, load_run, run_features, scored_on_val, split_for
from .io import atomic_write_text
from .models import FiLMModel
from .train import Trainer, TrainConfig, load_checkpoint


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
    base = Path(run_dir) / f"{which}.pt"
    out, src = Path(out_dir).resolve(), Path(run_dir).resolve()
    if out == src or out in src.parents:
        raise ValueError(f"out_dir {out_dir} holds the run it fine-tunes ({run_dir}): choose another folder")
    digest = file_digests(base)["sha256"] if base.is_file() else None
    _drop_if_stale(Path(out_dir), digest, base)
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
                     features=features, finetuned_from=str(base), finetuned_from_sha256=digest,
                     finetune="question encoder only; frozen layers in eval mode (batch norm statistics fixed)")
    trainer = Trainer(wrapped, train_set, val_set, cfg, collate_fn=collate, batch_fn=batch_fn_for(train_set),
                      model_config=model.cfg.to_dict())
    summary = trainer.fit()
    summary["trainable_parameters"] = trainable_parameters(wrapped)
    return summary


def _drop_if_stale(out_dir: Path, digest: str | None, base: Path) -> None:
    """A fine-tune in ``out_dir`` started from another version of ``base`` (the model it starts
    from trained on since) is not resumed or kept: it is removed, with a warning, and redone."""
    last = out_dir / "last.pt"
    if digest is None or not last.is_file():
        return
    then = (load_checkpoint(last).get("train_config") or {}).get("extra", {}).get("finetuned_from_sha256")
    if then is not None and then != digest:
        warnings.warn(f"{out_dir}: fine-tuned from an earlier {base} (SHA-256 {then[:12]}, now "
                      f"{digest[:12]}); starting the fine-tune again", stacklevel=3)
        shutil.rmtree(out_dir)


# --- Table 4: CLEVR-Humans ----------------------------------------------------------------

#: The paper's Table 4 (CLEVR-Humans test, %): trained on CLEVR only, then fine-tuned on Humans.
PAPER_TABLE4 = {"LSTM": (27.5, 36.5), "CNN+LSTM": (37.7, 43.2), "CNN+LSTM+SA+MLP": (50.4, 57.6),
                "PG+EE (18K prog.)": (54.0, 66.6), "CNN+GRU+FiLM": (56.6, 75.9)}
#: Our Table 1 rows and the Table 4 row each stands beside (our CNN+LSTM+SA ends in an MLP).
TABLE4_ROWS = {"lstm": ("LSTM", "LSTM"), "cnn_lstm": ("CNN+LSTM", "CNN+LSTM"),
               "cnn_lstm_sa": ("CNN+LSTM+SA", "CNN+LSTM+SA+MLP"), "film": ("CNN+GRU+FiLM", "CNN+GRU+FiLM")}


def humans_run(results_dir, kind: str, scale: str):
    """(the Table 1 run a model of ``kind`` starts from, the directory its fine-tune goes to)."""
    base = Path(results_dir) / f"{kind}_{scale}"
    return base, base.with_name(base.name + "_humans")


def run_humans(scale: str, data_dir, results_dir, *, kinds=tuple(TABLE4_ROWS), split: str = "test",
               device: str = "auto", progress: bool = True) -> dict[str, dict]:
    """Table 4: each model of ``kinds`` (notebook 02's FiLM and notebook 03's baselines of the
    scale) scored on the Humans questions of ``split`` as trained on templates, then with its
    question encoder fine-tuned on the Humans train questions (the scale's ``humans`` section;
    resumable, a finished fine-tune kept) and scored again. Returns {our row name:
    {"before", "after" (metrics), "finetune" (the Trainer's summary)}}."""
    cfg = dict(load_scale(scale).get("humans") or {})
    # every model must be finished (trained and scored: metrics.json), before any fine-tune starts
    missing = [humans_run(results_dir, kind, scale)[0] for kind in kinds]
    missing = [(run, kind) for run, kind in zip(missing, kinds) if not scored_on_val(run)]
    if missing:
        raise FileNotFoundError("; ".join(
            f"{run} has no finished run (best.pt, scored since in metrics.json): run notebook "
            f"{'02' if kind == 'film' else '03'} at scale {scale!r} to its end first" for run, kind in missing))
    out = {}
    for kind in kinds:
        run, ft = humans_run(results_dir, kind, scale)
        before = evaluate_run(run, data_dir, split, humans=True, device=device)
        summary = finetune_questions(run, data_dir, ft, device=device, progress=progress, **cfg)
        after = evaluate_run(ft, data_dir, split, humans=True, device=device)
        out[TABLE4_ROWS[kind][0]] = {"kind": kind, "before": before, "after": after,
                                      "finetune": {k: summary[k] for k in ("epochs", "best_epoch", "samples",
                                                                           "train_minutes", "trainable_parameters")}}
    return out


def table4_rows(results: dict[str, dict], split: str = "test") -> list[dict]:
    """Flat rows (%): ours (trained on templates; fine-tuned on Humans; the gain) beside the paper's."""
    key = f"{split}_accuracy"
    rows = []
    for name, r in results.items():
        paper = PAPER_TABLE4[TABLE4_ROWS[r["kind"]][1]]
        b, a = 100 * r["before"][key], 100 * r["after"][key]
        rows.append({"model": name, "ours_templates": round(b, 1), "ours_finetuned": round(a, 1),
                     "ours_gain": round(a - b, 1), "paper_row": TABLE4_ROWS[r["kind"]][1],
                     "paper_templates": paper[0], "paper_finetuned": paper[1], "paper_gain": round(paper[1] - paper[0], 1)})
    return rows


def write_table4(results: dict[str, dict], out_dir, name: str, *, split: str = "test",
                 data_label: str = "SynthCLEVR paraphrases") -> list[dict]:
    """``<name>.md`` and ``<name>.csv``: Table 4, ours beside the paper's (labelled), atomically."""
    rows = table4_rows(results, split)
    md = ["# Table 4: CLEVR-Humans, accuracy (%)", "",
          f"Ours: {data_label}, {split} split; fine-tuning trains only the question encoder (FiLM's generator, "
          "the baselines' LSTM). The paper's: CLEVR-Humans test (Perez et al. 2017; quoted, not run here).", "",
          "| Model | ours: trained on templates | ours: fine-tuned | ours: gain | paper row | paper: trained on CLEVR "
          "| paper: fine-tuned | paper: gain |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['model']} | {r['ours_templates']:.1f} | {r['ours_finetuned']:.1f} | {r['ours_gain']:+.1f} | "
                  f"{r['paper_row']} | {r['paper_templates']:.1f} | {r['paper_finetuned']:.1f} | {r['paper_gain']:+.1f} |")
    atomic_write_text(Path(out_dir) / f"{name}.md", "\n".join(md) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, list(rows[0]) if rows else ["model"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(out_dir) / f"{name}.csv", buf.getvalue())
    return rows


def humans_verdicts(rows: list[dict]) -> list[dict]:
    """The paper's Table 4 findings on our rows: fine-tuning gains for every model, and FiLM's
    gain is larger than each baseline's."""
    gains = {r["model"]: r["ours_gain"] for r in rows}
    out = [{"claim": f"fine-tuning on the human questions improves {m}", "holds": g > 0, "numbers": f"{g:+.1f} points"}
           for m, g in gains.items()]
    film = gains.get("CNN+GRU+FiLM")
    others = {m: g for m, g in gains.items() if m != "CNN+GRU+FiLM"}
    if film is not None and others:
        out.append({"claim": "FiLM gains more from fine-tuning than every baseline (paper: +19.3 vs at most +9.0)",
                    "holds": all(film > g for g in others.values()),
                    "numbers": f"FiLM {film:+.1f}; " + ", ".join(f"{m} {g:+.1f}" for m, g in others.items())})
    return out


def fixed_examples(run_dir, finetuned_dir, records: dict[int, dict], split: str = "test", n: int = 6) -> list[dict]:
    """Up to ``n`` Humans questions the fine-tune fixed (wrong before, right after), with both
    answers: from the two runs' ``predictions_<split>_humans.jsonl``; ``records``: {question_index:
    its JSON record}."""
    def read(d):
        with open(Path(d) / f"predictions_{split}_humans.jsonl") as f:
            return {r["question_index"]: r for r in map(json.loads, f)}
    before, after = read(run_dir), read(finetuned_dir)
    out = []
    for q, b in before.items():
        a = after.get(q)
        if a is not None and b["prediction"] != b["answer"] and a["prediction"] == a["answer"]:
            out.append({"question": records[q]["question"], "before": b["prediction"], "after": a["prediction"],
                        "image_index": b.get("image_index")})
            if len(out) == n:
                break
    return out
