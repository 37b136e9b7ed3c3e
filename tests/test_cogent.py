"""filmlib.cogent: the condition splits, the fine-tuning pool, the Figure 9 table and verdicts."""
import numpy as np
import pytest

from filmlib import cogent
from filmlib.config import load_scale
from filmlib.data import clevr
from filmlib.data.preprocess import preprocess_root
from filmlib.evaluate import mcnemar_p
from filmlib.synth.attributes import COGENT


@pytest.fixture(scope="module")
def cogent_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogent") / "synthclevr-cogent"
    made = cogent.generate(root, "smoke", seed=3, workers=1, progress=False)
    assert set(made) == set(cogent.SPLITS)
    preprocess_root(root, root.parent / "h5", splits=cogent.SPLITS, image_size=(32, 32), vocab_split="trainA",
                    humans=False)
    return root


def test_condition_splits_hold_no_forbidden_pair(cogent_data):
    for split in cogent.SPLITS:
        condition = split[-1]
        objects = [o for s in clevr.load_scenes(clevr.scenes_path(cogent_data, split)) for o in s["objects"]]
        assert objects
        assert all(o["color"] in COGENT[condition][o["shape"]] for o in objects), split
    b_cubes = {o["color"] for s in clevr.load_scenes(clevr.scenes_path(cogent_data, "valB"))
               for o in s["objects"] if o["shape"] == "cube"}
    assert b_cubes and not b_cubes & set(COGENT["A"]["cube"])
    again = cogent.generate(cogent_data, "smoke", seed=3, workers=1, progress=False)
    assert set(again.values()) == {"kept"}


def test_the_pool_and_the_scored_questions_split_valB_by_image(cogent_data):
    h5 = cogent_data.parent / "h5"
    pool, rest = cogent.pool_and_eval_rows(h5, 12)
    from filmlib.data.datasets import ClevrQuestionsDataset
    images = np.asarray(ClevrQuestionsDataset(h5 / "valB_questions.h5", None).image_idxs)
    assert len(pool) + len(rest) == len(images) and not set(pool) & set(rest)
    assert images[pool].max() < 12 <= images[rest].min()
    with pytest.raises(ValueError, match="must leave some on each side"):
        cogent.pool_and_eval_rows(h5, 10_000)


def test_roots():
    from pathlib import Path
    assert cogent.cogent_root(Path("data/synthclevr")) == Path("data/synthclevr-cogent")
    assert cogent.cogent_root(Path("data/CLEVR_v1.0"), "clevr") == Path("data/CLEVR_CoGenT_v1.0")


def _scores(a, b):
    return {"A": a, "B": b}


ZERO_CLAIM = "the zero-shot method improves the B questions it applies to (paper: 71.5 → 80.7); McNemar p < 0.05"


