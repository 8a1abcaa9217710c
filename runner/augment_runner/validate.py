"""Check a dataset the way LeRobot's loader relies on it; an empty list means valid.

This is our stand-in for LeRobot itself (which would pull in torch). It reads files
directly with pyarrow and PyAV, not through the readers the pipeline uses, so a bug in
those cannot hide itself. Checked, for v3.0 and v2.1:
- info.json: version, required keys, known feature dtypes, totals equal to the files;
- episodes listed 0..N-1, lengths summing to total_frames, tasks that exist;
- data rows: global `index` 0..total-1 in order, each episode's rows contiguous with
  frame_index 0..len-1, timestamp = frame_index / fps, the episode's declared data file
  and dataset_from/to_index (v3), task_index within the tasks, features as columns;
- every video (per episode and camera) decodes to exactly `length` frames at
  from_timestamp + i/fps (within LeRobot's 1e-4 s tolerance), at the declared size
  (with `decode_videos=False`, the frames' timestamps are read from the packets, which
  the decoder would stamp them with, without decoding them: see validate_dataset);
- image cells hold decodable images of the declared size;
- stats: every feature but strings has min/max/mean/std/count per episode and in the
  dataset stats, with camera shapes (3,1,1) and count shape (1,); v3.0 may leave out
  per-episode stats (LeRobot's reader does not use them), and v2.1 episodes agree on
  each statistic's type (LeRobot's converter refuses ints next to floats).
Plain `datasets` folders are checked by loading them and decoding every image.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from augment_runner.formats.base import KNOWN_DTYPES
from augment_runner.video import time_base

TOLERANCE_S = 1e-4  # LeRobot's default tolerance between a query and a frame timestamp
REQUIRED_STATS = ("min", "max", "mean", "std", "count")
MAX_PROBLEMS = 50


class Problems(list):
    """A list of problem lines that stops growing past MAX_PROBLEMS."""

    def add(self, line: str) -> None:
        if len(self) < MAX_PROBLEMS:
            self.append(line)


def validate_dataset(path: Path, *, decode_videos: bool = True) -> list[str]:
    """The problems of the dataset at `path`. `decode_videos=False` checks each video's
    frame timestamps, count and size from its packets instead of decoding every frame:
    what the pipeline uses on the output it has just encoded itself, where decoding it
    all again would cost about a third of the encoding."""
    root = Path(path)
    frame_times = _decoded_times if decode_videos else _packet_times
    info_path = root / "meta/info.json"
    if not info_path.exists():
        saved = any((root / name).exists() for name in ("dataset_info.json", "dataset_dict.json"))
        if saved or list(root.glob("**/*.parquet")):
            return _validate_plain(root)
        return [f"{root}: no meta/info.json and no datasets files; not a dataset"]
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [f"meta/info.json is not valid JSON: {exc}"]
    version = info.get("codebase_version")
    problems = Problems()
    if not _check_info(info, problems):
        return list(problems)
    if version == "v3.0":
        _validate_v3(root, info, problems, frame_times)
    elif version == "v2.1":
        _validate_v21(root, info, problems, frame_times)
    else:
        problems.add(f"meta/info.json: codebase_version {version!r} is neither v3.0 nor v2.1")
    return list(problems)


# ---------------------------------------------------------------- shared checks


def _check_info(info: dict[str, Any], problems: Problems) -> bool:
    for key in (
        "codebase_version",
        "fps",
        "features",
        "total_episodes",
        "total_frames",
        "total_tasks",
        "data_path",
        "splits",
    ):
        if key not in info:
            problems.add(f"meta/info.json lacks {key!r}")
    features = info.get("features")
    if not isinstance(features, dict):
        return False
    for key, ft in features.items():
        if ft.get("dtype") not in KNOWN_DTYPES:
            problems.add(f"feature {key!r}: unknown dtype {ft.get('dtype')!r}")
        if "shape" not in ft:
            problems.add(f"feature {key!r}: no shape")
        if "/" in key:
            problems.add(f"feature {key!r}: names must not contain '/'")
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        if key not in features:
            problems.add(f"meta/info.json: the default feature {key!r} is missing")
    total = info.get("total_episodes")
    if info.get("splits", {}).get("train") not in (None, f"0:{total}"):
        problems.add(
            f"meta/info.json: splits.train is {info['splits']['train']!r}, expected '0:{total}'"
        )
    return not problems


def _camera_keys(features: dict[str, Any], dtype: str) -> list[str]:
    return [k for k, ft in features.items() if ft.get("dtype") == dtype]


def _hw(ft: dict[str, Any]) -> tuple[int, int]:
    shape, names = list(ft["shape"]), list(ft.get("names") or [])
    if names and names[0] in ("channel", "channels"):
        return int(shape[1]), int(shape[2])
    return int(shape[0]), int(shape[1])


def _check_rows(
    table: pa.Table,
    episodes: list[dict[str, Any]],
    info: dict[str, Any],
    n_tasks: int,
    problems: Problems,
    first_index: int = 0,
) -> None:
    """Index, episode, frame and timestamp continuity of data rows in file order."""
    fps = float(info["fps"])
    expected_columns = [k for k, ft in info["features"].items() if ft["dtype"] != "video"]
    missing = [c for c in expected_columns if c not in table.column_names]
    if missing:
        problems.add(f"data lacks feature columns {missing}")
        return
    index = table.column("index").to_numpy()
    if not np.array_equal(index, np.arange(first_index, first_index + len(index))):
        problems.add("data: the global index is not contiguous in file order")
    episode_index = table.column("episode_index").to_numpy()
    frame_index = table.column("frame_index").to_numpy()
    timestamp = table.column("timestamp").to_numpy().astype(np.float64)
    task_index = table.column("task_index").to_numpy()
    position = 0
    for ep in episodes:
        length = int(ep["length"])
        rows = slice(position, position + length)
        if position + length > len(index):
            problems.add(f"episode {ep['episode_index']}: data ends before its {length} frames")
            return
        if not np.all(episode_index[rows] == ep["episode_index"]):
            problems.add(f"episode {ep['episode_index']}: its rows are not contiguous in the data")
        if not np.array_equal(frame_index[rows], np.arange(length)):
            problems.add(f"episode {ep['episode_index']}: frame_index is not 0..{length - 1}")
        if np.abs(timestamp[rows] - np.arange(length) / fps).max(initial=0) > TOLERANCE_S:
            problems.add(f"episode {ep['episode_index']}: timestamps are not frame_index / fps")
        bad_tasks = task_index[rows][(task_index[rows] < 0) | (task_index[rows] >= n_tasks)]
        if len(bad_tasks):
            problems.add(
                f"episode {ep['episode_index']}: task_index {int(bad_tasks[0])} is not a known task"
            )
        position += length
    if position != len(index):
        problems.add(f"data holds {len(index)} rows, the episodes add up to {position}")


def _check_images(table: pa.Table, info: dict[str, Any], problems: Problems) -> None:
    for key in _camera_keys(info["features"], "image"):
        height, width = _hw(info["features"][key])
        for n, cell in enumerate(table.column(key).to_pylist()):
            try:
                with Image.open(io.BytesIO((cell or {}).get("bytes") or b"")) as image:
                    if image.size != (width, height):
                        problems.add(
                            f"{key} row {n}: image is {image.size}, expected {(width, height)}"
                        )
                        break
                    image.verify()
            except (OSError, TypeError, ValueError):
                problems.add(f"{key} row {n}: not a decodable image")
                break


# Timestamps of every frame of a video file, and its (height, width); None (and a
# problem added) when the file cannot be read.
FrameTimes = Callable[[Path, "Problems"], tuple[list[float], tuple[int, int]] | None]


def _decoded_times(path: Path, problems: Problems) -> tuple[list[float], tuple[int, int]] | None:
    """FrameTimes by decoding every frame."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            base = time_base(stream)
            times = [float((frame.pts or 0) * base) for frame in container.decode(stream)]
            return times, (stream.height, stream.width)
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        problems.add(f"{path}: does not decode ({exc})")
        return None


