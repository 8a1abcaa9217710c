"""CuPy output equals NumPy output within one grey level (docs/design.md, Transforms).

Run on a GPU machine: `pytest tests/gpu` (bench/gpu_check.sh does). Without CuPy and a
CUDA device this module collects no tests at all, so CPU runs neither fail nor skip.

Both backends compute the same float32 operations in the same order, including the
noise: it comes from a counter-based hash of (noise_seed, frame index, element index),
not from a backend's random generator, so the two backends draw identical noise and
the outputs can be compared pixel by pixel. What may differ: log/sin/cos by an ulp or
two, and float32 sums in a different order; after rounding, a rare pixel moves by one.
"""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest
from toy_transform import INVERT
from transform_cases import ALL, ORDERS

from augment_runner import backend
from augment_runner.transforms import REGISTRY, Augmenter, CopyParams, sample_copy_params
from augment_spec.model import AugmentationSpec, Transform

CUPY = next((m for m in backend.available_modules() if backend.is_cupy(m)), None)
SHAPES = [(4, 96, 128), (2, 240, 320), (3, 37, 53), (1, 5, 4)]  # blocks, odd sizes, tiny


def frames_of(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A gradient with texture: realistic means, edges and saturated corners."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), (xx + yy) % 256], -1)
    texture = rng.normal(0, 25, (n, h, w, 3))
    return np.clip(base[None] + texture, 0, 255).astype(np.uint8)


def copy_params(transforms: tuple[Transform, ...], seed: int) -> CopyParams:
    spec = AugmentationSpec(
        project_id=uuid.uuid4(),
        dataset_id="lab/gpu-check",
        augment_seed=seed,
        augment_brightness_min=-30,
        augment_brightness_max=30,
        augment_contrast_min=-30,
        augment_contrast_max=30,
        augment_color_temp_min=2500,
        augment_color_temp_max=9000,
        augment_noise_sigma_max=12,
        augment_blur_sigma_max=4,
        augment_occlusion_count=3,
    )
    return sample_copy_params(spec, list(transforms), episode_index=seed % 7, copy_index=seed)


def assert_close(expected: np.ndarray, got: np.ndarray) -> None:
    assert got.dtype == np.uint8 and got.shape == expected.shape
    diff = np.abs(expected.astype(np.int16) - got.astype(np.int16))
    assert diff.max() <= 1, f"max difference {diff.max()} grey levels"
    assert diff.mean() < 1e-3, f"{diff.mean():.2%} of values differ by one level"


class TestCupyMatchesNumpy:
    __test__ = CUPY is not None  # collected only where CuPy has a device

    @pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
    @pytest.mark.parametrize("transforms", ORDERS, ids=lambda ts: "+".join(t.value for t in ts))
    def test_same_output_within_one_level(self, transforms, shape):
        frames = frames_of(*shape, seed=len(transforms))
        for seed in (1, 2):
            p = copy_params(transforms, seed)
            assert_close(Augmenter(p, np)(frames, 40), Augmenter(p, CUPY)(frames, 40))

    def test_extreme_parameters(self):
        frames = frames_of(2, 64, 96)
        p = dataclasses.replace(
            copy_params(ALL, 3), brightness=50.0, contrast=-50.0, color_temp=2000,
            noise_sigma=50.0, blur_sigma=10.0,
        )  # fmt: skip
        assert_close(Augmenter(p, np)(frames, 0), Augmenter(p, CUPY)(frames, 0))

    def test_batching_and_device_arrays(self):
        frames = frames_of(12, 72, 96, seed=5)
        aug = Augmenter(copy_params(ALL, 4), CUPY)
        whole = aug(frames, 8)
        assert np.array_equal(whole, np.concatenate([aug(frames[:5], 8), aug(frames[5:], 13)]))
        on_device = CUPY.asarray(frames)
        out = aug.apply(on_device, 8)
        assert isinstance(out, CUPY.ndarray)
        assert np.array_equal(backend.to_host(out), whole)
        assert np.array_equal(backend.to_host(on_device), frames)  # input untouched

    def test_noise_statistics_on_device(self):
        frames = np.full((4, 128, 160, 3), 128, np.uint8)
        p = dataclasses.replace(copy_params((Transform.noise,), 6), noise_sigma=8.0)
        delta = Augmenter(p, CUPY)(frames, 0).astype(np.float64) - 128
        assert delta.std() == pytest.approx(np.sqrt(64 + 1 / 12), rel=0.02)
        assert abs(delta.mean()) < 0.1


@pytest.fixture
def invert(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(REGISTRY, INVERT.name, INVERT)  # undone after the test
    return INVERT.name


class TestToyTransformOnDevice:
    """A transform known only to the registry runs on the device from its CUDA snippet,
    alone, fused after lighting and noise, before lighting, and between other passes."""

    __test__ = CUPY is not None

    @pytest.mark.parametrize(
        "transforms",
        [
            ("invert",),
            ("lighting", "noise", "invert"),
            ("invert", "lighting", "noise"),
            ("blur", "invert", "occlusion"),
        ],
        ids="+".join,
    )
    def test_same_output_within_one_level(self, invert, transforms):
        frames = frames_of(3, 37, 53)
        p = dataclasses.replace(copy_params(ALL, 2), transforms=transforms)
        assert_close(Augmenter(p, np)(frames, 40), Augmenter(p, CUPY)(frames, 40))

    def test_inverts(self, invert):
        frames = frames_of(2, 24, 32)
        p = dataclasses.replace(copy_params(ALL, 1), transforms=(invert,))
        assert np.array_equal(Augmenter(p, CUPY)(frames, 0), 255 - frames)
