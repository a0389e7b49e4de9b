VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install serve test lint bench bench-gpu train

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(PY) -m app

lint: install
	$(VENV)/bin/ruff check app tests bench models
	$(VENV)/bin/mypy app

test: lint
	$(VENV)/bin/pytest

bench: install
	$(PY) -m bench.run --device cpu

train: install
	$(PY) -m pip install -q -e '.[train]'
	$(PY) -m models.train
