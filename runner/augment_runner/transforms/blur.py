"""Blur: separable Gaussian (docs/design.md, Transforms).

Radius ceil(3*sigma), mirror borders without repeating the edge (NumPy's 'reflect',
OpenCV's BORDER_REFLECT_101), rows first, then columns. NumPy sums the taps as small
banded matrix products (BLAS, fused multiply-adds in its own order), CUDA pair by pair
in tap order: the sums differ only by float32 rounding (~1e-5 grey levels), so after
the final rounding they agree within one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import FrameStep, Separable, TransformDef, uniform

if TYPE_CHECKING:
    from augment_spec.model import AugmentationSpec

    from .params import CopyParams

# Outputs per banded blur matrix, measured (bench/bench_transforms.py): smaller blocks
# waste fewer multiplies on the band's zeros, larger ones make fewer BLAS calls.
_BLUR_ROW_BLOCK = 8
_BLUR_COLUMN_BLOCK = 8


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps, radius ceil(3 sigma), as float32."""
    radius = max(1, math.ceil(3.0 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def reflect_index(xp: ModuleType, positions: Any, length: int) -> Any:
    """Mirror out-of-range positions into [0, length) without repeating the edge."""
    if length == 1:
        return xp.zeros_like(positions)
    period = 2 * (length - 1)
    p = positions % period  # floor modulo: non-negative for NumPy and CuPy alike
    return xp.where(p < length, p, period - p)


@dataclass(frozen=True)
class _BlurBlock:
    """Outputs [out0, out1) of one axis = matrix @ inputs [src0, src1) along it."""

    out0: int
    out1: int
    src0: int
    src1: int
    matrix: np.ndarray  # float32 (out1 - out0, src1 - src0), banded


def blur_blocks(taps: np.ndarray, length: int, block: int) -> list[_BlurBlock]:
    """The 1-D blur along an axis of `length`, cut into banded matrices of `block` outputs.

    Mirroring is folded into the matrices: a tap that lands outside the axis adds its
    weight to the column of the mirrored input, so no padded copy is ever made, and
    axes shorter than the kernel (repeated mirroring) need no special case.
    """
    r = (len(taps) - 1) // 2
    weights = taps.astype(np.float64)
    blocks = []
    for out0 in range(0, length, block):
        out1 = min(out0 + block, length)
        positions = np.arange(out0, out1)[:, None] + np.arange(-r, r + 1)[None, :]
        src = reflect_index(np, positions, length)
        src0, src1 = int(src.min()), int(src.max()) + 1
        matrix = np.zeros((out1 - out0, src1 - src0), np.float64)
        rows = np.broadcast_to(np.arange(out1 - out0)[:, None], src.shape)
        np.add.at(matrix, (rows, src - src0), np.broadcast_to(weights, src.shape))
        blocks.append(_BlurBlock(out0, out1, src0, src1, matrix.astype(np.float32)))
    return blocks


@dataclass(frozen=True)
class _BlurPlan:
    """The banded matrices of both passes for one frame size (shared by the workers)."""

    rows: list[_BlurBlock]  # left factors, over whole rows of H x (W*3)
    cols: list[_BlurBlock]  # right factors for interleaved RGB: kron(matrix.T, I3)


@lru_cache(maxsize=16)
def _blur_plan(sigma: float, height: int, width: int) -> _BlurPlan:
    taps = gaussian_kernel(sigma)
    cols = [
        _BlurBlock(b.out0, b.out1, b.src0, b.src1, np.kron(b.matrix.T, np.eye(3, dtype=np.float32)))
        for b in blur_blocks(taps, width, _BLUR_COLUMN_BLOCK)
    ]
    return _BlurPlan(blur_blocks(taps, height, _BLUR_ROW_BLOCK), cols)


def _numpy_step(sigma: float, height: int, width: int) -> FrameStep:
    """Both passes as products with small banded matrices (BLAS sgemm): FMA units do
    the taps at several times the speed of one NumPy pass per tap, and the rows of a
    block stream through the cache once instead of once per tap. Vertical:
    M (B x B+2r) @ rows (B+2r x W*3), on interleaved RGB as it is. Horizontal: the
    column band (H x 3(B+2r)) @ kron(M.T, I3): the zeros that keep channels apart
    triple the multiplies, still cheaper than two transposes of the frame.
    OpenBLAS may run a call on its own threads too; with the workers already on every
    core that costs ~10% CPU (OPENBLAS_NUM_THREADS=1 avoids it)."""
    plan = _blur_plan(sigma, height, width)

    def step(frame: np.ndarray, spare: np.ndarray, frame_index: int) -> np.ndarray:
        src, tmp = frame.reshape(height, -1), spare.reshape(height, -1)
        for b in plan.rows:
            np.matmul(b.matrix, src[b.src0 : b.src1], out=tmp[b.out0 : b.out1])
        for b in plan.cols:  # back into frame: its input is no longer needed
            np.matmul(
                tmp[:, 3 * b.src0 : 3 * b.src1], b.matrix, out=src[:, 3 * b.out0 : 3 * b.out1]
            )
        return frame

    return step


_CUDA_PREAMBLE = r"""
__device__ __forceinline__ long long aug_reflect(long long p, long long n) {
    if (n == 1) return 0;
    const long long period = 2 * (n - 1);
    p %= period;
    if (p < 0) p += period;
    return p < n ? p : period - p;
}
"""

# One axis (see base.Separable). Mirrored pairs first, in tap order; NumPy's banded
# products (_numpy_step) sum the same terms in BLAS's order.
_CUDA_AXIS = r"""
const long long idx = (long long)i;
const long long pos = (idx / stride) % length;
float acc = __fmul_rn((float)x[idx], taps[r]);
for (int j = 1; j <= r; ++j) {
    const long long lo = aug_reflect(pos - j, length);
    const long long hi = aug_reflect(pos + j, length);
    const float below = (float)x[idx + (lo - pos) * stride];
    const float above = (float)x[idx + (hi - pos) * stride];
    const float s = __fadd_rn(below, above);
    acc = __fadd_rn(acc, __fmul_rn(s, taps[r + j]));
}
y = (U)(rnd ? rintf(acc) : acc);
"""


def _draw(rng: np.random.Generator, spec: AugmentationSpec) -> dict[str, Any]:
    return {"blur_sigma": uniform(rng, spec.augment_blur_sigma_min, spec.augment_blur_sigma_max)}


def _prepare(params: CopyParams) -> Separable:
    sigma = params.blur_sigma

    def numpy_step(height: int, width: int) -> FrameStep:
        return _numpy_step(sigma, height, width)

    return Separable(
        numpy=numpy_step,
        taps=gaussian_kernel(sigma),
        cuda_axis=_CUDA_AXIS,
        preamble=_CUDA_PREAMBLE,
    )


BLUR = TransformDef(name="blur", prepare=_prepare, fields=("blur_sigma",), draws={"sigma": _draw})
