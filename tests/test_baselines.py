"""filmlib.models.baselines and the Table 1 pipeline: each baseline builds, trains a step,
overfits a tiny batch; Q-type answers the hand-computed mode; runs train and evaluate like FiLM's;
Table 1 files and the ordering check."""
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from filmlib.evaluate import table1_checks, write_table1
from filmlib.experiment import evaluate_run, load_run, train_baseline, train_film
from filmlib.models import BASELINES, BaselineConfig, baseline_preset, build_baseline
from filmlib.models.baselines import CNNLSTMSABaseline, QTypeBaseline, StackedAttention
from filmlib.synth.generate import SplitSpec, generate_split

NEURAL = [k for k in BASELINES if k != "qtype"]


def batch(cfg, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    visual = torch.randn(n, *cfg.input_shape, generator=g)
    lengths = torch.randint(3, 9, (n,), generator=g)
    q = torch.zeros(n, 10, dtype=torch.long)
    for i, L in enumerate(lengths.tolist()):
        q[i, 0], q[i, L - 1] = 1, 2
        q[i, 1:L - 1] = torch.randint(4, cfg.vocab_size, (L - 2,), generator=g)
    return visual, q, torch.randint(0, cfg.num_answers, (n,), generator=g)


@pytest.mark.parametrize("stem", ["pixels", "features"])
@pytest.mark.parametrize("kind", NEURAL)
def test_each_baseline_builds_and_takes_a_training_step(kind, stem):
    torch.manual_seed(0)
    cfg = baseline_preset(kind, "smoke", 30, 7, stem)
    model = build_baseline(cfg)
    visual, q, y = batch(cfg)
    logits = model(visual, q)
    assert logits.shape == (8, 7)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    F.cross_entropy(logits, y).backward()
    opt.step()
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
    assert all(changed), [n for (n, _), c in zip(model.named_parameters(), changed) if not c]


@pytest.mark.parametrize("kind", NEURAL)
def test_each_baseline_overfits_a_tiny_batch(kind):
    torch.manual_seed(0)
    cfg = baseline_preset(kind, "smoke", 30, 7, "pixels")
    model = build_baseline(cfg)
    visual, q, y = batch(cfg, n=6, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        loss = F.cross_entropy(model(visual, q), y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert (model(visual, q).argmax(1) == y).all()


def test_lstm_ignores_the_image_and_cnn_models_do_not():
    torch.manual_seed(0)
    for kind, reads_image in (("lstm", False), ("cnn_lstm", True), ("cnn_lstm_sa", True)):
        cfg = baseline_preset(kind, "smoke", 30, 7, "features")
        model = build_baseline(cfg).eval()
        visual, q, _ = batch(cfg)
        same = torch.allclose(model(visual, q), model(torch.randn_like(visual), q))
        assert same != reads_image, kind


def test_the_answer_depends_on_the_real_tokens_only():
    """Padding after <END> changes nothing: each model reads the LSTM state at the last real token."""
    torch.manual_seed(0)
    for kind in NEURAL:
        cfg = baseline_preset(kind, "smoke", 30, 7, "features")
        model = build_baseline(cfg).eval()
        visual, q, _ = batch(cfg)
        longer = torch.cat([q, torch.zeros(q.shape[0], 5, dtype=torch.long)], 1)
        torch.testing.assert_close(model(visual, q), model(visual, longer))


def test_question_lstm_state_equals_the_packed_sequences_final_state():
    """The padded pass + gather at the last real token gives a packed sequence's final state,
    values and gradients, for questions of many lengths."""
    from filmlib.models.baselines import QuestionLSTM
    from filmlib.models.generator import question_lengths
    torch.manual_seed(1)
    net = QuestionLSTM(baseline_preset("lstm", "paper", 40, 7, "features")).double()   # 2 layers
    q = torch.randint(4, 40, (12, 25))
    for i in range(12):
        q[i, 2 + 2 * i:] = 0
    lengths = question_lengths(q)
    packed = torch.nn.utils.rnn.pack_padded_sequence(net.embed(q), lengths, batch_first=True,
                                                     enforce_sorted=False)
    want = net.rnn(packed)[1][0][-1]
    got = net(q)
    torch.testing.assert_close(got, want)
    g_want = torch.autograd.grad(want.sum(), net.rnn.weight_hh_l0)[0]
    g_got = torch.autograd.grad(got.sum(), net.rnn.weight_hh_l0)[0]
    torch.testing.assert_close(g_got, g_want)


def test_stacked_attention_computes_the_formula():
    torch.manual_seed(0)
    hop = StackedAttention(4, 3)
    v, u = torch.randn(2, 4, 3, 5), torch.randn(2, 4)
    out, p = hop(v, u)
    h = torch.tanh(torch.einsum("ad,ndhw->nahw", hop.Wv.weight[:, :, 0, 0], v) + hop.Wv.bias[None, :, None, None]
                   + (u @ hop.Wu.weight.T + hop.Wu.bias)[:, :, None, None])
    scores = torch.einsum("a,nahw->nhw", hop.Wp.weight[0, :, 0, 0], h) + hop.Wp.bias
    want_p = torch.softmax(scores.flatten(1), 1).view(2, 3, 5)
    torch.testing.assert_close(p, want_p)
    torch.testing.assert_close(out, u + (v * want_p[:, None]).sum((2, 3)))
    assert torch.allclose(p.sum((1, 2)), torch.ones(2))


def test_sa_returns_one_attention_map_per_hop():
    cfg = baseline_preset("cnn_lstm_sa", "smoke", 30, 7, "features")
    model = CNNLSTMSABaseline(cfg)
    assert isinstance(model.project, torch.nn.Conv2d)     # a linear projection, as the authors' code
    visual, q, _ = batch(cfg, n=3)
    logits, maps = model(visual, q, return_attention=True)
    assert logits.shape == (3, 7) and maps.shape == (3, cfg.attn_hops, 14, 14)
    torch.testing.assert_close(maps.sum((2, 3)), torch.ones(3, cfg.attn_hops))


def test_qtype_answers_the_hand_computed_mode():
    cfg = BaselineConfig(kind="qtype", num_answers=5, num_families=4)
    families = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
    answers = [3, 1, 3, 4, 4, 0, 2, 2, 0, 1]
    model = QTypeBaseline(cfg).fit(families, answers)
    # family 0: 3,1,3,1 -> tie 1 vs 3, the smaller index wins; family 1: 4; family 2: 0,2,2,0 -> 0;
    # family 3 never seen -> the overall mode (0:2, 1:2, 2:2, 3:2, 4:2 -> 0)
    assert model.answer_families([0, 1, 2, 3]).tolist() == [1, 4, 0, 0]
    model = QTypeBaseline(cfg).fit([0, 0, 1, 2], [2, 2, 3, 2])
    assert model.answer_families([3, 1, 0]).tolist() == [2, 3, 2]          # unseen -> overall mode 2
    scores = model(None, None, torch.tensor([1, 0]))
    assert scores.argmax(1).tolist() == [3, 2]


def test_qtype_refuses_bad_input():
    model = QTypeBaseline(BaselineConfig(kind="qtype", num_answers=3, num_families=2))
    with pytest.raises(RuntimeError, match="fit"):
        model.answer_families([0])
    with pytest.raises(ValueError, match="families must lie in 0..1"):
        model.fit([0, 2], [0, 1])
    with pytest.raises(ValueError, match="answers must lie in 0..2"):
        model.fit([0, 1], [0, 3])


def test_config_validation_and_round_trip():
    cfg = baseline_preset("cnn_lstm", "cpu", 93, 28)
    assert cfg.stem == "pixels" and cfg.image_size == 80 and cfg.map_size == 10 and cfg.lr == 5e-4
    assert BaselineConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="kind='mlp' is not one of"):
        BaselineConfig(kind="mlp")
    with pytest.raises(ValueError, match="qtype_by='type' is not"):
        BaselineConfig(kind="qtype", qtype_by="type")
    with pytest.raises(ValueError, match="unknown BaselineConfig fields: colour"):
        BaselineConfig.from_dict({"colour": 1})
    model = build_baseline(cfg)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, 80, 80\)"):
        model(torch.zeros(2, 3, 32, 32), torch.ones(2, 3, dtype=torch.long))


# -- the pipeline: data -> train / count -> evaluate -> Table 1 -------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from filmlib.data.preprocess import preprocess_root
    root = tmp_path_factory.mktemp("base")
    for split, n in (("train", 24), ("val", 8)):
        generate_split(root / "raw", SplitSpec(split=split, num_images=n, questions_per_image=5,
                                               width=60, height=40, seed=3), progress=False)
    preprocess_root(root / "raw", root / "h5", splits=("train", "val"), image_size=(32, 32))
    return root / "h5"


@pytest.mark.parametrize("kind", BASELINES)
def test_train_then_evaluate_each_baseline(kind, data, tmp_path):
    run = tmp_path / kind
    summary = train_baseline(data, run, kind, preset_name="smoke", epochs=1, threads=1, progress=False)
    model, ckpt = load_run(run)
    assert model.cfg.kind == kind and ckpt["model_config"]["model"] == "baseline"
    if kind != "qtype":
        assert summary["epochs"] == 1 and ckpt["train_config"]["lr"] == 5e-4
    metrics = evaluate_run(run, data, "val", device="cpu")
    rows = [json.loads(x) for x in (run / "predictions_val.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and metrics["model"] == model.cfg.label
    assert metrics["val_accuracy"] == pytest.approx(np.mean([r["prediction"] == r["answer"] for r in rows]))
    assert f"| {model.cfg.label} (paper) | CLEVR v1.0 test |" in (run / "table1.md").read_text()



def test_image_reliance_of_a_run(data, tmp_path, monkeypatch):
    from filmlib.experiment import run_image_reliance
    train_baseline(data, tmp_path / "sa", "cnn_lstm_sa", preset_name="smoke", epochs=1, threads=1, progress=False)
    own = evaluate_run(tmp_path / "sa", data, "val", device="cpu")["val_accuracy"]
    r = run_image_reliance(tmp_path / "sa", data, "val", device="cpu", batch_size=16)
    assert r["questions"] == 40 and r["model"] == "CNN+LSTM+SA" and r["batch_size"] == 16
    assert r["own_images"] == pytest.approx(own) and 0 <= r["other_images"] <= 1
    assert run_image_reliance(tmp_path / "sa", data, "val", device="cpu", batch_size=16, seed=0) == r
    kept = tmp_path / "sa" / "image_reliance_val.json"
    assert json.loads(kept.read_text())["checkpoint"] == "best"
    import filmlib.experiment as experiment

    def rescored(*a, **k):
        rescored.calls += 1
        return {"own_images": 0.0, "other_images": 0.0, "questions": 1}
    rescored.calls = 0
    monkeypatch.setattr(experiment, "image_reliance", rescored)
    assert run_image_reliance(tmp_path / "sa", data, "val", device="cpu", batch_size=16) == r   # kept
    assert rescored.calls == 0
    run_image_reliance(tmp_path / "sa", data, "val", device="cpu", batch_size=16, seed=1)        # another swap
    assert rescored.calls == 1
    best = tmp_path / "sa" / "best.pt"
    os.utime(best, (kept.stat().st_mtime + 5,) * 2)                     # new weights: scored again
    assert run_image_reliance(tmp_path / "sa", data, "val", device="cpu", batch_size=16, seed=1)["questions"] == 1
    assert rescored.calls == 2
    train_baseline(data, tmp_path / "lstm", "lstm", preset_name="smoke", epochs=1, threads=1, progress=False)
    with pytest.raises(ValueError, match="LSTM reads no image"):
        run_image_reliance(tmp_path / "lstm", data, "val", device="cpu")


@pytest.mark.parametrize("by, attr", [("family", "families"), ("final_function", "final_functions")])
def test_qtype_run_scores_the_group_modes(by, attr, data, tmp_path):
    from filmlib.data.datasets import ClevrQuestionsDataset
    train_baseline(data, tmp_path, "qtype", preset_name="smoke", model_changes={"qtype_by": by})
    train = ClevrQuestionsDataset(data / "train_questions.h5", None)
    val = ClevrQuestionsDataset(data / "val_questions.h5", None)
    groups = np.asarray(getattr(train, attr))
    modes = {}
    for f in np.unique(groups):
        values, counts = np.unique(np.asarray(train.answers)[groups == f], return_counts=True)
        modes[int(f)] = int(values[counts.argmax()])
    overall = np.bincount(np.asarray(train.answers)).argmax()
    want = np.mean([modes.get(int(f), overall) == a for f, a in zip(getattr(val, attr), val.answers)])
    assert evaluate_run(tmp_path, data, "val", device="cpu")["val_accuracy"] == pytest.approx(want)


def test_table1_files_and_checks(tmp_path):
    def rep(overall):
        return {"overall": overall, "by_type": {t: overall for t in
                ("count", "exist", "compare_numbers", "query_attribute", "compare_attribute")}}
    ours = {"Q-type baseline": rep(0.40), "LSTM": rep(0.45), "CNN+LSTM": rep(0.44),
            "CNN+LSTM+SA": rep(0.60), "CNN+GRU+FiLM (raw pixels)": rep(0.90)}
    checks = write_table1(ours, tmp_path, "SynthCLEVR val (cpu)")
    assert [p["holds"] for p in checks["ordering"]] == [True, False, True, True]
    assert not checks["ordering_holds"]
    assert checks["film_error_ratio"] == pytest.approx(0.25) and checks["film_halves_error"]
    md = (tmp_path / "table1.md").read_text()
    ours_part, paper_part = md.split("## The paper's numbers")
    assert "| LSTM | SynthCLEVR val (cpu) | 45.0 |" in ours_part and "97.7" not in ours_part
    assert "| CNN+GRU+FiLM | CLEVR v1.0 test | 97.7 |" in paper_part
    assert "LSTM 45.0 < CNN+LSTM 44.0: **breaks**" in md
    rows = list(csv.DictReader((tmp_path / "table1.csv").open()))
    assert [r["source"] for r in rows].count("ours") == 5
    assert {r["model"]: r["overall"] for r in rows if r["source"] == "paper"}["CNN+LSTM+SA"] == "76.6"
    assert table1_checks({"CNN+LSTM+SA": rep(0.5), "CNN+GRU+FiLM": rep(0.7)})["film_halves_error"] is False


def test_cli_trains_and_evaluates_a_baseline(data, tmp_path):
    import subprocess
    import sys

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "filmlib", *args], capture_output=True, text=True, timeout=300)
    run = tmp_path / "sa"
    r = cli("train", "--model", "cnn_lstm_sa", "--data", str(data), "--out", str(run), "--preset", "smoke",
            "--epochs", "1", "--threads", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["epochs"] == 1
    r = cli("evaluate", "--run", str(run), "--data", str(data), "--split", "val")
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "metrics.json").read_text())["model"] == "CNN+LSTM+SA"
    r = cli("train", "--model", "lstm", "--ablation", "beta=0", "--data", str(data), "--out", str(run / "x"),
            "--preset", "smoke")
    assert r.returncode == 1 and "change FiLM only" in r.stderr and "Traceback" not in r.stderr
    r = cli("train", "--model", "lstm", "--classifier-pool", "max+mean", "--data", str(data), "--out",
            str(run / "y"), "--preset", "smoke")
    assert r.returncode == 1 and "change FiLM only" in r.stderr and "Traceback" not in r.stderr


