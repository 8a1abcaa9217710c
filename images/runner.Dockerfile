# syntax=docker/dockerfile:1
# The runner image: what every AugmentationJob's pod runs (`augment run`, set by the
# operator as the container command): Python 3.11 and the project with its GPU extra.
# No CUDA base image: CuPy, NVRTC and the CUDA runtime come from PyPI wheels (the `gpu`
# extra) and the driver from the node, mounted by the NVIDIA container toolkit (the
# NVIDIA_* variables below ask it for it). FFmpeg comes inside the PyAV wheels.
#
#   docker build -f images/runner.Dockerfile -t ghcr.io/augment-operator/augment-runner:0.1.0 .
#
# `make images` builds it without a registry: BASE is then a Debian image of the same
# release made locally (dev/augment_dev/images.py); VERSION and REVISION label it.
# Versions of Python packages are NOT repeated here: `pip install .[runner,gpu]` reads the
# exact pins from pyproject.toml, so the image, `make install` and CI run the same versions
# (tests/unit/test_images.py fails if a pin here ever disagrees with pyproject.toml).
# Only the runner's extras: no FastAPI or kopf, no development tools (dev/ and tests/ are
# not in the build context; tests/unit/test_images.py checks that these extras are
# all `augment run` imports).

ARG BASE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the project
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the distribution is built from (see .dockerignore).
COPY pyproject.toml README.md ./
COPY spec/ spec/
COPY api/ api/
COPY operator/ operator/
COPY runner/ runner/
COPY cli/ cli/
# `make test` builds a CPU variant with EXTRAS=runner: no CuPy, no CUDA wheels.
ARG EXTRAS=runner,gpu
# The secrets are optional: a build that needs its own pip settings to reach the index
# (a private index, a proxy's CA) passes them; `make images` passes this machine's.
RUN --mount=type=secret,id=pip-conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/etc/pip-ca.crt \
    pip install --no-compile ".[${EXTRAS}]" \
 && augment --help >/dev/null

# ---- runtime: the interpreter and the virtualenv, nothing else
FROM ${BASE}
RUN groupadd --gid 65532 augment \
 && useradd --uid 65532 --gid 65532 --home-dir /scratch --no-create-home \
      --shell /usr/sbin/nologin augment
COPY --from=build /opt/venv /opt/venv
# HOME and HF_HOME point at the Job's writable scratch volume (the root filesystem is
# read-only under the restricted Pod Security Standard); the operator sets them too.
# The native libraries run each call on its caller: the runner's own workers, as many
# as the pod's CPU request (AUGMENT_THREADS), are its threads (augment_runner/
# native_threads.py sets the same for `augment run` anywhere).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/scratch \
    HF_HOME=/scratch/hf-home \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENCV_FOR_THREADS_NUM=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility,video
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/augment-operator/augment-operator
LABEL org.opencontainers.image.title="augment-runner" \
      org.opencontainers.image.description="augment-operator runner: GPU dataset augmentation" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Numeric, so `runAsNonRoot: true` can verify it without reading /etc/passwd.
USER 65532:65532
WORKDIR /scratch
ENTRYPOINT ["augment"]
CMD ["run", "--help"]
