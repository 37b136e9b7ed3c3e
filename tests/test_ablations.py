"""filmlib.ablations: the rows, the runner's skip and resume logic, the tables."""
import copy
import json

import pytest

from filmlib import ablations
from filmlib.config import load_scale
from filmlib.models.config import ABLATIONS, DEPTHS

from test_experiment import prepared  # noqa: F401  (the module-scoped tiny dataset)


def test_variants_cover_table2_and_table3_once():
    rows = ablations.variants()
    names = [v.name for v in rows]
    assert len(names) == len(set(names))
    t2 = [v for v in rows if v.table == "table2"]
    assert [v.name for v in t2] == ["best", *ABLATIONS]
    assert all(v.paper == ablations.PAPER_TABLE2[v.name] for v in t2)
    t3 = [v for v in rows if v.table == "table3"]
    assert sorted(v.changes["num_blocks"] for v in t3) == [d for d in DEPTHS if d != ablations.BEST_DEPTH]
    seeded = ablations.variants({"best": [0, 1], "gamma=1": [2]})
    extra = seeded[len(rows):]
    assert [(v.name, v.seed, v.ablation) for v in extra] == [("best_seed1", 1, None), ("gamma=1_seed2", 2, "gamma=1")]
    with pytest.raises(ValueError, match="unknown row 'nope'"):
        ablations.variants({"nope": [1]})


@pytest.fixture
def smoke_pixels(monkeypatch):
    """The smoke scale with FiLM on raw pixels (the tiny dataset has no perception maps)."""
    cfg = copy.deepcopy(load_scale("smoke"))
    cfg["film"].update(stem="pixels", features=None)
    monkeypatch.setattr(ablations, "load_scale", lambda scale: cfg)
    return cfg


def test_runner_trains_scores_then_skips_finished_rows(prepared, tmp_path, smoke_pixels, monkeypatch):
    data = prepared / "h5"
    names = ["best", "beta=0", "depth_1"]
    out = ablations.run_ablations("smoke", data, tmp_path, names=names, lanes=1, progress=False)
    assert set(out) == set(names)
    budget = smoke_pixels["ablations"]["max_samples"]
    for name in names:
        run = tmp_path / "ablations_smoke" / name
        assert ablations.trained(run, budget, None)
        assert 0 <= out[name]["val_accuracy"] <= 1 and out[name]["samples"] >= budget
    from filmlib.experiment import load_run
    assert load_run(tmp_path / "ablations_smoke" / "depth_1")[0].cfg.num_blocks == 1
    assert load_run(tmp_path / "ablations_smoke" / "beta=0")[0].cfg.beta == "zero"
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ablations_smoke").rglob("*") if p.is_file()}

    calls = []
    monkeypatch.setattr(ablations, "train_variant", lambda **kw: calls.append(kw["variant"]["name"]))
    again = ablations.run_ablations("smoke", data, tmp_path, names=names, lanes=1, progress=False)
    assert calls == []                                    # every row had spent its budget
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps   # nothing retrained or rescored
    assert again == json.loads(json.dumps(out))            # read back from each metrics.json


def test_every_row_takes_the_scales_model_changes_under_its_own(prepared, tmp_path, smoke_pixels):
    """The scale's film.model (the best model's changes to the preset) reaches every row; a row's
    own change of the same field wins."""
    smoke_pixels["film"]["model"] = {"classifier_pool": "max+mean", "num_blocks": 3}
    ablations.run_ablations("smoke", prepared / "h5", tmp_path, names=["best", "depth_1"], lanes=1, progress=False)
    from filmlib.experiment import load_run
    best, deep1 = (load_run(tmp_path / "ablations_smoke" / n)[0].cfg for n in ("best", "depth_1"))
    assert (best.classifier_pool, best.num_blocks) == ("max+mean", 3)
    assert (deep1.classifier_pool, deep1.num_blocks) == ("max+mean", 1)


