# rl-lightning: `make train` sets up and trains the default agent; `make test` sets up and tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first: the CPU wheel this project is tested with. On a CUDA machine: make setup TORCH=torch
TORCH ?= torch==2.13.0
ARGS ?=

# one torch thread per process (small networks), W&B never needs an account or network
export OMP_NUM_THREADS ?= 1
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true

.PHONY: setup train test test-slow lint format clean bench

$(BIN)/rl-train: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

setup: $(BIN)/rl-train

train: setup  ## train the default DQN on CartPole-v1 (extra overrides: make train ARGS="seed=3")
	$(BIN)/rl-train $(ARGS)

test: setup  ## the test suite CI runs (slow learning runs excluded)
	$(BIN)/python -m pytest -q

test-slow: setup  ## only the slow learning tests
	$(BIN)/python -m pytest -q -m slow

bench: setup  ## rl-lightning vs Stable-Baselines3 side by side (docs/perf.md); about 4 min on a quiet 2-core machine
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python scripts/benchmark.py $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy rl_lightning scripts
	$(BIN)/lint-imports  # the layer contract in pyproject.toml: no import cycles

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) outputs multirun wandb lightning_logs .pytest_cache .ruff_cache .mypy_cache