def test_fig9_table_and_verdicts(tmp_path):
    results = {"CNN+GRU+FiLM": {"kind": "film", "trained_on_A": _scores(0.9, 0.7),
                                "finetuned": {0.01: _scores(0.88, 0.72), 1.0: _scores(0.8, 0.9)}},
               "CNN+LSTM+SA": {"kind": "cnn_lstm_sa", "trained_on_A": _scores(0.6, 0.5),
                               "finetuned": {1.0: _scores(0.62, 0.55)}}}
    zero = {"applies_to": 300, "questions": 1000, "share": 0.3, "accuracy_before": 0.6, "accuracy_after": 0.7,
            "fixed": 40, "broke": 10, "p_value": mcnemar_p(40, 10)}
    rows = cogent.write_fig9(results, tmp_path, "cogent_smoke", zero=zero)
    assert [r["model"] for r in rows] == ["CNN+GRU+FiLM", "CNN+GRU+FiLM 0-Shot", "CNN+LSTM+SA"]
    assert rows[0]["finetune_B_on_B"] == 90.0 and rows[0]["paper_train_A_on_B"] == 75.6
    assert rows[1]["train_A_on_B"] == 73.0 and rows[1]["finetune_B_on_A"] is None   # 70 + (70 - 60) * 0.3
    md = (tmp_path / "cogent_smoke.md").read_text()
    assert "| CNN+GRU+FiLM 0-Shot | 90.0 | 73.0 | – | – | 98.3 | 78.8 | 81.1 | 96.9 |" in md
    found = {v["claim"]: v["holds"] for v in cogent.verdicts(results, zero)}
    assert found == {"CNN+GRU+FiLM: accuracy drops from A to B": True,
                     "CNN+GRU+FiLM: fine-tuning on B recovers B and forgets some of A": True,
                     "CNN+LSTM+SA: accuracy drops from A to B": True,
                     "CNN+LSTM+SA: fine-tuning on B recovers B and forgets some of A": False,   # A went up
                     ZERO_CLAIM: True}
    # the same gain from many more changed answers is within chance: it does not hold
    chance = zero | {"fixed": 130, "broke": 100, "p_value": mcnemar_p(130, 100)}
    assert 0.05 < chance["p_value"] < 0.1
    last = cogent.verdicts(results, chance)[-1]
    assert last["claim"] == ZERO_CLAIM and last["holds"] is False and "130 answers fixed, 100 broken" in last["numbers"]
    none = cogent.verdicts(results, {"applies_to": 0, "share": 0.0, "accuracy_before": None, "accuracy_after": None})
    assert none[-1]["holds"] is False and none[-1]["numbers"] == "it applies to no question"


def test_training_on_A_has_the_scales_time_guard(monkeypatch):
    """Each run on condition A stops at the scale's ``cogent.train_minutes`` (a guard) as well as
    its question budget, FiLM and the baseline alike; the fine-tunes, bounded by epochs, have none."""
    seen = {}
    monkeypatch.setattr(cogent, "train_film", lambda data, out, **kw: seen.setdefault("film", kw))
    monkeypatch.setattr(cogent, "train_baseline", lambda data, out, kind, **kw: seen.setdefault(kind, kw))
    minutes = load_scale("cpu")["cogent"]["train_minutes"]
    assert minutes and minutes > 0
    for kind in ("film", "cnn_lstm_sa"):
        cogent._train(kind, "data", "out", "cpu", max_samples=2000, device="cpu", progress=False, seed=0,
                      lr=1e-3, minutes=minutes)
        assert seen[kind]["time_limit_minutes"] == minutes and seen[kind]["max_samples"] == 2000
    seen.clear()
    cogent._train("film", "data", "out", "cpu", max_samples=2000, device="cpu", progress=False, seed=0)
    assert seen["film"]["time_limit_minutes"] is None


def test_questions_per_image_may_differ_by_split(tmp_path, monkeypatch):
    """A mapping gives trainA more questions per rendered image than the scored splits; a split
    the mapping leaves out, or a count that is not a positive integer, is refused by name."""
    import json
    data = {"width": 32, "height": 24, "reset_every": 1000, "questions_per_image": {"trainA": 4, "valA": 2},
            "splits": {"trainA": 3, "valA": 2}}
    monkeypatch.setattr(cogent, "load_scale", lambda scale: {"cogent": {"data": data}})
    root = tmp_path / "synthclevr-cogent"
    cogent.generate(root, "tiny", seed=1, workers=1, progress=False)
    for split, per_image in (("trainA", 4), ("valA", 2)):
        questions = json.loads(clevr.questions_path(root, split).read_text())["questions"]
        assert len(questions) == per_image * data["splits"][split], split
    data["splits"]["valB"] = 2
    with pytest.raises(ValueError, match=r"questions_per_image .*\(valB: None\)"):
        cogent.generate(root, "tiny", seed=1, workers=1, progress=False)
    data["questions_per_image"] = 0
    with pytest.raises(ValueError, match=r"tiny\.yaml: cogent\.data\.questions_per_image"):
        cogent.generate(root, "tiny", seed=1, workers=1, progress=False)


