# augment-operator: every task a developer or CI runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install binaries judge browser images test-images test unit e2e lint typecheck crd generate cluster run demo bench gpu-check clean

install: $(STAMP)  ## create .venv and install the project with pinned dependencies

# The product with every component's extra, and its development tools (dev/: `augment-dev`,
# the embedded control plane, the local Hub), which are a distribution of their own.
$(STAMP): pyproject.toml dev/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]' -e ./dev
	touch $(STAMP)

binaries: $(STAMP)  ## build (once, cached) the Kubernetes control plane, helm and Kueue
	$(BIN)/python -m augment_dev.binaries

judge: $(STAMP)  ## build (once, cached) the judges of our output: LeRobot 0.4.4 (v3.0) with lerobot-doctor, LeRobot 0.3.3 (v2.1)
	$(BIN)/python -m augment_dev.judge

browser: $(STAMP)  ## Debian's Chromium and chromedriver (the dashboard's browser test), where missing
	$(BIN)/python -m augment_dev.browser

# buildah and mmdebstrap, as root; installed from Debian where missing (dev/augment_dev/images.py).
images: $(STAMP)  ## build (cached) both images, write OCI archives, print how to push them
	$(BIN)/augment-dev images

test-images: $(STAMP)  ## build (cached) the images make test runs: API, runner's CPU variant
	$(BIN)/augment-dev images --no-export augment augment-runner-cpu

test: $(STAMP) binaries judge browser test-images lint typecheck  ## every test, the end-to-end ones included
	$(BIN)/python -m augment_spec.check_crd
	$(BIN)/python -m augment_operator.check_values
	$(BIN)/pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

e2e: $(STAMP) binaries browser test-images
	$(BIN)/pytest -q tests/e2e

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)  ## mypy (configuration in pyproject.toml)
	$(BIN)/mypy

crd: $(STAMP)  ## regenerate crds/ and the chart's copy from the spec model
	$(BIN)/augment crd --write

generate: crd  ## also regenerate the chart's default GPU profiles from the operator's
	$(BIN)/python -m augment_operator.check_values --write

cluster: $(STAMP) binaries  ## a real control plane with fake GPU nodes, until Ctrl-C
	$(BIN)/augment-dev cluster

run: $(STAMP)  ## augment the sample dataset locally
	rm -rf out/sample-augmented
	$(BIN)/augment run --dataset examples/sample-dataset --output out/sample-augmented \
		--transforms lighting,noise,blur,occlusion --copies 2

demo: $(STAMP) binaries test-images  ## the whole stack on the embedded control plane, pods from the images
	$(BIN)/augment-dev demo

bench: $(STAMP) binaries  ## side-by-side benchmarks -> bench/results.json, .md, .png
	$(BIN)/python -m bench.run

gpu-check:  ## on a GPU machine: CuPy tests + GPU benchmark, results under $$OUT
	bash bench/gpu_check.sh

clean:
	rm -rf out .pytest_cache .ruff_cache
