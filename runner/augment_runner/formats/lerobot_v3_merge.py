"""LeRobot v3.0 shards merged into one dataset (augment_runner/merge.py).

Each shard (LeRobotV3Writer with a shard) holds the source files its episodes live in,
the metadata outside data/ and videos/, its new data and video files (listed in its
manifest as [slot, chunk, file]) and one meta/episodes file of its new episodes. Their
rows already carry the whole output's episode and frame indices, and every video
offset is within its own file, so:

- source files are united (a file two shards both copied is the same file);
- new files are renamed to the next free (chunk, file) in the unsplit writer's order:
  slot by slot, and within a slot shard by shard;
- meta/episodes rows get the new file indices, and are written as one file after the
  originals', as the unsplit writer does;
- meta/info.json is any shard's (each wrote the whole output's totals); meta/stats.json
  aggregates the same per-episode statistics, in the same order, as the unsplit writer.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .. import stats as stats_mod
from ..errors import AugmentError
from ..provenance import CARD_PATH, PREVIEW_PATH, PROVENANCE_PATH
from ..shards import SHARD_MANIFEST, ShardFolder
from .base import load_json, write_json
from .lerobot_v3 import DEFAULT_VIDEO_PATH, EPISODES_PATH, last_file, next_file

# Written by the merge from all shards, never copied from one.
MERGED_FILES = frozenset(
    {"meta/info.json", "meta/stats.json", PROVENANCE_PATH, CARD_PATH, PREVIEW_PATH, SHARD_MANIFEST}
)
# (shard position, chunk, file) in a shard -> (chunk, file) in the output
FileMap = dict[tuple[int, int, int], tuple[int, int]]


class _Layout:
    """The dataset's path templates and chunk size (the same in every shard)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.chunks_size = int(info.get("chunks_size", 1000))
        self.video_path = info.get("video_path") or DEFAULT_VIDEO_PATH

    def data(self, chunk: int, file: int) -> str:
        return str(self.info["data_path"].format(chunk_index=chunk, file_index=file))

    def video(self, camera: str) -> Callable[[int, int], str]:
        return lambda chunk, file: self.video_path.format(
            video_key=camera, chunk_index=chunk, file_index=file
        )


def merge_v3(shards: Sequence[ShardFolder], output: Path) -> None:
    info = load_json(shards[0].root / "meta/info.json", "a shard's meta/info.json")
    layout = _Layout(info)
    _copy_source_files(shards, output, layout)
    data_map = _place(shards, output, layout, _listed("data"), layout.data, "data/*/*.parquet")
    cameras = sorted({camera for s in shards for camera in s.manifest.parts.files["videos"]})
    video_maps = {
        camera: _place(shards, output, layout, _listed("videos", camera), layout.video(camera),
                       f"videos/{camera}/*/*.mp4")
        for camera in cameras
    }
    _write_episodes(shards, output, layout, data_map, video_maps)
    write_json(output / "meta/info.json", info)
    parts = [s.manifest.parts for s in shards]
    originals = [stats for p in parts for stats in p.original_stats]
    every = originals + [stats for p in parts for stats in p.episode_stats]
    write_json(output / "meta/stats.json", stats_mod.to_json(stats_mod.aggregate(every)))


def _listed(kind: str, camera: str | None = None) -> Callable[[dict[str, Any]], list[list[int]]]:
    """Reads one kind of new file, [slot, chunk, file] each, from a manifest's files."""

    def listed(files: dict[str, Any]) -> list[list[int]]:
        return list(files[kind] if camera is None else files[kind].get(camera, []))

    return listed


def _new_files(shard: ShardFolder, layout: _Layout) -> set[str]:
    """The files the shard made (all others it holds are copies of source files)."""
    files = shard.manifest.parts.files
    made = {layout.data(c, f) for _, c, f in files["data"]}
    for camera, placed in files["videos"].items():
        made |= {layout.video(camera)(c, f) for _, c, f in placed}
    if files["episodes"] is not None:
        made.add(EPISODES_PATH.format(chunk_index=files["episodes"][0],
                                      file_index=files["episodes"][1]))
    return made


def _copy_source_files(shards: Sequence[ShardFolder], output: Path, layout: _Layout) -> None:
    for shard in shards:
        skip = MERGED_FILES | _new_files(shard, layout)
        for path in sorted(shard.root.rglob("*")):
            relative = path.relative_to(shard.root)
            if not path.is_file() or relative.as_posix() in skip:
                continue
            if any(part.startswith(".") for part in relative.parts):
                continue  # hub caches
            target = output / relative
            if target.exists():
                if target.stat().st_size != path.stat().st_size:
                    raise AugmentError(
                        f"the shards hold different copies of the source file {relative}; "
                        f"they were made from different sources: make them again"
                    )
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def _place(
    shards: Sequence[ShardFolder],
    output: Path,
    layout: _Layout,
    listed: Callable[[dict[str, Any]], list[list[int]]],
    path_of: Callable[[int, int], str],
    pattern: str,
) -> FileMap:
    """Copy the shards' new files of one kind into place, after the source files
    already there, in the unsplit writer's order; where each went."""
    last = last_file(output, pattern)
    placed: FileMap = {}
    slots = sorted({slot for s in shards for slot, _, _ in listed(s.manifest.parts.files)})
    for slot in slots:
        for position, shard in enumerate(shards):
            for own_slot, chunk, file in listed(shard.manifest.parts.files):
                if own_slot != slot:
                    continue
                last = (0, 0) if last is None else next_file(*last, layout.chunks_size)
                placed[(position, chunk, file)] = last
                target = output / path_of(*last)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shard.root / path_of(chunk, file), target)
    return placed


def _write_episodes(
    shards: Sequence[ShardFolder],
    output: Path,
    layout: _Layout,
    data_map: FileMap,
    video_maps: dict[str, FileMap],
) -> None:
    rows: list[dict[str, Any]] = []
    schema: pa.Schema | None = None
    for position, shard in enumerate(shards):
        where = shard.manifest.parts.files["episodes"]
        if where is None:
            continue  # a shard without episodes
        path = shard.root / EPISODES_PATH.format(chunk_index=where[0], file_index=where[1])
        table = pq.read_table(path)
        schema = schema or table.schema
        own_cameras = shard.manifest.parts.files["videos"]
        for row in table.to_pylist():
            _renumber(row, "data", data_map, position)
            for camera in own_cameras:
                _renumber(row, f"videos/{camera}", video_maps[camera], position)
            rows.append(row)
    if schema is None:
        raise AugmentError("no shard holds an episode; merge the shards of a dataset")
    rows.sort(key=lambda row: row["episode_index"])
    last = last_file(output, "meta/episodes/*/*.parquet")
    chunk, file = (0, 0) if last is None else next_file(*last, layout.chunks_size)
    for row in rows:
        if "meta/episodes/chunk_index" in row:
            row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = chunk, file
    path = output / EPISODES_PATH.format(chunk_index=chunk, file_index=file)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="snappy")


def _renumber(row: dict[str, Any], prefix: str, placed: FileMap, position: int) -> None:
    key = (position, row[f"{prefix}/chunk_index"], row[f"{prefix}/file_index"])
    row[f"{prefix}/chunk_index"], row[f"{prefix}/file_index"] = placed[key]
