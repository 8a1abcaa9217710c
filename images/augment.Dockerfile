# syntax=docker/dockerfile:1
# The control-plane image: the REST API (`augment api`) and the operator
# (`augment operator`), as the Helm chart runs them. No CUDA: slim Python only.
#
#   docker build -f images/augment.Dockerfile -t ghcr.io/augment-operator/augment:0.1.0 .
#
# `make images` builds it without a registry: BASE is then a Debian image of the same
# release made locally (dev/augment_dev/images.py); VERSION and REVISION label it.
# Package versions come from pyproject.toml's exact pins. Only the `api` and `operator`
# extras are installed: no NumPy, PyAV or datasets (the runner's), no development tools
# (dev/ and tests/ are not in the build context; tests/unit/test_images.py checks
# that these extras are all the API's and the operator's entrypoints import).

ARG BASE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the project
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY spec/ spec/
COPY api/ api/
COPY operator/ operator/
COPY runner/ runner/
COPY cli/ cli/
# The secrets are optional: a build that needs its own pip settings to reach the index
# (a private index, a proxy's CA) passes them; `make images` passes this machine's.
RUN --mount=type=secret,id=pip-conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/etc/pip-ca.crt \
    pip install --no-compile ".[api,operator]" \
 && augment --help >/dev/null

# ---- runtime: the interpreter and the virtualenv, no pip cache, no sources
FROM ${BASE}
RUN groupadd --gid 65532 augment \
 && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin augment
COPY --from=build /opt/venv /opt/venv
# The chart mounts an emptyDir on /tmp: the only writable path under readOnlyRootFilesystem.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/augment-operator/augment-operator
LABEL org.opencontainers.image.title="augment" \
      org.opencontainers.image.description="augment-operator REST API and operator" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 65532:65532
ENTRYPOINT ["augment"]
CMD ["--help"]
