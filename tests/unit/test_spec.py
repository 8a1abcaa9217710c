"""The spec model: seed defaults and bounds, mode semantics, and the CR mapping."""

from __future__ import annotations

import re
import uuid

import pytest

from augment_spec import check_crd
from augment_spec.crd import CAMEL, cr_spec_from_spec, crd, spec_from_cr
from augment_spec.model import (
    CROSS_FIELD_RULES,
    CROSS_FIELD_RULES_KEY,
    AugmentationSpec,
    SpecError,
    Transform,
    parse_spec,
)

PROJECT = str(uuid.uuid4())
SEED_DEFAULTS = {
    "augmentation_type": "deterministic", "name": None, "augment_transforms": "lighting",
    "augment_mode": "stacked", "augment_copies": 3, "augment_dataset_mode": "copy",
    "augment_brightness_min": -15, "augment_brightness_max": 15,
    "augment_contrast_min": -10, "augment_contrast_max": 10,
    "augment_color_temp_min": 4000, "augment_color_temp_max": 6500,
}


def spec(**fields: object) -> AugmentationSpec:
    return parse_spec({"project_id": PROJECT, "dataset_id": "lab/pick", **fields})


def test_seed_request_gets_the_seed_defaults() -> None:
    dumped = spec().model_dump(mode="json")
    assert {k: dumped[k] for k in SEED_DEFAULTS} == SEED_DEFAULTS


@pytest.mark.parametrize("field, value", [
    ("augment_copies", 0), ("augment_copies", 21), ("augment_brightness_min", -51),
    ("augment_brightness_max", 51), ("augment_contrast_min", -50.5),
    ("augment_contrast_max", 50.01), ("augment_color_temp_min", 1999),
    ("augment_color_temp_min", 6501), ("augment_color_temp_max", 3999),
    ("augment_color_temp_max", 10001), ("name", "x" * 256), ("augment_mode", "both"),
    ("augmentation_type", "magic"), ("augment_dataset_mode", "move"),
])
def test_seed_bounds_are_enforced(field: str, value: object) -> None:
    with pytest.raises(SpecError, match=field):
        spec(**{field: value})


@pytest.mark.parametrize("value", [0, 257, -1])
def test_shards_run_from_1_to_256(value: int) -> None:
    assert spec(shards=256).shards == 256
    # Unset: the operator chooses (augment_operator/sizing.py); alone it is one pod.
    assert (spec().shards, spec().shard_count, spec(shards=3).shard_count) == (None, 1, 3)
    with pytest.raises(SpecError, match="shards"):
        spec(shards=value)


