"""LeRobot v3.0 shards merged into one dataset (augment_runner/merge.py).

Each shard (LeRobotV3Writer with a shard) holds the source files its episodes live in,
the metadata outside data/ and videos/, its new data and video files (listed in its
manifest as [slot, chunk, file]) and one meta/episodes file of its new episodes. Their
rows already carry the whole output's episode and frame indices, so:

- source files are united (a file two shards both copied is the same file);
- new files are joined as one run fills them: per slot (and camera), the shards' new
  episodes in order go through the writer's own DataSeries and VideoSeries, which roll
  over to the next free (chunk, file) at the very episodes the unsplit writer does
  (from the sizes each shard's manifest recorded for its episodes). Rows keep their
  schema and row groups; video packets are copied with shifted timestamps, never
  decoded;
- meta/episodes rows get the new file indices and video offsets, and are written as one
  file after the originals', as the unsplit writer does;
- meta/info.json is any shard's (each wrote the whole output's totals); meta/stats.json
  aggregates the same per-episode statistics, in the same order, as the unsplit writer.

So the merged output is laid out file for file as one run's.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import stats as stats_mod
from ..errors import AugmentError
from ..provenance import CARD_PATH, PREVIEW_PATH, PROVENANCE_PATH
from ..shards import SHARD_MANIFEST, ShardFolder
from ..video import episode_packets
from .base import load_json, write_json
from .lerobot_v3 import (
    DEFAULT_VIDEO_PATH,
    EPISODES_PATH,
    DataSeries,
    FileLimits,
    VideoSeries,
    last_file,
    next_file,
)

# Written by the merge from all shards, never copied from one.
MERGED_FILES = frozenset(
    {"meta/info.json", "meta/stats.json", PROVENANCE_PATH, CARD_PATH, PREVIEW_PATH, SHARD_MANIFEST}
)
# Per new episode, the columns of its meta/episodes row saying where its rows and frames are.
Locations = dict[int, dict[str, Any]]


class _Layout:
    """The dataset's path templates and file limits (the same in every shard)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info
        self.limits = FileLimits.of(info)
        self.video_path = info.get("video_path") or DEFAULT_VIDEO_PATH

    def data(self, chunk: int, file: int) -> str:
        return str(self.info["data_path"].format(chunk_index=chunk, file_index=file))

    def video(self, camera: str) -> Callable[[int, int], str]:
        return lambda chunk, file: self.video_path.format(
            video_key=camera, chunk_index=chunk, file_index=file
        )


@dataclass
class _Shard:
    """A shard with the rows of its new episodes (its meta/episodes file)."""

    folder: ShardFolder
    rows: list[dict[str, Any]]
    schema: pa.Schema | None

    @property
    def files(self) -> dict[str, Any]:
        return self.folder.manifest.parts.files

    def new_files(self, kind: str, slot: int, camera: str | None = None) -> list[tuple[int, int]]:
        """The (chunk, file) of its new data files (or `camera`'s videos) of `slot`, in
        the order the slot filled them."""
        listed = self.files[kind] if camera is None else self.files[kind].get(camera, [])
        return [(chunk, file) for own, chunk, file in listed if own == slot]


def merge_v3(shards: Sequence[ShardFolder], output: Path) -> None:
    info = load_json(shards[0].root / "meta/info.json", "a shard's meta/info.json")
    layout = _Layout(info)
    _copy_source_files(shards, output, layout)
    read = [_read_rows(shard) for shard in shards]
    locations: Locations = {row["episode_index"]: {} for s in read for row in s.rows}
    _join_data(read, output, layout, locations)
    for camera in sorted({camera for s in shards for camera in s.manifest.parts.files["videos"]}):
        _join_videos(read, camera, output, layout, locations)
    _write_episodes(read, output, layout, locations)
    write_json(output / "meta/info.json", info)
    parts = [s.manifest.parts for s in shards]
    originals = [stats for p in parts for stats in p.original_stats]
    every = originals + [stats for p in parts for stats in p.episode_stats]
    write_json(output / "meta/stats.json", stats_mod.to_json(stats_mod.aggregate(every)))


def _read_rows(shard: ShardFolder) -> _Shard:
    where = shard.manifest.parts.files["episodes"]
    if where is None:
        return _Shard(shard, [], None)  # a shard without episodes
    table = pq.read_table(
        shard.root / EPISODES_PATH.format(chunk_index=where[0], file_index=where[1])
    )
    return _Shard(shard, table.to_pylist(), table.schema)


class _NextFiles:
    """The (chunk, file) indices new files take, in turn, after the source's files of
    one kind already in the output: the unsplit writer's numbering."""

    def __init__(self, output: Path, pattern: str, chunks_size: int) -> None:
        self.last = last_file(output, pattern)
        self.chunks_size = chunks_size
        self.index: dict[Path, tuple[int, int]] = {}  # of each file made

    def path(self, output: Path, path_of: Callable[[int, int], str]) -> Callable[[int], Path]:
        """A series' `new_path`: the file after the last one taken."""

        def new_path(_n: int) -> Path:
            self.last = (0, 0) if self.last is None else next_file(*self.last, self.chunks_size)
            target = output / path_of(*self.last)
            self.index[target] = self.last
            target.parent.mkdir(parents=True, exist_ok=True)
            return target

        return new_path


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


