# syntax=docker/dockerfile:1
#
# explainserve: one image per variant, built from this folder.
#
#   docker build -t explainserve:cuda .                        # GPU (default)
#   docker build -t explainserve:cpu --build-arg VARIANT=cpu .  # CPU only, a much smaller image
#
# VARIANT=cuda installs the PyPI torch wheel, which bundles its own CUDA runtime, cuDNN and NCCL
# (the nvidia-* wheels): the container needs only the host's NVIDIA driver, which the NVIDIA
# Container Toolkit mounts in (`docker run --gpus all`, or the reservation in docker-compose.yml).
# For an older driver, pick a wheel built for an older CUDA with TORCH_INDEX_URL, e.g.
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
# VARIANT=cpu installs the CPU-only wheels from the PyTorch CPU index.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- base: shared by every stage
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# ---------------------------------------------------------------- deps: third-party packages only
# Only pyproject.toml is copied here, so this (large) layer is rebuilt when the dependencies
# change, not when the source does.
FROM base AS deps
ARG VARIANT=cuda
ARG TORCH_INDEX_URL=
RUN python -m venv /opt/venv
WORKDIR /build
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt
RUN set -eu; \
    case "$VARIANT" in \
      cuda) index="${TORCH_INDEX_URL:-https://pypi.org/simple}" ;; \
      cpu)  index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
      *)    echo "VARIANT must be cuda or cpu, not '$VARIANT'" >&2; exit 2 ;; \
    esac; \
    pip install --index-url "$index" $(grep -E '^(torch|torchvision)==' requirements.txt); \
    pip install -r requirements.txt; \
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# ---------------------------------------------------------------- wheel: the service itself
FROM base AS wheel
RUN pip install build==1.*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
RUN python -m build --wheel --outdir /wheels .

# ---------------------------------------------------------------- runtime
FROM base AS runtime
ARG VARIANT=cuda
LABEL org.opencontainers.image.title="explainserve" \
      org.opencontainers.image.description="PyTorch models over HTTP with batched Captum attribution and heatmap overlays" \
      io.explainserve.variant="${VARIANT}"
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --no-deps --no-index /tmp/wheels/*.whl && rm -rf /tmp/wheels
# The demo catalog, weights and builders (models.zoo); mount your own folder here to replace them.
# Builders named in a catalog are imported from the catalog's folder and its parent.
COPY models /models
ENV MODELS=/models/catalog.toml \
    HOST=0.0.0.0 \
    PORT=8000 \
    DEVICE=auto \
    MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
VOLUME ["/models"]
WORKDIR /home/app
USER app:app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/readyz', timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "app"]
