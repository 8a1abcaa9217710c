"""What "the same dataset" means for a split job (docs/design.md, Scale out).

What a reader sees is equal: the data rows, the decoded frames of every episode and
camera, the episode table but for where each episode's files are, the statistics
(within float tolerance), info, tasks, provenance, card and preview, and every source
file the unsplit output copies, byte for byte. Only how the new episodes are spread over
files may differ (each shard writes its own files).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads

from augment_runner.formats.detect import open_dataset
from augment_runner.validate import validate_dataset

# The columns saying where an episode's rows and frames are: the only ones allowed to differ.
LOCATION = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_rows(root: Path) -> list[dict[str, Any]]:
    files = sorted(str(p) for p in root.glob("data/*/*.parquet"))
    return pads.dataset(files, format="parquet").to_table().sort_by("index").to_pylist()


def episode_rows(root: Path) -> list[dict[str, Any]]:
    table = pads.dataset(str(root / "meta/episodes"), format="parquet").to_table()
    return [
        {k: v for k, v in row.items() if not k.endswith(LOCATION)}
        for row in table.sort_by("episode_index").to_pylist()
    ]


def frames_of(root: Path) -> dict[tuple[int, str], np.ndarray]:
    reader = open_dataset(root)
    return {
        (episode.index, camera.key): np.concatenate(
            list(reader.decode_frames(episode, camera, 64))
        )
        for episode in reader.episodes
        for camera in reader.cameras
        if camera.storage == "video"
    }


def stats_json(root: Path) -> dict[str, dict[str, np.ndarray]]:
    stats = json.loads((root / "meta/stats.json").read_text())
    return {f: {k: np.asarray(v) for k, v in values.items()} for f, values in stats.items()}


def assert_same_dataset(whole: Path, merged_: Path, source: Path) -> None:
    assert validate_dataset(merged_) == []
    for name in ("meta/info.json", "meta/tasks.parquet", "meta/augmentation.json",
                 "README.md", "preview.png"):
        assert digest(merged_ / name) == digest(whole / name), name
    assert data_rows(merged_) == data_rows(whole)
    assert episode_rows(merged_) == episode_rows(whole)
    whole_frames, merged_frames = frames_of(whole), frames_of(merged_)
    assert whole_frames.keys() == merged_frames.keys()
    for key, frames in whole_frames.items():
        np.testing.assert_array_equal(merged_frames[key], frames, err_msg=str(key))
    expected, got = stats_json(whole), stats_json(merged_)
    assert got.keys() == expected.keys()
    for feature, values in expected.items():
        assert got[feature].keys() == values.keys()
        for stat, value in values.items():
            np.testing.assert_allclose(got[feature][stat], value, rtol=1e-12, err_msg=feature)
    # Every source file the whole run copies is in the merge, byte for byte.
    for path in (p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        if (whole / relative).exists() and digest(whole / relative) == digest(path):
            assert digest(merged_ / relative) == digest(path), relative
