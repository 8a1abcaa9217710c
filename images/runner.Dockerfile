# syntax=docker/dockerfile:1
# The runner image: what every AugmentationJob's pod runs (`augment run`, set by the
# operator as the container command). CUDA runtime libraries for CuPy, Python 3.11,
# the project with its GPU extra; FFmpeg comes inside the PyAV wheels.
#
#   docker build -f images/runner.Dockerfile -t ghcr.io/augment-operator/augment-runner:0.1.0 .
#
# Versions of Python packages are NOT repeated here: `pip install .[runner,gpu]` reads the
# exact pins from pyproject.toml, so the image, `make install` and CI run the same versions
# (tests/unit/test_images.py fails if a pin here ever disagrees with pyproject.toml).
# Only the runner's extras: no FastAPI or kopf, no development tools (dev/ and tests/ are
# not in the build context; tests/unit/test_images.py checks that these extras are
# all `augment run` imports).

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG PYTHON_VERSION=3.11

# ---- build: a virtualenv with the project; compilers and apt tooling stay in this stage
FROM ${CUDA_IMAGE} AS build
ARG PYTHON_VERSION
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Ubuntu 24.04 ships Python 3.12; 3.11 (the version CI tests) comes from deadsnakes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends \
      "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" \
 && rm -rf /var/lib/apt/lists/*
RUN "python${PYTHON_VERSION}" -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the distribution is built from (see .dockerignore): a docs change does not
# invalidate the dependency layer of a code change and vice versa.
COPY pyproject.toml README.md ./
COPY spec/ spec/
COPY api/ api/
COPY operator/ operator/
COPY runner/ runner/
COPY cli/ cli/
RUN pip install --no-compile ".[runner,gpu]" \
 && augment --help >/dev/null

# ---- runtime: CUDA runtime + the Python interpreter + the virtualenv, nothing else
FROM ${CUDA_IMAGE}
ARG PYTHON_VERSION
ENV DEBIAN_FRONTEND=noninteractive
# The deadsnakes source (with its signing key) added in the build stage.
COPY --from=build /etc/apt/sources.list.d/ /etc/apt/sources.list.d/
RUN apt-get update \
 && apt-get install -y --no-install-recommends "python${PYTHON_VERSION}" \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 augment \
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
LABEL org.opencontainers.image.title="augment-runner" \
      org.opencontainers.image.description="augment-operator runner: GPU dataset augmentation"
# Numeric, so `runAsNonRoot: true` can verify it without reading /etc/passwd.
USER 65532:65532
WORKDIR /scratch
ENTRYPOINT ["augment"]
CMD ["run", "--help"]
