"""The deterministic transforms: lighting, noise, blur, occlusion (DESIGN.md §2).

Parameters are drawn once per (episode, copy) by `sample_copy_params`; an `Augmenter`
applies them to batches of uint8 RGB frames, on NumPy or CuPy.

Definitions, identical on both backends:

- lighting: with B = 1 + brightness/100, C = 1 + contrast/100, m the frame's BT.709
  luma mean (Y' = 0.2126 R' + 0.7152 G' + 0.0722 B'; sRGB shares the BT.709 primaries)
  and g_c the colour-temperature gains: v -> clip(g_c * (m*B + (v*B - m*B) * C)), i.e.
  brightness, then contrast about the brightened mean, then the white-point gains. It is
  one per-channel affine map v * a_c + b_c, so it runs as one fused pass.
  The gains: the Planckian white point at K (Kim et al. 2002 cubic fit of the locus,
  valid 1667-25000 K) in linear sRGB, relative to the one at 6500 K, gamma-encoded
  (power 1/2.2, because frames are gamma-encoded) and scaled so their luma is 1: grey
  stays grey-level and K=6500 is the identity.
- noise: v -> clip(v + sigma * n), n standard normal, fresh per frame and pixel. n comes
  from a counter-based generator (SplitMix64 finaliser of (frame key, pair index),
  Box-Muller on the two 32-bit halves of the hash), so every value depends only on
  (noise_seed, frame index within the episode, element index): batching cannot change
  it, and the CUDA kernel reproduces the NumPy values up to 1-2 ulp of log/sin/cos.
- blur: separable Gaussian, radius ceil(3*sigma), mirror borders without repeating the
  edge (NumPy's 'reflect', OpenCV's BORDER_REFLECT_101), rows first, then columns.
  NumPy sums the taps as small banded matrix products (BLAS, fused multiply-adds in
  its own order), CUDA pair by pair in tap order: the sums differ only by float32
  rounding (~1e-5 grey levels), so after the final rounding they agree within one.
- occlusion: rectangles filled with mid-grey (OCCLUSION_FILL) at the drawn fractions,
  the same for every frame of the copy. Rectangles never overlap, so together they
  cover the drawn area.

Values stay float32 between transforms; the result is rounded half-to-even once, at
the end.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache
from types import ModuleType
from typing import Any

import numpy as np

from augment_runner.backend import array_module, is_cupy, to_host
from augment_spec.contract import ENV_THREADS
from augment_spec.model import AugmentationSpec, Transform

LUMA = (0.2126, 0.7152, 0.0722)  # BT.709 luma weights
OCCLUSION_FILL = 128
ENCODING_GAMMA = 2.2
REFERENCE_KELVIN = 6500

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: SplitMix64's Weyl increment
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_TWO_PI32 = np.float32(2 * math.pi)
_BAND_ELEMENTS = 1 << 16  # ~256 KiB of float32: a band's scratch stays in L2
_MAX_THREADS = 8
# Outputs per banded blur matrix, measured (bench/bench_transforms.py): smaller blocks
# waste fewer multiplies on the band's zeros, larger ones make fewer BLAS calls.
_BLUR_ROW_BLOCK = 8
_BLUR_COLUMN_BLOCK = 8


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class CopyParams:
    """Everything one augmented copy of an episode needs, drawn once per copy."""

    transforms: tuple[Transform, ...]
    brightness: float  # percent
    contrast: float  # percent
    color_temp: int  # Kelvin
    noise_sigma: float  # grey levels
    blur_sigma: float  # pixels
    occlusion_rects: tuple[tuple[float, float, float, float], ...]  # x, y, w, h fractions
    noise_seed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready provenance: the parameters of the listed transforms only."""
        out: dict[str, Any] = {"transforms": [t.value for t in self.transforms]}
        for t in self.transforms:
            if t is Transform.lighting:
                out |= {
                    "brightness": self.brightness,
                    "contrast": self.contrast,
                    "color_temp": self.color_temp,
                }
            elif t is Transform.noise:
                out |= {"noise_sigma": self.noise_sigma, "noise_seed": self.noise_seed}
            elif t is Transform.blur:
                out["blur_sigma"] = self.blur_sigma
            elif t is Transform.occlusion:
                out["occlusion_rects"] = [list(r) for r in self.occlusion_rects]
        return out


