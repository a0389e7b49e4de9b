VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install wrk serve test lint bench bench-gpu train

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) wrk

# The benchmark's load generator (bench/wrk.py): Debian's wrk, installed where absent.
wrk:
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk with apt-get"; \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q wrk >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q wrk >/dev/null; }; }
	@command -v wrk >/dev/null 2>&1 || { echo "wrk is missing and apt-get could not install it: install wrk 4.x (Debian's package wrk) on PATH" >&2; exit 1; }

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
