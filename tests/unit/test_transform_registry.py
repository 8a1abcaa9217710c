"""The transform registry: its agreement with the spec, parameter ownership and drawing,
the CuPy pass plan, and a toy transform added without touching the spec or the engines
(its CuPy run is in tests/gpu/test_cupy_matches_numpy.py)."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter

import numpy as np
import pytest
from toy_transform import INVERT

from augment_runner.transforms import (
    DRAW_ORDER,
    OCCLUSION_FILL,
    REGISTRY,
    Augmenter,
    CopyParams,
    sample_copy_params,
)
from augment_runner.transforms.base import Fill
from augment_runner.transforms.cupy_engine import PointPass, SeparablePass, device_plan
from augment_spec.model import AugmentationSpec, Transform


def spec(**fields: object) -> AugmentationSpec:
    return AugmentationSpec(project_id=uuid.uuid4(), dataset_id="lab/pick", **fields)  # type: ignore[arg-type]


def copy_params(*transforms: str, **changes: object) -> CopyParams:
    base = sample_copy_params(spec(), list(transforms), 0, 0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def random_frames(n: int = 3, h: int = 20, w: int = 24) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture
def invert(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(REGISTRY, INVERT.name, INVERT)  # undone after the test
    return INVERT.name


# ------------------------------------------------------------------ the tables


def test_the_registry_lists_the_spec_transforms_in_order():
    assert list(REGISTRY) == [t.value for t in Transform]
    assert all(t.name == name for name, t in REGISTRY.items())


def test_every_parameter_belongs_to_one_transform_and_is_drawn_by_it():
    owners = Counter(f for t in REGISTRY.values() for f in t.fields)
    params = [f.name for f in dataclasses.fields(CopyParams) if f.name != "transforms"]
    assert sorted(owners) == sorted(params) and set(owners.values()) == {1}
    rng = np.random.default_rng(0)
    for t in REGISTRY.values():
        drawn = [f for draw in t.draws.values() for f in draw(rng, spec())]
        assert sorted(drawn) == sorted(t.fields), t.name


def test_the_draw_order_runs_every_stage_once():
    stages = [(name, stage) for name, t in REGISTRY.items() for stage in t.draws]
    assert sorted(DRAW_ORDER) == sorted(stages)


def test_provenance_holds_the_fields_of_the_listed_transforms_in_their_order():
    p = copy_params("noise", "occlusion")
    assert list(p.to_dict()) == ["transforms", "noise_sigma", "noise_seed", "occlusion_rects"]
    assert p.to_dict()["occlusion_rects"] == [list(r) for r in p.occlusion_rects]
    assert p.transforms == ("noise", "occlusion")
    assert copy_params(Transform.blur).to_dict()["transforms"] == ["blur"]  # plain names


def test_unknown_transforms_are_refused():
    with pytest.raises(ValueError, match="unknown transform 'invert'"):
        sample_copy_params(spec(), ["lighting", "invert"], 0, 0)
    with pytest.raises(ValueError, match="unknown transform 'invert'"):
        Augmenter(copy_params(transforms=("invert",)), np)


# ------------------------------------------------------------ the CuPy pass plan


def plan_of(*names: str) -> list[list[str] | str]:
    """Each pass of the device plan: a point pass as its list of names."""
    p = copy_params(*names)
    out: list[list[str] | str] = []
    for step in device_plan([(n, REGISTRY[n].prepare(p)) for n in names]):
        if isinstance(step, PointPass):
            out.append(list(step.names))
        elif isinstance(step, SeparablePass):
            out.append(step.name)
        else:
            assert isinstance(step, Fill)
            out.append("fill")
    return out


def test_point_transforms_fuse_unless_one_reads_its_input_frame():
    assert plan_of("lighting", "noise") == [["lighting", "noise"]]
    assert plan_of("noise", "lighting") == [["noise"], ["lighting"]]  # lighting: mean of its input
    assert plan_of("lighting", "blur", "noise", "occlusion") == [
        ["lighting"], "blur", ["noise"], "fill",
    ]  # fmt: skip


def test_a_toy_point_transform_fuses_after_lighting_and_noise(invert: str):
    assert plan_of("lighting", "noise", invert) == [["lighting", "noise", invert]]
    assert plan_of(invert, "lighting") == [[invert], ["lighting"]]


# ----------------------------------------------------------------- the toy, NumPy


def test_a_registered_toy_transform_runs_on_the_numpy_engine(invert: str):
    frames = random_frames()
    out = Augmenter(copy_params(invert), np)(frames, 0)
    assert np.array_equal(out, 255 - frames)
    p = copy_params(invert, "occlusion", occlusion_rects=((0.25, 0.25, 0.5, 0.5),))
    covered = (slice(None), slice(5, 15), slice(6, 18))
    inverted_then_filled = Augmenter(p, np)(frames, 0)
    assert (inverted_then_filled[covered] == OCCLUSION_FILL).all()
    outside = np.ones(frames.shape[:3], bool)
    outside[covered] = False
    assert np.array_equal(inverted_then_filled[outside], 255 - frames[outside])
    filled_then_inverted = Augmenter(dataclasses.replace(p, transforms=("occlusion", invert)), np)
    assert (filled_then_inverted(frames, 0)[covered] == 255 - OCCLUSION_FILL).all()


def test_a_toy_transform_draws_nothing_and_records_no_parameters(invert: str):
    with_toy = sample_copy_params(spec(augment_seed=3), ["noise", invert], 2, 1)
    without = sample_copy_params(spec(augment_seed=3), ["noise"], 2, 1)
    assert dataclasses.replace(with_toy, transforms=without.transforms) == without
    assert with_toy.to_dict() == {**without.to_dict(), "transforms": ["noise", invert]}