def sample_copy_params(
    spec: AugmentationSpec, transforms: list[Transform], episode_index: int, copy_index: int
) -> CopyParams:
    """Draw one copy's parameters, uniformly from the spec's ranges.

    The generator is seeded by (augment_seed, episode_index, copy_index) alone and every
    parameter is drawn, in a fixed order, whichever transforms are listed: a copy's
    parameters do not depend on the batch size, on the other copies, or on the list.
    """
    if episode_index < 0 or copy_index < 0:
        raise ValueError("episode_index and copy_index must be >= 0")
    seq = np.random.SeedSequence([spec.augment_seed, episode_index, copy_index])
    rng = np.random.default_rng(seq)
    brightness = _uniform(rng, spec.augment_brightness_min, spec.augment_brightness_max)
    contrast = _uniform(rng, spec.augment_contrast_min, spec.augment_contrast_max)
    color_temp = int(
        rng.integers(spec.augment_color_temp_min, spec.augment_color_temp_max, endpoint=True)
    )
    noise_sigma = _uniform(rng, spec.augment_noise_sigma_min, spec.augment_noise_sigma_max)
    blur_sigma = _uniform(rng, spec.augment_blur_sigma_min, spec.augment_blur_sigma_max)
    area = _uniform(rng, spec.augment_occlusion_area_min, spec.augment_occlusion_area_max)
    rects = _occlusion_rects(rng, spec.augment_occlusion_count, area)
    noise_seed = int(rng.integers(0, 2**53))  # exact in JSON readers that use doubles
    return CopyParams(
        transforms=tuple(Transform(t) for t in transforms),
        brightness=brightness,
        contrast=contrast,
        color_temp=color_temp,
        noise_sigma=noise_sigma,
        blur_sigma=blur_sigma,
        occlusion_rects=rects,
        noise_seed=noise_seed,
    )


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _occlusion_rects(
    rng: np.random.Generator, count: int, area: float
) -> tuple[tuple[float, float, float, float], ...]:
    """`count` disjoint rectangles of area `area / count` each, as frame fractions.

    Each goes into its own cell of a near-square grid (a random choice of cells), with
    an aspect ratio between 1:2 and 2:1, so together they cover exactly `area`. For
    count <= 8 and area <= 0.5 (the spec's bounds) a rectangle always fits its cell.
    """
    rows = math.ceil(math.sqrt(count))
    cols = math.ceil(count / rows)
    cell_w, cell_h = 1.0 / cols, 1.0 / rows
    each = min(area / count, cell_w * cell_h)
    rects = []
    for cell in rng.permutation(rows * cols)[:count]:
        ratio = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))  # width / height
        w = min(math.sqrt(each * ratio), cell_w)
        h = min(each / w, cell_h)
        w = min(each / h, cell_w)
        x = (int(cell) % cols) * cell_w + float(rng.uniform()) * (cell_w - w)
        y = (int(cell) // cols) * cell_h + float(rng.uniform()) * (cell_h - h)
        rects.append((x, y, w, h))
    return tuple(rects)


# ----------------------------------------------------- derived constants (host, shared)


def _planck_white_linear_rgb(kelvin: float) -> np.ndarray:
    """Linear sRGB of the black-body white point at `kelvin` (luminance Y = 1)."""
    t = min(max(float(kelvin), 1667.0), 25000.0)
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    xyz = np.array([x / y, 1.0, (1.0 - x - y) / y])
    xyz_to_rgb = np.array(
        [
            [3.2404542, -1.5371385, -0.4985314],
            [-0.9692660, 1.8760108, 0.0415560],
            [0.0556434, -0.2040259, 1.0572252],
        ]
    )
    # Very warm whites fall just outside the sRGB gamut in blue; keep gains positive.
    return np.maximum(xyz_to_rgb @ xyz, 1e-3)


def color_temp_gains(kelvin: float) -> tuple[float, float, float]:
    """Per-channel gains on gamma-encoded values moving the white point to `kelvin`."""
    linear = _planck_white_linear_rgb(kelvin) / _planck_white_linear_rgb(REFERENCE_KELVIN)
    encoded = linear ** (1.0 / ENCODING_GAMMA)
    encoded = encoded / float(np.dot(LUMA, encoded))  # grey keeps its luma
    return (float(encoded[0]), float(encoded[1]), float(encoded[2]))


def lighting_affine(
    params: CopyParams,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(a_c, k_c) such that lighting is v * a_c + k_c * m, m the frame's luma mean."""
    bright = 1.0 + params.brightness / 100.0
    contrast = 1.0 + params.contrast / 100.0
    g0, g1, g2 = color_temp_gains(params.color_temp)
    scale, offset = bright * contrast, bright * (1.0 - contrast)
    return (g0 * scale, g1 * scale, g2 * scale), (g0 * offset, g1 * offset, g2 * offset)


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


def occlusion_pixels(
    rects: Sequence[tuple[float, float, float, float]], height: int, width: int
) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) pixel bounds of each rectangle; each covers at least one pixel."""

    def span(start: float, size: float, n: int) -> tuple[int, int]:
        lo = min(max(math.floor(start * n + 0.5), 0), n - 1)
        hi = min(max(math.floor((start + size) * n + 0.5), lo + 1), n)
        return lo, hi

    out = []
    for x, y, w, h in rects:
        y0, y1 = span(y, h, height)
        x0, x1 = span(x, w, width)
        out.append((y0, y1, x0, x1))
    return out


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


def luma_means(xp: ModuleType, frames: Any) -> Any:
    """Per-frame BT.709 luma mean of (N, H, W, 3) frames, float64, shape (N,).

    Column sums first, in float32: for uint8 frames every partial sum is an integer
    below 2^24, so the result is exact, whatever order a backend adds in.
    """
    n, h, w, _ = frames.shape
    cols = frames.reshape(n, h, w * 3).sum(axis=1, dtype=xp.float32)
    sums = cols.reshape(n, w, 3).sum(axis=1, dtype=xp.float64)
    luma = sums[:, 0] * LUMA[0] + sums[:, 1] * LUMA[1] + sums[:, 2] * LUMA[2]
    return luma / float(h * w)


# --------------------------------------------------------------------------- augmenter


class Augmenter:
    """Applies one copy's transforms to batches of frames of an episode."""

    def __init__(self, params: CopyParams, xp: ModuleType | None = None) -> None:
        self.params = params
        self.xp = xp if xp is not None else array_module()
        self.kernel = gaussian_kernel(params.blur_sigma)
        self.radius = (len(self.kernel) - 1) // 2
        self.light_a, self.light_k = lighting_affine(params)
        self.stream_key = noise_stream_key(params.noise_seed)
        self._engine: _NumpyEngine | _CupyEngine = (
            _CupyEngine(self) if is_cupy(self.xp) else _NumpyEngine(self)
        )

    def __call__(self, frames: np.ndarray, frame_offset: int) -> np.ndarray:
        """Augmented copy of a host batch: (N, H, W, 3) uint8 in, a new array out.

        `frame_offset` is the index of frames[0] within the episode; noise depends on
        it, so an episode gives the same output however it is cut into batches.
        """
        _check_frames(frames, np.ndarray)
        if isinstance(self._engine, _NumpyEngine):
            return self._engine.run(frames, frame_offset)
        return to_host(self._engine.run(self.xp.asarray(frames), frame_offset))

    def apply(self, frames: Any, frame_offset: int) -> Any:
        """Like __call__, for arrays already on this backend (no host transfer)."""
        _check_frames(frames, self.xp.ndarray)
        return self._engine.run(frames, frame_offset)


def _check_frames(frames: Any, array_type: type) -> None:
    if not isinstance(frames, array_type):
        raise TypeError(f"frames must be a {array_type.__module__} array")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be uint8 of shape (N, H, W, 3); got {frames.dtype} {frames.shape}"
        )


