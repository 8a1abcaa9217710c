"""How an output dataset was made: meta/augmentation.json and the README.md dataset card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from augment_spec.contract import OUTPUT_PREVIEW_PATH
from augment_spec.model import AugmentationSpec

# The tool named in every provenance file: the Hub upload treats a dataset whose
# provenance names it as one this product made (and may replace).
TOOL_NAME = "augment-operator"
PROVENANCE_PATH = "meta/augmentation.json"
CARD_PATH = "README.md"
PREVIEW_PATH = OUTPUT_PREVIEW_PATH  # the card shows it; the API serves it


def recorded_spec(spec: AugmentationSpec) -> dict[str, Any]:
    """The spec as provenance records it: how many pods shared the work (`shards`)
    changes nothing in what was made, so it is left out."""
    return spec.model_dump(mode="json", exclude={"shards"})


def write_provenance(root: Path, provenance: dict[str, Any]) -> Path:
    path = root / PROVENANCE_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(provenance, indent=2) + "\n")
    return path


def _source_license(source: Path) -> str | None:
    """Keep the source card's license: an augmented dataset is a derivative work."""
    card = source / CARD_PATH
    if not card.exists():
        return None
    text = card.read_text(errors="replace")
    if not text.startswith("---"):
        return None
    header = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    for line in header.splitlines():
        if line.startswith("license:"):
            return line.split(":", 1)[1].strip() or None
    return None


def _data_files_config(provenance: dict[str, Any], root: Path) -> list[str]:
    """The card's `configs`, so the Hub viewer and `load_dataset` find the data files."""
    if provenance["source"]["format"].startswith("LeRobot"):
        return ["configs:", "- config_name: default", "  data_files: data/*/*.parquet"]
    splits = sorted({p.name.split("-")[0] for p in root.glob("data/*.parquet")})
    if not splits:
        return []  # save_to_disk layout: loaded with load_from_disk, no config needed
    lines = ["configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: data/{split}-*"]
    return lines


def _range(spec: dict[str, Any], name: str, unit: str) -> str:
    return f"{spec[f'augment_{name}_min']} to {spec[f'augment_{name}_max']} {unit}".rstrip()


def _transform_lines(spec: dict[str, Any]) -> list[str]:
    describe = {
        "lighting": f"lighting: brightness {_range(spec, 'brightness', '%')}, contrast "
        f"{_range(spec, 'contrast', '%')}, colour temperature "
        f"{_range(spec, 'color_temp', 'K')}",
        "noise": f"noise: Gaussian, sigma {_range(spec, 'noise_sigma', 'grey levels')}",
        "blur": f"blur: Gaussian, sigma {_range(spec, 'blur_sigma', 'px')}",
        "occlusion": f"occlusion: {spec['augment_occlusion_count']} rectangle(s) covering "
        f"{_range(spec, 'occlusion_area', '')} of the frame",
    }
    return [f"- {describe[name]}" for name in spec["augment_transforms"].split(",")]


def write_card(root: Path, provenance: dict[str, Any], source: Path) -> Path:
    spec = provenance["spec"]
    src = provenance["source"]
    episodes = provenance["episodes"]
    augmented = sum(1 for e in episodes if e.get("copy_index") is not None)
    header = [
        "---",
        "tags:",
        "- LeRobot",
        "- augmented",
        "- augment-operator",
        "task_categories:",
        "- robotics",
    ]
    license_ = _source_license(source)
    if license_:
        header.append(f"license: {license_}")
    header += [*_data_files_config(provenance, root), "---", ""]
    mode = (
        "kept unchanged, with the augmented episodes added after them"
        if provenance["dataset_mode"] == "copy"
        else "replaced by their augmented versions"
    )
    source_link = f"https://huggingface.co/datasets/{src['dataset_id']}"
    body = [
        f"# {provenance['output_dataset_id']}",
        "",
        f"Augmented from [{src['dataset_id']}]({source_link}) "
        f"(revision `{src['revision']}`, {src['format']}) by {provenance['tool']['name']} "
        f"{provenance['tool']['version']}.",
        "",
        f"- Episodes: {len(episodes)} ({augmented} augmented); the source episodes are {mode}.",
        f"- Mode: `{provenance['augment_mode']}`, {provenance['copies_per_episode']} augmented "
        f"cop{'y' if provenance['copies_per_episode'] == 1 else 'ies'} per source episode.",
        f"- Cameras augmented: {', '.join(provenance['augmented_cameras'])}; other features are "
        "copied from the source episode.",
        f"- Seed: {provenance['seed']} (same seed and input give the same output).",
        "",
        "Transforms (parameters drawn once per episode copy from these ranges):",
        "",
        *_transform_lines(spec),
        "",
        f"![Source frames (top row) and their augmented copies (one row per copy)]({PREVIEW_PATH})",
        "",
        f"Every augmented episode's source episode, transforms and drawn parameters are in "
        f"[`{PROVENANCE_PATH}`]({PROVENANCE_PATH}).",
        "",
    ]
    path = root / CARD_PATH
    path.write_text("\n".join(header + body))
    return path
