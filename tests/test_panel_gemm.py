"""filmlib.models.panel_gemm: the compiled panel GEMM computes torch's products, packs both
ways, builds once into its cache, and gives clear errors."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from filmlib.models import panel_gemm

HAS_TOOLS = panel_gemm._cpu_ok() and (shutil.which("cc") or shutil.which("gcc"))
needs_kernel = pytest.mark.skipif(not HAS_TOOLS, reason="needs an x86-64 CPU with AVX2/FMA and a C compiler")


@needs_kernel
def test_builds_and_loads_here():
    # where the CPU and a compiler allow it, the kernel must actually be in use (not a silent fallback)
    assert panel_gemm.available()


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("k, n", [(4, 16), (260, 48), (524, 256), (96, 32)])
def test_matches_torch_for_every_row_count(threads, k, n):
    torch.manual_seed(k + n)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        w = torch.randn(n, k)                       # a Linear weight: B = w.T
        b = torch.randn(k, n)                       # B itself
        bias = torch.randn(n)
        pt, pb = panel_gemm.pack(w, transposed=True), panel_gemm.pack(b, transposed=False)
        for m in [1, 2, 5, 6, 7, 12, 13, 64]:
            x = torch.randn(m, k)
            torch.testing.assert_close(panel_gemm.matmul(x, pt, bias), x @ w.t() + bias, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(panel_gemm.matmul(x, pb), x @ b, atol=1e-4, rtol=1e-4)
    finally:
        torch.set_num_threads(old)


@needs_kernel
def test_packed_copy_does_not_follow_the_weight():
    w = torch.randn(32, 8)
    packed = panel_gemm.pack(w, transposed=True)
    x = torch.randn(3, 8)
    before = panel_gemm.matmul(x, packed)
    w.mul_(2)
    assert torch.equal(panel_gemm.matmul(x, packed), before)


@needs_kernel
def test_rejects_what_it_does_not_compute():
    with pytest.raises(ValueError, match="multiple of 16"):
        panel_gemm.pack(torch.randn(8, 24), transposed=False)          # 24 columns
    with pytest.raises(ValueError, match="multiple of 4"):
        panel_gemm.pack(torch.randn(16, 6), transposed=True)           # k = 6
    with pytest.raises(ValueError, match="float32"):
        panel_gemm.pack(torch.randn(16, 8, dtype=torch.float64), transposed=True)
    packed = panel_gemm.pack(torch.randn(16, 8), transposed=True)
    with pytest.raises(ValueError, match="has 12 columns but B has 8 rows"):
        panel_gemm.matmul(torch.randn(2, 12), packed)
    with pytest.raises(ValueError, match="contiguous"):
        panel_gemm.matmul(torch.randn(8, 2).t(), packed)
    with pytest.raises(ValueError, match="bias has 3 values"):
        panel_gemm.matmul(torch.randn(2, 8), packed, torch.randn(3))
    assert panel_gemm.matmul(torch.randn(0, 8), packed).shape == (0, 16)
    with pytest.raises(ValueError, match="not a packed weight of 8 x 16"):
        panel_gemm.matmul(torch.randn(2, 8), panel_gemm.PackedWeight(torch.zeros(100), 8, 16))


@needs_kernel
def test_builds_once_into_its_cache(tmp_path):
    first = panel_gemm.build(tmp_path)
    stamp = first.stat().st_mtime_ns
    assert panel_gemm.build(tmp_path) == first and first.stat().st_mtime_ns == stamp   # not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [first.name]                     # no temporary left
    assert first.stat().st_mode & 0o755 == 0o755                                    # loadable by others


def test_a_failed_build_names_the_compiler_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "false")               # a "compiler" that always fails
    with pytest.raises(RuntimeError, match="false could not compile .*panel_gemm.c"):
        panel_gemm.build(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_missing_compiler_is_a_build_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", "ccache-that-is-not-there gcc")       # a command with arguments, split
    with pytest.raises(RuntimeError, match="ccache-that-is-not-there gcc could not compile"):
        panel_gemm.build(tmp_path)


def test_switched_off_by_the_environment_and_the_gru_falls_back():
    code = ("import torch; from filmlib.models import panel_gemm; from filmlib.models.gru import last_states;"
            "assert not panel_gemm.available();"
            "g = torch.nn.GRU(4, 32, batch_first=True); h = last_states(g, torch.randn(3, 5, 4), torch.tensor([5, 2, 4]));"
            "h.sum().backward(); print(h.shape[1])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "FILMLIB_PANEL_GEMM": "0"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "32"