def test_the_sections_own_model_changes_and_lr_reach_every_row(smoke_pixels):
    """ablations.model goes over film.model (a row's own change still wins, in train_variant);
    ablations.lr replaces the peak; a bad model section is named."""
    smoke_pixels["film"]["model"] = {"classifier_pool": "max+mean", "channels": 8}
    smoke_pixels["ablations"].update(model={"channels": 4}, lr=2e-3)
    kw = ablations.train_kwargs("smoke")
    assert kw["model_changes"] == {"classifier_pool": "max+mean", "channels": 4} and kw["lr"] == 2e-3
    smoke_pixels["ablations"].update(model=None, lr=None)
    kw = ablations.train_kwargs("smoke")
    assert kw["model_changes"] == {"classifier_pool": "max+mean", "channels": 8}
    assert kw["lr"] == smoke_pixels["film"]["lr"]
    smoke_pixels["ablations"]["model"] = ["channels", 4]
    with pytest.raises(ValueError, match="ablations.model must be a mapping"):
        ablations.train_kwargs("smoke")
    smoke_pixels["ablations"]["model"] = {"chanels": 4}
    with pytest.raises(ValueError, match="chanels"):
        ablations.train_kwargs("smoke")


def test_a_run_short_of_its_budget_is_resumed(prepared, tmp_path, smoke_pixels, monkeypatch):
    data = prepared / "h5"
    ablations.run_ablations("smoke", data, tmp_path, names=["best"], lanes=1, progress=False)
    run = tmp_path / "ablations_smoke" / "best"
    budget = smoke_pixels["ablations"]["max_samples"]
    assert not ablations.trained(run, budget + 1000, None)       # a bigger budget: not done
    assert ablations.trained(run, budget + 1000, minutes=0.0)    # unless its time guard is spent
    smoke_pixels["ablations"]["max_samples"] = budget + 1000
    calls = []
    monkeypatch.setattr(ablations, "train_variant", lambda **kw: calls.append(kw["variant"]["name"]))
    monkeypatch.setattr(ablations, "val_metrics", lambda *a, **k: {})
    ablations.run_ablations("smoke", data, tmp_path, names=["best", "gamma=1"], lanes=1, progress=False)
    assert calls == ["best", "gamma=1"]
    with pytest.raises(ValueError, match="unknown ablation rows: nope"):
        ablations.run_ablations("smoke", data, tmp_path, names=["nope"])


def test_tables_put_the_papers_column_beside_ours(prepared, tmp_path, smoke_pixels):
    data = prepared / "h5"
    ablations.run_ablations("smoke", data, tmp_path, names=["best", "gamma=1", "depth_2", "best_seed1"],
                            lanes=1, progress=False)
    rows = ablations.write_tables("smoke", tmp_path)
    t2 = {r["name"]: r for r in rows["table2"]}
    assert set(t2) == {"best", "gamma=1", "best_seed1"}
    assert t2["gamma=1"]["paper"] == 95.9 and t2["gamma=1"]["paper_minus_best"] == -1.5
    best = json.loads((tmp_path / "ablations_smoke" / "best" / "metrics.json").read_text())
    assert t2["gamma=1"]["ours_minus_best"] == pytest.approx(t2["gamma=1"]["ours"] - round(100 * best["val_accuracy"], 1), abs=0.11)
    assert 0 <= t2["gamma=1"]["p_value"] <= 1 and "p_value" not in t2["best"]
    assert t2["best_seed1"]["seed"] == 1
    t3 = rows["table3"]
    assert [r["name"] for r in t3] == ["depth_2", "best", "best_seed1"]
    assert t3[1]["row"] == "4 ResBlocks (best)" and t3[0]["paper"] == 97.1
    md = (tmp_path / "table2_smoke.md").read_text()
    assert "| γ := 1 | 0 |" in md and "quoted, not run here" in md
    assert (tmp_path / "table3_smoke.csv").read_text().splitlines()[0].startswith("row,seed,ours,paper")
    ablations.plot_table(rows["table2"])


def _rows(acc: dict) -> list[dict]:
    return [{"name": n, "ours": a, "seed": 0} for n, a in acc.items()]


def test_verdicts_check_the_papers_findings_and_say_what_is_missing():
    t2 = {"best": 80.0, **{n: 75.0 for n in ABLATIONS}, "no_film_blocks1-4": 30.0, "gamma=1": 70.0, "beta=0": 78.0}
    t3 = {f"depth_{d}": 79.0 for d in DEPTHS if d != 4}
    t3["depth_1"] = 60.0
    got = {v["claim"].split(" (")[0]: v for v in ablations.verdicts(_rows(t2), _rows(t3), question_only=46.0)}
    assert all(v["holds"] for v in got.values()), got
    assert "lowest: γ := 1 70.0% vs question-only 46.0%" in got["no model with FiLM in some block falls to about the question-only level"]["numbers"]
    t2["gamma=1"], t3["depth_1"], t2["no_film_blocks1-4"] = 47.0, 90.0, 55.0
    t2["best_seed1"] = 10.0                                     # extra seeds are not the row
    broken = ablations.verdicts(_rows(t2), _rows(t3), question_only=46.0)
    assert [v["holds"] for v in broken] == [False, False, True, False]
    partial = ablations.verdicts(_rows({"best": 80.0}), [], question_only=None)
    assert [v["holds"] for v in partial] == [None, None, None, None]
    assert "gamma=1, beta=0" in partial[2]["numbers"]


