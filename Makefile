# filmlib — the README's commands. `make reproduce` (main job) and `make test` (CI) work on a
# fresh clone: each first builds the .venv from pyproject.toml.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
SCALE  ?= cpu
SOURCE ?= synth
WORKERS ?= 2
DEVICE ?= auto
# where the dataset is (default: the notebooks' own, data/synthclevr or data/CLEVR_v1.0) and where
# results go (default results/; with SOURCE=clevr results/clevr/, so real-data runs never
# overwrite SynthCLEVR's)
DATA_ROOT ?=
RESULTS ?= $(if $(filter clevr,$(SOURCE)),results/clevr,results)
SCALES  := smoke cpu paper
SOURCES := synth clevr
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
TESTRUN := results/_test
# large CPU tensors on transparent huge pages (see filmlib/__init__.py); 0 opts out
export THP_MEM_ALLOC_ENABLE ?= 1

.PHONY: setup test pytest nbval browser-setup browser-test reproduce data check-params smoke bench lab clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,notebooks]'
	touch $@

## tests: the package's pytest suite (its browser test included), then every notebook under nbval (lax) at scale smoke
test: setup browser-setup pytest nbval

pytest: setup
	$(PY) -m pytest -q --durations=15 tests

## the browser test's Chromium: Debian's package (root, or sudo), when /usr/bin/chromium is missing
CHROMIUM ?= /usr/bin/chromium
browser-setup:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	    echo "error: $(CHROMIUM) is missing and neither root nor sudo can install Debian's chromium" >&2; exit 1; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || \
	    { $$SUDO apt-get update -q >/dev/null && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	fi
	@$(CHROMIUM) --version

## only the browser test (JupyterLab + Chromium driven by Playwright, notebook 08)
browser-test: setup browser-setup
	$(PY) -m pytest -q tests/test_browser.py

# Notebooks are committed without outputs; papermill injects the smoke parameters into copies
# under $(TESTRUN) (no execution), which nbval then runs cell by cell.
nbval: setup
	rm -rf $(TESTRUN) && mkdir -p $(TESTRUN)/notebooks
	for nb in $(NOTEBOOKS); do \
	  $(PY) -m papermill --prepare-only --log-level WARNING $$nb $(TESTRUN)/$$nb \
	    -p scale smoke -p data_root $(CURDIR)/$(TESTRUN)/data -p results_dir $(CURDIR)/$(TESTRUN)/results \
	    -p workers $(WORKERS) || exit 1; \
	done
	$(PY) -m pytest -q --nbval-lax -p no:cacheprovider $(TESTRUN)/notebooks

## the main job: every notebook on SynthCLEVR (SOURCE=clevr: the real CLEVR, downloaded by notebook
## 00 if missing) at $(SCALE) (default cpu), on DEVICE (default auto: a GPU if torch sees one).
## Each executed copy goes to $(RESULTS)/<notebook>_$(SCALE).ipynb, written under a temporary name
## and moved into place only on success (a failed run leaves the last good copy and
## $(RESULTS)/<notebook>_$(SCALE).failed.ipynb beside it). Wall times: $(RESULTS)/reproduce_times_$(SCALE).md
TIMES := $(RESULTS)/reproduce_times_$(SCALE).md
PM_PARAMS = -p scale $(SCALE) -p source $(SOURCE) -p workers $(WORKERS) -p device $(DEVICE) \
  $(if $(DATA_ROOT),-p data_root $(abspath $(DATA_ROOT))) \
  $(if $(filter-out results,$(RESULTS)),-p results_dir $(abspath $(RESULTS)))
reproduce: check-params setup
	mkdir -p $(RESULTS)
	printf '| notebook | wall time (s) |\n|---|---|\n' > $(TIMES).tmp
	for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb)_$(SCALE); tmp=$(RESULTS)/.$$name.running.ipynb; \
	  start=$$(date +%s); \
	  if $(PY) -m papermill --log-level WARNING --cwd notebooks $$nb $$tmp $(PM_PARAMS); then \
	    mv $$tmp $(RESULTS)/$$name.ipynb; rm -f $(RESULTS)/$$name.failed.ipynb; \
	  else \
	    if [ -f $$tmp ]; then mv $$tmp $(RESULTS)/$$name.failed.ipynb; fi; rm -f $(TIMES).tmp; \
	    echo "error: $$nb failed at scale $(SCALE); its executed copy is $(RESULTS)/$$name.failed.ipynb" >&2; \
	    exit 1; \
	  fi; \
	  echo "| $$(basename $$nb) | $$(( $$(date +%s) - start )) |" >> $(TIMES).tmp; \
	done
	mv $(TIMES).tmp $(TIMES)
	@echo; echo "done (scale $(SCALE), source $(SOURCE)). Results:"; \
	  echo "  executed notebooks   $(RESULTS)/0*_$(SCALE).ipynb"; \
	  echo "  Table 1              $(RESULTS)/table1_$(SCALE).md, .csv"; \
	  echo "  FiLM run             $(RESULTS)/film_$(SCALE)/ (metrics.json, curve.jsonl, predictions_val.jsonl)"; \
	  echo "  baseline runs        $(RESULTS)/{qtype,lstm,cnn_lstm,cnn_lstm_sa,film_pixels}_$(SCALE)/"; \
	  echo "  figures              $(RESULTS)/figures/*_$(SCALE).png"; \
	  echo "  notebook times       $(TIMES)"; cat $(TIMES)

