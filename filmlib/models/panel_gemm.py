"""A few rows against one large weight, with the weight streamed once: filmlib's panel GEMM.

The GRU's per-step products, (n x 4096) @ (4096 x 12288) forward and (n x 12288) @ (12288 x 4096)
backward with n <= 64, read the whole 201 MB hidden weight from memory at every time step.
oneDNN and MKL read it and multiply one after the other, so a step costs about the time to
stream the weight plus the time to compute. ``filmlib/csrc/panel_gemm.c`` packs the weight once
per pass over the sequence (into 16-column panels in reading order) and prefetches the next
piece of it while it multiplies the current one by every 6-row tile of the states, so the two
overlap (see the C file's header, and docs/performance.md for the numbers).

The C file is compiled on first use with the system's C compiler (``cc -O3 -mavx2 -mfma -fopenmp``) into
a cache directory (``$FILMLIB_CACHE``, else ``$XDG_CACHE_HOME/filmlib``, else
``~/.cache/filmlib``), named by a hash of the source and flags, written to a temporary name and
renamed. :func:`available` is False, and callers use torch's products, where that cannot
happen: not Linux on x86-64, no AVX2 and FMA, no compiler, a failed build (one warning says
why), or ``FILMLIB_PANEL_GEMM=0`` in the environment.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["PackedWeight", "available", "pack", "matmul", "supports"]

SOURCE = Path(__file__).resolve().parents[1] / "csrc" / "panel_gemm.c"
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"]
NR, MR = 16, 6                      # panel width and tile height (as in the C file)
_state: dict = {}


def _cache_dir() -> Path:
    if os.environ.get("FILMLIB_CACHE"):
        return Path(os.environ["FILMLIB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "filmlib"


def _cpu_ok() -> bool:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return {"avx2", "fma"} <= set(flags.split(":", 1)[1].split())


def build(cache: Path | None = None) -> Path:
    """Compile the C file (if its cached build is missing) and return the shared library's path.
    Raises RuntimeError naming the compiler and its message when the build fails."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (cc, gcc or clang on PATH, or $CC)")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([cc, *FLAGS]).encode()).hexdigest()[:16]
    cache = Path(cache) if cache is not None else _cache_dir()
    target = cache / f"panel_gemm-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".panel_gemm-", suffix=".so", dir=cache)
    os.close(fd)
    try:
        try:
            r = subprocess.run([*shlex.split(cc), *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True)
        except OSError as e:
            raise RuntimeError(f"{cc} could not compile {SOURCE}: {e}") from e
        if r.returncode != 0:
            raise RuntimeError(f"{cc} could not compile {SOURCE}: {r.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)                    # mkstemp made it 0600: others sharing the cache load it too
        os.replace(tmp, target)                 # atomic: another process may build the same file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _library():
    if "lib" in _state:
        return _state["lib"]
    lib = None
    if os.environ.get("FILMLIB_PANEL_GEMM", "1") != "0" and _cpu_ok():
        try:
            lib = ctypes.CDLL(str(build()))
            if lib.panel_gemm_abi() != 1:
                raise RuntimeError("the compiled library does not match this filmlib")
            lib.panel_gemm.argtypes = [ctypes.c_long] * 3 + [ctypes.c_void_p] * 5 + [ctypes.c_int]
            lib.panel_pack.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_int,
                                       ctypes.c_void_p, ctypes.c_int]
            lib.panel_gemm.restype = lib.panel_pack.restype = ctypes.c_int
        except (OSError, RuntimeError, AttributeError) as e:
            warnings.warn(f"filmlib's panel GEMM is unavailable, using torch's products instead: {e}",
                          RuntimeWarning, stacklevel=3)
            lib = None
    _state["lib"] = lib
    return lib


def available() -> bool:
    """True where the compiled kernel can be used (see the module docstring)."""
    return _library() is not None


def supports(k: int, n: int) -> bool:
    """True for products (rows x k) @ (k x n) the kernel takes: n % 16 == 0 and k % 4 == 0."""
    return n % NR == 0 and k % 4 == 0 and k >= 4


class PackedWeight:
    """B (k x n) in the kernel's layout. Holds its own copy: later changes to the weight do not
    reach it, so pack again after every optimizer step (the GRU packs once per pass). Checked
    once here, so that :func:`matmul` can hand it to the kernel as it is."""

    def __init__(self, data: Tensor, k: int, n: int):
        _check(data, "the packed weight", 1)
        if data.numel() != k * n or data.data_ptr() % 32:
            raise ValueError(f"not a packed weight of {k} x {n}: use panel_gemm.pack()")
        self.data, self.k, self.n = data, k, n


def _require():
    """The loaded library; raises where it is unavailable."""
    lib = _library()
    if lib is None:
        raise RuntimeError("filmlib's panel GEMM is unavailable here (see panel_gemm.available())")
    return lib


def _check(t: Tensor, name: str, dims: int) -> None:
    if t.device.type != "cpu" or t.dtype != torch.float32 or t.dim() != dims or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous {dims}-d float32 CPU tensor; "
                         f"got {t.dtype} {tuple(t.shape)} on {t.device}, contiguous={t.is_contiguous()}")


def pack(weight: Tensor, transposed: bool) -> PackedWeight:
    """Pack B for :func:`matmul`. transposed=True: ``weight`` is B's transpose (n x k), as a
    Linear weight is (``x @ weight.T``); transposed=False: ``weight`` is B (k x n)."""
    lib = _require()
    _check(weight, "weight", 2)
    n, k = weight.shape if transposed else weight.shape[::-1]
    if not supports(k, n):
        raise ValueError(f"panel GEMM needs B's columns a multiple of 16 and rows a multiple of 4; got {k} x {n}")
    packed = PackedWeight(torch.empty(k * n, dtype=torch.float32), k, n)   # torch aligns to 64 bytes
    lib.panel_pack(weight.data_ptr(), k, n, int(transposed), packed.data.data_ptr(), torch.get_num_threads())
    return packed


def matmul(x: Tensor, b: PackedWeight, bias: Tensor | None = None) -> Tensor:
    """x (m x k) @ B (+ bias, n values): a new (m x n) tensor."""
    lib = _require()
    _check(x, "x", 2)
    if x.shape[1] != b.k:
        raise ValueError(f"x has {x.shape[1]} columns but B has {b.k} rows")
    if bias is not None:
        _check(bias, "bias", 1)
        if bias.numel() != b.n:
            raise ValueError(f"bias has {bias.numel()} values but B has {b.n} columns")
    m = x.shape[0]
    out = x.new_empty(m, b.n)
    if m == 0:
        return out
    scratch = x.new_empty((m + MR - 1) // MR * MR * b.k)
    rc = lib.panel_gemm(m, b.n, b.k, x.data_ptr(), b.data.data_ptr(),
                        None if bias is None else bias.data_ptr(), out.data_ptr(), scratch.data_ptr(),
                        torch.get_num_threads())
    if rc != 0:
        raise ValueError(f"panel GEMM refused the shapes {tuple(x.shape)} @ ({b.k} x {b.n})")
    return out
