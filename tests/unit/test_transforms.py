"""Properties of the transform engine (docs/design.md, Transforms), on every available backend.

NumPy is always tested; CuPy joins the parametrisation only where it imports and sees
a CUDA device, so a CPU run collects no CuPy cases at all (nothing is skipped).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import numpy as np
import pytest

from augment_runner import backend
from augment_runner.transforms import (
    LUMA,
    OCCLUSION_FILL,
    Augmenter,
    CopyParams,
    GreyAugmenter,
    color_temp_gains,
    gaussian_kernel,
    occlusion_pixels,
    sample_copy_params,
)
from augment_runner.transforms.base import Pointwise
from augment_runner.transforms.lighting import LIGHTING
from augment_runner.transforms.numpy_engine import _look_up
from augment_spec.contract import ENV_BACKEND, ENV_THREADS
from augment_spec.model import AugmentationSpec, Transform

ALL = (Transform.lighting, Transform.noise, Transform.blur, Transform.occlusion)


@pytest.fixture(params=backend.available_modules(), ids=lambda m: m.__name__)
def xp(request: pytest.FixtureRequest) -> ModuleType:
    return request.param


def params(*transforms: Transform, **changes: object) -> CopyParams:
    """Neutral parameters (every transform an identity or near it), then `changes`."""
    base = CopyParams(
        transforms=tuple(transforms),
        brightness=0.0,
        contrast=0.0,
        color_temp=6500,
        noise_sigma=0.0,
        blur_sigma=1.0,
        occlusion_rects=(),
        noise_seed=1234,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def spec(**fields: object) -> AugmentationSpec:
    return AugmentationSpec(
        project_id=uuid.uuid4(),
        dataset_id="lab/pick-place",
        **fields,  # type: ignore[arg-type]
    )


def grey(value: int, n: int = 2, h: int = 24, w: int = 32) -> np.ndarray:
    return np.full((n, h, w, 3), value, np.uint8)


def random_frames(n: int = 3, h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def luma(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float64) @ np.array(LUMA)


def run(xp: ModuleType, p: CopyParams, frames: np.ndarray, offset: int = 0) -> np.ndarray:
    return Augmenter(p, xp)(frames, offset)


# ------------------------------------------------------------------------- lighting


@pytest.mark.parametrize("brightness", [-30.0, -7.5, 12.0, 40.0])
def test_brightness_scales_mid_grey_by_the_drawn_percent(xp: ModuleType, brightness: float):
    out = run(xp, params(Transform.lighting, brightness=brightness), grey(128))
    expected = 128 * (1 + brightness / 100)
    assert abs(out.mean() - expected) <= 1.0
    assert np.sign(out.mean() - 128) == np.sign(brightness)


@pytest.mark.parametrize("contrast", [-40.0, -10.0, 20.0, 45.0])
def test_contrast_scales_the_spread_about_the_mean(xp: ModuleType, contrast: float):
    ramp = np.linspace(70, 186, 32).round().astype(np.uint8)  # stays inside 0..255 at +45%
    frames = np.broadcast_to(ramp[None, None, :, None], (2, 24, 32, 3)).copy()
    out = run(xp, params(Transform.lighting, contrast=contrast), frames).astype(np.float64)
    assert out.std() == pytest.approx(frames.std() * (1 + contrast / 100), rel=0.01)
    assert abs(out.mean() - frames.mean()) <= 0.5  # grey: luma mean == mean


def test_lighting_follows_the_written_formula_on_colour_frames(xp: ModuleType):
    frames = random_frames(3, seed=4)
    p = params(Transform.lighting, brightness=9.0, contrast=-17.0, color_temp=4200)
    b, c = 1 + p.brightness / 100, 1 + p.contrast / 100
    m = luma(frames).mean(axis=(1, 2))[:, None, None, None]
    naive = (m * b + (frames * b - m * b) * c) * np.array(color_temp_gains(p.color_temp))
    expected = np.rint(np.clip(naive, 0, 255))
    assert np.abs(run(xp, p, frames) - expected).max() <= 1


@pytest.mark.parametrize("kelvin", [2000, 3200, 4500, 8000, 10000])
def test_colour_temperature_tints_grey_and_keeps_its_luma(xp: ModuleType, kelvin: int):
    out = run(xp, params(Transform.lighting, color_temp=kelvin), grey(128)).astype(np.float64)
    red, blue = out[..., 0].mean(), out[..., 2].mean()
    if kelvin < 6500:  # warmer light: redder
        assert red > blue + 5
    else:  # cooler light: bluer
        assert blue > red + 5
    assert abs(luma(out).mean() - 128) <= 1.0


def test_reference_temperature_is_the_identity_and_gains_are_monotonic():
    assert color_temp_gains(6500) == pytest.approx((1.0, 1.0, 1.0))
    ratios = [color_temp_gains(k)[0] / color_temp_gains(k)[2] for k in range(2000, 10001, 500)]
    assert all(a > b for a, b in itertools.pairwise(ratios))
    for k in (2000, 5000, 10000):
        assert float(np.dot(LUMA, color_temp_gains(k))) == pytest.approx(1.0)


def test_lighting_clips_to_the_valid_range(xp: ModuleType):
    out = run(xp, params(Transform.lighting, brightness=50.0, contrast=50.0), random_frames())
    assert out.max() == 255 and out.min() == 0


def test_lighting_levels_are_its_band_step_on_every_level():
    """The NumPy engine looks lighting up in its table of levels (on a uint8 frame) or
    runs its band step (on float values): the two agree bit for bit."""
    p = params(Transform.lighting, brightness=13.0, contrast=-21.0, color_temp=3100)
    lighting = LIGHTING.prepare(p)
    assert isinstance(lighting, Pointwise) and lighting.levels is not None
    frame = random_frames(1, 40, 50, seed=8)[0]
    table = lighting.levels(40, 50)(frame, 0)
    values = np.repeat(np.arange(256, dtype=np.float32), 3)  # element 3l + c: level l, channel c
    lighting.numpy(40, 50)(frame, 0)(values, 0)
    assert np.array_equal(table[0], values.reshape(256, 3))


@pytest.mark.parametrize("start", [0, 1, 2, 3 * 7 + 2])
@pytest.mark.parametrize("length", [1, 2, 3, 301, 302])
def test_look_up_follows_the_channel_of_each_element(start: int, length: int):
    table = np.random.default_rng(1).random((1, 256, 3), dtype=np.float32)
    levels = np.random.default_rng(2).integers(0, 256, length, dtype=np.uint8)
    out = np.full(length, -1.0, np.float32)
    _look_up(levels, table, start, out)
    channels = (start + np.arange(length)) % 3
    assert np.array_equal(out, table[0, levels, channels])


# ---------------------------------------------------------------------------- noise


@pytest.mark.parametrize("sigma", [2.0, 4.5, 20.0])
def test_noise_has_the_drawn_sigma_and_is_gaussian(xp: ModuleType, sigma: float):
    out = run(xp, params(Transform.noise, noise_sigma=sigma), grey(128, n=4, h=64, w=80))
    delta = out.astype(np.float64) - 128
    expected = math.sqrt(sigma**2 + 1 / 12)  # rounding to integers adds 1/12 of variance
    assert delta.std() == pytest.approx(expected, rel=0.05)
    assert abs(delta.mean()) < 0.05 * sigma
    if sigma >= 10:  # the normal's mass within 1 and 2 sigma (|delta| <= k: |x| < k + 0.5)
        for k in (round(sigma), round(2 * sigma)):
            expected_mass = math.erf((k + 0.5) / (sigma * math.sqrt(2)))
            assert np.mean(np.abs(delta) <= k) == pytest.approx(expected_mass, abs=0.006)


def test_noise_is_fresh_for_every_frame_and_every_frame_index(xp: ModuleType):
    p = params(Transform.noise, noise_sigma=5.0)
    out = run(xp, p, grey(128, n=3))
    assert np.mean(out[0] == out[1]) < 0.2 and np.mean(out[1] == out[2]) < 0.2
    shifted = run(xp, p, grey(128, n=3), offset=1)
    assert np.array_equal(shifted[:2], out[1:])  # frame i is keyed by its episode index
    assert not np.array_equal(shifted[2], out[2])


def test_noise_values_are_uncorrelated_across_the_frame(xp: ModuleType):
    # 160 x 160 x 3 = 76800 values: longer than the generator's 2^16-element blocks
    out = run(xp, params(Transform.noise, noise_sigma=10.0), grey(128, n=1, h=160, w=160))
    delta = out.astype(np.float64).reshape(-1) - 128
    for lag in (1, 2, 3, 160 * 3, 1 << 15, 1 << 16):
        corr = np.corrcoef(delta[:-lag], delta[lag:])[0, 1]
        assert abs(corr) < 0.05, f"lag {lag}: correlation {corr:.3f}"


def test_noise_sigma_zero_is_the_identity(xp: ModuleType):
    frames = random_frames()
    assert np.array_equal(run(xp, params(Transform.noise, noise_sigma=0.0), frames), frames)


# ----------------------------------------------------------------------------- blur


def laplacian_energy(frames: np.ndarray) -> float:
    f = frames.astype(np.float64)
    lap = 4 * f[:, 1:-1, 1:-1] - f[:, :-2, 1:-1] - f[:, 2:, 1:-1] - f[:, 1:-1, :-2] - f[:, 1:-1, 2:]
    return float((lap**2).mean())


def naive_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Textbook separable convolution with NumPy's reflect padding, in float64."""
    taps = gaussian_kernel(sigma).astype(np.float64)
    r = len(taps) // 2
    out = []
    for f in frames.astype(np.float64):
        padded = np.pad(f, ((r, r), (r, r), (0, 0)), mode="reflect")
        cols = np.apply_along_axis(np.convolve, 0, padded, taps, mode="valid")
        out.append(np.apply_along_axis(np.convolve, 1, cols, taps, mode="valid"))
    return np.array(out)


