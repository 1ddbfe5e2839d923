# Coalition: `make run` serves the API with a demo coalition; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test lint check-schema bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Coalition needs Python 3.11 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: $(STAMP)
	COALITION_ENV=$${COALITION_ENV:-development} $(BIN)/coalition db upgrade
	COALITION_ENV=$${COALITION_ENV:-development} $(BIN)/coalition demo load
	@echo "Coalition on http://$(HOST):$(PORT)  (API docs: http://$(HOST):$(PORT)/docs)"
	COALITION_ENV=$${COALITION_ENV:-development} $(BIN)/coalition run --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check coalition partners settlement config tests bench

clean:
	rm -rf $(VENV) instance .pytest_cache .hypothesis
