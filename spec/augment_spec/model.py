"""The AugmentationJob spec: one pydantic model for the REST API, the CRD and the runner.

Field names, defaults and bounds of the seed API are kept exactly; the extra fields
are optional with defaults, so every seed request stays valid.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class AugmentationType(StrEnum):
    deterministic = "deterministic"
    generative = "generative"


class AugmentMode(StrEnum):
    stacked = "stacked"
    independent = "independent"


class DatasetMode(StrEnum):
    copy = "copy"
    inplace = "inplace"


class Transform(StrEnum):
    """The deterministic transforms, in the order of the runner's registry
    (augment_runner.transforms.registry; tests/unit/test_transform_registry.py checks it)."""

    lighting = "lighting"
    noise = "noise"
    blur = "blur"
    occlusion = "occlusion"


class OutputVisibility(StrEnum):
    private = "private"
    public = "public"


GENERATIVE_DISABLED = "generative augmentation (Cosmos Transfer2.5) is currently disabled"
TRANSFORM_NAMES = [t.value for t in Transform]

# A Hub repo id: "name" or "namespace/name" (Hub rules: letters, digits, '-', '_', '.').
_HUB_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
HUB_REPO_ID_PATTERN = rf"^{_HUB_NAME}(/{_HUB_NAME})?$"
HUB_NAMESPACE_PATTERN = rf"^{_HUB_NAME}$"  # the namespace (user or organisation) part
# Lowercase RFC 1123 label: a Kubernetes Secret name.
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"

# A Kueue object's name that fits a label value (at most 63 characters): a LocalQueue,
# a WorkloadPriorityClass.
KUEUE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$"
KueueName = Annotated[str, Field(max_length=63, pattern=KUEUE_NAME_PATTERN)]

# Most runner pods one job is spread over (docs/design.md, Scale out).
MAX_SHARDS = 256

HubRepoId = Annotated[str, Field(min_length=1, max_length=193, pattern=HUB_REPO_ID_PATTERN)]


def parse_transforms(value: str) -> list[Transform]:
    """Split the comma-separated transform list, rejecting unknown names and duplicates."""
    names = [part.strip() for part in value.split(",")]
    if not value.strip() or any(not n for n in names):
        raise ValueError(
            f"augment_transforms must list one or more of {', '.join(TRANSFORM_NAMES)}, "
            f"separated by commas; got {value!r}"
        )
    unknown = [n for n in names if n not in TRANSFORM_NAMES]
    if unknown:
        raise ValueError(
            f"unknown transform {unknown[0]!r}; choose from {', '.join(TRANSFORM_NAMES)}"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"transform {duplicates[0]!r} is listed more than once")
    return [Transform(n) for n in names]


# The OpenAPI key under which the request schema lists CROSS_FIELD_RULES; the CRD states
# them as CEL rules instead (augment_spec.crd).
CROSS_FIELD_RULES_KEY = "x-cross-field-rules"


def _document_cross_field_rules(schema: dict[str, Any]) -> None:
    """JSON Schema cannot express rules across fields: the schema's description names
    them and the CROSS_FIELD_RULES_KEY extension lists them, so clients see them."""
    rules = CROSS_FIELD_RULES
    schema["description"] = (f"{schema.get('description', '')} Rules across fields: "
                             + "; ".join(rule.message for rule in rules) + ".").lstrip()
    schema[CROSS_FIELD_RULES_KEY] = [rule.documented() for rule in rules]


class AugmentationSpec(BaseModel):
    """Request to start a dataset augmentation job."""

    # Strict: a JSON type is never coerced (`true` is not 1, "3" is not 3, 2.0 is not an
    # integer). The fields marked strict=False are those whose JSON form is a string that
    # the model turns into a Python type (UUID, enums): lax is what lets them parse from
    # the dicts the CR, the runner's environment and the API hand in.
    model_config = ConfigDict(extra="forbid", use_enum_values=False, strict=True,
                              json_schema_extra=_document_cross_field_rules)

    # --- fields of the seed API, exactly as published ---
    project_id: UUID = Field(strict=False, description="Project ID to associate the job with")
    dataset_id: HubRepoId = Field(description="HuggingFace dataset ID to augment")
    augmentation_type: AugmentationType = Field(
        default=AugmentationType.deterministic, strict=False,
        description=(
            "'deterministic' applies fast transforms (lighting, noise, blur, occlusion). "
            "'generative' uses Cosmos Transfer2.5 to re-render frames in a target "
            "environment (currently disabled)."
        ),
    )
    name: str | None = Field(default=None, max_length=255, description="Display name")
    augment_transforms: str = Field(
        default="lighting",
        description=f"Comma-separated transforms: {', '.join(TRANSFORM_NAMES)}",
    )
    augment_mode: AugmentMode = Field(
        default=AugmentMode.stacked, strict=False,
        description=(
            "'stacked' applies all transforms to each copy. "
            "'independent' creates one copy per transform."
        ),
    )
    augment_copies: int = Field(
        default=3, ge=1, le=20,
        description="Number of augmented copies per episode (when dataset_mode=copy)",
    )
    augment_dataset_mode: DatasetMode = Field(
        default=DatasetMode.copy, strict=False,
        description=(
            "'copy' adds augmented copies to the original dataset. "
            "'inplace' replaces the originals with augmented versions."
        ),
    )
    augment_brightness_min: float = Field(default=-15, ge=-50, description="Percent")
    augment_brightness_max: float = Field(default=15, le=50, description="Percent")
    augment_contrast_min: float = Field(default=-10, ge=-50, description="Percent")
    augment_contrast_max: float = Field(default=10, le=50, description="Percent")
    augment_color_temp_min: int = Field(default=4000, ge=2000, le=6500, description="Kelvin")
    augment_color_temp_max: int = Field(default=6500, ge=4000, le=10000, description="Kelvin")

    # --- extras: optional, with defaults ---
    augment_noise_sigma_min: float = Field(
        default=2.0, ge=0, le=50, description="Gaussian sensor noise sigma, grey levels"
    )
    augment_noise_sigma_max: float = Field(default=6.0, ge=0, le=50)
    augment_blur_sigma_min: float = Field(
        default=0.5, ge=0.1, le=10, description="Gaussian blur sigma, pixels"
    )
    augment_blur_sigma_max: float = Field(default=2.0, ge=0.1, le=10)
    augment_occlusion_count: int = Field(
        default=1, ge=1, le=8, description="Rectangles drawn per episode copy"
    )
    augment_occlusion_area_min: float = Field(
        default=0.02, gt=0, le=0.5, description="Fraction of the frame covered, in total"
    )
    augment_occlusion_area_max: float = Field(default=0.10, gt=0, le=0.5)
    augment_seed: int = Field(
        default=0, ge=0, le=2**31 - 1,
        description="Seed of the parameter generator: same seed, same input, same output",
    )
    augment_cameras: list[Annotated[str, Field(min_length=1, max_length=255)]] | None = Field(
        default=None, max_length=32,
        description="Camera features to augment (for example observation.images.top); "
        "default: every colour camera (and every grey one with augment_grey_cameras)",
    )
    augment_grey_cameras: bool = Field(
        default=False,
        description="Also augment grey-level (1-channel) cameras, which are otherwise copied "
        "unchanged: noise, blur, occlusion, and lighting's brightness and contrast (not its "
        "colour temperature); they keep their one channel. Depth maps are never transformed.",
    )
    output_dataset_id: HubRepoId | None = Field(
        default=None,
        description="Hub dataset to upload to; default: '<dataset_id>-augmented'. "
        "Never the source dataset.",
    )
    output_visibility: OutputVisibility = Field(
        default=OutputVisibility.private, strict=False,
        description="Visibility of the output dataset when the job creates it. 'public' "
        "takes effect only when the source dataset is public and not gated; otherwise the "
        "output is private. An existing public output is written only when the output may "
        "be public.",
    )
    overwrite: bool = Field(
        default=False,
        description="Allow writing into an existing output dataset that augment-operator "
        "did not create: the output's files are added or replaced, the dataset's other "
        "files are kept. Default: such a dataset is refused before any work starts.",
    )
    source_revision: str | None = Field(
        default=None, max_length=255,
        description="Source revision (branch, tag or commit) to augment; default: main",
    )
    shards: int | None = Field(
        default=None, ge=1, le=MAX_SHARDS,
        description="Runner pods the episodes are spread over (contiguous ranges, as an "
        "Indexed Job); a final step merges their output and publishes it in one commit, the "
        "same dataset as one pod writes. 1: one pod does everything. Unset: the operator "
        "picks it from the dataset's size (its Hub meta/info.json: frames x cameras x "
        "copies over the GPU profile's shardCameraFrames, at most its episodes and the "
        "profile's maxParallelShards; 1 when the size cannot be read, as for a private or "
        "gated dataset: it is read without a token)",
    )
    queue_name: str | None = Field(
        default=None, max_length=63, pattern=KUEUE_NAME_PATTERN,
        description="Kueue LocalQueue (in the job's namespace) the runner Job waits in: it is "
        "created suspended and runs once Kueue admits it; meanwhile the phase is Queued. "
        "Default: the operator's queue for the namespace, else the GPU profile's; none: the "
        "Job starts at once",
    )
    workload_priority_class: str | None = Field(
        default=None, max_length=63, pattern=KUEUE_NAME_PATTERN,
        description="Kueue WorkloadPriorityClass of the job in its queue (only with a queue); "
        "default: the GPU profile's",
    )
    hf_token_secret_name: str | None = Field(
        default=None, max_length=253, pattern=SECRET_NAME_PATTERN,
        description="Secret (in the job's namespace) holding the Hub token; "
        "default: the operator's configured Secret",
    )
    hf_token_secret_key: str = Field(
        default="token", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key of the Hub token in that Secret",
    )

    @field_validator("augment_transforms")
    @classmethod
    def _known_transforms(cls, value: str) -> str:
        return ",".join(t.value for t in parse_transforms(value))

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Self:
        for rule in CROSS_FIELD_RULES:
            if not rule.holds(self):
                raise ValueError(rule.message)
        return self

    # --- derived values the runner and operator share ---
    @property
    def transforms(self) -> list[Transform]:
        return parse_transforms(self.augment_transforms)

    @property
    def target_dataset_id(self) -> str:
        return self.output_dataset_id or f"{self.dataset_id}-augmented"

    @property
    def shard_count(self) -> int:
        """The shards this spec runs as: unset is one, but where the operator chose."""
        return self.shards or 1

    def copies_per_episode(self) -> int:
        """Augmented episodes made from each source episode (docs/design.md, Modes)."""
        if self.augment_dataset_mode is DatasetMode.inplace:
            return 1
        if self.augment_mode is AugmentMode.independent:
            return self.augment_copies * len(self.transforms)
        return self.augment_copies

    def copy_plan(self, episode_index: int) -> list[list[Transform]]:
        """The transforms each augmented copy of one source episode applies, in order."""
        transforms = self.transforms
        if self.augment_dataset_mode is DatasetMode.inplace:
            if self.augment_mode is AugmentMode.stacked:
                return [transforms]
            return [[transforms[episode_index % len(transforms)]]]
        if self.augment_mode is AugmentMode.stacked:
            return [transforms for _ in range(self.augment_copies)]
        return [[t] for _ in range(self.augment_copies) for t in transforms]


class CrossFieldRule:
    """A rule over several fields, checked by pydantic here and by CEL in the CRD."""

    def __init__(self, low: str, high: str, *, strict: bool = False) -> None:
        self.low, self.high, self.strict = low, high, strict

    def holds(self, spec: AugmentationSpec) -> bool:
        lo, hi = getattr(spec, self.low), getattr(spec, self.high)
        return lo is None or hi is None or (lo < hi if self.strict else lo <= hi)

    @property
    def message(self) -> str:
        return f"{self.low} must be {'<' if self.strict else '<='} {self.high}"

    def documented(self) -> dict[str, Any]:
        op = "<" if self.strict else "<="
        return {"fields": [self.low, self.high], "rule": f"{self.low} {op} {self.high}",
                "message": self.message}

    def cel(self, camel: dict[str, str]) -> dict[str, str]:
        lo, hi = camel[self.low], camel[self.high]
        op = "<" if self.strict else "<="
        return {"rule": f"self.{lo} {op} self.{hi}", "message": self.message}


class DiffersRule:
    """An optional field that, when set, must differ from another field."""

    def __init__(self, field: str, other: str) -> None:
        self.field, self.other = field, other

    def holds(self, spec: AugmentationSpec) -> bool:
        return bool(getattr(spec, self.field) != getattr(spec, self.other))

    @property
    def message(self) -> str:
        return f"{self.field} must differ from {self.other}: the source is never written"

    def documented(self) -> dict[str, Any]:
        return {"fields": [self.field, self.other],
                "rule": f"{self.field} is absent or {self.field} != {self.other}",
                "message": self.message}

    def cel(self, camel: dict[str, str]) -> dict[str, str]:
        f, o = camel[self.field], camel[self.other]
        return {"rule": f"!has(self.{f}) || self.{f} != self.{o}", "message": self.message}


CROSS_FIELD_RULES: list[CrossFieldRule | DiffersRule] = [
    DiffersRule("output_dataset_id", "dataset_id"),
    CrossFieldRule("augment_brightness_min", "augment_brightness_max"),
    CrossFieldRule("augment_contrast_min", "augment_contrast_max"),
    CrossFieldRule("augment_color_temp_min", "augment_color_temp_max"),
    CrossFieldRule("augment_noise_sigma_min", "augment_noise_sigma_max"),
    CrossFieldRule("augment_blur_sigma_min", "augment_blur_sigma_max"),
    CrossFieldRule("augment_occlusion_area_min", "augment_occlusion_area_max"),
]


class SpecError(ValueError):
    """A spec that fails validation, with one readable line per problem."""


def validation_messages(exc: object) -> list[str]:
    """Readable `field: problem` lines from a pydantic ValidationError (or any error)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return [str(exc)]
    lines = []
    for err in errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        msg = re.sub(r"^Value error, ", "", err.get("msg", "invalid"))
        lines.append(f"{where}: {msg}" if where else msg)
    return lines


def parse_spec(data: dict[str, Any]) -> AugmentationSpec:
    """Validate a snake_case spec dict; raise SpecError with readable lines."""
    try:
        spec = AugmentationSpec.model_validate(data)
    except ValueError as exc:
        raise SpecError("; ".join(validation_messages(exc))) from None
    return spec
