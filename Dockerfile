# syntax=docker/dockerfile:1
#
# Switchboard images, built from the repository root:
#   docker build -t switchboard .                               serving image (default: last stage)
#   docker build --target train -t switchboard-train .          training image (PyTorch, CPU build)
#
# The serving image has ONNX Runtime and tokenizers but no torch or transformers: it installs
# the switchboard wheel without extras. Bots are baked in from BOTS_DIR, a folder of bot folders
# (bot.yml + models/<version>/) in the build context, to /srv/bots/<bot>/; or mount them at run
# time over /srv/bots (docker run -v "$PWD/examples:/srv/bots:ro" ...). Train first, e.g.
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/examples/support:/work/support"
#       switchboard-train train /work/support        (one command line)

ARG PYTHON_VERSION=3.11.7
ARG DEBIAN_RELEASE=bookworm

FROM python:${PYTHON_VERSION}-slim-${DEBIAN_RELEASE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/tmp
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# One unprivileged user for every image; the numeric id matches runAsUser in k8s/.
RUN groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid switchboard --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin switchboard

# ---- builder: the switchboard wheel, and a venv with it and its runtime dependencies ----
FROM base AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bots/ bots/
COPY connectors/ connectors/
COPY training/ training/
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install /wheels/switchboard-*.whl

# ---- train: `switchboard train BOT_DIR` with the CPU build of PyTorch ----
FROM base AS train
ARG TORCH_VERSION=2.13.0
ENV PATH=/opt/venv/bin:$PATH
# torch first, pinned, from the CPU index: PyPI's default torch is a multi-GB CUDA build.
RUN python -m venv /opt/venv \
    && pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
COPY --from=builder /wheels/ /wheels/
# DL3013 (pin versions in pip): the argument is the wheel just built from this tree, and its
# [train] requirements are version-bounded in pyproject.toml; there is no name==version to pin.
# hadolint ignore=DL3013
RUN wheel="$(echo /wheels/switchboard-*.whl)" \
    && pip install "${wheel}[train]" \
    && rm -rf /wheels
WORKDIR /work
USER 10001:10001
ENTRYPOINT ["switchboard"]
CMD ["train", "--help"]

# ---- serve (default): ONNX Runtime only, non-root, read-only friendly ----
FROM base AS serve
ARG BOTS_DIR=examples
ENV PATH=/opt/venv/bin:$PATH \
    SWITCHBOARD_DATA_DIR=/var/lib/switchboard
COPY --from=builder /opt/venv/ /opt/venv/
# Bot folders stay owned by root: the server only reads them.
COPY ${BOTS_DIR}/ /srv/bots/
RUN install -d -o 10001 -g 10001 -m 0750 /var/lib/switchboard
WORKDIR /srv
USER 10001:10001
EXPOSE 8000
# Python's urllib, not curl: the slim image has no curl and needs none.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2); sys.exit(0 if r.status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchboard"]
CMD ["serve", "/srv/bots/support", "--host", "0.0.0.0", "--port", "8000"]