## data: only the files the notebooks read at SCALE (SynthCLEVR, its HDF5 caches, the perception maps),
## without running the notebooks (about 25 minutes at cpu on 2 cores); finished steps are kept
data: check-params setup
	@if [ "$(SOURCE)" != synth ]; then echo "error: make data makes SynthCLEVR; for SOURCE=$(SOURCE) use python -m filmlib download" >&2; exit 2; fi
	$(PY) -m filmlib data --scale $(SCALE) --workers $(WORKERS) --device $(DEVICE) \
	  $(if $(DATA_ROOT),--root $(DATA_ROOT)) --results $(RESULTS)

# refuse an unknown SCALE or SOURCE before anything runs or is written
check-params:
	@case " $(SCALES) " in *" $(SCALE) "*) ;; *) echo "error: SCALE=$(SCALE) is not one of: $(SCALES)" >&2; exit 2;; esac
	@case " $(SOURCES) " in *" $(SOURCE) "*) ;; *) echo "error: SOURCE=$(SOURCE) is not one of: $(SOURCES)" >&2; exit 2;; esac
	@echo "$(DEVICE)" | grep -Eqx 'auto|cpu|cuda(:[0-9]+)?' || { echo "error: DEVICE=$(DEVICE) is not one of: auto cpu cuda cuda:N" >&2; exit 2; }

smoke:
	$(MAKE) reproduce SCALE=smoke

bench: setup
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_train.py --threads $(WORKERS)
	$(PY) benchmarks/bench_stem_conv.py --threads $(WORKERS)
	$(PY) benchmarks/bench_gru_step.py --threads $(WORKERS)
	# ResNet-101 feature extraction on the cpu data's images: images/s, peak RSS for 500 and 5,000 images
	$(PY) benchmarks/bench_features.py --threads $(WORKERS)
	# on the cpu data's cached perception maps (skipped, with a note, until notebook 02 has made them)
	$(PY) benchmarks/bench_maps.py --features perception --batch-sizes 64 --threads $(WORKERS) --samples 15000 \
	  --models film lstm cnn_lstm cnn_lstm_sa

## JupyterLab at the repository root (notebooks/ and results/ both in its file browser), on
## 127.0.0.1:$(LAB_PORT); works as root too (containers, cloud machines)
LAB_PORT ?= 8888
LAB_ARGS ?=
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) --ServerApp.ip=127.0.0.1 \
	  --ServerApp.port=$(LAB_PORT) $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

## remove test runs and every smoke-scale output (data, runs, executed notebooks, figures)
clean:
	rm -rf $(TESTRUN) data/smoke results/*_smoke results/*_smoke.* results/figures/*_smoke.png \
	  results/.*.running.ipynb
