"""Lighting: brightness, contrast and colour temperature (docs/design.md, Transforms).

With B = 1 + brightness/100, C = 1 + contrast/100, m the frame's BT.709 luma mean
(Y' = 0.2126 R' + 0.7152 G' + 0.0722 B'; sRGB shares the BT.709 primaries) and g_c the
colour-temperature gains: v -> clip(g_c * (m*B + (v*B - m*B) * C)), i.e. brightness,
then contrast about the brightened mean, then the white-point gains. It is one
per-channel affine map v * a_c + k_c * m, so it runs as one fused pass.

The gains: the Planckian white point at K (Kim et al. 2002 cubic fit of the locus,
valid 1667-25000 K) in linear sRGB, relative to the one at 6500 K, gamma-encoded
(power 1/2.2, because frames are gamma-encoded) and scaled so their luma is 1: grey
stays grey-level and K=6500 is the identity.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .base import (
    BAND_ELEMENTS,
    BandStep,
    CudaSnippet,
    FrameLevels,
    FrameStep,
    Pointwise,
    TransformDef,
    uniform,
)

if TYPE_CHECKING:
    from augment_spec.model import AugmentationSpec

    from .params import CopyParams

LUMA = (0.2126, 0.7152, 0.0722)  # BT.709 luma weights
ENCODING_GAMMA = 2.2
REFERENCE_KELVIN = 6500


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


def luma_means(xp: ModuleType, frames: Any) -> Any:
    """Per-frame BT.709 luma mean of (N, H, W, 3) frames, float64, shape (N,).

    Column sums first, in float32: for uint8 frames every partial sum is an integer
    below 2^24, so the result is exact, whatever order a backend adds in.
    """
    n, h, w, _ = frames.shape
    cols = frames.reshape(n, h, w * 3).sum(axis=1, dtype=xp.float32)
    sums = cols.reshape(n, w, 3).sum(axis=1, dtype=xp.float64)
    return _luma_of_sums(sums[:, 0], sums[:, 1], sums[:, 2], h * w)


def _luma_of_sums(red: Any, green: Any, blue: Any, pixels: int) -> Any:
    return (red * LUMA[0] + green * LUMA[1] + blue * LUMA[2]) / float(pixels)


def _luma_mean(frame: np.ndarray) -> np.float32:
    """luma_means of one (H, W, 3) frame. A uint8 frame's channel sums come from OpenCV:
    exact integers like luma_means's, in one SIMD pass over a quarter of the bytes."""
    if frame.dtype == np.uint8:
        red, green, blue, _ = cv2.sumElems(frame)
        return np.float32(_luma_of_sums(red, green, blue, frame.shape[0] * frame.shape[1]))
    return np.float32(luma_means(np, frame[None])[0])


def _draw(rng: np.random.Generator, spec: AugmentationSpec) -> dict[str, Any]:
    # One statement per draw: their order is the generator's order.
    brightness = uniform(rng, spec.augment_brightness_min, spec.augment_brightness_max)
    contrast = uniform(rng, spec.augment_contrast_min, spec.augment_contrast_max)
    color_temp = int(
        rng.integers(spec.augment_color_temp_min, spec.augment_color_temp_max, endpoint=True)
    )
    return {"brightness": brightness, "contrast": contrast, "color_temp": color_temp}


# __fmul_rn/__fadd_rn stop the compiler fusing into FMAs, so results match NumPy's.
_CUDA = CudaSnippet(
    code=r"""
const float a = c == 0 ? lighting_a0 : (c == 1 ? lighting_a1 : lighting_a2);
const float k = c == 0 ? lighting_k0 : (c == 1 ? lighting_k1 : lighting_k2);
v = fminf(fmaxf(__fadd_rn(__fmul_rn(v, a), __fmul_rn(k, lighting_mean[f])), 0.0f), 255.0f);
""",
    params="raw float32 lighting_mean, float32 lighting_a0, float32 lighting_a1, "
    "float32 lighting_a2, float32 lighting_k0, float32 lighting_k1, float32 lighting_k2",
)


def _prepare(params: CopyParams) -> Pointwise:
    a, k = lighting_affine(params)

    def numpy_step(height: int, width: int) -> FrameStep:
        # The gains and offsets tiled along a band, from each of the 3 channel phases.
        gains = np.tile(np.array(a, np.float32), BAND_ELEMENTS // 3 + 2)
        k_tiled = np.tile(np.array(k, np.float32), BAND_ELEMENTS // 3 + 2)
        offsets = np.empty_like(k_tiled)

        def frame_step(frame: np.ndarray, frame_index: int) -> BandStep:
            np.multiply(k_tiled, _luma_mean(frame), out=offsets)  # k_c * m, in float32

            def band_step(values: np.ndarray, start: int) -> None:
                phase, n = start % 3, len(values)
                values *= gains[phase : phase + n]
                values += offsets[phase : phase + n]
                np.clip(values, 0, 255, out=values)

            return band_step

        return frame_step

    def levels(height: int, width: int) -> FrameLevels:
        # The band step's float32 operations, in its order, on each level 0..255.
        grey = np.arange(256, dtype=np.float32)[:, None]
        gains, k_channels = np.array(a, np.float32), np.array(k, np.float32)
        table = np.empty((1, 256, 3), np.float32)

        def frame_levels(frame: np.ndarray, frame_index: int) -> np.ndarray:
            np.multiply(grey, gains, out=table[0])
            table[0] += k_channels * _luma_mean(frame)
            return np.clip(table, 0, 255, out=table)

        return frame_levels

    def cuda_args(xp: ModuleType, frames: Any) -> tuple[Any, ...]:
        mean = luma_means(xp, frames).astype(xp.float32)
        return (mean, *(np.float32(v) for v in (*a, *k)))

    # reads_frame: the mean is that of the frame as it enters
    return Pointwise(
        numpy=numpy_step, cuda=_CUDA, cuda_args=cuda_args, reads_frame=True, levels=levels
    )


LIGHTING = TransformDef(
    name="lighting",
    prepare=_prepare,
    fields=("brightness", "contrast", "color_temp"),
    draws={"levels": _draw},
)
