"""Pick the reader for a dataset folder from what is on disk."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DatasetError
from .base import DatasetReader
from .lerobot_v3 import LeRobotV3Reader
from .lerobot_v21 import LeRobotV21Reader
from .plain import PlainReader, looks_like_plain_dataset

LEROBOT_READERS = {"v3.0": LeRobotV3Reader, "v2.1": LeRobotV21Reader}


def open_dataset(path: Path) -> DatasetReader:
    """A reader for a LeRobot v3.0/v2.1 folder (by meta/info.json's codebase_version) or
    for a folder the `datasets` library loads (save_to_disk output or parquet files)."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; give a local folder or a Hub id")
    info_path = root / "meta/info.json"
    if info_path.exists():
        try:
            version = json.loads(info_path.read_text()).get("codebase_version")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
            raise DatasetError(
                f"meta/info.json is not valid JSON ({exc}); re-download the dataset"
            ) from None
        reader = LEROBOT_READERS.get(version)
        if reader is None:
            raise DatasetError(
                f"LeRobot codebase_version {version!r} is not supported (supported: "
                f"{', '.join(LEROBOT_READERS)}); convert the dataset with LeRobot's scripts first"
            )
        return reader(root)
    if _lerobot_without_info(root):
        raise DatasetError(
            f"{root} looks like a LeRobot dataset but meta/info.json is missing; "
            f"re-download the dataset (all of meta/ is needed)"
        )
    if looks_like_plain_dataset(root):
        return PlainReader(root)
    raise DatasetError(
        f"{root} is neither a LeRobot dataset (no meta/info.json) nor a `datasets` folder "
        f"(no dataset_info.json or parquet files); point --dataset at the dataset's root"
    )


def _lerobot_without_info(root: Path) -> bool:
    """LeRobot's other metadata or chunked data is there, only info.json is not."""
    markers = ("meta/episodes.jsonl", "meta/episodes", "meta/tasks.jsonl", "meta/tasks.parquet")
    return any((root / m).exists() for m in markers) or any(root.glob("data/chunk-*"))
