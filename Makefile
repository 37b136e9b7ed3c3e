# filmlib — the README's commands. `make reproduce` (main job) and `make test` (CI) work on a
# fresh clone: each first builds the .venv from pyproject.toml.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
SCALE  ?= cpu
WORKERS ?= 2
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
TESTRUN := results/_test
# large CPU tensors on transparent huge pages (see filmlib/__init__.py); 0 opts out
export THP_MEM_ALLOC_ENABLE ?= 1

.PHONY: setup test pytest nbval reproduce smoke bench lab clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,notebooks]'
	touch $@

## tests: the package's pytest suite, then every notebook under nbval (lax) at scale smoke
test: setup pytest nbval

pytest: setup
	$(PY) -m pytest -q tests

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

## the main job: every notebook on SynthCLEVR at $(SCALE) (default cpu), executed copies in results/;
## each notebook's wall time goes to results/reproduce_times_$(SCALE).md
TIMES := results/reproduce_times_$(SCALE).md
reproduce: setup
	mkdir -p results
	printf '| notebook | wall time (s) |\n|---|---|\n' > $(TIMES).tmp
	for nb in $(NOTEBOOKS); do \
	  start=$$(date +%s); \
	  $(PY) -m papermill --log-level WARNING --cwd notebooks $$nb results/$$(basename $$nb) \
	    -p scale $(SCALE) -p workers $(WORKERS) || exit 1; \
	  echo "| $$(basename $$nb) | $$(( $$(date +%s) - start )) |" >> $(TIMES).tmp; \
	done
	mv $(TIMES).tmp $(TIMES)
	@echo; echo "done (scale $(SCALE)). Results:"; \
	  echo "  executed notebooks   results/0*.ipynb"; \
	  echo "  Table 1              results/table1.md, .csv (scale cpu; other scales: table1_<scale>.*)"; \
	  echo "  FiLM run             results/film_$(SCALE)/ (metrics.json, predictions_val.jsonl)"; \
	  echo "  baseline runs        results/{qtype,lstm,cnn_lstm,cnn_lstm_sa}_$(SCALE)/"; \
	  echo "  figures              results/figures/"; \
	  echo "  notebook times       $(TIMES)"; cat $(TIMES)

smoke:
	$(MAKE) reproduce SCALE=smoke

bench: setup
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_train.py --threads $(WORKERS)
	$(PY) benchmarks/bench_stem_conv.py --threads $(WORKERS)
	$(PY) benchmarks/bench_gru_step.py --threads $(WORKERS)

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(TESTRUN) data/smoke
