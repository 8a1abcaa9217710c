"""The NumPy engine agrees with the CUDA kernels' definition, on machines without a GPU.

docs/design.md, Transforms: the CuPy engine is the reference, and CuPy output equals
NumPy output within one grey level (tests/gpu checks it where a device is present).
Here the device passes are replayed on the CPU operation by operation, as the CUDA
code in augment_runner/transforms writes them (float32 products and sums rounded one
at a time, the same fused point passes, blur rows then columns with mirrored pairs in
tap order, one rounding at the end; log/sin/cos correctly rounded, where CUDA's are
within 1-2 ulp), and compared with the NumPy engine, whose OpenCV and NumPy kernels
sum and round in their own order, with the GPU test's tolerance.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import numpy as np
import pytest
from transform_cases import ALL, ORDERS

from augment_runner.transforms import (
    Augmenter,
    CopyParams,
    gaussian_kernel,
    lighting_affine,
    luma_means,
    noise_frame_key,
    noise_stream_key,
    occlusion_pixels,
    sample_copy_params,
)
from augment_runner.transforms.noise import BLOCK, _noise_scale
from augment_runner.transforms.occlusion import OCCLUSION_FILL
from augment_spec.model import AugmentationSpec, Transform

SHAPES = [(2, 96, 128), (1, 240, 320), (3, 37, 53), (1, 5, 4)]  # blocks, odd sizes, tiny
F32 = np.float32
MASK64 = (1 << 64) - 1
GOLDEN, MIX1, MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


# -------------------------------------------------- the device passes, on the CPU


def device_noise(key: int, elements: int, scale: np.float32) -> np.ndarray:
    """aug_noise(key, e, scale) for e in range(elements), as the CUDA preamble writes it."""
    e = np.arange(elements, dtype=np.int64)
    o = e & (BLOCK - 1)
    p = (((e >> 16) << 15) | (o & 0x7FFF)).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (p + np.uint64(1)) * np.uint64(GOLDEN)
        for shift, mul in ((30, MIX1), (27, MIX2)):
            z = (z ^ (z >> np.uint64(shift))) * np.uint64(mul)
    z ^= z >> np.uint64(31)
    mantissa = np.uint32(0x3F800000)
    hi = (((z >> np.uint64(32)).astype(np.uint32) >> np.uint32(9)) | mantissa).view(F32)
    lo = ((z.astype(np.uint32) >> np.uint32(9)) | mantissa).view(F32)
    log = np.log((F32(2) - hi).astype(np.float64)).astype(F32)
    r = np.sqrt(log * scale)
    theta = ((lo - F32(1)) * F32(6.2831855)).astype(np.float64)
    trig = np.where(o & 0x8000, np.sin(theta), np.cos(theta)).astype(F32)
    return trig * r


def point_pass(x: np.ndarray, names: list[str], p: CopyParams, frame0: int) -> np.ndarray:
    """One fused point kernel: each snippet in turn on float v, as the CUDA code does."""
    v = x.astype(F32)
    n = len(v)
    for name in names:
        if name == "lighting":
            a, k = (np.array(t, F32) for t in lighting_affine(p))
            mean = luma_means(np, x).astype(F32)[:, None, None, None]
            v = np.clip(v * a + k * mean, F32(0), F32(255))
        else:
            stream, scale = noise_stream_key(p.noise_seed), _noise_scale(p.noise_sigma)
            noise = [device_noise(noise_frame_key(stream, frame0 + f), v[0].size, scale)
                     for f in range(n)]  # fmt: skip
            v = np.clip(v + np.stack(noise).reshape(v.shape), F32(0), F32(255))
    return v


def reflect(positions: np.ndarray, length: int) -> np.ndarray:
    if length == 1:
        return np.zeros_like(positions)
    period = 2 * (length - 1)
    q = positions % period
    return np.where(q < length, q, period - q)


def axis_pass(x: np.ndarray, taps: np.ndarray, axis: int) -> np.ndarray:
    """_CUDA_AXIS along `axis`: centre tap, then (below + above) * tap for j = 1..r."""
    x = x.astype(F32)
    r = (len(taps) - 1) // 2
    length = x.shape[axis]
    pos = np.arange(length)
    acc = x * taps[r]
    for j in range(1, r + 1):
        below = np.take(x, reflect(pos - j, length), axis)
        above = np.take(x, reflect(pos + j, length), axis)
        acc = acc + (below + above) * taps[r + j]
    return acc


def device_run(
    p: CopyParams, frames: np.ndarray, frame0: int, rounded: bool = True
) -> np.ndarray:
    """The CuPy engine's passes (cupy_engine.device_plan), replayed; not `rounded`, the
    float32 grey levels before the final rounding."""
    passes: list[Any] = []
    for name in p.transforms:
        last = passes[-1] if passes else None
        point = name in ("lighting", "noise")
        if point and isinstance(last, list) and name != "lighting" and name not in last:
            last.append(name)
        else:
            passes.append([name] if point else name)
    last_writer = max((i for i, q in enumerate(passes) if q != "occlusion"), default=-1)
    cur: np.ndarray = frames.copy()  # fills only: the uint8 frames, filled
    for i, q in enumerate(passes):
        if isinstance(q, list):
            cur = point_pass(cur, q, p, frame0)
        elif q == "blur":
            taps = gaussian_kernel(p.blur_sigma)
            cur = axis_pass(axis_pass(cur, taps, 1), taps, 2)
        else:
            for y0, y1, x0, x1 in occlusion_pixels(p.occlusion_rects, *cur.shape[1:3]):
                cur[:, y0:y1, x0:x1] = OCCLUSION_FILL
        if i == last_writer and rounded:
            cur = np.rint(cur).astype(np.uint8)
    return cur


def deep_device_run(p: CopyParams, frames: np.ndarray, frame0: int) -> np.ndarray:
    """The definition of 16-bit output (docs/design.md, Transforms): the device passes on
    the frames in 8-bit grey levels (v / 257), unrounded, widened back to 16 bits and
    rounded once."""
    levels = frames.astype(F32) * F32(1 / 257)
    out = device_run(p, levels, frame0, rounded=False).astype(F32) * F32(257)
    return np.rint(np.clip(out, 0, 65535)).astype(np.uint16)

# ---------------------------------------------------------------------------- tests


def frames_of(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A gradient with texture: realistic means, edges and saturated corners."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), (xx + yy) % 256], -1)
    return np.clip(base[None] + rng.normal(0, 25, (n, h, w, 3)), 0, 255).astype(np.uint8)


def copy_params(transforms: tuple[Transform, ...], seed: int) -> CopyParams:
    spec = AugmentationSpec(
        project_id=uuid.uuid4(), dataset_id="lab/cpu-check", augment_seed=seed,
        augment_brightness_min=-30, augment_brightness_max=30, augment_contrast_min=-30,
        augment_contrast_max=30, augment_color_temp_min=2500, augment_color_temp_max=9000,
        augment_noise_sigma_max=12, augment_blur_sigma_max=4, augment_occlusion_count=3,
    )  # fmt: skip
    return sample_copy_params(spec, list(transforms), episode_index=seed % 7, copy_index=seed)


def assert_close(expected: np.ndarray, got: np.ndarray) -> None:
    """tests/gpu's tolerance: within one grey level, and only on rare values."""
    assert got.dtype == np.uint8 and got.shape == expected.shape
    diff = np.abs(expected.astype(np.int16) - got.astype(np.int16))
    assert diff.max() <= 1, f"max difference {diff.max()} grey levels"
    assert diff.mean() < 1e-3, f"{diff.mean():.2%} of values differ by one level"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("transforms", ORDERS, ids=lambda ts: "+".join(t.value for t in ts))
