"""Write a small dataset with LeRobot's own writer, in one of a few named shapes.

Runs inside a judge virtualenv (LeRobot + torch), never in the project's: LeRobot 0.4.4
writes v3.0, LeRobot 0.3.3 writes v2.1 (its API differs where noted; it always encodes
AV1, and has no file size or chunk settings). The shapes are the ones public datasets
come in (docs/design.md, Testing): datasets we did not write ourselves, so the runner is
tested against what LeRobot really produces.
Usage: python lerobot_write.py SHAPE DATASET_FOLDER [SHAPE DATASET_FOLDER ...]
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset
from PIL import Image

HEIGHT, WIDTH = 32, 48
V21 = CODEBASE_VERSION == "v2.1"  # LeRobot 0.3


@dataclass(frozen=True)
class Shape:
    """What one corpus dataset holds: its cameras, extra features and file layout."""

    videos: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    grey_images: tuple[str, ...] = ()
    size: tuple[int, int] = (HEIGHT, WIDTH)
    fps: int = 30
    vcodec: str = "h264"
    episodes: tuple[int, ...] = (6, 8)
    extras: bool = False  # bool, int and float features incl. next.done / next.reward
    strings: bool = False  # a per-frame string feature
    language: bool = False  # language columns and tools, added as newer LeRobot adds them
    per_frame_tasks: bool = False
    chunking: dict[str, float] = field(default_factory=dict)
    sessions: int = 1  # >1: the writer is closed and the dataset reopened to add episodes


SHAPES: dict[str, Shape] = {
    "two_videos": Shape(videos=("observation.images.top", "observation.images.wrist")),
    "image_cameras": Shape(images=("observation.images.top", "observation.images.side")),
    "odd_size": Shape(videos=("observation.images.top",), images=("observation.images.side",),
                      size=(50, 66)),
    "numeric": Shape(videos=("observation.images.top",), extras=True),
    "per_frame_tasks": Shape(images=("observation.images.top",), per_frame_tasks=True),
    "rollover": Shape(videos=("observation.images.top",), episodes=(5, 6, 7),
                      chunking={"chunks_size": 2, "data_files_size_in_mb": 0.001,
                                "video_files_size_in_mb": 0.001}),
    "grey_image": Shape(videos=("observation.images.top",),
                        grey_images=("observation.images.depth",)),
    "h264_15fps": Shape(videos=("observation.images.top",), fps=15),
    # x265 (in PyAV's wheel) corrupts its heap on frames as small as 32x48: 64x64 it is.
    # LeRobot 0.4.4's reader cannot read this, its own HEVC: see the corpus test's HEVC.
    "hevc_30fps": Shape(videos=("observation.images.top",), size=(64, 64), vcodec="hevc"),
    "hevc_15fps": Shape(videos=("observation.images.top",), size=(64, 64), fps=15,
                        vcodec="hevc"),
    "two_sessions": Shape(videos=("observation.images.top",), episodes=(5, 6, 7), sessions=2,
                          extras=True),
    "mixed_extras": Shape(videos=("observation.images.top",), images=("observation.images.wrist",),
                          extras=True, strings=True),
    # LeRobot 0.4.4 has no language columns: its writer cannot write them, its reader
    # cannot load them; see annotate().
    "language": Shape(videos=("observation.images.top",), images=("observation.images.wrist",),
                      extras=True, strings=True, language=True),
}


def features(shape: Shape) -> dict[str, dict[str, Any]]:
    height, width = shape.size
    names = ["height", "width", "channels"]
    out: dict[str, dict[str, Any]] = {
        "observation.state": {"dtype": "float32", "shape": (4,), "names": None},
        "action": {"dtype": "float32", "shape": (4,), "names": None},
    }
    for key in shape.videos:
        out[key] = {"dtype": "video", "shape": (height, width, 3), "names": names}
    for key in shape.images:
        out[key] = {"dtype": "image", "shape": (height, width, 3), "names": names}
    for key in shape.grey_images:
        out[key] = {"dtype": "image", "shape": (height, width, 1), "names": names}
    if shape.extras:
        out.update({
            "next.done": {"dtype": "bool", "shape": (1,), "names": None},
            "next.success": {"dtype": "bool", "shape": (1,), "names": None},
            "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
            "observation.gripper_state": {"dtype": "int64", "shape": (1,), "names": None},
            "observation.contacts": {"dtype": "int32", "shape": (2,), "names": None},
            "observation.effort": {"dtype": "float64", "shape": (3,), "names": None},
        })
    if shape.strings:
        out["observation.note"] = {"dtype": "string", "shape": (1,), "names": None}
    return out


def picture(
    rng: np.random.Generator, size: tuple[int, int], episode: int, frame: int
) -> np.ndarray:
    """A smooth, moving gradient plus noise: something a video codec keeps recognisable."""
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([
        (xs * 4 + frame * 3 + episode * 40) % 200,
        (ys * 5 + frame * 2) % 200,
        np.full_like(xs, 60 + 10 * episode),
    ], axis=-1)
    return (base + rng.integers(0, 30, base.shape) + 20).astype(np.uint8)


def frame_of(shape: Shape, rng: np.random.Generator, episode: int, frame: int,
             length: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "observation.state": rng.normal(size=4).astype(np.float32),
        "action": rng.normal(size=4).astype(np.float32),
        "task": f"task {episode % 2}" + (f" step {frame % 3}" if shape.per_frame_tasks else ""),
    }
    for key in (*shape.videos, *shape.images):
        row[key] = picture(rng, shape.size, episode, frame)
    for key in shape.grey_images:
        grey = picture(rng, shape.size, episode, frame)[..., 0]
        row[key] = Image.fromarray(grey, mode="L")
    if shape.extras:
        last = frame == length - 1
        row.update({
            "next.done": np.array([last]),
            "next.success": np.array([last and episode % 2 == 0]),
            "next.reward": np.array([1.0 if last else 0.0], dtype=np.float32),
            "observation.gripper_state": np.array([frame % 3], dtype=np.int64),
            "observation.contacts": np.array([frame, -frame], dtype=np.int32),
            "observation.effort": rng.normal(size=3),
        })
    if shape.strings:
        row["observation.note"] = f"episode {episode} frame {frame}" + " ok" * (frame % 2)
    return row


def record(dataset: LeRobotDataset, shape: Shape, episodes: range) -> None:
    rng = np.random.default_rng(7)
    for episode in episodes:
        length = shape.episodes[episode]
        for frame in range(length):
            row = frame_of(shape, rng, episode, frame, length)
            if V21:  # LeRobot 0.3 takes the task beside the frame
                dataset.add_frame(row, task=row.pop("task"))
            else:
                dataset.add_frame(row)
        if V21:
            dataset.save_episode()
        else:
            dataset.save_episode(parallel_encoding=False)  # no process pool: 2 shared cores
    if not V21:  # LeRobot 0.3 writes each episode's metadata as it saves it
        dataset.finalize()


def write(name: str, root: Path) -> None:
    shape = SHAPES[name]
    codec = {} if V21 else {"vcodec": shape.vcodec}
    dataset = LeRobotDataset.create(
        repo_id=f"corpus/{name}", fps=shape.fps, features=features(shape), root=root,
        robot_type="corpus", use_videos=bool(shape.videos), **codec,
    )
    if shape.chunking:
        dataset.meta.update_chunk_settings(**shape.chunking)
    first = len(shape.episodes) if shape.sessions == 1 else len(shape.episodes) - 1
    record(dataset, shape, range(first))
    if shape.sessions > 1:  # a second recording session appends to the closed dataset
        resumed = LeRobotDataset(repo_id=f"corpus/{name}", root=root, **codec)
        record(resumed, shape, range(first, len(shape.episodes)))
    if shape.language:
        annotate(root)


# ---------------------------------------------------------------- language columns
# Newer LeRobot releases (after 0.4.4) annotate a recorded v3.0 dataset afterwards: each
# data file is rewritten with two more columns, one row group per episode, and
# meta/info.json declares them as features of dtype "language" and lists the tools the
# annotations call. `language_persistent`: on every frame, the episode's list of
# {role, content, style, timestamp, camera, tool_calls}; `language_events`: on the frame
# an event happened, its {role, content, style, camera, tool_calls} (no timestamp), else
# an empty list. This reproduces that layout.

SPEAK_TOOL = {
    "type": "function",
    "function": {
        "name": "say",
        "description": "Say a sentence aloud.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string", "description": "What to say."}},
            "required": ["text"],
        },
    },
}


def persistent_rows(episode: int) -> list[dict[str, Any]]:
    return [
        {"role": "assistant", "content": f"plan of episode {episode}", "style": "plan",
         "timestamp": 0.0, "camera": None, "tool_calls": None},
        {"role": "assistant", "content": "reach the cube", "style": "subtask",
         "timestamp": 0.1, "camera": None, "tool_calls": None},
    ]


def event_rows(episode: int, frame: int) -> list[dict[str, Any]]:
    """Events on a few frames: a spoken line (a tool call) and a camera-bound question."""
    if frame == 1:
        call = {"type": "function",
                "function": {"name": "say", "arguments": {"text": f"starting {episode}"}}}
        return [{"role": "assistant", "content": None, "style": None, "camera": None,
                 "tool_calls": [call]}]
    if frame == 3:
        return [
            {"role": "user", "content": "where is the cube?", "style": "vqa",
             "camera": "observation.images.top", "tool_calls": None},
            {"role": "assistant", "content": "on the left", "style": "vqa",
             "camera": "observation.images.top", "tool_calls": None},
        ]
    return []


def annotate(root: Path) -> None:
    for path in sorted(root.glob("data/*/*.parquet")):
        table = pq.read_table(path)
        episodes = table.column("episode_index").to_pylist()
        frames = table.column("frame_index").to_pylist()
        table = table.append_column(
            "language_persistent", pa.array([persistent_rows(e) for e in episodes]))
        table = table.append_column(
            "language_events",
            pa.array([event_rows(e, f) for e, f in zip(episodes, frames, strict=True)]))
        with pq.ParquetWriter(path, table.schema) as writer:
            for episode in dict.fromkeys(episodes):
                rows = [i for i, e in enumerate(episodes) if e == episode]
                writer.write_table(table.slice(rows[0], len(rows)))
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    for column in ("language_persistent", "language_events"):
        info["features"][column] = {"dtype": "language", "shape": [1], "names": None}
    info["tools"] = [SPEAK_TOOL]
    info_path.write_text(json.dumps(info, indent=4))


if __name__ == "__main__":
    pairs = sys.argv[1:]
    for name, folder in zip(pairs[::2], pairs[1::2], strict=True):
        write(name, Path(folder))
