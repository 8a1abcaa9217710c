"""Blur: separable Gaussian (docs/design.md, Transforms).

Radius ceil(3*sigma), mirror borders without repeating the edge (NumPy's 'reflect',
OpenCV's BORDER_REFLECT_101), rows first, then columns. The NumPy engine runs OpenCV's
separable filter with these taps in float32 (its SIMD sums, the horizontal pass
first; numpy_engine.py), CUDA sums pair by pair in tap order: the sums differ only by
float32 rounding (~1e-5 grey levels), so after the final rounding they agree within one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Separable, TransformDef, uniform

if TYPE_CHECKING:
    from augment_spec.model import AugmentationSpec

    from .params import CopyParams


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps, radius ceil(3 sigma), as float32."""
    radius = max(1, math.ceil(3.0 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


_CUDA_PREAMBLE = r"""
__device__ __forceinline__ long long aug_reflect(long long p, long long n) {
    if (n == 1) return 0;
    const long long period = 2 * (n - 1);
    p %= period;
    if (p < 0) p += period;
    return p < n ? p : period - p;
}
"""

# One axis (see base.Separable). Mirrored pairs first, in tap order; OpenCV
# (_numpy_step) sums the same terms in its own order.
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
    return Separable(
        taps=gaussian_kernel(params.blur_sigma),
        cuda_axis=_CUDA_AXIS,
        preamble=_CUDA_PREAMBLE,
    )


BLUR = TransformDef(name="blur", prepare=_prepare, fields=("blur_sigma",), draws={"sigma": _draw})