def test_mcnemar_on_hand_counted_cases(tmp_path):
    from filmlib.evaluate import mcnemar, read_correct
    a = {i: True for i in range(10)}
    b = {i: i >= 5 for i in range(10)}                      # b misses 5 that a gets, never the reverse
    t = mcnemar(a, b)
    assert (t["only_a"], t["only_b"], t["questions"]) == (5, 0, 10)
    assert t["p_value"] == pytest.approx(2 / 32)            # 2 * P(X <= 0), X ~ Bin(5, 1/2)
    t = mcnemar({0: True, 1: False, 2: True, 3: False}, {0: False, 1: True, 2: True, 3: False})
    assert (t["only_a"], t["only_b"]) == (1, 1) and t["p_value"] == 1.0
    with pytest.raises(ValueError, match="share no scored question"):
        mcnemar({0: True}, {1: True})
    path = tmp_path / "p.jsonl"
    path.write_text('{"prediction": "yes", "answer": "yes", "question_index": 4}\n'
                    '{"prediction": "2", "answer": "3", "question_index": 9}\n')
    assert read_correct(path) == {4: True, 9: False}
    path.write_text('{"prediction": "yes"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl, line 1: not a predictions row"):
        read_correct(path)


def test_table1_reports_the_significance_of_each_gap(tmp_path):
    def rep(overall):
        return {"overall": overall, "by_type": {}}
    right = {i: True for i in range(20)}
    half = {i: i < 10 for i in range(20)}
    checks = write_table1({"LSTM": rep(0.5), "CNN+LSTM": rep(1.0)}, tmp_path,
                          correct={"LSTM": half, "CNN+LSTM": right})
    (pair,) = checks["ordering"]
    assert pair["only_weaker_right"] == 0 and pair["only_stronger_right"] == 10
    assert pair["p_value"] == pytest.approx(2 / 1024)
    assert "McNemar p = 0.002" in (tmp_path / "table1.md").read_text()


# -- picking each model's learning rate on val (notebook 03 at scale cpu) ---------------------
def test_pick_lr_runs_pilots_picks_on_val_and_continues_the_winner(data, tmp_path):
    from filmlib.experiment import pick_lr
    calls = []

    def train(out, lr, max_samples):
        calls.append((out.name, lr, max_samples))
        return train_baseline(data, out, "cnn_lstm", preset_name="smoke", lr=lr, max_samples=max_samples,
                              batch_size=8, epochs=100, patience=None, threads=1, progress=False,
                              schedule="warmup_cosine", warmup_samples=8, schedule_samples=64)
    run = tmp_path / "cnn_lstm"
    summary = pick_lr(train, run, [1e-4, 3e-3], pilot_samples=24, budget=64)
    record = json.loads((run / "lr_grid.json").read_text())
    scores = {lr: p["val_accuracy"] for lr, p in record["pilots"].items()}
    assert set(scores) == {"0.0001", "0.003"} and all(p["samples"] == 24 for p in record["pilots"].values())
    # the winner is the pilot with the best val accuracy (ties: the first of the grid)
    assert record["chosen"] == max([1e-4, 3e-3], key=lambda lr: scores[f"{lr:g}"])
    assert calls == [("lr_0.0001", 1e-4, 24), ("lr_0.003", 3e-3, 24), ("cnn_lstm", record["chosen"], 64)]
    # ... and it continued from its pilot: the final run's history starts with the pilot's rows
    pilot = [json.loads(x) for x in (run / "lr_grid" / f"lr_{record['chosen']:g}" / "metrics.jsonl").read_text().splitlines()]
    final = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert final[:len(pilot)] == pilot and len(final) > len(pilot) and summary["samples"] == 64
    _, ckpt = load_run(run, "last")
    assert ckpt["train_config"]["lr"] == record["chosen"] and ckpt["samples"] == 64
    # run again: nothing is retrained, the recorded choice is kept
    calls.clear()
    again = pick_lr(train, run, [1e-4, 3e-3], pilot_samples=24, budget=64)
    assert again["samples"] == 64 and again["lr_grid"] == record
    assert [c[0] for c in calls] == ["cnn_lstm"]         # only the (finished) final run, which returns at once
    with pytest.raises(ValueError, match="grid is empty"):
        pick_lr(train, tmp_path / "x", [], pilot_samples=24, budget=64)
    with pytest.raises(ValueError, match="pilot_samples=100 must be in"):
        pick_lr(train, tmp_path / "x", [1e-3], pilot_samples=100, budget=64)


def test_table1_checks_use_the_film_row_on_the_baselines_stem():
    def rep(overall):
        return {"overall": overall, "by_type": {}}
    checks = table1_checks({"CNN+LSTM+SA": rep(0.6), "CNN+GRU+FiLM (raw pixels)": rep(0.5),
                            "CNN+GRU+FiLM": rep(0.9)})
    assert [(p["weaker"], p["stronger"]) for p in checks["ordering"]] == [("CNN+LSTM+SA", "CNN+GRU+FiLM")]
    assert checks["film_error_ratio"] == pytest.approx(0.25)


def test_table1_runs_of_each_scale(tmp_path):
    from filmlib.experiment import table1_runs
    runs = table1_runs(tmp_path, "cpu")
    assert list(runs) == ["Q-type baseline", "LSTM", "CNN+LSTM", "CNN+LSTM+SA", "CNN+GRU+FiLM",
                          "CNN+GRU+FiLM (raw pixels)"]
    assert runs["CNN+GRU+FiLM"] == tmp_path / "film_cpu" and runs["LSTM"] == tmp_path / "lstm_cpu"
    assert runs["CNN+GRU+FiLM (raw pixels)"] == tmp_path / "film_pixels_cpu"
    paper = table1_runs(tmp_path, "paper")      # the paper's FiLM reads ResNet-101 features; raw pixels is its own run
    assert paper["CNN+GRU+FiLM"] == tmp_path / "film_paper"
    assert paper["CNN+GRU+FiLM (raw pixels)"] == tmp_path / "film_pixels_paper"


def test_baselines_get_as_many_questions_as_films_run_saw(tmp_path):
    from filmlib.experiment import film_questions_seen
    assert film_questions_seen(tmp_path, "cpu") is None            # FiLM's run not scored yet
    (tmp_path / "film_cpu").mkdir()
    (tmp_path / "film_cpu" / "metrics.json").write_text(json.dumps({"val_accuracy": 0.7, "samples": 3571584}))
    assert film_questions_seen(tmp_path, "cpu") == 3571584
    # the run trained past its best checkpoint (which metrics.json scores): its last.pt counts
    torch.save({"samples": 6_000_000, "epoch": 9}, tmp_path / "film_cpu" / "last.pt")
    assert film_questions_seen(tmp_path, "cpu") == 6_000_000
    assert film_questions_seen(tmp_path, "smoke") is None           # another scale's run is not read


# -- lanes: two Table 1 runs at once, each in its own process ---------------------------------
def _metrics(run):
    return json.loads((run / "metrics.json").read_text())


def test_runs_in_lanes_match_the_same_runs_one_after_the_other(data, tmp_path):
    """Two spawned 1-thread processes train exactly what one process trains in turn (same seed,
    same threads): the lanes change when runs happen, never what they compute."""
    from filmlib.experiment import run_baselines
    models = ["lstm", "cnn_lstm"]
    serial = run_baselines(data, tmp_path / "serial", "smoke", models=models, progress=False, lanes=1)
    lanes = run_baselines(data, tmp_path / "lanes", "smoke", models=models, progress=False, lanes=2)
    assert list(serial) == list(lanes) == ["LSTM", "CNN+LSTM"]
    for kind in models:
        a, b = _metrics(tmp_path / "serial" / f"{kind}_smoke"), _metrics(tmp_path / "lanes" / f"{kind}_smoke")
        assert a["samples"] == b["samples"] > 0 and a["val_accuracy"] == b["val_accuracy"]
        grid_a = json.loads((tmp_path / "serial" / f"{kind}_smoke" / "lr_grid.json").read_text())
        grid_b = json.loads((tmp_path / "lanes" / f"{kind}_smoke" / "lr_grid.json").read_text())
        assert grid_a["chosen"] == grid_b["chosen"]
        assert [p["val_accuracy"] for p in grid_a["pilots"].values()] == \
               [p["val_accuracy"] for p in grid_b["pilots"].values()]
        sa, sb = (torch.load(d / f"{kind}_smoke" / "last.pt", weights_only=True)["model"]
                  for d in (tmp_path / "serial", tmp_path / "lanes"))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_failing_lane_stops_the_lanes_with_its_error(data, tmp_path):
    from filmlib.experiment import run_in_lanes
    job = dict(data_dir=str(data), results_dir=str(tmp_path), scale="smoke", seed=0, budget=48,
               progress=False, threads=1)
    with pytest.raises(RuntimeError, match=r"mlp: ValueError: invalid BaselineConfig: kind='mlp'"):
        run_in_lanes([("mlp", dict(job, kind="mlp")), ("lstm", dict(job, kind="lstm"))], 2, progress=False)
    assert not (tmp_path / "mlp_smoke").exists()


def test_the_same_seed_gives_the_same_run_whatever_ran_before(data, tmp_path):
    """The initial weights come from the seed, not from what the process drew before."""
    kw = dict(preset_name="smoke", max_samples=16, batch_size=8, epochs=1, threads=1, progress=False)
    train_baseline(data, tmp_path / "a", "cnn_lstm", **kw)
    torch.rand(1000)                                   # the global generator moves on
    train_baseline(data, tmp_path / "b", "cnn_lstm", **kw)
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True)["model"] for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_raw_pixels_row_gets_films_questions_and_films_schedule(data, tmp_path):
    """FiLM from raw pixels: as many questions as FiLM's scored run saw, on FiLM's schedule horizon."""
    from filmlib.config import load_scale
    from filmlib.experiment import run_baselines
    (tmp_path / "film_smoke").mkdir()
    (tmp_path / "film_smoke" / "metrics.json").write_text(json.dumps({"val_accuracy": 0.5, "samples": 64}))
    out = run_baselines(data, tmp_path, "smoke", models=["film_pixels"], progress=False)
    assert list(out) == ["CNN+GRU+FiLM (raw pixels)"]
    _, ckpt = load_run(tmp_path / "film_pixels_smoke", "last")
    film = load_scale("smoke")["film"]
    assert ckpt["samples"] == 64 < film["max_samples"]
    assert ckpt["train_config"]["schedule_samples"] == film["max_samples"]
    assert ckpt["train_config"]["lr"] == film["lr"] and ckpt["model_config"]["stem"] == "pixels"