# ----------------------------------------------------------------------- NumPy engine


def _thread_count(frames: int) -> int:
    """Worker threads: AUGMENT_THREADS, else the usable cores (capped), <= frames."""
    env = os.environ.get(ENV_THREADS, "").strip()
    if env:
        wanted = int(env)
    elif hasattr(os, "sched_getaffinity"):
        wanted = min(len(os.sched_getaffinity(0)), _MAX_THREADS)
    else:
        wanted = min(os.cpu_count() or 1, _MAX_THREADS)
    return max(1, min(wanted, frames))


def _bands(length: int, step: int) -> Iterator[tuple[int, int]]:
    for start in range(0, length, step):
        yield start, min(start + step, length)


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


class _Scratch:
    """One worker's buffers and the batch geometry, allocated once per batch: page
    faults on fresh large arrays cost more than the arithmetic done in them."""

    def __init__(self, aug: Augmenter, height: int, width: int) -> None:
        pairs = _BAND_ELEMENTS // 2
        self.height, self.width = height, width
        self.band_rows = max(1, _BAND_ELEMENTS // (width * 3))
        self.rects = occlusion_pixels(aug.params.occlusion_rects, height, width)
        self.frames = [np.empty((height, width, 3), np.float32) for _ in range(2)]
        if Transform.blur in aug.params.transforms:
            self.blur = _blur_plan(aug.params.blur_sigma, height, width)
        self.z = np.empty(pairs, np.uint64)
        self.t = np.empty(pairs, np.uint64)
        self.r = np.empty(pairs, np.float32)
        self.theta = np.empty(pairs, np.float32)
        self.noise = np.empty(_BAND_ELEMENTS, np.float32)
        self.weyl = np.arange(pairs, dtype=np.uint64) * np.uint64(_GOLDEN)  # wraps mod 2^64


Step = Callable[[np.ndarray, int, _Scratch], np.ndarray]


class _NumpyEngine:
    """Frame by frame, each worker thread on its own frames: a frame's scratch stays in
    cache, memory stays bounded whatever the batch size, and NumPy releases the GIL
    inside its loops, so the threads use every core. Within a frame, the work is
    vectorised over row bands sized for the L2 cache."""

    def __init__(self, aug: Augmenter) -> None:
        self.aug = aug
        self.steps: dict[Transform, Step] = {
            Transform.lighting: self._lighting,
            Transform.noise: self._noise,
            Transform.blur: self._blur,
            Transform.occlusion: self._occlusion,
        }

    def run(self, frames: np.ndarray, frame_offset: int) -> np.ndarray:
        if all(t is Transform.occlusion for t in self.aug.params.transforms):
            return self._occlusion_only(frames)
        out = np.empty(frames.shape, np.uint8)
        workers = _thread_count(len(frames))
        # Workers take the next frame as they finish one: a worker slowed by another
        # process on its core costs at most one frame, not a fixed share of the batch.
        # (next() on itertools.count is atomic under the GIL.)
        queue = itertools.count()
        if workers == 1:
            self._worker(frames, out, frame_offset, queue)
            return out
        with ThreadPoolExecutor(workers, thread_name_prefix="augment") as pool:
            jobs = [
                pool.submit(self._worker, frames, out, frame_offset, queue) for _ in range(workers)
            ]
            for job in jobs:
                job.result()
        return out

    def _worker(
        self, frames: np.ndarray, out: np.ndarray, frame_offset: int, queue: Iterator[int]
    ) -> None:
        scratch = _Scratch(self.aug, frames.shape[1], frames.shape[2])
        for i in queue:
            if i >= len(frames):
                return
            buf = scratch.frames[0]
            np.copyto(buf, frames[i])
            for t in self.aug.params.transforms:
                buf = self.steps[t](buf, frame_offset + i, scratch)
            np.rint(buf, out=buf)  # every step keeps values within [0, 255]
            np.copyto(out[i], buf, casting="unsafe")

    def _occlusion_only(self, frames: np.ndarray) -> np.ndarray:
        """No arithmetic at all: fill a uint8 copy (what float32 and rounding would give)."""
        out = frames.copy()
        if Transform.occlusion in self.aug.params.transforms:  # else: no transforms at all
            rects = occlusion_pixels(self.aug.params.occlusion_rects, *frames.shape[1:3])
            for y0, y1, x0, x1 in rects:
                out[:, y0:y1, x0:x1] = OCCLUSION_FILL
        return out

    def _lighting(self, buf: np.ndarray, frame_index: int, s: _Scratch) -> np.ndarray:
        mean = np.float32(luma_means(np, buf[None])[0])
        a_row = np.tile(np.array(self.aug.light_a, np.float32), s.width)
        b_row = np.tile(np.array(self.aug.light_k, np.float32) * mean, s.width)
        rows = buf.reshape(s.height, s.width * 3)
        for y0, y1 in _bands(s.height, s.band_rows):
            band = rows[y0:y1]
            band *= a_row
            band += b_row
            np.clip(band, 0, 255, out=band)
        return buf

    def _noise(self, buf: np.ndarray, frame_index: int, s: _Scratch) -> np.ndarray:
        key = noise_frame_key(self.aug.stream_key, frame_index)
        scale = _noise_scale(self.aug.params.noise_sigma)
        flat = buf.reshape(-1)
        for e0, e1 in _bands(flat.size, _BAND_ELEMENTS):  # one band is one noise block
            _gaussian_block(key, e0 // _BAND_ELEMENTS, e1 - e0, scale, s)
            band = flat[e0:e1]
            band += s.noise[: e1 - e0]
            np.clip(band, 0, 255, out=band)
        return buf

    def _blur(self, buf: np.ndarray, frame_index: int, s: _Scratch) -> np.ndarray:
        """Both passes as products with small banded matrices (BLAS sgemm): FMA units
        do the taps at several times the speed of one NumPy pass per tap, and the rows
        of a block stream through the cache once instead of once per tap. Vertical:
        M (B x B+2r) @ rows (B+2r x W*3), on interleaved RGB as it is. Horizontal: the
        column band (H x 3(B+2r)) @ kron(M.T, I3): the zeros that keep channels apart
        triple the multiplies, still cheaper than two transposes of the frame.
        OpenBLAS may run a call on its own threads too; with the workers already on
        every core that costs ~10% CPU (OPENBLAS_NUM_THREADS=1 avoids it)."""
        other = s.frames[1] if buf is s.frames[0] else s.frames[0]
        src, tmp = buf.reshape(s.height, -1), other.reshape(s.height, -1)
        for b in s.blur.rows:
            np.matmul(b.matrix, src[b.src0 : b.src1], out=tmp[b.out0 : b.out1])
        for b in s.blur.cols:  # back into buf: its input is no longer needed
            np.matmul(
                tmp[:, 3 * b.src0 : 3 * b.src1], b.matrix, out=src[:, 3 * b.out0 : 3 * b.out1]
            )
        return buf

    def _occlusion(self, buf: np.ndarray, frame_index: int, s: _Scratch) -> np.ndarray:
        for y0, y1, x0, x1 in s.rects:
            buf[y0:y1, x0:x1] = OCCLUSION_FILL
        return buf


_LO, _HI = (0, 1) if sys.byteorder == "little" else (1, 0)  # 32-bit halves of a uint64


def _noise_scale(sigma: float) -> np.float32:
    """Box-Muller radius factor: r = sqrt(log(u) * scale) = sigma * sqrt(-2 log u)."""
    return np.float32(-2.0 * sigma * sigma)


def _gaussian_block(key: int, block: int, count: int, scale: np.float32, s: _Scratch) -> None:
    """Noise of the first `count` elements of noise block `block`, into s.noise.

    Element o of a block uses pair (block * HALF + o % HALF): the cosine of the pair
    for o < HALF, its sine above, so both halves are contiguous arrays. Pair p hashes
    key + (p + 1) * golden with SplitMix64's finaliser; the high 23 bits give the
    radius, the low ones the angle. Mirrors the CUDA `aug_noise` operation by operation.
    """
    half = _BAND_ELEMENTS // 2
    pairs = min(count, half)
    z, t = s.z[:pairs], s.t[:pairs]
    np.add(s.weyl[:pairs], np.uint64((key + (block * half + 1) * _GOLDEN) & _MASK64), out=z)
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
    np.log(r, out=r)
    r *= scale
    np.sqrt(r, out=r)
    np.subtract(floats[:, _LO], np.float32(1), out=theta)
    theta *= _TWO_PI32
    cos, sin = s.noise[:pairs], s.noise[half:count]
    np.cos(theta, out=cos)
    cos *= r
    np.sin(theta[: len(sin)], out=sin)
    sin *= r[: len(sin)]


# ------------------------------------------------------------------------ CuPy engine

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
__device__ __forceinline__ long long aug_reflect(long long p, long long n) {
    if (n == 1) return 0;
    const long long period = 2 * (n - 1);
    p %= period;
    if (p < 0) p += period;
    return p < n ? p : period - p;
}
"""

# Lighting and/or noise in one pass: read, (affine, clip), (add noise, clip), write.
# __fmul_rn/__fadd_rn stop the compiler fusing into FMAs, so results match NumPy's.
_POINT_OP = r"""
const long long idx = (long long)i;
const long long f = idx / frame_size;
const long long e = idx - f * frame_size;
const int c = (int)(e % 3);
float v = (float)x;
if (light) {
    const float a = c == 0 ? a0 : (c == 1 ? a1 : a2);
    const float k = c == 0 ? k0 : (c == 1 ? k1 : k2);
    v = fminf(fmaxf(__fadd_rn(__fmul_rn(v, a), __fmul_rn(k, mean[f])), 0.0f), 255.0f);
}
if (noise) {
    const unsigned long long frame = (unsigned long long)(frame0 + f + 1);
    const unsigned long long key = aug_mix64(skey + frame * AUG_GOLDEN);
    v = fminf(fmaxf(__fadd_rn(v, aug_noise(key, e, scale)), 0.0f), 255.0f);
}
y = (U)(rnd ? rintf(v) : v);
"""

# One axis of the separable blur; `stride` and `length` pick the axis (rows: W*3 and
# H, columns: 3 and W). Mirrored pairs first, in tap order; NumPy's banded products
# (_NumpyEngine._blur) sum the same terms in BLAS's order.
_BLUR_OP = r"""
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


@cache
def _cuda_kernels(cupy: ModuleType) -> tuple[Any, Any]:
    point = cupy.ElementwiseKernel(
        "T x, raw float32 mean, float32 a0, float32 a1, float32 a2, float32 k0, "
        "float32 k1, float32 k2, uint64 skey, int64 frame0, int64 frame_size, float32 scale, "
        "int32 light, int32 noise, int32 rnd",
        "U y",
        _POINT_OP,
        "augment_point",
        preamble=_CUDA_PREAMBLE,
    )
    blur = cupy.ElementwiseKernel(
        "raw T x, raw float32 taps, int32 r, int64 length, int64 stride, int32 rnd",
        "U y",
        _BLUR_OP,
        "augment_blur_axis",
        preamble=_CUDA_PREAMBLE,
    )
    return point, blur


@dataclass
class _PointOp:
    light: bool = False
    noise: bool = False


def _device_plan(transforms: Sequence[Transform]) -> list[_PointOp | Transform]:
    """Kernel passes: lighting directly followed by noise share one pass."""
    plan: list[_PointOp | Transform] = []
    for t in transforms:
        if t is Transform.lighting:
            plan.append(_PointOp(light=True))
        elif t is Transform.noise:
            last = plan[-1] if plan else None
            if isinstance(last, _PointOp) and last.light and not last.noise:
                last.noise = True
            else:
                plan.append(_PointOp(noise=True))
        else:
            plan.append(t)
    return plan


class _CupyEngine:
    """The whole batch per kernel: one fused point pass, two blur passes, rectangle
    fills. The last pass that computes pixels writes uint8 directly (occlusion only
    writes mid-grey, so it commutes with the final rounding)."""

    def __init__(self, aug: Augmenter) -> None:
        self.aug = aug
        self.xp = aug.xp
        self.point, self.blur = _cuda_kernels(self.xp)
        self.taps = self.xp.asarray(aug.kernel)  # uploaded once, not per batch
        self.no_mean = self.xp.zeros(1, self.xp.float32)
        self.plan = _device_plan(aug.params.transforms)

    def run(self, frames: Any, frame_offset: int) -> Any:
        xp = self.xp
        frames = xp.ascontiguousarray(frames)
        last_writer = max(
            (i for i, op in enumerate(self.plan) if op is not Transform.occlusion), default=-1
        )
        cur = frames
        for i, op in enumerate(self.plan):
            dtype = xp.uint8 if i == last_writer else xp.float32
            if isinstance(op, _PointOp):
                cur = self._point(cur, op, frame_offset, dtype)
            elif op is Transform.blur:
                cur = self._blur(cur, dtype)
            else:
                cur = cur.copy() if cur is frames else cur  # never write into the input
                self._occlude(cur)
        return cur.copy() if cur is frames else cur

    def _point(self, cur: Any, op: _PointOp, frame_offset: int, dtype: Any) -> Any:
        xp = self.xp
        _, h, w, _ = cur.shape
        mean = luma_means(xp, cur).astype(xp.float32) if op.light else self.no_mean
        a, k = self.aug.light_a, self.aug.light_k
        out = xp.empty(cur.shape, dtype)
        self.point(
            cur, mean, *(np.float32(v) for v in (*a, *k)),
            np.uint64(self.aug.stream_key), np.int64(frame_offset), np.int64(h * w * 3),
            _noise_scale(self.aug.params.noise_sigma),
            np.int32(op.light), np.int32(op.noise), np.int32(dtype == xp.uint8), out,
        )  # fmt: skip
        return out

    def _blur(self, cur: Any, dtype: Any) -> Any:
        xp = self.xp
        _, h, w, _ = cur.shape
        r = np.int32(self.aug.radius)
        rows = xp.empty(cur.shape, xp.float32)
        self.blur(cur, self.taps, r, np.int64(h), np.int64(w * 3), np.int32(0), rows)
        out = xp.empty(cur.shape, dtype)
        self.blur(rows, self.taps, r, np.int64(w), np.int64(3), np.int32(dtype == xp.uint8), out)
        return out

    def _occlude(self, cur: Any) -> None:
        _, h, w, _ = cur.shape
        for y0, y1, x0, x1 in occlusion_pixels(self.aug.params.occlusion_rects, h, w):
            cur[:, y0:y1, x0:x1, :] = OCCLUSION_FILL