@pytest.mark.parametrize("sigma", [0.5, 1.3, 2.0])
def test_blur_removes_high_frequencies(xp: ModuleType, sigma: float):
    checker = ((np.indices((24, 32)).sum(axis=0) % 2) * 200 + 20).astype(np.uint8)
    frames = np.repeat(checker[None, :, :, None], 3, axis=3).repeat(2, axis=0)
    out = run(xp, params(Transform.blur, blur_sigma=sigma), frames)
    taps = gaussian_kernel(sigma).astype(np.float64)
    nyquist_gain = abs(np.sum(taps * (-1) ** np.arange(len(taps))))  # per axis
    ratio = laplacian_energy(out) / laplacian_energy(frames)
    assert ratio < 0.15
    assert ratio == pytest.approx(nyquist_gain**4, rel=0.1, abs=1e-4)
    assert abs(out.astype(np.float64).mean() - frames.mean()) < 1.0


def test_blur_keeps_a_constant_frame_constant(xp: ModuleType):
    out = run(xp, params(Transform.blur, blur_sigma=2.7), grey(77))
    assert np.array_equal(out, grey(77))


@pytest.mark.parametrize(("shape", "sigma"), [((2, 24, 32), 1.7), ((1, 5, 4), 3.0)])
def test_blur_matches_a_textbook_convolution(xp: ModuleType, shape: tuple, sigma: float):
    frames = random_frames(*shape, seed=9)  # (1, 5, 4) with radius 9: repeated mirroring
    out = run(xp, params(Transform.blur, blur_sigma=sigma), frames)
    assert np.abs(out - np.rint(naive_blur(frames, sigma))).max() <= 1


