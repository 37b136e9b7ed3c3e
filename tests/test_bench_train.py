"""benchmarks/bench_train.py's bookkeeping: the paper rows are the median of runs taken in turn,
each run kept with the machine's speed around it; speed-ups are taken from the median run;
warm-up lasts until memory has settled."""
import functools
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


@functools.cache
def _load():                   # once: the module registers a FLOP formula with torch on import
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench(monkeypatch, tmp_path):
    module = _load()
    speeds = {("pixels", "filmlib"): iter([8.0, 9.0, 6.0]), ("features", "filmlib"): iter([7.0, 5.0, 4.0]),
              ("pixels", "reference"): iter([2.0]), ("features", "reference"): iter([2.5])}

    def fake_run(name, stem, threads, style):              # no model: the numbers are the test's
        v = next(speeds[stem, style])
        return {"preset": name, "stem": stem, "style": style, "threads": threads, "batch": 64,
                "parameters": 1, "mean_question_tokens": 20.0, "samples_per_s": v, "step_seconds": 64 / v,
                "useful_gflop_per_sample": 1.0, "achieved_gflop_per_s": v, "peak_rss_mb": 1.0,
                "matmul_gflop_per_s_around": [100.0 + v, 100.0], "warmup_steps": [[9.0, 700], [8.0, 0]],
                "timed_steps": [[64 / v, 0]]}
    monkeypatch.setattr(module, "run_one", fake_run)
    monkeypatch.setattr(module, "matmul_peak", lambda threads: 50e9)
    monkeypatch.setattr(module, "OUT", tmp_path)
    return module


def test_paper_rows_report_the_median_run_and_keep_every_run(bench, tmp_path):
    bench.main(["--presets", "paper", "--repeats", "3"])
    result = json.loads((tmp_path / "train.json").read_text())
    rows = {(r["stem"], r["style"]): r for r in result["runs"]}
    pixels, features = rows["pixels", "filmlib"], rows["features", "filmlib"]
    assert [x["samples_per_s"] for x in pixels["runs"]] == [8.0, 9.0, 6.0]
    assert pixels["samples_per_s"] == 8.0 and pixels["matmul_gflop_per_s_around"] == [108.0, 100.0]
    assert features["samples_per_s"] == 5.0 and features["step_seconds"] == 64 / 5.0
    assert pixels["speedup_vs_authors"] == round(8.0 / bench.AUTHORS["pixels"], 2)
    assert pixels["speedup_vs_reference"] == 4.0 and features["speedup_vs_reference"] == 2.0
    assert "reference" not in pixels and "runs" not in rows["pixels", "reference"]
    # the denominator is the machine's best measured moment: here a row's "before" (109 GFLOP/s)
    assert result["fp32_matmul_peak_gflop_per_s"] == 109.0
    assert pixels["fraction_of_matmul_peak"] == round(8.0 / 109.0, 3)
    md = (tmp_path / "train.md").read_text()
    assert "the median of 3 runs" in md and "8.0 (108 / 100; 2), 9.0 (109 / 100; 2), 6.0 (106 / 100; 2)" in md


def test_warm_up_runs_until_steps_in_a_row_take_no_page_fault(bench):
    calls = []

    def measured(faults):
        it = iter(faults)

        def measure(step):
            step()
            return 1.0, next(it)
        return measure
    step = lambda: calls.append(1)     # noqa: E731
    # at least 2 steps, then on until the last 2 took no fault
    assert [f for _, f in bench.warm_up(step, 2, 10, measured([900, 700, 0, 300, 0, 0, 5]), settled=2)] == \
        [900, 700, 0, 300, 0, 0]
    # one fault-free step is enough with settled=1
    assert [f for _, f in bench.warm_up(step, 2, 10, measured([0, 900, 0, 5]), settled=1)] == [0, 900, 0]
    # a quiet start still runs the least number of steps
    assert len(bench.warm_up(step, 3, 10, measured([0, 0, 0, 0]), settled=2)) == 3
    # never settling stops at the most; settled=0 (the reference runs) is exactly `least`
    assert len(bench.warm_up(step, 1, 4, measured([700] * 9), settled=2)) == 4
    assert len(bench.warm_up(step, 1, 1, measured([700] * 9), settled=0)) == 1
    assert len(bench.warm_up(step, 2, 9, measured([700] * 9), settled=0)) == 2
    assert len(calls) == 6 + 3 + 3 + 4 + 1 + 2