def test_a_diverged_row_is_recorded_and_the_others_go_on(prepared, tmp_path, smoke_pixels, monkeypatch):
    """A row whose loss stops being finite leaves diverged.json and a "diverged" cell in its table,
    is not retrained on the next run, does not stop the other rows, and its verdict says so."""
    from filmlib.train import TrainingDiverged
    data = prepared / "h5"
    real = ablations.train_film
    names = ["best", "gamma=1", "beta=0"]

    def maybe_diverge(data_dir, out_dir, **kw):
        if kw["ablation"] == "gamma=1":
            raise TrainingDiverged(f"loss is nan at epoch 1, step 3; the last good checkpoint is {out_dir}/last.pt")
        return real(data_dir, out_dir, **kw)

    monkeypatch.setattr(ablations, "train_film", maybe_diverge)
    out = ablations.run_ablations("smoke", data, tmp_path, names=names, lanes=1, progress=False)
    assert "loss is nan" in out["gamma=1"]["diverged"]["error"] and 0 <= out["beta=0"]["val_accuracy"] <= 1
    run = tmp_path / "ablations_smoke" / "gamma=1"
    assert ablations.trained(run, 10 ** 9, None) and ablations.diverged(run)["row"] == "gamma=1"
    rows = ablations.write_tables("smoke", tmp_path)
    t2 = {r["name"]: r for r in rows["table2"]}
    assert t2["gamma=1"]["ours"] is None and t2["gamma=1"]["diverged"] is True
    assert "| γ := 1 | 0 | diverged |" in (tmp_path / "table2_smoke.md").read_text()
    ablations.plot_table(rows["table2"])                          # no point of ours for it, no error
    calls = []
    monkeypatch.setattr(ablations, "train_variant", lambda **kw: calls.append(kw["variant"]["name"]))
    ablations.run_ablations("smoke", data, tmp_path, names=names, lanes=1, progress=False)
    assert calls == []
    said = {v["claim"].split(" (")[0]: v for v in ablations.verdicts(rows["table2"], rows["table3"], 20.0)}
    gamma = said["γ := 1 costs more than β := 0"]
    assert gamma["holds"] is None and gamma["numbers"] == "diverged: gamma=1"
    # the best model diverging: its Table 3 row keeps its depth label, and nothing is compared with it
    (tmp_path / "ablations_smoke" / "best" / "diverged.json").write_text(
        json.dumps({"row": "best", "error": "loss is nan", "last_checkpoint_samples": 16}))
    t3 = ablations.table_rows("smoke", tmp_path, "table3")
    assert [(r["row"], r["ours"]) for r in t3 if r["name"] == "best"] == [("4 ResBlocks (best)", None)]
    assert all(r["ours_minus_best"] is None for r in ablations.table_rows("smoke", tmp_path, "table2"))


def test_lanes_start_the_longest_rows_first(tmp_path, smoke_pixels, monkeypatch):
    """With two lanes the rows are handed out by cost (depth 12, raw pixels, depth 8 ...), so no
    lane idles at the end while the other trains the deepest model."""
    handed = []
    monkeypatch.setattr(ablations, "run_in_lanes", lambda jobs, lanes, **kw: handed.extend(n for n, _ in jobs))
    monkeypatch.setattr(ablations, "val_metrics", lambda *a, **k: {})
    ablations.run_ablations("smoke", tmp_path, tmp_path, names=["best", "depth_1", "depth_12", "raw_pixels",
                                                                "depth_8", "beta=0"], lanes=2, progress=False)
    assert handed[:3] == ["depth_12", "raw_pixels", "depth_8"] and handed[-1] == "depth_1"
    assert ablations.cost(next(v for v in ablations.variants() if v.name == "depth_12")) == 3.0