@pytest.mark.parametrize("transforms, message", [
    ("", "one or more"), ("lighting,,blur", "one or more"), ("fog", "unknown transform 'fog'"),
    ("blur,blur", "listed more than once"),
])
def test_transform_lists_are_checked(transforms: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec(augment_transforms=transforms)


def test_min_above_max_and_output_equal_to_source_are_refused() -> None:
    with pytest.raises(SpecError, match="augment_contrast_min must be <= augment_contrast_max"):
        spec(augment_contrast_min=20, augment_contrast_max=10)
    with pytest.raises(SpecError, match="must differ from dataset_id"):
        spec(output_dataset_id="lab/pick")
    assert spec().target_dataset_id == "lab/pick-augmented"


@pytest.mark.parametrize("field, value", [
    ("augment_copies", True), ("augment_copies", "3"), ("augment_copies", 3.0),
    ("augment_seed", False), ("augment_color_temp_min", "4000"),
    ("augment_brightness_min", True), ("augment_noise_sigma_max", "5"), ("overwrite", "yes"),
    ("overwrite", 1),
])
def test_values_of_another_json_type_are_never_coerced(field: str, value: object) -> None:
    with pytest.raises(SpecError, match=field):
        spec(**{field: value})


def test_json_strings_still_parse_into_uuids_and_enums() -> None:
    parsed = spec(augment_mode="independent", augmentation_type="deterministic",
                  augment_dataset_mode="inplace", output_visibility="public",
                  augment_brightness_min=-5)  # an integer where a number is asked: fine
    assert str(parsed.project_id) == PROJECT and parsed.augment_mode.value == "independent"
    assert parsed.augment_brightness_min == -5.0


def test_the_json_schema_states_the_rules_across_fields() -> None:
    schema = AugmentationSpec.model_json_schema()
    listed = schema[CROSS_FIELD_RULES_KEY]
    assert [r["message"] for r in listed] == [r.message for r in CROSS_FIELD_RULES]
    assert {"fields": ["augment_brightness_min", "augment_brightness_max"],
            "rule": "augment_brightness_min <= augment_brightness_max",
            "message": "augment_brightness_min must be <= augment_brightness_max"} in listed
    assert listed[0]["fields"] == ["output_dataset_id", "dataset_id"]
    assert schema["description"].startswith("Request to start a dataset augmentation job.")
    for rule in CROSS_FIELD_RULES:
        assert rule.message in schema["description"]
    # The CRD says the same with CEL, and carries no extension the apiserver would refuse.
    spec_schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert CROSS_FIELD_RULES_KEY not in spec_schema


@pytest.mark.parametrize("dataset_mode, mode, copies, expected", [
    ("copy", "stacked", 3, [["lighting", "blur"]] * 3),
    ("copy", "independent", 2, [["lighting"], ["blur"], ["lighting"], ["blur"]]),
    ("inplace", "stacked", 5, [["lighting", "blur"]]),
])
def test_copy_plan_follows_the_mode_table(dataset_mode: str, mode: str, copies: int,
                                          expected: list[list[str]]) -> None:
    s = spec(augment_transforms="lighting, blur", augment_dataset_mode=dataset_mode,
             augment_mode=mode, augment_copies=copies)
    plan = [[t.value for t in copy] for copy in s.copy_plan(0)]
    assert plan == expected
    assert s.copies_per_episode() == len(expected)


def test_inplace_independent_cycles_transforms_by_episode() -> None:
    s = spec(augment_transforms="noise,occlusion", augment_dataset_mode="inplace",
             augment_mode="independent")
    assert [s.copy_plan(i) for i in range(3)] == [
        [[Transform.noise]], [[Transform.occlusion]], [[Transform.noise]]]


def test_cr_spec_is_camel_case_and_round_trips() -> None:
    original = spec(augment_transforms="noise,blur", augment_cameras=["observation.images.top"])
    cr_spec = cr_spec_from_spec(original)
    assert cr_spec["augmentTransforms"] == "noise,blur"
    assert cr_spec["projectId"] == PROJECT
    set_fields = original.model_dump(exclude_none=True)
    assert set(cr_spec) == {CAMEL[name] for name in set_fields}
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9]*", key) for key in cr_spec)
    assert cr_spec["augmentCameras"] == ["observation.images.top"]
    assert spec_from_cr(cr_spec) == original


def test_unknown_cr_fields_are_reported_by_name() -> None:
    with pytest.raises(SpecError, match="augment_sparkle"):
        spec_from_cr({"projectId": PROJECT, "datasetId": "lab/pick", "augmentSparkle": 1})


def test_crd_schema_carries_defaults_bounds_and_rules() -> None:
    version = crd()["spec"]["versions"][0]
    props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert props["augmentCopies"] == {**props["augmentCopies"], "default": 3, "minimum": 1,
                                      "maximum": 20, "type": "integer"}
    assert props["augmentMode"]["enum"] == ["stacked", "independent"]
    assert props["name"]["maxLength"] == 255
    assert props["shards"] == {**props["shards"], "minimum": 1, "maximum": 256}
    assert "default" not in props["shards"]  # unset: the operator picks it
    rules = version["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"]
    assert any(r["rule"] == "self == oldSelf" for r in rules)
    assert any("augmentBrightnessMin <= self.augmentBrightnessMax" in r["rule"] for r in rules)
    assert [c["name"] for c in version["additionalPrinterColumns"]][:4] == [
        "Type", "Dataset", "Phase", "Progress"]


def test_committed_crds_match_the_model() -> None:
    assert check_crd.main() == 0, "crds/ drifted from the spec model: run `make crd`"
