"""filmlib.memory: freed memory stays in the process (checked in fresh interpreters, since the
setting is process-wide)."""
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import json, torch
    from filmlib.memory import retain_freed_memory
    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    applied = retain_freed_memory() if RETAIN else False
    before = rss_mb()
    x = torch.empty(64 * 2**20)          # 256 MB, above glibc's mmap threshold
    x.fill_(1.0)
    during = rss_mb()
    del x
    after = rss_mb()
    print(json.dumps({"applied": applied, "grew": during - before, "kept": after - before}))
""")


def _probe(retain: bool, **env) -> dict:
    import json
    code = f"RETAIN = {retain}\n" + PROBE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "THP_MEM_ALLOC_ENABLE": "0", **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc are Linux-only")
def test_freed_memory_is_kept_only_when_asked():
    default = _probe(False)
    assert default["grew"] > 200 and default["kept"] < 50          # glibc gives the block back
    kept = _probe(True)
    assert kept["applied"] is True
    assert kept["grew"] > 200 and kept["kept"] > 200               # ... unless told to keep it
    opted_out = _probe(True, FILMLIB_RETAIN_MEMORY="0")
    assert opted_out["applied"] is False and opted_out["kept"] < 50


def test_trainer_setting(tmp_path):
    import torch
    from filmlib.train import TrainConfig, Trainer
    from torch.utils.data import TensorDataset
    model = torch.nn.Linear(2, 2)
    data = TensorDataset(torch.zeros(4, 2))
    off = Trainer(model, data, None, TrainConfig(out_dir=str(tmp_path), device="cpu", retain_memory=False, progress=False))
    assert off.retains_memory is False
    on = Trainer(model, data, None, TrainConfig(out_dir=str(tmp_path), device="cpu", progress=False))
    assert on.retains_memory is sys.platform.startswith("linux")    # on by default on the CPU