def test_gaussian_kernel_radius_and_normalisation():
    for sigma in (0.1, 0.5, 1.0, 2.4, 10.0):
        taps = gaussian_kernel(sigma)
        assert len(taps) == 2 * max(1, math.ceil(3 * sigma)) + 1
        assert taps.sum() == pytest.approx(1.0, abs=1e-6)
        assert np.array_equal(taps, taps[::-1])


# ------------------------------------------------------------------------ occlusion


def test_occlusion_covers_the_drawn_area_in_every_frame(xp: ModuleType):
    s = spec(
        augment_occlusion_count=3, augment_occlusion_area_min=0.1, augment_occlusion_area_max=0.2
    )
    p = sample_copy_params(s, [Transform.occlusion], episode_index=2, copy_index=1)
    frames = random_frames(3, 48, 64) % 100  # never equal to the fill
    out = run(xp, p, frames)
    filled = (out == OCCLUSION_FILL).all(axis=3)
    assert (filled == filled[0]).all()  # same rectangles in every frame
    drawn = sum(w * h for _, _, w, h in p.occlusion_rects)
    rounding = sum((w * 64 + h * 48 + 1) / (48 * 64) for _, _, w, h in p.occlusion_rects)
    assert abs(filled[0].mean() - drawn) <= rounding
    assert np.array_equal(out[:, ~filled[0]], frames[:, ~filled[0]])  # the rest untouched


