"""`augment merge`: the shards of one job (shards.py) put together into the output the
unsplit job writes (docs/design.md, Scale out).

Shards already number their episodes and frames as the whole output does, so the merge
joins their files as the whole output's (rows and video packets copied, never changed)
and writes what spans them: the format's metadata (formats/*_merge.py), the
provenance, the card and the preview. Like a run, it builds
the output in a hidden folder beside the destination and moves it into place only once
it is valid. The shards' folders are only read.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AugmentError
from .formats.lerobot_v3 import LeRobotV3Reader
from .formats.lerobot_v3_merge import merge_v3
from .pipeline import check_output_folder, check_valid, move_into_place
from .provenance import PREVIEW_PATH, PROVENANCE_PATH, write_card, write_provenance
from .shards import ShardFolder, ShardManifest, check_complete

# Per format: writes the dataset's files and metadata from the shards into a folder.
MERGERS: dict[str, Callable[[Sequence[ShardFolder], Path], None]] = {
    LeRobotV3Reader.format_name: merge_v3,
}


@dataclass(frozen=True)
class MergeResult:
    output: Path
    shards: int
    episodes: int
    seconds: float


def merge_shards(folders: Sequence[Path], output: Path) -> MergeResult:
    """Merge the shard folders (any order) into `output`, which must not exist or be empty."""
    started = time.monotonic()
    if not folders:
        raise AugmentError("no shard folders given; pass every shard's folder")
    roots = [Path(f).resolve() for f in folders]
    output = Path(output).resolve()
    for root in roots:
        if not root.is_dir():
            raise AugmentError(f"shard folder {root} does not exist")
        check_output_folder(root, output)
    shards = _read_shards(roots)
    merge = MERGERS.get(shards[0].manifest.format_name)
    if merge is None:
        raise AugmentError(f"{shards[0].manifest.format_name} shards cannot be merged")
    provenance = merged_provenance(shards)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        merge(shards, staging)
        write_provenance(staging, provenance)
        _copy_preview(shards, staging)
        write_card(staging, provenance, shards[0].root)  # its card keeps the source's license
        check_valid(staging)
        move_into_place(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return MergeResult(
        output, len(shards), len(provenance["episodes"]), time.monotonic() - started
    )


def _read_shards(roots: list[Path]) -> list[ShardFolder]:
    manifests = [ShardManifest.read(root) for root in roots]
    check_complete(manifests, roots)
    shards = [ShardFolder(root, manifest) for root, manifest in zip(roots, manifests, strict=True)]
    return sorted(shards, key=lambda s: s.manifest.shard.index)


def _provenance(shard: ShardFolder) -> dict[str, Any]:
    path = shard.root / PROVENANCE_PATH
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise AugmentError(f"{path} is missing or not valid JSON; make the shard again") from None
    if not isinstance(data, dict) or not isinstance(data.get("episodes"), list):
        raise AugmentError(f"{path} is not a provenance file; make the shard again")
    return data


# What each shard's provenance has of its own: its episodes, and how its node decoded
# and encoded the videos (shards may land on GPUs with other video engines).
PER_SHARD = ("episodes", "video")


def merged_provenance(shards: Sequence[ShardFolder]) -> dict[str, Any]:
    """The unsplit job's provenance: the shards' must agree on everything (spec, seed,
    source revision, tool version) but their episodes, which are put in output order,
    and their video plans, each kept once."""
    first = _provenance(shards[0])
    common = {key: value for key, value in first.items() if key not in PER_SHARD}
    episodes: list[dict[str, Any]] = []
    video: list[dict[str, Any]] = []
    for shard in shards:
        own = _provenance(shard)
        video += [plan for plan in own.get("video", []) if plan not in video]
        if {key: value for key, value in own.items() if key not in PER_SHARD} != common:
            raise AugmentError(
                f"{shard.root} was made with another spec, seed, source revision or tool "
                f"version than {shards[0].root}; merge the shards of one job"
            )
        episodes += own["episodes"]
    splits = list(dict.fromkeys(e.get("split") for e in episodes))  # as the pipeline orders
    episodes.sort(key=lambda e: (splits.index(e.get("split")), e["episode_index"]))
    return {**first, "episodes": episodes, "video": video}


def _copy_preview(shards: Sequence[ShardFolder], staging: Path) -> None:
    """The first shard's preview: the unsplit job's shows the first episode with frames,
    and shards hold contiguous episodes in order."""
    for shard in shards:
        preview = shard.root / PREVIEW_PATH
        if preview.exists():
            shutil.copyfile(preview, staging / PREVIEW_PATH)
            return
    raise AugmentError("no shard has a preview: every source episode is empty")
