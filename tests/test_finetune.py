"""filmlib.finetune: the vocabulary grows without moving old words, and a fine-tune changes the
question encoder only (batch norm statistics of the frozen network included)."""
import json

import pytest
import torch

from filmlib import finetune
from filmlib.data.preprocess import preprocess_root
from filmlib.data.vocab import UNK_IDX, Vocab
from filmlib.experiment import build_baseline_model, build_model, evaluate_run, load_run, train_baseline, train_film
from filmlib.synth.generate import SplitSpec, generate_split


@pytest.fixture(scope="module")
def humans(tmp_path_factory):
    root = tmp_path_factory.mktemp("humans")
    for split, n in (("train", 16), ("val", 6)):
        generate_split(root / "raw", SplitSpec(split=split, num_images=n, questions_per_image=4, width=60,
                                               height=40, seed=5, humans_per_image=3), progress=False)
    preprocess_root(root / "raw", root / "h5", splits=("train", "val"), image_size=(32, 32), humans_min_count=2)
    return root / "h5"


def test_the_grown_vocabulary_keeps_every_old_word_and_its_embedding(humans):
    base = Vocab.load(humans / "vocab.json")
    grown = Vocab.load(humans / "vocab_humans.json")
    assert len(grown.question_token_to_idx) > len(base.question_token_to_idx)   # the paraphrases add words
    assert all(grown.question_token_to_idx[t] == i for t, i in base.question_token_to_idx.items())
    torch.manual_seed(0)
    model = build_model(humans, "smoke", "pixels")
    old = model.generator.embed.weight.detach().clone()
    V = len(grown.question_token_to_idx)
    finetune.grow_vocabulary(model, V, std=0.01, seed=3)
    new = model.generator.embed.weight.detach()
    assert new.shape == (V, old.shape[1]) and model.cfg.vocab_size == V == model.generator.cfg.vocab_size
    assert torch.equal(new[:len(old)], old)
    assert 0 < new[len(old):].std() < 0.05
    with pytest.raises(ValueError, match="smaller than the model's"):
        finetune.grow_vocabulary(model, 5)


def _same(old, new) -> bool:
    """Equal, comparing a grown embedding by its old rows."""
    return torch.equal(old, new if old.dim() == 0 else new[:len(old)])


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["film", "cnn_lstm_sa", "lstm"])
def test_a_finetune_changes_the_question_encoder_only(humans, tmp_path, kind):
    run = tmp_path / "run"
    common = dict(preset_name="smoke", stem="pixels", epochs=1, batch_size=8, progress=False, threads=1)
    if kind == "film":
        train_film(humans, run, **common)
    else:
        train_baseline(humans, run, kind, **common)
    before = _snapshot(load_run(run)[0])
    out = tmp_path / "ft"
    summary = finetune.finetune_questions(run, humans, out, epochs=2, batch_size=8, patience=None, progress=False,
                                          threads=1, lr=1e-2)
    model, ckpt = load_run(out, "last")
    after = model.state_dict()
    encoder = "generator." if kind == "film" else "question."
    changed = {k for k in before if not _same(before[k], after[k])}
    assert changed and all(k.startswith(encoder) for k in changed), changed          # running stats included
    assert summary["trainable_parameters"] == sum(p.numel() for p in finetune.question_encoder(model).parameters())
    grown = len(Vocab.load(humans / "vocab_humans.json").question_token_to_idx)
    assert model.cfg.vocab_size == grown and ckpt["train_config"]["extra"]["finetuned_from"].endswith("best.pt")
    # the fine-tuned run and the original are scored on the Humans questions; the original reads new words as <UNK>
    for r in (run, out):
        m = evaluate_run(r, humans, "val", humans=True, device="cpu")
        assert 0 <= m["val_accuracy"] <= 1 and (r / "metrics_val_humans.json").exists()
        assert len((r / "predictions_val_humans.jsonl").read_text().splitlines()) > 0
    assert json.loads((run / "metrics_val_humans.json").read_text())["vocab_size"] < grown


def test_frozen_layers_stay_in_eval_mode():
    torch.manual_seed(0)
    model = build_baseline_model_for_test()
    wrapped = finetune.QuestionFineTune(model).train()
    assert wrapped.training and wrapped.encoder.training
    assert not any(m.training for name, m in model.named_modules() if name and not name.startswith("generator"))
    assert set(wrapped.state_dict()) == set(model.state_dict())
    assert all(p.requires_grad == n.startswith("generator.") for n, p in model.named_parameters())


def build_baseline_model_for_test():
    from filmlib.models import FiLMModel, preset
    return FiLMModel(preset("smoke", vocab_size=20, num_answers=5, stem="pixels"))


