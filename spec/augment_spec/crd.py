"""The AugmentationJob CRD, generated from the spec model (never edited by hand).

The API speaks the seed's snake_case names; the custom resource speaks camelCase,
as Kubernetes users expect. The mapping is mechanical: `to_camel` / `spec_from_cr`.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic.alias_generators import to_camel, to_snake

from augment_spec.contract import GROUP, KIND, PLURAL, VERSION, Phase
from augment_spec.model import (
    CROSS_FIELD_RULES,
    CROSS_FIELD_RULES_KEY,
    TRANSFORM_NAMES,
    AugmentationSpec,
    parse_spec,
)

SINGULAR = "augmentationjob"
SHORT_NAMES = ["augjob", "augjobs"]
CATEGORIES = ["augment"]

SPEC_FIELDS = list(AugmentationSpec.model_fields)
CAMEL = {name: to_camel(name) for name in SPEC_FIELDS}
SNAKE = {camel: name for name, camel in CAMEL.items()}

_TRANSFORM_ALT = "|".join(TRANSFORM_NAMES)
TRANSFORMS_PATTERN = rf"^\s*({_TRANSFORM_ALT})\s*(,\s*({_TRANSFORM_ALT})\s*)*$"
TRANSFORMS_NO_DUPLICATES = {
    "rule": "self.split(',').all(t, self.split(',').exists_one(u, u.trim() == t.trim()))",
    "message": "a transform is listed more than once",
}
SPEC_IMMUTABLE = {
    "rule": "self == oldSelf",
    "message": "spec is immutable: delete the AugmentationJob and create a new one",
}


def cr_spec_from_spec(spec: AugmentationSpec) -> dict[str, Any]:
    """The camelCase `spec` of a custom resource, with every field explicit."""
    data = spec.model_dump(mode="json", exclude_none=True)
    return {CAMEL[k]: v for k, v in data.items()}


def spec_from_cr(cr_spec: dict[str, Any]) -> AugmentationSpec:
    """Parse a CR's camelCase spec through the same model as the API (raises SpecError)."""
    # Unknown keys keep a snake_case name so the model reports them as extra fields.
    return parse_spec({SNAKE.get(k, to_snake(k)): v for k, v in cr_spec.items()})


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Turn pydantic's JSON Schema into a Kubernetes structural schema."""
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:  # Optional[X]: the field may be absent, never null
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
        if node.get("default") is not None:
            rest["default"] = node["default"]
        return _structural({**branches[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out[key] = {to_camel(k): _structural(v, defs) for k, v in value.items()}
        elif key == "required":
            out[key] = [to_camel(k) for k in value]
        elif key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields instead
        else:
            out[key] = _structural(value, defs)
    return out


def spec_schema() -> dict[str, Any]:
    raw = AugmentationSpec.model_json_schema()
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    schema.pop(CROSS_FIELD_RULES_KEY)  # not allowed in a CRD: the CEL rules below say it
    schema.pop("description", None)
    schema["description"] = "What to augment and how; immutable once created."
    props = schema["properties"]
    props["augmentTransforms"]["pattern"] = TRANSFORMS_PATTERN
    props["augmentTransforms"]["maxLength"] = 64
    props["augmentTransforms"]["x-kubernetes-validations"] = [TRANSFORMS_NO_DUPLICATES]
    schema["x-kubernetes-validations"] = [SPEC_IMMUTABLE] + [
        rule.cel(CAMEL) for rule in CROSS_FIELD_RULES
    ]
    return schema


def _timestamp(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "date-time", "description": description}


def status_schema() -> dict[str, Any]:
    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": _timestamp("When the condition last changed"),
            "observedGeneration": {"type": "integer", "format": "int64"},
        },
    }
    return {
        "type": "object",
        "description": "Observed state, written by the operator and the runner.",
        "properties": {
            "phase": {"type": "string", "enum": [p.value for p in Phase]},
            "message": {"type": "string"},
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "progress": {
                "type": "object",
                "properties": {
                    "episodesDone": {"type": "integer", "minimum": 0},
                    "episodesTotal": {"type": "integer", "minimum": 0},
                    "percent": {"type": "integer", "minimum": 0, "maximum": 100},
                    "text": {"type": "string", "description": "For `kubectl get`"},
                },
            },
            "shardProgress": {
                "type": "object",
                "description": "A sharded job's progress per shard index, from its runners",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "episodesDone": {"type": "integer", "minimum": 0},
                        "episodesTotal": {"type": "integer", "minimum": 0},
                    },
                },
            },
            "shards": {
                "type": "object",
                "description": "A sharded job's shards, counted from its Indexed Job",
                "properties": {
                    "total": {"type": "integer", "minimum": 0},
                    "done": {"type": "integer", "minimum": 0},
                    "running": {"type": "integer", "minimum": 0},
                    "failed": {"type": "integer", "minimum": 0},
                    "failedPods": {"type": "integer", "minimum": 0},
                    "text": {"type": "string", "description": "For `kubectl get`"},
                },
            },
            "videoPlan": {"type": "string",
                          "description": "How the runner decodes and encodes each camera's "
                                         "video, and why"},
            "jobName": {"type": "string"},
            "outputDatasetId": {"type": "string"},
            "outputRevision": {"type": "string"},
            "sourceRevision": {"type": "string"},
            "startTime": _timestamp("When the runner started"),
            "completionTime": _timestamp("When the job reached a final phase"),
            "observedGeneration": {"type": "integer", "format": "int64"},
        },
    }


def printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Type", "type": "string", "jsonPath": ".spec.augmentationType"},
        {"name": "Dataset", "type": "string", "jsonPath": ".spec.datasetId"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress.text"},
        {"name": "Shards", "type": "string", "jsonPath": ".status.shards.text", "priority": 1},
        {"name": "Output", "type": "string", "jsonPath": ".status.outputDatasetId",
         "priority": 1},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        {"name": "Video", "type": "string", "jsonPath": ".status.videoPlan", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def crd() -> dict[str, Any]:
    """The complete CustomResourceDefinition manifest."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "annotations": {"augment.dev/generated-by": "augment crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "An augmentation of a Hub dataset, run as a GPU Job.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    import yaml

    header = "# Generated by `augment crd` from the spec model. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)
