# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU machines: pin the CPU build of torch first so pip pulls no CUDA wheels.
# GPU machines (nvidia-smi found) skip the pin; override with `make setup TORCH_CPU=`.
TORCH_CPU ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,torch==2.13.0)
DEMO_ARGS ?= --env CartpoleBalance --timesteps 4096 --n-envs 8 --logdir runs/
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint docs bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH_CPU),$(BIN)/python -m pip install -q "$(TORCH_CPU)")
	$(BIN)/python -m pip install -q -e ".[test,ray]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python examples/ppo_sparsity_monitor.py $(DEMO_ARGS)

# Everything, slow cases included (this is what CI runs).
test: setup
	$(BIN)/ruff check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# The documentation site, into build/site (a broken link or a missing page fails).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The default suite (slow cases skipped), <= 10 minutes from a cold cache.
test-fast: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/jacobian_throughput.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache build/site