def test_raw_pixels_row_takes_films_model_changes_then_its_own(data, tmp_path, monkeypatch):
    """film.model changes FiLM's preset for every FiLM run of the scale; baselines.raw_pixels_model
    overrides it for the raw-pixels row only (a row trained before the change keeps its model)."""
    import copy
    from filmlib import experiment
    from filmlib.config import load_scale
    cfg = copy.deepcopy(load_scale("smoke"))
    cfg["film"]["model"] = {"classifier_pool": "max+mean", "num_blocks": 2}
    cfg["baselines"]["raw_pixels_model"] = {"classifier_pool": "max"}
    monkeypatch.setattr(experiment, "load_scale", lambda scale: cfg)
    experiment.train_table1_row("film_pixels", data, tmp_path, "smoke", budget=16, progress=False, threads=1)
    model, _ = load_run(tmp_path / "film_pixels_smoke", "last")
    assert (model.cfg.classifier_pool, model.cfg.num_blocks, model.cfg.stem) == ("max", 2, "pixels")
    kw = experiment.film_train_kwargs(cfg["film"])
    assert kw["model_changes"] == {"classifier_pool": "max+mean", "num_blocks": 2}
    with pytest.raises(ValueError, match="unknown FiLMConfig fields: pool_size"):
        experiment.film_train_kwargs({**cfg["film"], "model": {"pool_size": 2}})
    with pytest.raises(ValueError, match="film.model must be a mapping"):
        experiment.film_train_kwargs({**cfg["film"], "model": ["max+mean"]})


