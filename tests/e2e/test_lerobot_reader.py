"""LeRobot's own reader is the judge: what we write, LeRobotDataset loads and agrees with.

The judge runs in its own virtualenv (LeRobot 0.4.4 + torch, see tests/judge/), built
once into ~/.cache/augment-operator by augment_dev.judge. LeRobot 0.4 reads the
v3.0 format only (it asks v2.1 users to convert), so v2.1 output is judged by our
validator, which follows the same rules.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from augment_dev.datasets import make_lerobot_v3
from augment_dev.judge import lerobot_read, lerobot_read_many
from augment_runner.merge import merge_shards
from augment_runner.pipeline import augment_dataset
from augment_runner.shards import Shard
from augment_runner.validate import validate_dataset
from augment_spec.model import parse_spec

CAMERAS = ("observation.images.top", "observation.images.wrist")


def augment(source: Path, output: Path, **fields: Any) -> dict[str, Any]:
    spec = parse_spec({"project_id": str(uuid.uuid4()), "dataset_id": "lab/judged",
                       "augment_brightness_min": 25, "augment_brightness_max": 30,
                       "augment_contrast_min": 0, "augment_contrast_max": 0, **fields})
    augment_dataset(spec, source, output)
    assert validate_dataset(output) == []
    return json.loads((output / "meta" / "augmentation.json").read_text())


@pytest.mark.parametrize("codec", ["libsvtav1", "libx264"])
def test_lerobot_loads_copy_mode_output_and_sees_brighter_copies(
        tmp_path: Path, codec: str) -> None:
    source = make_lerobot_v3(tmp_path / "src", episodes=2, frames=(10, 14), cameras=CAMERAS,
                             codec=codec, size=(48, 64))
    provenance = augment(source, tmp_path / "out", augment_transforms="lighting",
                         augment_copies=2, augment_color_temp_min=6500,
                         augment_color_temp_max=6500)
    before, after = lerobot_read(source), lerobot_read(tmp_path / "out")
    info = json.loads((tmp_path / "out/meta/info.json").read_text())
    assert after["codebase_version"] == "v3.0"
    assert (after["num_episodes"], after["num_frames"]) == (
        info["total_episodes"], info["total_frames"]) == (6, 3 * 24)
    assert after["camera_keys"] == before["camera_keys"] == list(CAMERAS)
    assert set(CAMERAS) <= set(after["stats_keys"])
    for episode in after["episodes"]:
        made = provenance["episodes"][episode["episode_index"]]
        original = before["episodes"][made["source_episode_index"]]
        assert episode["length"] == original["length"]
        assert episode["last_frame_index"] == original["length"] - 1
        assert episode["task"] == original["task"]
        for camera in CAMERAS:
            if made["copy_index"] is None:  # originals are kept byte-identical
                assert episode["first_means"][camera] == original["first_means"][camera]
            else:  # +25..30 % brightness, as LeRobot decodes it
                assert episode["first_means"][camera] > original["first_means"][camera] * 1.15


def test_lerobot_loads_inplace_output_with_an_image_camera(tmp_path: Path) -> None:
    source = make_lerobot_v3(tmp_path / "src", episodes=3, frames=8, cameras=CAMERAS[:1],
                             image_cameras=("observation.images.gripper",), codec="libx264")
    augment(source, tmp_path / "out", augment_transforms="noise,blur,occlusion",
            augment_dataset_mode="inplace", augment_mode="independent")
    after = lerobot_read(tmp_path / "out")
    assert after["num_episodes"] == 3 and after["num_frames"] == 24
    assert set(after["camera_keys"]) == {"observation.images.gripper", CAMERAS[0]}


@pytest.mark.parametrize("dataset_mode", ["copy", "inplace"])
def test_lerobot_reads_merged_shards_as_it_reads_one_run(
        tmp_path: Path, dataset_mode: str) -> None:
    """Three shards merged (augment run --shard, augment merge): LeRobot sees the same
    episodes, frames (decoded), values, tasks and statistics as in one run's output."""
    source = make_lerobot_v3(tmp_path / "src", episodes=4, frames=(6, 8, 5, 7),
                             cameras=CAMERAS, image_cameras=("observation.images.side",))
    spec = parse_spec({"project_id": str(uuid.uuid4()), "dataset_id": "lab/judged",
                       "augment_transforms": "lighting,noise", "augment_copies": 2,
                       "augment_dataset_mode": dataset_mode,
                       "augment_cameras": ["observation.images.top", "observation.images.side"]})
    augment_dataset(spec, source, tmp_path / "whole")
    shards = [tmp_path / f"shard-{k}" for k in range(3)]
    for k, folder in enumerate(shards):
        augment_dataset(spec, source, folder, shard=Shard(k, 3))
    merge_shards(shards, tmp_path / "merged")
    whole, merged = lerobot_read_many([tmp_path / "whole", tmp_path / "merged"])
    assert "error" not in merged, merged.get("error")
    assert merged["num_episodes"] == (4 * 3 if dataset_mode == "copy" else 4)
    assert merged == whole