def test_occlusion_pixels_round_and_clamp():
    assert occlusion_pixels([(0.25, 0.5, 0.5, 0.25)], 8, 8) == [(4, 6, 2, 6)]
    assert occlusion_pixels([(0.16, 0.16, 0.3, 0.3)], 10, 10) == [(2, 5, 2, 5)]
    assert occlusion_pixels([(0.99, 0.99, 0.001, 0.001)], 10, 10) == [(9, 10, 9, 10)]


# ------------------------------------------------------------------ order, determinism


def test_transforms_apply_in_the_listed_order(xp: ModuleType):
    rect = ((0.25, 0.25, 0.5, 0.5),)
    frames = grey(100, h=16, w=16)
    last = params(Transform.lighting, Transform.occlusion, brightness=20.0, occlusion_rects=rect)
    first = dataclasses.replace(last, transforms=(Transform.occlusion, Transform.lighting))
    assert (run(xp, last, frames)[:, 4:12, 4:12] == OCCLUSION_FILL).all()
    assert (run(xp, first, frames)[:, 4:12, 4:12] == round(OCCLUSION_FILL * 1.2)).all()
    sharp = params(Transform.blur, Transform.occlusion, blur_sigma=1.5, occlusion_rects=rect)
    soft = dataclasses.replace(sharp, transforms=(Transform.occlusion, Transform.blur))
    assert (run(xp, sharp, frames)[:, 4:12, 4:12] == OCCLUSION_FILL).all()
    assert not (run(xp, soft, frames)[:, 4:12, 4:12] == OCCLUSION_FILL).all()


def stacked(seed: int = 0, episode: int = 0, copy: int = 0) -> CopyParams:
    return sample_copy_params(spec(augment_seed=seed), list(ALL), episode, copy)


def test_same_seed_same_output_and_different_seed_different_output(xp: ModuleType):
    frames = random_frames(4)
    p = stacked(seed=5)
    first = run(xp, p, frames)
    assert np.array_equal(first, Augmenter(p, xp)(frames, 0))
    assert np.array_equal(first, run(xp, stacked(seed=5), frames))
    assert not np.array_equal(first, run(xp, stacked(seed=6), frames))
    other_noise = dataclasses.replace(p, noise_seed=p.noise_seed + 1)
    assert not np.array_equal(first, run(xp, other_noise, frames))