def _join_data(shards: Sequence[_Shard], output: Path, layout: _Layout,
               locations: Locations) -> None:
    """Each slot's new rows, shard after shard, into data files filled as one run fills
    them; each episode's row groups are copied as they are."""
    sizes = {int(i): (int(first), int(size)) for s in shards for i, first, size in
             s.files["data_bytes"]}
    taken = _NextFiles(output, "data/*/*.parquet", layout.limits.chunks_size)
    new_path = taken.path(output, layout.data)
    for slot in sorted({slot for s in shards for slot, _, _ in s.files["data"]}):
        series: DataSeries | None = None
        for shard in shards:
            for chunk, file in shard.new_files("data", slot):
                parquet = pq.ParquetFile(shard.folder.root / layout.data(chunk, file))
                if series is None:
                    series = DataSeries(parquet.schema_arrow, layout.limits.data_bytes, new_path)
                for episode, tables in _episode_row_groups(parquet):
                    first, size = sizes[episode]
                    n = series.begin_episode(first)
                    for table in tables:
                        series.write(table)
                    series.count(size)  # what the writer counted for these rows
                    chunk_file = taken.index[series.files[n]]
                    locations[episode].update(
                        {"data/chunk_index": chunk_file[0], "data/file_index": chunk_file[1]}
                    )
        if series is not None:
            series.close()


def _episode_row_groups(parquet: pq.ParquetFile) -> Iterator[tuple[int, Iterator[pa.Table]]]:
    """The file's row groups, episode by episode (the writer never puts two episodes'
    rows in one row group)."""
    tables = (parquet.read_row_group(i) for i in range(parquet.num_row_groups))
    return itertools.groupby(tables, key=_episode_of)


def _episode_of(table: pa.Table) -> int:
    low, high = pc.min_max(table.column("episode_index")).values()
    if low != high:
        raise AugmentError("a shard's data file mixes two episodes in one row group; "
                           "make the shard again")
    return int(low.as_py())


def _join_videos(shards: Sequence[_Shard], camera: str, output: Path, layout: _Layout,
                 locations: Locations) -> None:
    """Each slot's new episodes of `camera`, shard after shard, into video files filled
    as one run fills them: their packets are copied, shifted by the frames before them."""
    fps = next(Fraction(*s.files["fps"][camera]) for s in shards if camera in s.files["fps"])
    path_of = layout.video(camera)
    taken = _NextFiles(output, f"videos/{camera}/*/*.mp4", layout.limits.chunks_size)
    new_path = taken.path(output, path_of)
    prefix = f"videos/{camera}"
    slots = sorted({slot for s in shards for slot, _, _ in s.files["videos"].get(camera, [])})
    for slot in slots:
        series = VideoSeries(fps, layout.limits.video_bytes, new_path)
        for shard in shards:
            for chunk, file in shard.new_files("videos", slot, camera):
                held = sorted(
                    (r for r in shard.rows
                     if (r[f"{prefix}/chunk_index"], r[f"{prefix}/file_index"]) == (chunk, file)),
                    key=lambda r: float(r[f"{prefix}/from_timestamp"]),
                )
                source = shard.folder.root / path_of(chunk, file)
                windows = [(float(r[f"{prefix}/from_timestamp"]), int(r["length"])) for r in held]
                for row, (stream, packets) in zip(
                    held, episode_packets(source, windows, fps), strict=True
                ):
                    concatenator, n = series.begin_episode()
                    segment = concatenator.append_packets(stream, packets, row["length"], source)
                    chunk_file = taken.index[series.files[n]]
                    locations[row["episode_index"]].update({
                        f"{prefix}/chunk_index": chunk_file[0],
                        f"{prefix}/file_index": chunk_file[1],
                        f"{prefix}/from_timestamp": segment.from_timestamp,
                        f"{prefix}/to_timestamp": segment.to_timestamp,
                    })
        series.close()


def _write_episodes(
    shards: Sequence[_Shard], output: Path, layout: _Layout, locations: Locations
) -> None:
    schema = next((s.schema for s in shards if s.schema is not None), None)
    if schema is None:
        raise AugmentError("no shard holds an episode; merge the shards of a dataset")
    rows = [row | locations[row["episode_index"]] for s in shards for row in s.rows]
    rows.sort(key=lambda row: row["episode_index"])
    last = last_file(output, "meta/episodes/*/*.parquet")
    chunk, file = (0, 0) if last is None else next_file(*last, layout.limits.chunks_size)
    for row in rows:
        if "meta/episodes/chunk_index" in row:
            row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = chunk, file
    path = output / EPISODES_PATH.format(chunk_index=chunk, file_index=file)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="snappy")
