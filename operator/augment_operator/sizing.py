"""How many shards a job gets when its spec leaves `shards` unset (docs/design.md, Scale
out): from the dataset's size, as its LeRobot `meta/info.json` on the Hub says, and the
GPU profile.

The rule: the camera frames the job writes (frames x cameras x augmented copies per
episode) divided by the profile's `shardCameraFrames`, rounded up, and then at most the
dataset's episodes (a shard holds whole episodes) and the profile's `maxParallelShards`
(more shards than run at once would only add merge work). A dataset whose size the
operator cannot read (private or gated, not LeRobot v3.0, the Hub unreachable) gets 1.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from augment_operator.config import GpuProfile
from augment_spec.contract import SHARDS_TOTAL, STATUS_SHARDS
from augment_spec.model import MAX_SHARDS, AugmentationSpec

ENV_ENDPOINT = "HF_ENDPOINT"  # the Hub the runners use (the runner or profile env)
DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_SECONDS = 5.0
INFO_MAX_BYTES = 4 * 2**20  # a LeRobot info.json is a few kB
SPLITTABLE_VERSION = "v3.0"  # the LeRobot codebase_version the runner can shard


@dataclass(frozen=True)
class DatasetSize:
    episodes: int
    frames: int
    cameras: int  # video and image features


def auto_shards(size: DatasetSize | None, spec: AugmentationSpec, profile: GpuProfile) -> int:
    """The number of shards by the module's rule."""
    if size is None or size.episodes < 1:
        return 1
    work = size.frames * max(1, size.cameras) * spec.copies_per_episode()
    wanted = -(-work // profile.shard_camera_frames)  # ceil
    return max(1, min(wanted, size.episodes, profile.max_parallel_shards, MAX_SHARDS))


def size_from_info(info: Any) -> DatasetSize | None:
    """The size a LeRobot v3.0 info.json states; None for any other (only v3.0 datasets
    can be split: a v2.1 one asked for shards is refused by its pods)."""
    if not isinstance(info, dict) or info.get("codebase_version") != SPLITTABLE_VERSION:
        return None
    try:
        episodes, frames = int(info["total_episodes"]), int(info["total_frames"])
    except (KeyError, TypeError, ValueError):
        return None
    features = info.get("features")
    described = features.values() if isinstance(features, dict) else []
    cameras = len([f for f in described
                   if isinstance(f, dict) and f.get("dtype") in ("video", "image")])
    return DatasetSize(episodes, frames, cameras)


def read_size(dataset_id: str, revision: str | None, endpoint: str | None,
              timeout: float = TIMEOUT_SECONDS) -> DatasetSize | None:
    """The dataset's size from its meta/info.json, read anonymously; None when it cannot
    be read (the job then gets one shard, which is always right, only slower)."""
    base = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
    if not base.startswith(("http://", "https://")):
        return None
    rev = urllib.parse.quote(revision or "main", safe="")
    url = f"{base}/datasets/{dataset_id}/resolve/{rev}/meta/info.json"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return size_from_info(json.loads(answer.read(INFO_MAX_BYTES)))
    except (OSError, urllib.error.URLError, ValueError):
        return None


def hub_endpoint(runner_env: dict[str, str], profile: GpuProfile) -> str | None:
    """The Hub address the job's runners are given (the profile's env wins, as in
    jobs.runner_env)."""
    return {**runner_env, **profile.env}.get(ENV_ENDPOINT)


def planned_shards(status: dict[str, Any], runner_job: dict[str, Any] | None) -> int | None:
    """The number of shards chosen earlier for a spec without `shards`: the runner Job's
    (an Indexed Job's completions, else 1), or once that Job is gone the one the status
    counts; None when none was chosen yet. The choice lives in these resources, so it is
    made once, whatever the operator's restarts."""
    if runner_job is not None:
        job_spec = runner_job.get("spec") or {}
        indexed = job_spec.get("completionMode") == "Indexed"
        return int(job_spec.get("completions") or 1) if indexed else 1
    total = (status.get(STATUS_SHARDS) or {}).get(SHARDS_TOTAL)
    return int(total) if isinstance(total, int) and total > 0 else None
