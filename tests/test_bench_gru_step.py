"""benchmarks/bench_gru_step.py runs end to end (on a small GRU) and writes its JSON and table."""
import importlib.util
import json
from pathlib import Path

import pytest

from filmlib.models import panel_gemm

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gru_step.py"


@pytest.mark.skipif(not panel_gemm.available(), reason="filmlib's panel GEMM cannot be built here")
def test_small_gru_run_writes_both_paths(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("bench_gru_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(bench, "H", 64)
    monkeypatch.setattr(bench, "EMBED", 8)
    monkeypatch.setattr(bench, "ROWS", [1, 7])
    monkeypatch.setattr(bench, "OUT", tmp_path)
    monkeypatch.setattr(bench, "matmul_peak", lambda threads: 100e9)
    bench.main(["--repeats", "3", "--threads", "1"])
    result = json.loads((tmp_path / "gru_step.json").read_text())
    assert [r["rows"] for r in result["per_step_ms"]] == [1, 7]
    for r in result["per_step_ms"]:
        assert all(r[k] > 0 for k in ("forward panel", "forward oneDNN", "backward panel", "backward oneDNN"))
    assert set(result["recurrence_forward_backward_ms"]) == {"panel GEMM", "oneDNN"}
    assert result["matmul_gflop_per_s_before_after"] == [100.0, 100.0]
    from filmlib.models import gru
    assert gru.use_panel_gemm                       # the switch is left as it was found
    assert "| 7 |" in (tmp_path / "gru_step.md").read_text()
