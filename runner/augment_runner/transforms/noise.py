"""Noise: Gaussian sensor noise (docs/design.md, Transforms).

v -> clip(v + sigma * n), n standard normal, fresh per frame and pixel. n comes from a
counter-based generator (SplitMix64 finaliser of (frame key, pair index), Box-Muller on
the two 32-bit halves of the hash), so every value depends only on (noise_seed, frame
index within the episode, element index): batching cannot change it, and the CUDA
snippet reproduces the NumPy values up to a few ulp of log/sin/cos.
"""

from __future__ import annotations

import math
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .base import (
    BAND_ELEMENTS,
    BandStep,
    CudaSnippet,
    FrameStep,
    Pointwise,
    TransformDef,
    uniform,
)

if TYPE_CHECKING:
    from augment_spec.model import AugmentationSpec

    from .params import CopyParams

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: SplitMix64's Weyl increment
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_TWO_PI32 = np.float32(2 * math.pi)
# Elements per noise block: part of the definition of the values (the CUDA `aug_noise`
# splits an element index the same way), and a NumPy band's size.
BLOCK = 1 << 16
_HALF = BLOCK // 2
_LO, _HI = (0, 1) if sys.byteorder == "little" else (1, 0)  # 32-bit halves of a uint64


def _mix64(z: int) -> int:
    """SplitMix64's finaliser on a Python int (the CUDA and NumPy versions match it)."""
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def noise_stream_key(noise_seed: int) -> int:
    return _mix64((noise_seed + _GOLDEN) & _MASK64)


def noise_frame_key(stream_key: int, frame_index: int) -> int:
    """The key of one frame's noise: frame i of an episode always gets the same one."""
    return _mix64((stream_key + (frame_index + 1) * _GOLDEN) & _MASK64)


def _noise_scale(sigma: float) -> np.float32:
    """Box-Muller radius factor: r = sqrt(log(u) * scale) = sigma * sqrt(-2 log u)."""
    return np.float32(-2.0 * sigma * sigma)


# A NumPy band (base.BAND_ELEMENTS) is whole noise blocks, whose pairs are consecutive
# (block b holds pairs b*HALF ...): a band's noise is one run of pairs.
assert BAND_ELEMENTS % BLOCK == 0


