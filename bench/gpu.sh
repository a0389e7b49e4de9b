#!/usr/bin/env bash
# The benchmark matrix on a CUDA machine: our service vs the naive server vs the roofline, at
# concurrency 1, 16, 64, 128 and 256. Writes bench/results/<gpu-name>.md and .json.
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
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

CHECK='import torch, torchvision, captum, fastapi, uvicorn, pydantic, pydantic_settings, PIL, numpy
import safetensors, prometheus_client, orjson, matplotlib, httpx, multipart
assert torch.cuda.is_available(), "no CUDA device visible to torch"'

PY=""
for cand in "${PYTHON:-}" .venv/bin/python .venv-gpu/bin/python python3 python; do
    [ -n "$cand" ] || continue
    command -v "$cand" >/dev/null 2>&1 || continue
    if "$cand" -c "$CHECK" >/dev/null 2>&1; then PY="$cand"; break; fi
done

if [ -z "$PY" ]; then
    BASE="${PYTHON:-python3}"
    echo "gpu.sh: no ready Python; setting up .venv-gpu from $($BASE --version 2>&1)" >&2
    [ -x .venv-gpu/bin/python ] || "$BASE" -m venv --system-site-packages .venv-gpu
    PY=.venv-gpu/bin/python
    PIP=("$PY" -m pip install -q --disable-pip-version-check)
    if [ -d .whl ]; then PIP+=(--find-links .whl); fi
    # What is missing, as pip requirements (torch pinned only when there is no torch at all).
    MISSING=$("$PY" - <<'EOF'
import importlib.util
wanted = {"torch": "torch==2.14.1", "torchvision": "torchvision==0.29.1", "captum": "captum>=0.8,<0.10",
          "fastapi": "fastapi>=0.115,<1", "uvicorn": "uvicorn>=0.30,<1", "pydantic": "pydantic>=2.7,<3",
          "pydantic_settings": "pydantic-settings>=2.3,<3", "PIL": "pillow>=10.3,<14",
          "numpy": "numpy>=1.26,<3", "multipart": "python-multipart>=0.0.9,<0.1",
          "safetensors": "safetensors>=0.4,<1", "prometheus_client": "prometheus-client>=0.20,<1",
          "orjson": "orjson>=3.10,<4", "matplotlib": "matplotlib>=3.8,<4", "httpx": "httpx>=0.27,<1",
          "rich": "rich>=13,<16"}
print(" ".join(req for mod, req in wanted.items() if importlib.util.find_spec(mod) is None))
EOF
)
    if [ -n "$MISSING" ]; then
        echo "gpu.sh: installing $MISSING" >&2
        # shellcheck disable=SC2086
        "${PIP[@]}" $MISSING
    fi
    # The project itself, without touching its dependencies (it also runs from PYTHONPATH).
    "${PIP[@]}" --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true
    "$PY" -c "$CHECK"
fi

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
