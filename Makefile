# Two commands do all the set-up on a fresh machine:
#   make demo   a small search on the embedded default (synthetic data, local Ray, local MLflow)
#   make test   the test suite (the command CI runs)
# CPU machines get the CPU wheel of torch; on a GPU machine pass the build you want, e.g.
#   make demo TORCH=torch   (after configuring pip for the CUDA wheel index of your choice)
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: install demo test lint
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"  # first, so the next line does not pull a CUDA build
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(BIN)/aitexvae tune

test: install
	bash tests/run.sh

lint: install
	$(BIN)/ruff check vae search tracking tests bench
