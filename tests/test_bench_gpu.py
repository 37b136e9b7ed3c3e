"""benchmarks/gpu_check.sh at smoke size on the CPU: the script the GPU machine runs, run here
end to end (every mode, the training run), so a lent GPU's few minutes are not spent on its bugs."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_at_smoke_size_and_writes_its_record(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", "--device", "cpu",
                        "--out", str(out)], capture_output=True, text=True, timeout=900,
                       env={"PY": sys.executable, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["smoke"] and result["device"] == "cpu" and result["torch"].startswith("2.")
    rows = {(s["stem"], s["mode"]): s for s in result["speed"]}
    assert set(rows) == {(stem, mode) for stem in ("features", "pixels") for mode in ("fp32", "bf16", "bf16+compile")}
    for row in rows.values():
        assert "error" in row or (row["samples_per_s"] > 0 and row["epoch_minutes"] > 0), row
        # a mode may fail for want of something on a machine (a compiler), never for a bug of the script
        assert not row.get("error", "").startswith(("TypeError", "NameError", "AttributeError", "KeyError",
                                                     "ValueError", "IndexError")), row
    # fp32 and bf16 autocast run on any device; the best of each stem is a measured row
    assert all("samples_per_s" in rows[(stem, m)] for stem in ("features", "pixels") for m in ("fp32", "bf16"))
    assert result["best"]["pixels"]["samples_per_s"] == max(
        r["samples_per_s"] for r in result["speed"] if r["stem"] == "pixels" and "samples_per_s" in r)
    t = result["training"]
    assert t["questions_seen"] == 640 and len(t["train_loss"]) == 10           # a point every 64 questions
    assert t["loss_falls"] and t["loss_last"] < t["loss_first"]
    md = out.with_suffix(".md").read_text()
    assert "| pixels | bf16 |" in md and "train loss" in md
