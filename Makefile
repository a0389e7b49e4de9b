VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
TS_STAMP := bench/.torchserve-venv/.installed-stamp
# apt-get install $(1), after an apt-get update if the first try fails
APT_INSTALL = DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(1) >/dev/null 2>&1 || \
	{ $(SUDO) apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(1) >/dev/null; }

.PHONY: install system-packages serve test lint bench bench-torchserve bench-ab bench-gpu wrk-debs train

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,ray]'
	touch $(STAMP)

# The TorchServe comparison's own venv (bench/torchserve/venv.py: TorchServe pinned, our torch).
$(TS_STAMP): $(STAMP) bench/torchserve/venv.py
	$(PY) -m bench.torchserve.venv
	touch $(TS_STAMP)

install: $(STAMP) system-packages $(TS_STAMP)

# Debian's chromium for the browser tests (tests/e2e/test_ui*.py; Playwright never downloads one),
# the benchmark's load generator (bench/wrk.py) and TorchServe's frontend (Java), where absent.
system-packages:
	@test -x $(CHROMIUM) || { echo "installing chromium with apt-get"; $(call APT_INSTALL,--no-install-recommends chromium); }
	@test -x $(CHROMIUM) || { echo "the browser tests need Debian's chromium at $(CHROMIUM): apt-get install chromium" >&2; exit 1; }
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk with apt-get"; $(call APT_INSTALL,wrk); }
	@command -v wrk >/dev/null 2>&1 || { echo "wrk is missing and apt-get could not install it: install wrk 4.x (Debian's package wrk) on PATH" >&2; exit 1; }
	@command -v java >/dev/null 2>&1 || { echo "installing Java with apt-get"; $(call APT_INSTALL,openjdk-17-jre-headless); }
	@command -v java >/dev/null 2>&1 || { echo "java is missing and apt-get could not install it: TorchServe needs Java 11 or later" >&2; exit 1; }

serve: install
	$(PY) -m app

lint: install
	$(VENV)/bin/ruff check app tests bench models docs
	$(VENV)/bin/mypy app

test: lint
	$(VENV)/bin/pytest

bench: install
	$(PY) -m bench.run --device cpu

# Against TorchServe on resnet18 (about 20 minutes; not part of `make bench`): bench/results/torchserve.md
bench-torchserve: install
	$(PY) -m bench.torchserve

# Two builds or settings of our service side by side (bench/ab.py), e.g. make bench-ab AB="--base HEAD~1"
# or AB="--env-b HOST_WORKERS=1": bench/results/ab.md
bench-ab: install
	$(PY) -m bench.ab $(AB)

# Debian's wrk packages, for bench/gpu.sh on a machine without network (bench/wrk-local.sh).
wrk-debs:
	mkdir -p .deb && cd .deb && apt-get download wrk libluajit-5.1-2 libluajit-5.1-common

train: install
	$(PY) -m pip install -q -e '.[train]'
	$(PY) -m models.train
