#!/usr/bin/env bash
# GPU check of the transform engine and the video engines, for a machine with an NVIDIA GPU:
#   1. CuPy output == NumPy output within one grey level (tests/gpu), and the transform
#      unit tests with CuPy in their backend parametrisation (AUGMENT_BACKEND=cupy);
#   2. the video path this GPU is planned (bench/gpu_codec_check.py): NVDEC frames match
#      PyAV's, NVENC output decodes and matches the CPU encoder's within a stated PSNR,
#      a missing engine fails to open as the plan says; output frames/s;
#   3. the transform benchmark (CuPy fps, fraction of device copy bandwidth, CPU baselines).
#
# Usage, from the repository root, with a plain python3 (no virtualenv needed):
#   bash bench/gpu_check.sh
# Environment: OUT (default ./out/gpu), PYTHON (default python3),
#              BENCH_QUICK (default 1; 0 for the full benchmark),
#              INSTALL (default 1; 0 never runs pip, for offline machines).
# Writes under $OUT: environment.txt, pip.log, pytest.log, pytest.xml,
#                    gpu_codec.json, gpu_codec.log,
#                    bench_transforms.json, bench_transforms.log, summary.txt.
# Exit status: 0 when CuPy sees a device and the tests and the video check pass (the
# benchmark is reported in summary.txt but does not change the status).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
PY="${PYTHON:-python3}"
OUT="${OUT:-./out/gpu}"
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"
: >"$OUT/summary.txt"

say() { printf '%s\n' "$*" | tee -a "$OUT/summary.txt" >&2; }

# The packages live in runner/ and spec/ (tests/ holds toy_transform.py, for the toy
# transform); importing them from the tree avoids installing the whole project (and its
# Kubernetes and Hub dependencies) just for this check.
export PYTHONPATH="$ROOT/runner:$ROOT/spec:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"

# The pinned requirement for a distribution, as pyproject.toml states it.
pin() { grep -oE "\"$1==[^\"]+\"" pyproject.toml | head -n1 | tr -d '"'; }

# Install the pinned versions of whatever is missing (module:distribution pairs).
missing=()
# NVRTC and the CUDA runtime's headers come as wheels, as in the runner image (the `gpu`
# extra): CuPy compiles the transforms' kernels with them.
for pair in cupy:cupy-cuda12x nvidia.cuda_nvrtc:nvidia-cuda-nvrtc-cu12 \
    nvidia.cuda_runtime:nvidia-cuda-runtime-cu12 numpy:numpy pydantic:pydantic pytest:pytest \
    pytest_timeout:pytest-timeout PIL:pillow albumentations:albumentations \
    cv2:opencv-python-headless av:av PyNvVideoCodec:PyNvVideoCodec; do
    module="${pair%%:*}" dist="${pair#*:}"
    if ! "$PY" -c "import $module" 2>/dev/null; then
        requirement="$(pin "$dist")"
        missing+=("${requirement:-$dist}")
    fi
done
: >"$OUT/pip.log"
if ((${#missing[@]})) && [[ "${INSTALL:-1}" == 0 ]]; then
    say "missing, not installed (INSTALL=0): ${missing[*]}"
elif ((${#missing[@]})); then
    say "installing: ${missing[*]}"
    if ! "$PY" -m pip install -q "${missing[@]}" >>"$OUT/pip.log" 2>&1; then
        say "pip install failed (offline?); see pip.log. Continuing with what is installed."
    fi
fi

{
    date -u +%Y-%m-%dT%H:%M:%SZ
    git rev-parse HEAD 2>/dev/null || true
    "$PY" --version
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    "$PY" -c "import cupy; cupy.show_config()" 2>&1 || true
} >"$OUT/environment.txt"

status=0
if ! "$PY" -c "import cupy, sys; sys.exit(cupy.cuda.runtime.getDeviceCount() < 1)" 2>>"$OUT/environment.txt"; then
    say "FAIL: CuPy is not importable or sees no CUDA device: nothing GPU-side was checked"
    status=1
fi

# --noconftest: tests/conftest.py starts a Kubernetes control plane for other suites;
# these tests need none of it.
AUGMENT_BACKEND=cupy "$PY" -m pytest -q -p no:cacheprovider --noconftest \
    --junitxml="$OUT/pytest.xml" tests/gpu tests/unit/test_transforms.py \
    >"$OUT/pytest.log" 2>&1
rc=$?
if ((rc == 0)); then
    say "PASS: pytest tests/gpu tests/unit/test_transforms.py ($(tail -n1 "$OUT/pytest.log"))"
else
    say "FAIL: pytest exited $rc; see pytest.log: $(tail -n1 "$OUT/pytest.log")"
    status=1
fi

if "$PY" bench/gpu_codec_check.py >"$OUT/gpu_codec.json" 2>"$OUT/gpu_codec.log"; then
    say "PASS: video engines (gpu_codec.json)"
else
    say "FAIL: video engines; see gpu_codec.log"
    status=1
fi
cat "$OUT/gpu_codec.log" >>"$OUT/summary.txt"

quick=()
[[ "${BENCH_QUICK:-1}" == 1 ]] && quick=(--quick)
if "$PY" bench/bench_transforms.py "${quick[@]}" >"$OUT/bench_transforms.json" \
    2>"$OUT/bench_transforms.log"; then
    say "benchmark: bench_transforms.json"
    cat "$OUT/bench_transforms.log" >>"$OUT/summary.txt"
else
    say "benchmark FAILED; see bench_transforms.log"
fi
exit "$status"
