"""Load a dataset folder with LeRobot's own reader and summarise what it sees (JSON).

Runs inside the judge virtualenv (LeRobot + torch), never in the project's.
Usage: python lerobot_read.py DATASET_FOLDER
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lerobot.datasets.lerobot_dataset import LeRobotDataset


def frame_means(dataset: LeRobotDataset, index: int) -> dict[str, float]:
    item = dataset[index]
    return {key: float(item[key].float().mean()) for key in dataset.meta.camera_keys}


def main(root: Path) -> None:
    # PyAV backend: torchcodec would need the system's FFmpeg libraries.
    dataset = LeRobotDataset(repo_id="local/judged", root=root, video_backend="pyav")
    episodes = []
    for ep in range(dataset.num_episodes):
        start = int(dataset.meta.episodes[ep]["dataset_from_index"])
        stop = int(dataset.meta.episodes[ep]["dataset_to_index"])
        first, last = dataset[start], dataset[stop - 1]
        episodes.append({
            "episode_index": int(first["episode_index"]),
            "length": stop - start,
            "last_frame_index": int(last["frame_index"]),
            "task": first["task"],
            "first_means": frame_means(dataset, start),
            "last_means": frame_means(dataset, stop - 1),
        })
    print(json.dumps({
        "codebase_version": dataset.meta.info["codebase_version"],
        "num_episodes": dataset.num_episodes,
        "num_frames": dataset.num_frames,
        "fps": dataset.fps,
        "camera_keys": list(dataset.meta.camera_keys),
        "stats_keys": sorted(dataset.meta.stats),
        "episodes": episodes,
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