def test_unknown_words_read_as_unk():
    from filmlib.experiment import unknown_words_as_unk
    read = unknown_words_as_unk(lambda b: (None, b, None), vocab_size=10)
    _, q, _ = read(torch.tensor([[1, 9, 10, 42, 2]]))
    assert q.tolist() == [[1, 9, UNK_IDX, UNK_IDX, 2]]


def _result(kind, before, after):
    return {"kind": kind, "before": {"test_accuracy": before}, "after": {"test_accuracy": after}}


def test_table4_puts_the_papers_rows_beside_ours_and_checks_the_gains(tmp_path):
    results = {"LSTM": _result("lstm", 0.40, 0.45), "CNN+LSTM+SA": _result("cnn_lstm_sa", 0.50, 0.52),
               "CNN+GRU+FiLM": _result("film", 0.55, 0.70)}
    rows = finetune.write_table4(results, tmp_path, "table4_smoke")
    sa = next(r for r in rows if r["model"] == "CNN+LSTM+SA")
    assert sa["paper_row"] == "CNN+LSTM+SA+MLP" and sa["paper_templates"] == 50.4 and sa["ours_gain"] == 2.0
    md = (tmp_path / "table4_smoke.md").read_text()
    assert "| CNN+GRU+FiLM | 55.0 | 70.0 | +15.0 | CNN+GRU+FiLM | 56.6 | 75.9 | +19.3 |" in md
    assert (tmp_path / "table4_smoke.csv").read_text().count("\n") == 4
    verdicts = finetune.humans_verdicts(rows)
    assert all(v["holds"] for v in verdicts) and len(verdicts) == 4
    results["LSTM"] = _result("lstm", 0.40, 0.60)
    last = finetune.humans_verdicts(finetune.table4_rows(results))[-1]
    assert last["holds"] is False and "LSTM +20.0" in last["numbers"]


def test_run_humans_names_the_missing_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebook 03 at scale 'smoke' to its end first"):
        finetune.run_humans("smoke", tmp_path, tmp_path, kinds=("lstm",))
    # a run still training (best.pt, but not yet scored: no metrics.json) is not finished either,
    # and every missing one is named before any fine-tune starts
    (tmp_path / "cnn_lstm_smoke").mkdir()
    (tmp_path / "cnn_lstm_smoke" / "best.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as e:
        finetune.run_humans("smoke", tmp_path, tmp_path, kinds=("cnn_lstm", "film"))
    assert "cnn_lstm_smoke has no finished run" in str(e.value) and "run notebook 02" in str(e.value)
    # scored, then trained on (best.pt newer than metrics.json): not finished either
    import os
    (tmp_path / "cnn_lstm_smoke" / "metrics.json").write_text("{}")
    os.utime(tmp_path / "cnn_lstm_smoke" / "metrics.json", (1, 1))
    with pytest.raises(FileNotFoundError, match="cnn_lstm_smoke has no finished run"):
        finetune.run_humans("smoke", tmp_path, tmp_path, kinds=("cnn_lstm",))


def test_a_finetune_of_an_older_version_of_its_model_is_redone(humans, tmp_path):
    """The model a fine-tune starts from trained on since (another best.pt): the fine-tune is
    not resumed or kept but redone from the new checkpoint, with a warning."""
    from filmlib.train import atomic_save, load_checkpoint
    run, out = tmp_path / "run", tmp_path / "ft"
    train_film(humans, run, preset_name="smoke", stem="pixels", epochs=1, batch_size=8, progress=False, threads=1)
    kw = dict(epochs=1, batch_size=8, patience=None, progress=False, threads=1)
    finetune.finetune_questions(run, humans, out, **kw)
    first = load_checkpoint(out / "last.pt")["train_config"]["extra"]["finetuned_from_sha256"]
    again = finetune.finetune_questions(run, humans, out, **kw)        # the same model: kept, nothing to do
    assert again["epochs"] == 1 and len(again["history"]) == 1
    ckpt = load_checkpoint(run / "best.pt")
    ckpt["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    atomic_save(ckpt, run / "best.pt")                                  # the model trained on since
    with pytest.warns(UserWarning, match="fine-tuned from an earlier"):
        redone = finetune.finetune_questions(run, humans, out, **kw)
    assert redone["epochs"] == 1
    now = load_checkpoint(out / "last.pt")["train_config"]["extra"]["finetuned_from_sha256"]
    assert now != first and len(now) == 64
    with pytest.raises(ValueError, match="holds the run it fine-tunes"):
        finetune.finetune_questions(run, humans, run, **kw)          # never into (or above) the run itself
    with pytest.raises(ValueError, match="holds the run it fine-tunes"):
        finetune.finetune_questions(run, humans, tmp_path, **kw)
    assert (run / "best.pt").is_file()
