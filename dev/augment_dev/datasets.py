"""Small synthetic datasets with real video encoding, for tests and the shipped example.

The frames show coloured shapes moving over a gradient, so lighting, blur, noise and
occlusion all leave visible, measurable traces; state and action are float32 vectors
that change every frame. Files follow LeRobot's layouts (v3.0 and v2.1) as its own
recorder writes them: each episode encoded on its own, then (v3.0) appended into one
file per camera; per-episode statistics computed with LeRobot's rules.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from augment_dev import REPO_ROOT
from augment_runner import stats as stats_mod
from augment_runner.formats.base import hf_features, write_json, write_jsonl
from augment_runner.video import VideoConcatenator, VideoEncoder, VideoFormat

CODEC_NAMES = {"libsvtav1": "av1", "av1": "av1", "libx264": "h264", "h264": "h264",
               "libx265": "hevc", "hevc": "hevc"}
DEFAULT_TASKS = ("pick up the red cube", "push the blue disc to the corner")
STATE_DIM = 6
SAMPLE_DATASET = REPO_ROOT / "examples" / "sample-dataset"


def synthetic_frames(
    episode: int, count: int, size: tuple[int, int], camera: int = 0, start: int = 0
) -> np.ndarray:
    """(count,H,W,3) uint8 frames of one episode: a gradient, a square and a disc that move."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    for n in range(count):
        t = start + n
        frame = frames[n]
        frame[..., 0] = (xx * 200 // max(width - 1, 1)) + 20
        frame[..., 1] = (yy * 160 // max(height - 1, 1)) + 40
        frame[..., 2] = (90 + 40 * camera) % 256
        side = max(4, height // 4)
        x0 = int((width - side) * (0.5 + 0.45 * math.sin(0.35 * t + episode)))
        y0 = int((height - side) * (0.5 + 0.4 * math.cos(0.25 * t + 2 * episode)))
        # Colours wrap around (uint8) so that any number of episodes and cameras fits.
        frame[y0 : y0 + side, x0 : x0 + side] = (
            (230, 40 + 60 * episode, 30)[camera % 3] % 256,
            (200 - 50 * camera) % 256,
            (40 + 30 * episode) % 256,
        )
        cx = width * (0.5 + 0.35 * math.cos(0.3 * t + episode))
        cy = height * (0.5 + 0.3 * math.sin(0.2 * t))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= (side * 0.6) ** 2
        frame[disc] = (30, (60 + 40 * camera) % 256, 230)
    return frames


def _lengths(episodes: int, frames: int | Sequence[int]) -> list[int]:
    if isinstance(frames, int):
        return [frames] * episodes
    if len(frames) != episodes:
        raise ValueError("give one frame count per episode")
    return list(frames)


def _png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def _features(
    cameras: Sequence[str],
    image_cameras: Sequence[str],
    size: tuple[int, int],
    video_info: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    height, width = size
    names = [f"joint_{i}" for i in range(STATE_DIM)]
    features: dict[str, dict[str, Any]] = {
        "observation.state": {"dtype": "float32", "shape": [STATE_DIM], "names": names},
        "action": {"dtype": "float32", "shape": [STATE_DIM], "names": names},
    }
    for key in cameras:
        features[key] = {
            "dtype": "video",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
            "info": video_info[key],
        }
    for key in image_cameras:
        features[key] = {
            "dtype": "image",
            "shape": [height, width, 3],
            "names": ["height", "width", "channels"],
        }
    for key, dtype in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _video_info(fmt: VideoFormat) -> dict[str, Any]:
    return {
        "video.height": fmt.height,
        "video.width": fmt.width,
        "video.codec": fmt.codec,
        "video.pix_fmt": fmt.pix_fmt,
        "video.is_depth_map": False,
        "video.fps": int(fmt.fps),
        "video.channels": 3,
        "has_audio": False,
    }


class _Episode:
    """One synthetic episode: its columns, its frames per camera, its stats."""

    def __init__(
        self,
        index: int,
        length: int,
        first_frame: int,
        fps: int,
        task_index: int,
        cameras: Sequence[str],
        image_cameras: Sequence[str],
        size: tuple[int, int],
        with_quantiles: bool,
    ) -> None:
        self.index, self.length = index, length
        t = np.arange(length, dtype=np.float32)
        phase = np.arange(STATE_DIM, dtype=np.float32)
        state = np.sin(0.2 * t[:, None] + phase + index).astype(np.float32)
        self.columns: dict[str, Any] = {
            "observation.state": state,
            "action": np.cos(0.2 * t[:, None] + phase + index).astype(np.float32),
            "timestamp": (np.arange(length) / fps).astype(np.float32),
            "frame_index": np.arange(length, dtype=np.int64),
            "episode_index": np.full(length, index, dtype=np.int64),
            "index": np.arange(first_frame, first_frame + length, dtype=np.int64),
            "task_index": np.full(length, task_index, dtype=np.int64),
        }
        self.frames = {
            key: synthetic_frames(index, length, size, camera=i)
            for i, key in enumerate([*cameras, *image_cameras])
        }
        for key in image_cameras:
            self.columns[key] = [{"bytes": _png(f), "path": None} for f in self.frames[key]]
        self.stats: dict[str, stats_mod.Stats] = {
            key: stats_mod.numeric_stats(np.asarray(values), with_quantiles=with_quantiles)
            for key, values in self.columns.items()
            if key not in image_cameras
        }
        for key, frames in self.frames.items():
            sampler = stats_mod.FrameSampler(length)
            sampler.add(frames, 0)
            self.stats[key] = sampler.stats(with_quantiles=with_quantiles)


def _make_episodes(
    episodes: int,
    frames: int | Sequence[int],
    fps: int,
    tasks: Sequence[str],
    cameras: Sequence[str],
    image_cameras: Sequence[str],
    size: tuple[int, int],
    with_quantiles: bool,
) -> list[_Episode]:
    made, first = [], 0
    for index, length in enumerate(_lengths(episodes, frames)):
        made.append(
            _Episode(
                index,
                length,
                first,
                fps,
                index % len(tasks),
                cameras,
                image_cameras,
                size,
                with_quantiles,
            )
        )
        first += length
    return made


def _data_table(episodes: list[_Episode], features: dict[str, dict[str, Any]]) -> pa.Table:
    hf = hf_features(features)
    columns: dict[str, list[Any]] = {key: [] for key in hf}
    for episode in episodes:
        for key in hf:
            columns[key].extend(list(episode.columns[key]))
    dataset = datasets.Dataset.from_dict(columns, features=hf)
    return dataset.with_format("arrow")[:]


def _as_datasets_3(table: pa.Table) -> pa.Table:
    """The table with the `datasets` schema metadata v2.1 datasets carry (written by
    `datasets` < 4, LeRobot 0.3's): a fixed-length list is a "Sequence" there, a "List"
    since `datasets` 4, which LeRobot 0.3.3's `datasets` cannot read."""
    metadata = dict(table.schema.metadata or {})
    schema = json.loads(metadata[b"huggingface"])
    for feature in schema["info"]["features"].values():
        if feature.get("_type") == "List" and "length" in feature:
            feature["_type"] = "Sequence"
    metadata[b"huggingface"] = json.dumps(schema).encode()
    return table.replace_schema_metadata(metadata)


def _encode_videos(
    root: Path, episodes: list[_Episode], cameras: Sequence[str], fmt: VideoFormat, path_of
) -> dict[str, list[Any]]:
    """Encode every episode of every camera; returns per camera the segments (v3) or []."""
    segments: dict[str, list[Any]] = {}
    for key in cameras:
        target = path_of(key)
        concatenator = VideoConcatenator(root / target, fmt.fps) if target else None
        segments[key] = []
        for episode in episodes:
            path = root / (
                f".tmp-{episode.index}.mp4" if concatenator else path_of(key, episode.index)
            )
            with VideoEncoder(path, fmt, faststart=concatenator is None) as encoder:
                encoder.write(episode.frames[key])
            if concatenator:
                segments[key].append(concatenator.append(path, episode.length))
                path.unlink()
        if concatenator:
            concatenator.close()
    return segments


def make_lerobot_v3(
    path: Path,
    episodes: int = 2,
    frames: int | Sequence[int] = 12,
    cameras: Sequence[str] = ("observation.images.top",),
    codec: str = "libsvtav1",
    image_cameras: Sequence[str] = (),
    size: tuple[int, int] = (48, 64),
    fps: int = 10,
    tasks: Sequence[str] = DEFAULT_TASKS,
    pix_fmt: str = "yuv420p",
) -> Path:
    """A LeRobot v3.0 dataset: one data file, one video file per camera (8-bit frames in
    the videos' `pix_fmt`, e.g. yuv420p10le for 10-bit AV1)."""
    root = Path(path)
    fmt = VideoFormat(CODEC_NAMES[codec], pix_fmt, fps, size[1], size[0])
    made = _make_episodes(episodes, frames, fps, tasks, cameras, image_cameras, size, True)
    features = _features(cameras, image_cameras, size, {k: _video_info(fmt) for k in cameras})
    used_tasks = list(tasks[: min(len(tasks), episodes)])

    data_path = root / "data/chunk-000/file-000.parquet"
    data_path.parent.mkdir(parents=True)
    pq.write_table(_data_table(made, features), data_path)
    segments = _encode_videos(
        root, made, cameras, fmt, lambda key, *_: f"videos/{key}/chunk-000/file-000.mp4"
    )

    rows = []
    for episode in made:
        row: dict[str, Any] = {
            "episode_index": episode.index,
            "tasks": [used_tasks[episode.index % len(used_tasks)]],
            "length": episode.length,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": int(episode.columns["index"][0]),
            "dataset_to_index": int(episode.columns["index"][-1]) + 1,
        }
        for key in cameras:
            segment = segments[key][episode.index]
            row.update(
                {
                    f"videos/{key}/chunk_index": 0,
                    f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": segment.from_timestamp,
                    f"videos/{key}/to_timestamp": segment.to_timestamp,
                }
            )
        for feature, values in episode.stats.items():
            for stat, value in values.items():
                row[f"stats/{feature}/{stat}"] = np.asarray(value).tolist()
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        rows.append(row)
    episodes_path = root / "meta/episodes/chunk-000/file-000.parquet"
    episodes_path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), episodes_path)
    pd.DataFrame(
        {"task_index": range(len(used_tasks))}, index=pd.Index(used_tasks, name="task")
    ).to_parquet(root / "meta/tasks.parquet")
    total_frames = sum(e.length for e in made)
    write_json(
        root / "meta/info.json",
        {
            "codebase_version": "v3.0",
            "robot_type": "synthetic_arm",
            "total_episodes": episodes,
            "total_frames": total_frames,
            "total_tasks": len(used_tasks),
            "chunks_size": 1000,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": fps,
            "splits": {"train": f"0:{episodes}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": (
                "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
                if cameras
                else None
            ),
            "features": features,
        },
    )
    aggregated = stats_mod.aggregate([e.stats for e in made])
    write_json(root / "meta/stats.json", stats_mod.to_json(aggregated))
    return root


def make_lerobot_v21(
    path: Path,
    episodes: int = 2,
    frames: int | Sequence[int] = 12,
    cameras: Sequence[str] = ("observation.images.top",),
    codec: str = "libsvtav1",
    image_cameras: Sequence[str] = (),
    size: tuple[int, int] = (48, 64),
    fps: int = 10,
    tasks: Sequence[str] = DEFAULT_TASKS,
) -> Path:
    """A LeRobot v2.1 dataset: one parquet and one MP4 per camera for each episode."""
    root = Path(path)
    fmt = VideoFormat(CODEC_NAMES[codec], "yuv420p", fps, size[1], size[0])
    made = _make_episodes(episodes, frames, fps, tasks, cameras, image_cameras, size, False)
    features = _features(cameras, image_cameras, size, {k: _video_info(fmt) for k in cameras})
    used_tasks = list(tasks[: min(len(tasks), episodes)])
    data_template = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
    video_template = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"

    for episode in made:
        target = root / data_template.format(episode_chunk=0, episode_index=episode.index)
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_as_datasets_3(_data_table([episode], features)), target)
    _encode_videos(
        root,
        made,
        cameras,
        fmt,
        lambda key, index=None: (
            None
            if index is None
            else video_template.format(episode_chunk=0, video_key=key, episode_index=index)
        ),
    )

    write_jsonl(
        root / "meta/episodes.jsonl",
        [
            {
                "episode_index": e.index,
                "tasks": [used_tasks[e.index % len(used_tasks)]],
                "length": e.length,
            }
            for e in made
        ],
    )
    write_jsonl(
        root / "meta/episodes_stats.jsonl",
        [{"episode_index": e.index, "stats": stats_mod.to_json(e.stats)} for e in made],
    )
    write_jsonl(
        root / "meta/tasks.jsonl",
        [{"task_index": i, "task": task} for i, task in enumerate(used_tasks)],
    )
    write_json(
        root / "meta/info.json",
        {
            "codebase_version": "v2.1",
            "robot_type": "synthetic_arm",
            "total_episodes": episodes,
            "total_frames": sum(e.length for e in made),
            "total_tasks": len(used_tasks),
            "total_videos": episodes * len(cameras),
            "total_chunks": 1,
            "chunks_size": 1000,
            "fps": fps,
            "splits": {"train": f"0:{episodes}"},
            "data_path": data_template,
            "video_path": video_template if cameras else None,
            "features": features,
        },
    )
    write_json(
        root / "meta/stats.json", stats_mod.to_json(stats_mod.aggregate([e.stats for e in made]))
    )
    return root


def make_plain_image_dataset(
    path: Path,
    rows: int = 3,
    frames: int = 6,
    size: tuple[int, int] = (48, 64),
    layout: str = "parquet",
    per_row: str = "sequence",
) -> Path:
    """A plain `datasets` dataset with Image columns.

    per_row="sequence": each row is an episode, a list of frames in column "frames";
    per_row="single": one image per row in column "image", rows of one episode share
    an "episode_index". layout="parquet" writes data/train-00000-of-00001.parquet (what
    the Hub serves); layout="save_to_disk" writes `Dataset.save_to_disk` output.
    """
    root = Path(path)
    if per_row == "sequence":
        features = datasets.Features(
            {
                "frames": datasets.Sequence(datasets.Image()),
                "label": datasets.Value("int64"),
            }
        )
        data = {
            "frames": [
                [{"bytes": _png(f), "path": None} for f in synthetic_frames(r, frames, size)]
                for r in range(rows)
            ],
            "label": list(range(rows)),
        }
    else:
        features = datasets.Features(
            {
                "image": datasets.Image(),
                "episode_index": datasets.Value("int64"),
                "label": datasets.Value("int64"),
            }
        )
        data = {"image": [], "episode_index": [], "label": []}
        for r in range(rows):
            for frame in synthetic_frames(r, frames, size):
                data["image"].append({"bytes": _png(frame), "path": None})
                data["episode_index"].append(r)
                data["label"].append(r % 2)
    dataset = datasets.Dataset.from_dict(data, features=features)
    if layout == "save_to_disk":
        dataset.save_to_disk(str(root))
    else:
        target = root / "data" / "train-00000-of-00001.parquet"
        target.parent.mkdir(parents=True)
        pq.write_table(dataset.with_format("arrow")[:], target)
    return root


def write_sample_dataset(path: Path = SAMPLE_DATASET) -> Path:
    """The small LeRobot v3.0 dataset that ships in examples/sample-dataset."""
    root = make_lerobot_v3(
        path,
        episodes=3,
        frames=(30, 24, 36),
        cameras=("observation.images.top", "observation.images.wrist"),
        codec="libsvtav1",
        size=(96, 128),
        fps=15,
    )
    (root / "README.md").write_text(
        "---\ntags:\n- LeRobot\n- synthetic\ntask_categories:\n- robotics\nconfigs:\n"
        "- config_name: default\n  data_files: data/*/*.parquet\n---\n\n"
        "# Sample dataset\n\nA synthetic LeRobot v3.0 dataset (3 episodes, two AV1 cameras "
        "of 128x96 at 15 fps, moving coloured shapes, float32 state and action), made by "
        "`dev/augment_dev/datasets.py:write_sample_dataset` for the first "
        "`augment run`.\n"
    )
    return root