def test_output_does_not_depend_on_batching(xp: ModuleType, monkeypatch: pytest.MonkeyPatch):
    frames = random_frames(12, 20, 28, seed=3)
    p = stacked(seed=11, episode=4, copy=2)
    whole = run(xp, p, frames, offset=30)
    aug = Augmenter(p, xp)
    parts = np.concatenate([aug(frames[:5], 30), aug(frames[5:], 35)])
    assert np.array_equal(whole, parts)
    monkeypatch.setenv(ENV_THREADS, "3")  # frames split over threads differently
    assert np.array_equal(whole, run(xp, p, frames, offset=30))


def test_copies_sharing_a_thread_keep_their_own_results(monkeypatch: pytest.MonkeyPatch):
    """The NumPy engine's float buffers stay with a thread from batch to batch and
    copy to copy: copies that take turns on one thread get what each gets alone."""
    monkeypatch.setenv(ENV_THREADS, "1")
    frames = random_frames(4, 20, 28, seed=5)
    copies = [stacked(seed=s) for s in (1, 2)]
    copies.append(dataclasses.replace(copies[0], transforms=ALL[::-1]))
    alone = []
    for p in copies:  # each on a thread of its own, fresh buffers
        with ThreadPoolExecutor(1) as own_thread:
            alone.append(own_thread.submit(Augmenter(p, np), frames, 0).result())
    augmenters = [Augmenter(p, np) for p in copies]
    for turn in range(2):
        for aug, expected in zip(augmenters, alone, strict=True):
            assert np.array_equal(aug(frames, 0), expected), turn


# -------------------------------------------------------------------- output contract


@pytest.mark.parametrize("transforms", [(), *((t,) for t in ALL), ALL, ALL[::-1]])
def test_output_is_a_new_uint8_array_and_the_input_is_untouched(xp: ModuleType, transforms):
    frames = random_frames(3, 20, 24)
    before = frames.copy()
    p = dataclasses.replace(stacked(seed=2), transforms=transforms)
    out = run(xp, p, frames)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == frames.shape
    assert not np.shares_memory(out, frames)
    assert np.array_equal(frames, before)
    if not transforms:
        assert np.array_equal(out, frames)


def test_apply_works_on_backend_arrays(xp: ModuleType):
    frames = random_frames(2)
    aug = Augmenter(stacked(seed=8), xp)
    device_out = aug.apply(xp.asarray(frames), 0)
    assert isinstance(device_out, xp.ndarray)
    assert np.array_equal(backend.to_host(device_out), aug(frames, 0))


def test_an_empty_batch_gives_an_empty_batch(xp: ModuleType):
    empty = np.zeros((0, 8, 8, 3), np.uint8)
    assert run(xp, stacked(), empty).shape == (0, 8, 8, 3)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 8, 8, 3), np.float32),
        np.zeros((8, 8, 3), np.uint8),
        np.zeros((2, 8, 8, 4), np.uint8),
    ],
)
def test_frames_of_the_wrong_kind_are_refused(bad: np.ndarray):
    with pytest.raises(ValueError, match="uint8 or uint16 of shape"):
        Augmenter(stacked(), np)(bad, 0)
    with pytest.raises(TypeError):
        Augmenter(stacked(), np)(bad.tolist(), 0)  # type: ignore[arg-type]


def test_16bit_frames_run_on_the_numpy_engine_whatever_the_backend():
    """The CuPy engine writes 8-bit output only: an Augmenter on CuPy hands 16-bit
    frames to its NumPy engine (codec_plan records why). A stand-in CuPy module with
    nothing in it shows which engine ran: any use of it fails."""
    stand_in = ModuleType("cupy")  # backend.is_cupy goes by the module's name
    p = dataclasses.replace(stacked(), transforms=("lighting", "noise", "occlusion"))
    frames = (np.arange(2 * 6 * 5 * 3, dtype=np.uint16) * 431).reshape(2, 6, 5, 3)
    on_cupy = Augmenter(p, stand_in)
    out = on_cupy(frames, 3)
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, Augmenter(p, np)(frames, 3))
    with pytest.raises(AttributeError):  # 8-bit frames do go to the CuPy engine
        on_cupy(frames.astype(np.uint8), 3)