# the lanes end with the process that started them, however it ends
_LANE_HELPERS = '''
import os, time
from pathlib import Path

def sleep_lane(seconds, marker):
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
'''
_LANE_PARENT = '''
import sys
sys.path.insert(0, {folder!r})
from filmlib.experiment import run_in_lanes
from lane_helpers import sleep_lane
if __name__ == "__main__":
    run_in_lanes([("a", dict(seconds=600, marker={marker!r}))], 1, progress=False, target=sleep_lane)
'''


def _gone(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("how", ["interrupted", "killed"])
def test_lanes_end_with_the_process_that_started_them(how, tmp_path):
    import signal
    import subprocess
    import sys
    (tmp_path / "lane_helpers.py").write_text(_LANE_HELPERS)
    marker = tmp_path / "lane.pid"
    script = tmp_path / "parent.py"
    script.write_text(_LANE_PARENT.format(folder=str(tmp_path), marker=str(marker)))
    parent = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not marker.exists() and parent.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), parent.communicate(timeout=30)[1].decode()[-2000:]
    lane = int(marker.read_text())
    assert not _gone(lane)
    if how == "interrupted":      # Ctrl-C: the parent terminates its lanes, then stops
        parent.send_signal(signal.SIGINT)
        assert parent.wait(timeout=60) != 0
        assert b"KeyboardInterrupt" in parent.stderr.read()
    else:                         # SIGKILL: no chance to clean up; the lane's watcher ends it
        parent.kill()
        parent.wait(timeout=60)
    deadline = time.time() + 60
    while not _gone(lane) and time.time() < deadline:
        time.sleep(0.2)
    assert _gone(lane), f"lane {lane} outlived its parent ({how})"


