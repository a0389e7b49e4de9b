#!/usr/bin/env bash
# The benchmark matrix on a CUDA machine: our service vs the naive server vs the roofline, at
# concurrency 1, 16, 64, 128 and 256, with wrk as the load generator (as `make bench`). Writes
# bench/results/<gpu-name>.md and .json.
#
#   bench/gpu.sh                                   # everything (fits in ~10 minutes on an H100)
#   bench/gpu.sh --scenarios resnet50-ig --merge   # one scenario, merged into the results file
#   DURATION=10 bench/gpu.sh                       # seconds per cell (default 6)
#
# With $OUT set (the device runner's output folder), bench/results/*.md and *.json are copied
# to $OUT/results/ at the end.
#
# Python: $PYTHON if set, else the first of .venv/bin/python, .venv-gpu/bin/python, python3 that
# imports everything with CUDA available. Otherwise it makes .venv-gpu (--system-site-packages,
# so a preinstalled CUDA torch is reused) and installs only what is missing, from ./.whl if that
# wheelhouse exists (the machine may have no network), else from the index.
#
# wrk: from PATH, else apt-get, else Debian's packages in ./.deb/ (`make wrk-debs` on a machine with
# network, then carry .deb/ along), unpacked by bench/wrk-local.sh. `--loadgen python` does without.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

CHECK=(-m bench.deps --check)  # every pyproject requirement installed, imports, CUDA visible

PY=""
for cand in "${PYTHON:-}" .venv/bin/python .venv-gpu/bin/python python3 python; do
    [ -n "$cand" ] || continue
    command -v "$cand" >/dev/null 2>&1 || continue
    if "$cand" "${CHECK[@]}" >/dev/null 2>&1; then PY="$cand"; break; fi
done

if [ -z "$PY" ]; then
    BASE="${PYTHON:-python3}"
    echo "gpu.sh: no ready Python; setting up .venv-gpu from $($BASE --version 2>&1)" >&2
    [ -x .venv-gpu/bin/python ] || "$BASE" -m venv --system-site-packages .venv-gpu
    PY=.venv-gpu/bin/python
    PIP=("$PY" -m pip install -q --disable-pip-version-check)
    if [ -d .whl ]; then PIP+=(--find-links .whl); fi
    # What is missing, as pyproject.toml pins it (a preinstalled torch of any version is kept).
    MISSING=$(mktemp)
    "$PY" -m bench.deps > "$MISSING"
    if [ -s "$MISSING" ]; then
        echo "gpu.sh: installing $(tr '\n' ' ' < "$MISSING")" >&2
        "${PIP[@]}" -r "$MISSING"
    fi
    rm -f "$MISSING"
    # The project itself, without touching its dependencies (it also runs from PYTHONPATH).
    "${PIP[@]}" --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true
    "$PY" "${CHECK[@]}"
fi

case " $* " in
    *" --loadgen python "*|*" --loadgen=python "*) ;;
    *)
        WRK_DIR=$(bench/wrk-local.sh)
        if [ -n "$WRK_DIR" ]; then export PATH="$WRK_DIR:$PATH"; fi
        echo "gpu.sh: load generator $(wrk --version 2>&1 | head -n 1 || true)" >&2
        ;;
esac

echo "gpu.sh: using $PY ($("$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))'))" >&2
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total,utilization.gpu \
    --format=csv,noheader >&2 || true

status=0
"$PY" -m bench.run --device cuda --duration "${DURATION:-6}" "$@" || status=$?
# On a lent machine only what is written under $OUT comes back: copy the results there.
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    mkdir -p "$OUT/results" && cp -p bench/results/*.md bench/results/*.json "$OUT/results/" 2>/dev/null || true
    echo "gpu.sh: results copied to $OUT/results" >&2
fi
exit "$status"
