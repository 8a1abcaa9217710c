"""What "the same dataset" means for a split job (docs/design.md, Scale out).

What a reader sees is equal, and where it finds it: the same files (the merge joins the
shards' files as one run fills them), each data file with the same schema and rows, the
decoded frames of every episode and camera, the episode table (file indices and video
offsets included), the statistics (within float tolerance), info, tasks, provenance,
card and preview, and every source file the unsplit output copies, byte for byte. Only
the bytes of new data and video files may differ (rows encoded again, packets muxed
again).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from augment_runner.formats.detect import open_dataset
from augment_runner.validate import validate_dataset


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_rows(root: Path) -> list[dict[str, Any]]:
    files = sorted(str(p) for p in root.glob("data/*/*.parquet"))
    return pads.dataset(files, format="parquet").to_table().sort_by("index").to_pylist()


def episode_rows(root: Path) -> list[dict[str, Any]]:
    table = pads.dataset(str(root / "meta/episodes"), format="parquet").to_table()
    return table.sort_by("episode_index").to_pylist()


def files_of(root: Path) -> list[str]:
    """The dataset's files (not the Hub client's hidden caches)."""
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def assert_same_data_files(whole: Path, merged_: Path) -> None:
    """Each data file holds the same rows, in order, with the same schema (metadata too)."""
    for path in sorted(whole.glob("data/*/*.parquet")):
        other = merged_ / path.relative_to(whole)
        assert pq.read_schema(other).equals(pq.read_schema(path), check_metadata=True), other
        assert pq.read_table(other).to_pylist() == pq.read_table(path).to_pylist(), other


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
    assert files_of(merged_) == files_of(whole)
    assert_same_data_files(whole, merged_)
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