# ---------------------------------------------------------------------- parameters


def test_sampled_parameters_lie_in_the_spec_ranges_and_vary():
    s = spec(
        augment_seed=42,
        augment_brightness_min=-20,
        augment_brightness_max=5,
        augment_contrast_min=3,
        augment_contrast_max=30,
        augment_color_temp_min=3000,
        augment_color_temp_max=7000,
        augment_noise_sigma_min=1,
        augment_noise_sigma_max=3,
        augment_blur_sigma_min=0.5,
        augment_blur_sigma_max=1.5,
        augment_occlusion_count=8,
        augment_occlusion_area_min=0.3,
        augment_occlusion_area_max=0.5,
    )
    drawn = [sample_copy_params(s, list(ALL), e, c) for e in range(6) for c in range(5)]
    for p in drawn:
        assert -20 <= p.brightness <= 5 and 3 <= p.contrast <= 30
        assert isinstance(p.color_temp, int) and 3000 <= p.color_temp <= 7000
        assert 1 <= p.noise_sigma <= 3 and 0.5 <= p.blur_sigma <= 1.5
        assert len(p.occlusion_rects) == 8
        assert 0.3 - 1e-9 <= sum(w * h for _, _, w, h in p.occlusion_rects) <= 0.5 + 1e-9
        for x, y, w, h in p.occlusion_rects:
            assert min(x, y) >= 0 and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9
        assert_disjoint(p.occlusion_rects)
    for field in ("brightness", "contrast", "color_temp", "noise_sigma", "blur_sigma"):
        assert len({getattr(p, field) for p in drawn}) > 20, field
    assert len({p.noise_seed for p in drawn}) == len(drawn)


def assert_disjoint(rects: tuple[tuple[float, float, float, float], ...]) -> None:
    for i, (x0, y0, w0, h0) in enumerate(rects):
        for x1, y1, w1, h1 in rects[i + 1 :]:
            overlap_w = min(x0 + w0, x1 + w1) - max(x0, x1)
            overlap_h = min(y0 + h0, y1 + h1) - max(y0, y1)
            assert overlap_w <= 1e-9 or overlap_h <= 1e-9


def test_sampling_depends_only_on_seed_episode_and_copy():
    s = spec(augment_seed=7)
    p = sample_copy_params(s, list(ALL), 3, 2)
    assert p == sample_copy_params(s, list(ALL), 3, 2)
    just_noise = sample_copy_params(s, [Transform.noise], 3, 2)
    assert dataclasses.replace(just_noise, transforms=p.transforms) == p
    assert p != sample_copy_params(s, list(ALL), 3, 1)
    assert p != sample_copy_params(s, list(ALL), 2, 2)
    assert p != sample_copy_params(spec(augment_seed=8), list(ALL), 3, 2)
    assert p.transforms == ALL


def test_fixed_ranges_give_fixed_values():
    s = spec(
        augment_brightness_min=10,
        augment_brightness_max=10,
        augment_color_temp_min=5000,
        augment_color_temp_max=5000,
    )
    p = sample_copy_params(s, [Transform.lighting], 0, 0)
    assert p.brightness == 10 and p.color_temp == 5000


def test_to_dict_holds_only_the_listed_transforms_and_is_json():
    p = stacked(seed=3)
    lighting_only = dataclasses.replace(p, transforms=(Transform.lighting,)).to_dict()
    assert lighting_only == {
        "transforms": ["lighting"],
        "brightness": p.brightness,
        "contrast": p.contrast,
        "color_temp": p.color_temp,
    }
    full = json.loads(json.dumps(p.to_dict()))
    assert full["transforms"] == [t.value for t in ALL]
    assert full["blur_sigma"] == p.blur_sigma and full["noise_seed"] == p.noise_seed
    assert full["occlusion_rects"] == [list(r) for r in p.occlusion_rects]


# -------------------------------------------------------------------------- backend