def test_a_run_scored_from_its_present_weights_is_not_scored_again(tmp_path, monkeypatch):
    """run_baselines reads metrics.json of a run scored on val since its best.pt was written (a
    relaunched notebook does not score finished runs again); a run whose best.pt is newer is scored."""
    from filmlib import experiment
    scale = "smoke"
    scored = []
    monkeypatch.setattr(experiment, "train_table1_row", lambda kind, **kw: None)
    monkeypatch.setattr(experiment, "evaluate_run",
                        lambda run, *a, **k: scored.append(Path(run).name) or {"model": "new " + Path(run).name})
    for kind in ("lstm", "cnn_lstm"):
        run = tmp_path / f"{kind}_{scale}"
        run.mkdir()
        (run / "best.pt").write_bytes(b"weights")
        (run / "predictions_val.jsonl").write_text("")
        (run / "metrics.json").write_text(json.dumps({"split": "val", "model": f"kept {kind}"}))
    stale = tmp_path / f"cnn_lstm_{scale}" / "best.pt"
    os.utime(stale, (time.time() + 5,) * 2)
    out = experiment.run_baselines(tmp_path, tmp_path, scale, models=["lstm", "cnn_lstm"], lanes=1)
    assert scored == [f"cnn_lstm_{scale}"]
    assert list(out) == ["kept lstm", f"new cnn_lstm_{scale}"]


