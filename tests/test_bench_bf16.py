"""benchmarks/bench_bf16.py runs end to end (one thread, one stem, eager, one round) and writes its tables."""
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_bf16.py"


def test_one_round_writes_fp32_and_bf16_rows(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH), "--threads", "1", "--stems", "features", "--compile", "off",
                        "--steps", "1", "--rounds", "1", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "bf16.json").read_text())
    from filmlib.train import cpu_bf16_native
    assert result["meta"]["cpu_bf16_native"] == cpu_bf16_native()
    matmul = {row["dtype"]: row["gflop_per_s"] for row in result["rows"] if row["what"] == "matmul"}
    assert set(matmul) == {"float32", "bfloat16"} and all(v[0] > 0 for v in matmul.values())
    (step,) = [row for row in result["rows"] if row["what"] == "step"]
    assert step["stem"] == "features" and step["compiled"] is False and step["threads"] == 1
    assert all(len(v) == 1 and v[0] > 0 for v in step["samples_per_s"].values())
    table = (tmp_path / "bf16.md").read_text()
    assert "| training step, batch 64 | features | no | 1 |" in table and "| matmul 1024² |" in table