def test_each_model_trains_on_A_for_its_own_budget(monkeypatch):
    """``cogent.train_samples`` may give each model its own budget on A (the fine-tunes keep
    theirs); a model the mapping leaves out, or a budget that is not a positive count, is refused
    by the scale file's name."""
    import numpy as np
    cfg = {"train_samples": {"film": 3000, "cnn_lstm_sa": 1000}, "train_minutes": None, "finetune_images": 1,
           "finetune_lr": 1e-3, "finetune_epochs": 1, "finetune_max_samples": 8, "finetune_val_samples": None}
    monkeypatch.setattr(cogent, "load_scale", lambda scale: {"cogent": cfg, "film": {"batch_size": 4}})
    monkeypatch.setattr(cogent, "pool_and_eval_rows", lambda data, n: (np.arange(10), np.arange(10, 20)))
    monkeypatch.setattr(cogent, "table1_lr", lambda *a: 1e-4)
    monkeypatch.setattr(cogent, "score", lambda *a, **k: {"A": 0.5, "B": 0.4})
    budgets = {}
    monkeypatch.setattr(cogent, "_train", lambda kind, data, out, scale, **kw: budgets.setdefault(out.name, kw["max_samples"]))
    cogent.run_cogent("tiny", "cache", "results", device="cpu", progress=False)
    assert budgets["film_A"] == 3000 and budgets["cnn_lstm_sa_A"] == 1000
    assert budgets["film_B100"] == budgets["cnn_lstm_sa_B100"] == 8             # the fine-tunes' own cap
    assert cogent.train_samples({"train_samples": None}, "film", "paper") is None   # the recipe's own budget
    assert cogent.train_samples({"train_samples": 500}, "cnn_lstm_sa", "tiny") == 500
    with pytest.raises(ValueError, match=r"tiny\.yaml: cogent\.train_samples gives no budget for 'film'"):
        cogent.train_samples({"train_samples": {"cnn_lstm_sa": 5}}, "film", "tiny")
    with pytest.raises(ValueError, match=r"tiny\.yaml: cogent\.train_samples for 'film' must be a positive"):
        cogent.train_samples({"train_samples": {"film": 0}}, "film", "tiny")
    # every shipped scale gives both models a budget
    for scale in ("smoke", "cpu", "paper"):
        for kind in cogent.KINDS:
            cogent.train_samples(load_scale(scale)["cogent"], kind, scale)


def test_a_run_scored_from_its_present_checkpoint_is_not_scored_again(tmp_path, monkeypatch):
    """``score`` keeps ``scores.json`` written since the checkpoint, for the same checkpoint and
    the same B questions, with both predictions files; a newer checkpoint, another checkpoint,
    other B questions or a missing predictions file score again."""
    import json
    import os

    class Scored(Exception):
        pass

    def load_run(run_dir, which, device):
        raise Scored(which)

    monkeypatch.setattr(cogent, "load_run", load_run)
    run = tmp_path / "film_B10"
    run.mkdir()
    (run / "best.pt").write_bytes(b"weights")
    kept = {"checkpoint": "best", "samples": 10, "train_minutes": 0.1, "A": 0.6, "B": 0.5, "B_questions": 4}
    (run / "scores.json").write_text(json.dumps(kept))
    for split in ("valA", "valB"):
        (run / f"predictions_{split}.jsonl").write_text("{}\n")
    t = os.stat(run / "best.pt").st_mtime
    os.utime(run / "scores.json", (t + 1, t + 1))
    assert cogent.score(run, "cache", np.arange(4)) == kept
    with pytest.raises(Scored):
        cogent.score(run, "cache", np.arange(5))                       # other B questions
    (run / "last.pt").write_bytes(b"weights")
    os.utime(run / "last.pt", (t, t))
    with pytest.raises(Scored):
        cogent.score(run, "cache", np.arange(4), which="last")         # scored from best, not last
    (run / "predictions_valB.jsonl").unlink()
    with pytest.raises(Scored):
        cogent.score(run, "cache", np.arange(4))
    (run / "predictions_valB.jsonl").write_text("{}\n")
    os.utime(run / "scores.json", (t + 1, t + 1))
    os.utime(run / "best.pt", (t + 2, t + 2))                          # a newer checkpoint
    with pytest.raises(Scored):
        cogent.score(run, "cache", np.arange(4))