def test_lanes_are_for_the_runs_still_to_train(tmp_path, monkeypatch):
    """run_baselines gives lanes only to runs that have not spent their budget; the last one left
    trains alone with every thread (not on one core beside an idle lane), and a run stopped at a
    curve point (its epoch still open) is not spent."""
    from filmlib import experiment
    from filmlib.train import atomic_save
    scale = "cpu"
    cfg = experiment.load_scale(scale)
    budget = cfg["film"]["max_samples"]
    calls, lanes_used = [], []
    monkeypatch.setattr(experiment, "train_table1_row", lambda kind, **kw: calls.append((kind, kw["threads"])))
    monkeypatch.setattr(experiment, "run_in_lanes",
                        lambda jobs, lanes, **kw: lanes_used.append(([n for n, _ in jobs], lanes,
                                                                      [j["threads"] for _, j in jobs])))
    monkeypatch.setattr(experiment, "evaluate_run", lambda run, *a, **k: {"model": Path(run).name})

    def spent(kind, samples=budget, open_epoch=0):
        (tmp_path / f"{kind}_{scale}").mkdir(exist_ok=True)
        atomic_save({"samples": samples, "epoch_batches": open_epoch, "train_seconds": 60.0},
                    tmp_path / f"{kind}_{scale}" / "last.pt")

    for kind in ("lstm", "cnn_lstm"):
        spent(kind)
    spent("cnn_lstm_sa", samples=budget, open_epoch=17)           # at its last curve point: not closed
    experiment.run_baselines(tmp_path, tmp_path, scale)
    assert lanes_used == [(["film_pixels", "cnn_lstm_sa"], 2, [1, 1])]
    lanes_used.clear(), calls.clear()
    spent("cnn_lstm_sa")
    experiment.run_baselines(tmp_path, tmp_path, scale)
    assert lanes_used == [] and ("film_pixels", cfg["baselines"]["threads"]) in calls
    assert cfg["baselines"]["threads"] == 2