class _Scratch:
    """One worker's buffers for the noise pairs of one band."""

    def __init__(self, pairs: int = BAND_ELEMENTS // 2) -> None:
        self.pairs = pairs
        self.z, self.t = np.empty(pairs, np.uint64), np.empty(pairs, np.uint64)
        self.r, self.theta = np.empty(pairs, np.float32), np.empty(pairs, np.float32)
        self.cos, self.sin = np.empty(pairs, np.float32), np.empty(pairs, np.float32)
        self.weyl = np.arange(pairs, dtype=np.uint64) * np.uint64(_GOLDEN)  # p * golden


def _gaussian_pairs(key: int, first: int, pairs: int, scale: np.float32, s: _Scratch) -> None:
    """The normal pair (cos, sin) of pairs [first, first + pairs), into s.cos and s.sin.

    Pair p hashes key + (p + 1) * golden with SplitMix64's finaliser; the high 23 bits
    give the radius, the low ones the angle (Box-Muller). Mirrors the CUDA `aug_noise`
    operation by operation; OpenCV computes the log and the sine and cosine: its float32
    kernels, 4-5x NumPy's, are about as accurate (against float64: log within 4 ulp
    like NumPy's, sine and cosine within 1.3e-7 where NumPy's are within 7e-8).
    """
    z, t = s.z[:pairs], s.t[:pairs]
    np.add(s.weyl[:pairs], np.uint64((key + (first + 1) * _GOLDEN) & _MASK64), out=z)
    for shift, mul in ((30, _MIX1), (27, _MIX2)):
        np.right_shift(z, shift, out=t)
        z ^= t
        z *= np.uint64(mul)
    np.right_shift(z, 31, out=t)
    z ^= t
    words = z.view(np.uint32).reshape(pairs, 2)
    words >>= 9  # 23 random mantissa bits under the exponent of 1.0: a float in [1, 2)
    words |= np.uint32(0x3F800000)
    floats = words.view(np.float32)
    r, theta = s.r[:pairs], s.theta[:pairs]
    np.subtract(np.float32(2), floats[:, _HI], out=r)  # (0, 1]: the log is finite
    cv2.log(r, dst=r)
    r *= scale
    np.sqrt(r, out=r)
    np.subtract(floats[:, _LO], np.float32(1), out=theta)
    theta *= _TWO_PI32
    cv2.polarToCart(r, theta, x=s.cos[:pairs], y=s.sin[:pairs])


def _add_noise(values: np.ndarray, start: int, key: int, scale: np.float32, s: _Scratch) -> None:
    """values += noise, clipped to [0, 255], for the frame's elements [start, start + n),
    start a multiple of BLOCK: element o of block b gets the cosine of pair b * HALF + o
    for o < HALF, its sine above (the CUDA `aug_noise` splits e the same way)."""
    full = len(values) // BLOCK * BLOCK
    if full:
        pairs = full // 2
        _gaussian_pairs(key, start // 2, pairs, scale, s)
        halves = values[:full].reshape(-1, 2, _HALF)
        halves[:, 0] += s.cos[:pairs].reshape(-1, _HALF)
        halves[:, 1] += s.sin[:pairs].reshape(-1, _HALF)
    rest = len(values) - full  # a last, partial block: its cosines, then its sines
    if rest:
        pairs = min(rest, _HALF)
        _gaussian_pairs(key, (start + full) // 2, pairs, scale, s)
        values[full : full + pairs] += s.cos[:pairs]
        values[full + pairs :] += s.sin[: rest - pairs]
    np.clip(values, 0, 255, out=values)


_CUDA_PREAMBLE = r"""
#define AUG_GOLDEN 0x9E3779B97F4A7C15ULL
__device__ __forceinline__ unsigned long long aug_mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
__device__ __forceinline__ float aug_noise(unsigned long long key, long long e, float scale) {
    const long long o = e & 0xFFFF;  // blocks of 2^16 elements, as in _gaussian_block
    const unsigned long long p = (unsigned long long)(((e >> 16) << 15) | (o & 0x7FFF));
    const unsigned long long z = aug_mix64(key + (p + 1) * AUG_GOLDEN);
    const float hi = __uint_as_float(((unsigned int)(z >> 32) >> 9) | 0x3F800000u);
    const float lo = __uint_as_float(((unsigned int)z >> 9) | 0x3F800000u);
    const float r = sqrtf(__fmul_rn(logf(__fsub_rn(2.0f, hi)), scale));
    const float theta = __fmul_rn(__fsub_rn(lo, 1.0f), 6.2831855f);
    return __fmul_rn((o & 0x8000) ? sinf(theta) : cosf(theta), r);
}
"""

_CUDA = CudaSnippet(
    code=r"""
const unsigned long long frame = (unsigned long long)(frame0 + f + 1);
const unsigned long long key = aug_mix64(noise_skey + frame * AUG_GOLDEN);
v = fminf(fmaxf(__fadd_rn(v, aug_noise(key, e, noise_scale)), 0.0f), 255.0f);
""",
    params="uint64 noise_skey, float32 noise_scale",
    preamble=_CUDA_PREAMBLE,
)


def _draw_sigma(rng: np.random.Generator, spec: AugmentationSpec) -> dict[str, Any]:
    return {"noise_sigma": uniform(rng, spec.augment_noise_sigma_min, spec.augment_noise_sigma_max)}


def _draw_seed(rng: np.random.Generator, spec: AugmentationSpec) -> dict[str, Any]:
    return {"noise_seed": int(rng.integers(0, 2**53))}  # exact in JSON readers that use doubles


def _prepare(params: CopyParams) -> Pointwise:
    stream_key = noise_stream_key(params.noise_seed)
    scale = _noise_scale(params.noise_sigma)

    def numpy_step(height: int, width: int) -> FrameStep:
        scratch = _Scratch()

        def frame_step(frame: np.ndarray, frame_index: int) -> BandStep:
            key = noise_frame_key(stream_key, frame_index)
            return lambda values, start: _add_noise(values, start, key, scale, scratch)

        return frame_step

    def cuda_args(xp: ModuleType, frames: Any) -> tuple[Any, ...]:
        return np.uint64(stream_key), scale

    return Pointwise(numpy=numpy_step, cuda=_CUDA, cuda_args=cuda_args)


NOISE = TransformDef(
    name="noise",
    prepare=_prepare,
    fields=("noise_sigma", "noise_seed"),
    draws={"sigma": _draw_sigma, "seed": _draw_seed},
)
