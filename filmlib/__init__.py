"""filmlib: a reproducible, teachable companion to FiLM (Perez et al. 2017).

``filmlib.synth`` generates SynthCLEVR, a CLEVR-format dataset; ``filmlib.data`` reads and
writes the CLEVR v1.0 layout; ``filmlib.programs`` executes CLEVR's functional programs.
``filmlib.FiLM`` is the conditioning layer alone; ``filmlib.models`` is the paper's model.
"""
from .film import FiLM

__version__ = "0.1.0"
__all__ = ["FiLM", "__version__"]
