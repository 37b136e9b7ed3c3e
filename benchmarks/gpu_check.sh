#!/usr/bin/env bash
# The GPU check: the paper preset's training speed on both stems in fp32, bf16 and
# bf16 + torch.compile, projected epoch and training times, peak GPU memory, and a 2-minute
# paper-preset training run on SynthCLEVR at 224x224. About 6 minutes on one H100/H200.
#   bash benchmarks/gpu_check.sh                 # -> results/bench/gpu.json, gpu.md
#   bash benchmarks/gpu_check.sh --smoke --out /tmp/gpu.json   # the same steps, tiny, on any device
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
# the checkout itself on the path: the script also runs where filmlib is not installed (a GPU
# machine's own Python with torch, numpy, Pillow, h5py, pyyaml, tqdm already there)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" benchmarks/bench_gpu.py "$@"
