# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU machines: pin the CPU build of torch first so pip pulls no CUDA wheels.
# GPU machines (nvidia-smi found) skip the pin; override with `make setup TORCH_CPU=`.
TORCH_CPU ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,torch==2.13.0)
DEMO_ARGS ?= --env CartpoleBalance --timesteps 4096 --n-envs 8 --logdir runs/
PYTEST_ARGS ?= --durations=15

.PHONY: setup demo test test-fast test-latest lint docs bench clean

# The versions the suite last passed with (constraints.txt): an upstream release
# of MuJoCo, MJX, Playground, JAX or SB3 cannot turn CI red between two commits.
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH_CPU),$(BIN)/python -m pip install -q "$(TORCH_CPU)")
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,ray]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python examples/ppo_sparsity_monitor.py $(DEMO_ARGS)

# Everything, slow cases included (this is what CI runs); the docs site is built
# once, by tests/test_docs.py.
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# The same suite against the newest releases of every dependency (no constraints).
test-latest:
	test -x .venv-latest/bin/python || $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	$(if $(TORCH_CPU),.venv-latest/bin/python -m pip install -q "$(TORCH_CPU)")
	.venv-latest/bin/python -m pip install -q --upgrade -e ".[test,ray]"
	.venv-latest/bin/python -m pytest -m "" $(PYTEST_ARGS)

# The docs site's home page is generated from the README (one source of its numbers).
docs/index.md: README.md tests/readme_index.py
	$(BIN)/python -m tests.readme_index

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
	rm -rf $(VENV) .venv-latest *.egg-info .pytest_cache .ruff_cache build/site