def test_backend_selection_follows_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ENV_BACKEND, "numpy")
    assert backend.array_module() is np
    monkeypatch.setenv(ENV_BACKEND, "tpu")
    with pytest.raises(RuntimeError, match="AUGMENT_BACKEND"):
        backend.array_module()
    monkeypatch.setenv(ENV_BACKEND, "cupy")
    if len(backend.available_modules()) > 1:
        assert backend.array_module().__name__ == "cupy"
    else:
        with pytest.raises(RuntimeError, match="CuPy"):
            backend.array_module()
    monkeypatch.delenv(ENV_BACKEND)
    assert backend.array_module() is backend.available_modules()[-1]


def test_to_device_and_to_host_round_trip(xp: ModuleType):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    on_device = backend.to_device(a, xp)
    assert isinstance(on_device, xp.ndarray)
    assert np.array_equal(backend.to_host(on_device), a)


# ------------------------------------------------------------------------- grey frames


def grey_ramp(n: int = 2, h: int = 24, w: int = 32) -> np.ndarray:
    ramp = np.linspace(60, 190, w).round().astype(np.uint8)
    return np.broadcast_to(ramp[None, None, :, None], (n, h, w, 1)).copy()


def test_grey_frames_keep_their_one_channel_through_every_transform(xp: ModuleType):
    p = params(*ALL, brightness=10.0, contrast=15.0, color_temp=3000, noise_sigma=3.0,
               blur_sigma=1.5, occlusion_rects=((0.1, 0.1, 0.3, 0.3),))
    frames = grey_ramp()
    out = GreyAugmenter(p, xp)(frames, 0)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert not np.array_equal(out, frames)


@pytest.mark.parametrize("brightness, contrast", [(20.0, 0.0), (-15.0, 30.0)])
def test_grey_lighting_is_brightness_and_contrast_and_never_a_tint(
    xp: ModuleType, brightness: float, contrast: float
):
    frames = grey_ramp().astype(np.float64)
    outs = [GreyAugmenter(params(Transform.lighting, brightness=brightness, contrast=contrast,
                                 color_temp=kelvin), xp)(grey_ramp(), 0) for kelvin in (2500, 9500)]
    assert np.array_equal(outs[0], outs[1])  # the drawn colour temperature is left out
    b, c = 1 + brightness / 100, 1 + contrast / 100
    m = frames.mean(axis=(1, 2, 3), keepdims=True)  # grey: the luma mean is the mean
    expected = np.clip(m * b + (frames * b - m * b) * c, 0, 255)
    assert np.abs(outs[0] - expected).max() <= 1.0


def test_grey_noise_has_the_drawn_sigma(xp: ModuleType):
    out = GreyAugmenter(params(Transform.noise, noise_sigma=5.0), xp)(grey(128, w=64)[..., :1], 0)
    assert out.astype(np.float64).std() == pytest.approx(5.0, rel=0.1)


def test_16bit_grey_frames_get_the_8bit_look_at_16_bits(xp: ModuleType):
    """A 10-bit grey camera's frames (uint16): its copy is the 8-bit copy of the same
    levels before rounding, within half a grey level, and keeps its 16-bit detail."""
    p = params(Transform.lighting, Transform.noise, brightness=10.0, contrast=-20.0,
               noise_sigma=3.0)  # fmt: skip
    narrow = GreyAugmenter(p, xp)(grey_ramp(), 5)
    wide = GreyAugmenter(p, xp)(grey_ramp().astype(np.uint16) * 257, 5)
    assert wide.dtype == np.uint16 and wide.shape == narrow.shape
    assert np.abs(wide / 257 - narrow).max() <= 0.5 + 1 / 257
    assert np.count_nonzero(wide % 257) > wide.size // 2


def test_grey_augmenter_refuses_colour_frames():
    with pytest.raises(ValueError, match="N, H, W, 1"):
        GreyAugmenter(params(Transform.noise))(random_frames(), 0)