def _packet_times(path: Path, problems: Problems) -> tuple[list[float], tuple[int, int]] | None:
    """FrameTimes from the packets: one frame per packet, stamped with the packet's
    presentation time (sorted, as packets come in decoding order)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            base = time_base(stream)
            stamps = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
            return [float(t * base) for t in stamps], (stream.height, stream.width)
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        problems.add(f"{path}: cannot be read ({exc})")
        return None


def _check_video_segment(
    times: list[float], start: float, length: int, fps: float, where: str, problems: Problems
) -> None:
    expected = start + np.arange(length) / fps
    window = [t for t in times if start - 0.5 / fps <= t < start + (length - 0.5) / fps]
    if len(window) != length:
        problems.add(f"{where}: {len(window)} frames from {start:.4f}s, the episode has {length}")
        return
    worst = float(np.abs(np.asarray(window) - expected).max(initial=0))
    if worst > TOLERANCE_S:
        problems.add(f"{where}: a frame is {worst:.6f}s away from frame_index/fps")


def _check_stats_entry(
    feature: str, ft: dict[str, Any], values: dict[str, Any], where: str, problems: Problems
) -> None:
    missing = [k for k in REQUIRED_STATS if values.get(k) is None]
    if missing:
        problems.add(f"{where}: stats of {feature!r} lack {missing}")
        return
    shapes = {k: np.asarray(v).shape for k, v in values.items() if v is not None}
    if shapes["count"] != (1,):
        problems.add(f"{where}: stats count of {feature!r} has shape {shapes['count']}")
    camera = ft["dtype"] in ("image", "video")
    wanted = {(3, 1, 1), (1, 1, 1)} if camera else {tuple(ft["shape"])}
    for key in ("min", "max", "mean", "std"):
        if shapes[key] not in wanted:
            problems.add(
                f"{where}: stats {key} of {feature!r} has shape {shapes[key]}, "
                f"expected {sorted(wanted)[0]}"
            )
            return
    if ft["dtype"] in ("image", "video"):
        low, high = np.asarray(values["min"]), np.asarray(values["max"])
        if low.min() < -1e-6 or high.max() > 1 + 1e-6:
            problems.add(f"{where}: stats of camera {feature!r} are not within 0..1")


def _check_stats(
    stats: dict[str, Any], features: dict[str, Any], where: str, problems: Problems
) -> None:
    for feature, ft in features.items():
        if ft["dtype"] in ("string", "language"):
            continue
        if feature not in stats:
            problems.add(f"{where}: no stats for {feature!r}")
            continue
        _check_stats_entry(feature, ft, stats[feature], where, problems)


def _check_stat_types(per_episode: Iterable[dict[str, Any]], problems: Problems) -> None:
    """Each statistic has one type (bool, int or float) across the episodes."""
    kinds: dict[tuple[str, str], set[str]] = {}
    for stats in per_episode:
        for feature, values in stats.items():
            for stat, value in (values or {}).items():
                if value is not None:
                    kinds.setdefault((feature, stat), set()).add(np.asarray(value).dtype.kind)
    for (feature, stat), found in sorted(kinds.items()):
        if len(found) > 1:
            problems.add(
                f"episodes_stats.jsonl: stats {stat} of {feature!r} mix types "
                f"{sorted(found)} across episodes"
            )


def _read_tables(paths: Iterable[Path], problems: Problems) -> pa.Table | None:
    tables = []
    schema = None
    for path in paths:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            problems.add(f"{path}: unreadable parquet ({exc})")
            return None
        if schema is None:
            schema = table.schema
        elif not table.schema.equals(schema, check_metadata=False):
            problems.add(f"{path}: its schema differs from the other files")
            return None
        tables.append(table)
    return pa.concat_tables(tables) if tables else None


# ---------------------------------------------------------------- v3.0


def _validate_v3(
    root: Path, info: dict[str, Any], problems: Problems, frame_times: FrameTimes
) -> None:
    features, fps = info["features"], float(info["fps"])
    for key in ("chunks_size", "data_files_size_in_mb", "video_files_size_in_mb"):
        if key not in info:
            problems.add(f"meta/info.json lacks {key!r}")
    episodes_table = _read_tables(sorted((root / "meta/episodes").glob("*/*.parquet")), problems)
    if episodes_table is None:
        problems.add("meta/episodes has no readable parquet files")
        return
    rows = episodes_table.to_pylist()
    if [r.get("episode_index") for r in rows] != list(range(len(rows))):
        problems.add("meta/episodes: episode_index is not 0..N-1 in file order")
        return
    if len(rows) != info["total_episodes"]:
        problems.add(
            f"info.total_episodes is {info['total_episodes']}, meta/episodes has {len(rows)}"
        )
    if sum(r["length"] for r in rows) != info["total_frames"]:
        problems.add(
            f"info.total_frames is {info['total_frames']}, episode lengths sum to "
            f"{sum(r['length'] for r in rows)}"
        )
    try:
        tasks = pq.read_table(root / "meta/tasks.parquet").to_pylist()
    except (OSError, pa.ArrowException) as exc:
        problems.add(f"meta/tasks.parquet: unreadable ({exc})")
        return
    task_names = {t.get("task", t.get("__index_level_0__")): t["task_index"] for t in tasks}
    if sorted(task_names.values()) != list(range(len(tasks))):
        problems.add("meta/tasks.parquet: task_index is not 0..T-1")
    if len(tasks) != info["total_tasks"]:
        problems.add(
            f"info.total_tasks is {info['total_tasks']}, meta/tasks.parquet has {len(tasks)}"
        )
    _check_v3_offsets(rows, task_names, problems)
    _check_v3_data(root, info, rows, len(tasks), problems)
    for key in _camera_keys(features, "video"):
        _check_v3_videos(root, info, rows, key, fps, problems, frame_times)
    # Per-episode stats are optional in v3.0, but a feature that has them has them whole.
    with_columns = {
        c[len("stats/") :].rpartition("/")[0] for c in episodes_table.column_names
        if c.startswith("stats/")
    }
    kept = {key: ft for key, ft in features.items() if key in with_columns}
    for n, row in enumerate(rows):
        per_episode: dict[str, dict[str, Any]] = {}
        for column, value in row.items():
            if column.startswith("stats/"):
                feature, _, stat = column[len("stats/") :].rpartition("/")
                per_episode.setdefault(feature, {})[stat] = value
        _check_stats(per_episode, kept, f"meta/episodes episode {n}", problems)
    _check_dataset_stats(root, features, problems)


def _check_v3_offsets(
    rows: list[dict[str, Any]], task_names: dict[str, int], problems: Problems
) -> None:
    position = 0
    for row in rows:
        n = row["episode_index"]
        if row.get("dataset_from_index") != position:
            problems.add(
                f"episode {n}: dataset_from_index {row.get('dataset_from_index')}, "
                f"expected {position}"
            )
        position += row["length"]
        if row.get("dataset_to_index") != position:
            problems.add(
                f"episode {n}: dataset_to_index {row.get('dataset_to_index')}, expected {position}"
            )
        unknown = [t for t in row.get("tasks") or [] if t not in task_names]
        if unknown or not row.get("tasks"):
            problems.add(f"episode {n}: tasks {row.get('tasks')} are not in meta/tasks.parquet")


def _check_v3_data(
    root: Path, info: dict[str, Any], rows: list[dict[str, Any]], n_tasks: int, problems: Problems
) -> None:
    files = sorted((root / "data").glob("*/*.parquet"))
    table = _read_tables(files, problems)
    if table is None:
        problems.add("data/ has no readable parquet files")
        return
    if table.num_rows != info["total_frames"]:
        problems.add(
            f"data holds {table.num_rows} rows, info.total_frames is {info['total_frames']}"
        )
    _check_rows(table, rows, info, n_tasks, problems)
    _check_images(table, info, problems)
    for row in rows:
        path = root / info["data_path"].format(
            chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
        )
        if not path.exists():
            problems.add(f"episode {row['episode_index']}: its data file {path} is missing")
            continue
        indices = pq.read_table(path, columns=["index", "episode_index"])
        mine = pc.filter(
            indices.column("index"), pc.equal(indices.column("episode_index"), row["episode_index"])
        )
        expected = np.arange(row["dataset_from_index"], row["dataset_to_index"])
        if not np.array_equal(mine.to_numpy(), expected):
            problems.add(
                f"episode {row['episode_index']}: {path.name} does not hold its "
                f"rows {row['dataset_from_index']}..{row['dataset_to_index'] - 1}"
            )


def _check_v3_videos(
    root: Path,
    info: dict[str, Any],
    rows: list[dict[str, Any]],
    key: str,
    fps: float,
    problems: Problems,
    frame_times: FrameTimes,
) -> None:
    template = info.get("video_path")
    if not template:
        problems.add("meta/info.json: video features but no video_path")
        return
    decoded: dict[Path, tuple[list[float], tuple[int, int]] | None] = {}
    height, width = _hw(info["features"][key])
    for row in rows:
        where = f"episode {row['episode_index']} {key}"
        try:
            path = root / template.format(
                video_key=key,
                chunk_index=row[f"videos/{key}/chunk_index"],
                file_index=row[f"videos/{key}/file_index"],
            )
            start, end = row[f"videos/{key}/from_timestamp"], row[f"videos/{key}/to_timestamp"]
        except (KeyError, TypeError):
            problems.add(f"{where}: meta/episodes has no video offsets")
            continue
        if not path.exists():
            problems.add(f"{where}: {path} is missing")
            continue
        if path not in decoded:
            decoded[path] = frame_times(path, problems)
        found = decoded[path]
        if found is None:
            continue
        times, size = found
        if size != (height, width):
            problems.add(
                f"{where}: video is {size[1]}x{size[0]}, the feature says {width}x{height}"
            )
        if abs((end - start) - row["length"] / fps) > TOLERANCE_S + 0.5 / fps:
            problems.add(
                f"{where}: to_timestamp - from_timestamp is {end - start:.4f}s for "
                f"{row['length']} frames"
            )
        _check_video_segment(times, start, row["length"], fps, where, problems)


def _check_dataset_stats(root: Path, features: dict[str, Any], problems: Problems) -> None:
    path = root / "meta/stats.json"
    if not path.exists():
        problems.add("meta/stats.json is missing")
        return
    try:
        stats = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        problems.add(f"meta/stats.json is not valid JSON: {exc}")
        return
    _check_stats(stats, features, "meta/stats.json", problems)


# ---------------------------------------------------------------- v2.1


def _jsonl(path: Path, problems: Problems) -> list[dict[str, Any]] | None:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        problems.add(f"{path.relative_to(path.parents[1])}: unreadable ({exc})")
        return None


def _validate_v21(
    root: Path, info: dict[str, Any], problems: Problems, frame_times: FrameTimes
) -> None:
    features, fps = info["features"], float(info["fps"])
    chunks_size = int(info.get("chunks_size", 1000))
    episodes = _jsonl(root / "meta/episodes.jsonl", problems)
    tasks = _jsonl(root / "meta/tasks.jsonl", problems)
    stats_rows = _jsonl(root / "meta/episodes_stats.jsonl", problems)
    if episodes is None or tasks is None or stats_rows is None:
        return
    if [e.get("episode_index") for e in episodes] != list(range(len(episodes))):
        problems.add("meta/episodes.jsonl: episode_index is not 0..N-1 in order")
        return
    if len(episodes) != info["total_episodes"]:
        problems.add(
            f"info.total_episodes is {info['total_episodes']}, episodes.jsonl has {len(episodes)}"
        )
    if sum(e["length"] for e in episodes) != info["total_frames"]:
        problems.add("info.total_frames differs from the sum of episode lengths")
    task_names = {t["task"]: t["task_index"] for t in tasks}
    if sorted(task_names.values()) != list(range(len(tasks))) or len(tasks) != info["total_tasks"]:
        problems.add("meta/tasks.jsonl: task_index is not 0..T-1 or total_tasks disagrees")
    video_keys = _camera_keys(features, "video")
    if "total_videos" in info and info["total_videos"] != len(episodes) * len(video_keys):
        problems.add(
            f"info.total_videos is {info['total_videos']}, expected "
            f"{len(episodes) * len(video_keys)}"
        )
    if "total_chunks" in info and info["total_chunks"] != -(-len(episodes) // chunks_size):
        problems.add(f"info.total_chunks is {info['total_chunks']}")
    first_index = 0
    for ep in episodes:
        n = ep["episode_index"]
        chunk = n // chunks_size
        if not ep.get("tasks") or any(t not in task_names for t in ep["tasks"]):
            problems.add(f"episode {n}: tasks {ep.get('tasks')} are not in tasks.jsonl")
        path = root / info["data_path"].format(episode_chunk=chunk, episode_index=n)
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            problems.add(f"episode {n}: data file unreadable ({exc})")
            continue
        _check_rows(table, [ep], info, len(tasks), problems, first_index)
        _check_images(table, info, problems)
        first_index += ep["length"]
        for key in video_keys:
            video = root / info["video_path"].format(
                episode_chunk=chunk, video_key=key, episode_index=n
            )
            if not video.exists():
                problems.add(f"episode {n} {key}: {video} is missing")
                continue
            decoded = frame_times(video, problems)
            if decoded is not None:
                _check_video_segment(
                    decoded[0], 0.0, ep["length"], fps, f"episode {n} {key}", problems
                )
    by_episode = {r.get("episode_index"): r.get("stats", {}) for r in stats_rows}
    _check_stat_types(by_episode.values(), problems)
    for ep in episodes:
        if ep["episode_index"] not in by_episode:
            problems.add(f"episodes_stats.jsonl: no entry for episode {ep['episode_index']}")
            continue
        _check_stats(
            by_episode[ep["episode_index"]],
            features,
            f"episodes_stats.jsonl episode {ep['episode_index']}",
            problems,
        )
    if (root / "meta/stats.json").exists():
        _check_dataset_stats(root, features, problems)


# ---------------------------------------------------------------- plain datasets


def _validate_plain(root: Path) -> list[str]:
    import datasets

    problems = Problems()
    try:
        if (root / "dataset_info.json").exists() or (root / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(root))
        else:
            # In memory: the `datasets` parquet builder would write a cache under ~/.cache.
            files = sorted(root.glob("data/*.parquet")) or sorted(root.glob("**/*.parquet"))
            table = pa.concat_tables([pq.read_table(f) for f in files])
            loaded = datasets.Dataset(datasets.table.InMemoryTable(table))
    except Exception as exc:  # any loader failure is the finding we report
        return [f"datasets cannot load {root}: {exc}"]
    splits = loaded.values() if isinstance(loaded, datasets.DatasetDict) else [loaded]
    for split in splits:
        image_columns = [k for k, f in split.features.items() if _has_image(f)]
        if not image_columns:
            problems.add("no Image column")
        for row in split.select_columns(image_columns):
            for key in image_columns:
                cells = row[key] if isinstance(row[key], list) else [row[key]]
                for cell in cells:
                    try:
                        cell.load()
                    except Exception:  # PIL raises many kinds
                        problems.add(f"{key}: an image does not decode")
    return list(problems)


def _has_image(feature: Any) -> bool:
    import datasets

    if isinstance(feature, datasets.Image):
        return True
    inner = getattr(feature, "feature", None)
    return inner is not None and _has_image(inner)
