"""Load dataset folders with LeRobot's own reader and summarise what it sees (JSON).

Runs inside a judge virtualenv (LeRobot + torch), never in the project's: LeRobot 0.4.4
for v3.0 folders, LeRobot 0.3.3 for v2.1 ones (the two APIs differ where noted).
Usage: python lerobot_read.py DATASET_FOLDER [DATASET_FOLDER ...]; one JSON line per
folder, in order (one process for many folders: torch takes seconds to import).
"""

from __future__ import annotations

import hashlib
import json
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lerobot.datasets.compute_stats import get_feature_stats
from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset

V21 = CODEBASE_VERSION == "v2.1"  # LeRobot 0.3: v2.1 metadata, episode_data_index


def frame_means(dataset: LeRobotDataset, index: int) -> dict[str, float]:
    item = dataset[index]
    return {key: float(item[key].float().mean()) for key in dataset.meta.camera_keys}


def stat_kind(value: Any) -> list[Any]:
    """A statistic as LeRobot loads it: [numpy dtype, shape]."""
    array = np.asarray(value)
    return [array.dtype.name, list(array.shape)]


def episode_stats(dataset: LeRobotDataset) -> list[dict[str, dict[str, Any]]]:
    """Per-episode statistics as LeRobot loads them: v2.1 episodes_stats.jsonl, v3.0 the
    stats/<feature>/<stat> columns of meta/episodes."""
    if V21:
        return [{feature: {stat: np.asarray(value).tolist() for stat, value in values.items()}
                 for feature, values in dataset.meta.episodes_stats.get(ep, {}).items()}
                for ep in range(dataset.num_episodes)]
    from lerobot.datasets.utils import EPISODES_DIR, load_nested_dataset

    table = load_nested_dataset(dataset.root / EPISODES_DIR).sort("episode_index")
    columns = [c for c in table.column_names if c.startswith("stats/")]
    out: list[dict[str, dict[str, Any]]] = []
    for row in table.select_columns(columns).to_list():
        stats: dict[str, dict[str, Any]] = {}
        for column, value in row.items():
            feature, _, stat = column[len("stats/"):].rpartition("/")
            if value is not None:
                stats.setdefault(feature, {})[stat] = value
        out.append(stats)
    return out


def kinds(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[Any]]]:
    return {feature: {stat: stat_kind(value) for stat, value in values.items()}
            for feature, values in stats.items()}


def frame_summary(
    dataset: LeRobotDataset, index: int, pixels: dict[str, list[np.ndarray]]
) -> dict[str, Any]:
    """One frame: its indices, task, numeric and string values and each camera's shape and
    digest; its decoded frames are appended to `pixels` (per camera)."""
    item = dataset[index]
    summary: dict[str, Any] = {"task": item["task"], "values": {}, "cameras": {}}
    for key, value in item.items():
        if key in dataset.meta.camera_keys:
            frame = value.detach().cpu().numpy()
            summary["cameras"][key] = {"shape": list(frame.shape),
                                       "digest": hashlib.sha1(frame.tobytes()).hexdigest()}
            pixels.setdefault(key, []).append(np.round(frame * 255).astype(np.uint8))
        elif isinstance(value, torch.Tensor):
            summary["values"][key] = value.tolist()
        elif isinstance(value, str) and key != "task":  # string features
            summary["values"][key] = value
    return summary


def camera_stats(pixels: dict[str, list[np.ndarray]]) -> dict[str, dict[str, list[Any]]]:
    """LeRobot's own statistics code on an episode's decoded (C,H,W) frames, in 0..1.

    The frames go in as floats: LeRobot 0.4.4 squares its uint8 samples in uint8, which
    wraps, so the std its writer stores for cameras is 0 (we write the true one).
    """
    out = {}
    for key, frames in pixels.items():
        samples = np.stack(frames).astype(np.float64)
        if samples.shape[1] == 1:  # its writer loads images as RGB for their statistics
            samples = np.repeat(samples, 3, axis=1)
        stats = get_feature_stats(samples, axis=(0, 2, 3), keepdims=True)
        out[key] = {stat: (np.squeeze(stats[stat], axis=0) / 255.0).tolist()
                    for stat in ("min", "max", "mean", "std")}
    return out


def episode_bounds(dataset: LeRobotDataset, ep: int) -> tuple[int, int]:
    if V21:
        return (int(dataset.episode_data_index["from"][ep]),
                int(dataset.episode_data_index["to"][ep]))
    return (int(dataset.meta.episodes[ep]["dataset_from_index"]),
            int(dataset.meta.episodes[ep]["dataset_to_index"]))


def episode_summary(dataset: LeRobotDataset, ep: int) -> dict[str, Any]:
    start, stop = episode_bounds(dataset, ep)
    first, last = dataset[start], dataset[stop - 1]
    pixels: dict[str, list[np.ndarray]] = {}
    return {
        "episode_index": int(first["episode_index"]),
        "length": stop - start,
        "last_frame_index": int(last["frame_index"]),
        "task": first["task"],
        "first_means": frame_means(dataset, start),
        "last_means": frame_means(dataset, stop - 1),
        "frames": [frame_summary(dataset, i, pixels) for i in range(start, stop)],
        "camera_stats": camera_stats(pixels),
    }


def summarise(root: Path) -> dict[str, Any]:
    # PyAV backend: torchcodec would need the system's FFmpeg libraries.
    dataset = LeRobotDataset(repo_id="local/judged", root=root, video_backend="pyav")
    per_episode = episode_stats(dataset)
    return {
        "codebase_version": dataset.meta.info["codebase_version"],
        "num_episodes": dataset.num_episodes,
        "num_frames": dataset.num_frames,
        "fps": dataset.fps,
        "camera_keys": list(dataset.meta.camera_keys),
        "stats_keys": sorted(dataset.meta.stats),
        "stats": kinds(dataset.meta.stats),
        "episode_stats": [kinds(stats) for stats in per_episode],
        "episode_stat_values": per_episode,
        "episodes": [episode_summary(dataset, ep) for ep in range(dataset.num_episodes)],
    }


def main(roots: list[Path]) -> None:
    for root in roots:
        try:
            summary = summarise(root)
        except Exception:  # one folder's failure is that folder's verdict, not the others'
            summary = {"error": traceback.format_exc()[-3000:]}
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main([Path(arg) for arg in sys.argv[1:]])
