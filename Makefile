VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install serve test lint bench bench-gpu train browser

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP) browser

# The browser tests (tests/e2e/test_ui.py) drive Debian's chromium; Playwright never downloads one.
browser:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends chromium; } \
	  || { echo "the browser tests need Debian's chromium at $(CHROMIUM): apt-get install chromium" >&2; exit 1; }

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