def test_numpy_engine_matches_the_device_passes(transforms, shape):
    frames = frames_of(*shape, seed=len(transforms))
    for seed in (1, 2):
        p = copy_params(transforms, seed)
        assert_close(device_run(p, frames, 40), Augmenter(p, np)(frames, 40))


def test_extreme_parameters():
    frames = frames_of(2, 64, 96)
    p = dataclasses.replace(
        copy_params(ALL, 3), brightness=50.0, contrast=-50.0, color_temp=2000,
        noise_sigma=50.0, blur_sigma=10.0,
    )  # fmt: skip
    assert_close(device_run(p, frames, 0), Augmenter(p, np)(frames, 0))


def test_the_replay_is_the_device_definition():
    """The replay itself: noise is deterministic and a constant frame stays constant."""
    p = dataclasses.replace(copy_params(ALL, 5), transforms=("blur",), blur_sigma=2.5)
    grey = np.full((1, 9, 7, 3), 77, np.uint8)
    assert np.array_equal(device_run(p, grey, 0), grey)
    key, scale = noise_frame_key(noise_stream_key(7), 3), _noise_scale(4.0)
    noise = device_noise(key, 3 * BLOCK // 2, scale)
    assert np.array_equal(noise, device_noise(key, 3 * BLOCK // 2, scale))
    assert noise.std() == pytest.approx(4.0, rel=0.02)


def deep_frames_of(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """16-bit frames that use all 16 bits: frames_of, widened, plus texture below 1/257."""
    rng = np.random.default_rng(seed)
    wide = frames_of(n, h, w, seed).astype(np.int64) * 257 + rng.integers(-128, 129, (n, h, w, 3))
    return np.clip(wide, 0, 65535).astype(np.uint16)


def assert_close_deep(expected: np.ndarray, got: np.ndarray) -> None:
    """One 16-bit level (1/257 of a grey level), on at most 1% of the values (one, in a
    tiny frame): the float32 sums and log/sin/cos differ by far less than a level before
    the one rounding, which a rare value straddles."""
    assert got.dtype == np.uint16 and got.shape == expected.shape
    diff = np.abs(expected.astype(np.int32) - got.astype(np.int32))
    assert diff.max() <= 1, f"max difference {diff.max()} 16-bit levels"
    differ = int(np.count_nonzero(diff))
    assert differ <= max(1, diff.size // 100), f"{differ} of {diff.size} values differ"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("transforms", ORDERS, ids=lambda ts: "+".join(t.value for t in ts))
def test_numpy_engine_matches_the_definition_on_16bit_frames(transforms, shape):
    frames = deep_frames_of(*shape, seed=len(transforms))
    for seed in (1, 2):
        p = copy_params(transforms, seed)
        got = Augmenter(p, np)(frames, 40)
        assert_close_deep(deep_device_run(p, frames, 40), got)


def test_16bit_output_is_the_8bit_output_before_its_rounding():
    """A 10-bit copy looks like its 8-bit twin: the same parameters in grey levels, the
    16-bit result within half a grey level of the 8-bit one (its rounding, not done)."""
    frames = frames_of(2, 64, 96)
    for seed, transforms in enumerate(ORDERS):
        p = copy_params(transforms, seed)
        narrow = Augmenter(p, np)(frames, 7).astype(np.float64)
        wide = Augmenter(p, np)(frames.astype(np.uint16) * 257, 7).astype(np.float64)
        assert np.abs(wide / 257 - narrow).max() <= 0.5 + 1 / 257


def test_an_identity_copy_of_16bit_frames_keeps_every_bit():
    """No 8-bit step anywhere: lighting at its identity gives the frames back exactly."""
    p = dataclasses.replace(copy_params((Transform.lighting,), 4), brightness=0.0,
                            contrast=0.0, color_temp=6500)  # fmt: skip
    frames = deep_frames_of(2, 37, 53)
    assert np.array_equal(Augmenter(p, np)(frames, 0), frames)
