# Shortcuts; the README's two commands work without make.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help install demo test lint bench schemas

help:  ## list targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/cardstream: pyproject.toml
	python3 -m venv $(VENV) && $(BIN)/pip install -q -e '.[dev]'

install: $(BIN)/cardstream  ## create .venv and install cardstream with dev tools

demo: install  ## run the demo on the embedded broker
	$(BIN)/cardstream demo

test: install  ## run every test (embedded broker unless CARDSTREAM_BOOTSTRAP is set)
	$(BIN)/pytest

lint: install  ## ruff, format check, mypy, schema drift
	$(BIN)/ruff check app tests bench && $(BIN)/ruff format --check app tests bench
	$(BIN)/mypy app && $(BIN)/cardstream schemas check

schemas: install  ## regenerate schemas/ from the models (events, changes, card)
	$(BIN)/cardstream schemas export

bench: install  ## benchmarks (print their figures)
	$(BIN)/python -m bench.intake_throughput
