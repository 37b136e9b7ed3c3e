"""filmlib: a reproducible, teachable companion to FiLM (Perez et al. 2017).

``filmlib.synth`` generates SynthCLEVR, a CLEVR-format dataset; ``filmlib.data`` reads and
writes the CLEVR v1.0 layout; ``filmlib.programs`` executes CLEVR's functional programs.
``filmlib.FiLM`` is the conditioning layer alone; ``filmlib.models`` is the paper's model.
"""
import os as _os
import sys as _sys

# PyTorch backs large CPU tensors with transparent huge pages when this is set before its
# allocator first runs. On the machines we measured, the page faults of fresh 100-400 MB
# activations otherwise cost about a quarter of a paper-size training step (see
# benchmarks/bench_train.py). Only set when torch is not yet imported; THP_MEM_ALLOC_ENABLE=0
# opts out.
if "torch" not in _sys.modules:
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
__all__ = ["FiLM", "__version__"]


def __getattr__(name):
    # ``filmlib.FiLM`` imports torch on first use only, so that ``python -m filmlib --help`` and
    # the command line's usage errors answer at once
    if name == "FiLM":
        from .film import FiLM
        return FiLM
    raise AttributeError(f"module 'filmlib' has no attribute {name!r}")
