"""LeRobot v3.0: episodes concatenated into chunked parquet and MP4 files.

Layout (as LeRobot's own reader expects it):
- meta/info.json: codebase_version "v3.0", fps, features, totals, path templates.
- data/chunk-XXX/file-YYY.parquet: frames of many episodes, global `index` order.
- videos/<camera>/chunk-XXX/file-YYY.mp4: episodes back to back.
- meta/episodes/chunk-XXX/file-YYY.parquet: one row per episode with its data file,
  dataset_from/to_index, per camera its video file and from/to_timestamp, its tasks,
  length and stats/<feature>/<stat> columns.
- meta/tasks.parquet (task strings as the index, task_index column), meta/stats.json.

Augmented episodes never touch the source's files: in copy mode the originals are
copied byte for byte and new episodes go to new files after them.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .. import stats as stats_mod
from ..codec_plan import FrameWriter
from ..errors import DatasetError
from ..shards import Shard, ShardParts
from ..video import EpisodeCut, VideoConcatenator, cut_episode
from .base import (
    Camera,
    DatasetWriter,
    EpisodeRecord,
    LeRobotEpisodeWriter,
    LeRobotReader,
    OutputPlan,
    SourceEpisode,
    cameras_of,
    copy_tree,
    load_info,
    write_json,
)

VERSION = "v3.0"
DEFAULT_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
# Rows buffered per output episode before a row group is written: bounds memory at
# about copies x this for image datasets, while keeping row groups reasonably large.
ROW_GROUP_BYTES = 4 * 2**20


@dataclass(frozen=True)
class FileLimits:
    """How a dataset's data and video files are sized (meta/info.json, LeRobot's
    defaults where it says nothing): a new chunk every `chunks_size` files, and files
    filled up to the size limits (starts_new_file)."""

    chunks_size: int
    data_bytes: float
    video_bytes: float

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> FileLimits:
        return cls(
            int(info.get("chunks_size", 1000)),
            float(info.get("data_files_size_in_mb", 100)) * 2**20,
            float(info.get("video_files_size_in_mb", 500)) * 2**20,
        )


def next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    """The file after (chunk, file): LeRobot moves to a new chunk every chunks_size files."""
    return (chunk + 1, 0) if file >= chunks_size - 1 else (chunk, file + 1)


def last_file(root: Path, pattern: str) -> tuple[int, int] | None:
    """The last (chunk, file) of the `chunk-C/file-F` files matching `pattern` under
    `root` (the originals copied there); None when there are none."""
    found = []
    for path in root.glob(pattern):
        try:
            found.append((int(path.parent.name.split("-")[1]), int(path.stem.split("-")[1])))
        except (IndexError, ValueError):
            continue
    return max(found) if found else None


def starts_new_file(size: int, incoming: int, limit: float) -> bool:
    """When an episode starts a new file (info.json's data_files_size_in_mb and
    video_files_size_in_mb): once the open file's bytes and the episode's first bytes
    reach the limit. LeRobot counts the whole incoming episode; a video episode is still
    being encoded when it starts, so its `incoming` is 0 and a video file may pass the
    limit by one episode. The writer and the merge fill files
    only through DataSeries and VideoSeries, so a merged output rolls over at the very
    episodes one run does."""
    return size + incoming >= limit


class DataSeries:
    """The data files one slot fills, one after another. An episode goes whole into one
    file (meta/episodes gives it one): the open one, unless starts_new_file says so."""

    def __init__(self, schema: pa.Schema, limit: float, new_path: Callable[[int], Path]) -> None:
        self.schema = schema
        self.limit = limit
        self._new_path = new_path  # the path of the series' file n
        self.files: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self.size = 0  # what the open file counts: its header, then its episodes' rows

    def begin_episode(self, incoming: int) -> int:
        """The file (its position in `files`) of an episode whose first rows take
        `incoming` bytes in memory."""
        if self._writer is not None and starts_new_file(self.size, incoming, self.limit):
            self.close()
        if self._writer is None:
            path = self._new_path(len(self.files))
            self.files.append(path)
            self._writer = pq.ParquetWriter(path, self.schema, compression="snappy")
            self.size = path.stat().st_size
        return len(self.files) - 1

    def write(self, table: pa.Table) -> int:
        """Append rows of the current episode to its file; the bytes they took there."""
        if self._writer is None:
            raise RuntimeError("rows written before their episode began")
        before = self.files[-1].stat().st_size
        self._writer.write_table(table)
        return self.files[-1].stat().st_size - before

    def count(self, size: int) -> None:
        """Count `size` bytes of rows into the open file's size: the writer counts what
        it wrote, the merge (which encodes the same rows again) what the writer counted."""
        self.size += size

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class VideoSeries:
    """The video files one slot fills for one camera, one after another: an episode's
    packets go into the open file, unless starts_new_file says so."""

    def __init__(self, fps: Fraction, limit: float, new_path: Callable[[int], Path]) -> None:
        self.fps = fps
        self.limit = limit
        self._new_path = new_path  # the path of the series' file n
        self.files: list[Path] = []
        self._open: VideoConcatenator | None = None

    def begin_episode(self) -> tuple[VideoConcatenator, int]:
        """The file an episode is appended to, and its position in `files`."""
        if self._open is not None and starts_new_file(self._open.size_bytes(), 0, self.limit):
            self.close()
        if self._open is None:
            path = self._new_path(len(self.files))
            self.files.append(path)
            self._open = VideoConcatenator(path, self.fps)
        return self._open, len(self.files) - 1

    def close(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None


# Metadata the writer rewrites (a previous run's augmentation.json included).
V3_REWRITTEN_META = ("info.json", "stats.json", "augmentation.json")


class LeRobotV3Reader(LeRobotReader):
    format_name = "LeRobot v3.0"
    stats_quantiles = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.info = load_info(self.root)
        self.cameras = cameras_of(self.features)
        self.video_path = self.info.get("video_path") or DEFAULT_VIDEO_PATH
        self.meta_table = self._load_episode_table()
        self.rows = self.meta_table.drop_columns(
            [c for c in self.meta_table.column_names if c.startswith("stats/")]
        ).to_pylist()
        self.episodes = [
            SourceEpisode(int(r["episode_index"]), int(r["length"]), tuple(r.get("tasks") or ()))
            for r in self.rows
        ]
        self._check_episodes()
        self.total_tasks = self._count_tasks()

    def _count_tasks(self) -> int:
        """The rows of meta/tasks.parquet, read now: a broken file is an input error, found
        before any work rather than in the output that copies it."""
        try:
            return int(pq.read_metadata(self.root / "meta/tasks.parquet").num_rows)
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(
                f"cannot read meta/tasks.parquet ({exc}); re-download the dataset"
            ) from None

    def _load_episode_table(self) -> pa.Table:
        files = sorted((self.root / "meta/episodes").glob("*/*.parquet"))
        if not files:
            raise DatasetError("meta/episodes/ has no parquet files; the dataset is incomplete")
        try:
            tables = [pq.read_table(f) for f in files]
            table = pa.concat_tables(tables, promote_options="default")
        except (pa.ArrowException, OSError) as exc:
            raise DatasetError(
                f"cannot read meta/episodes ({exc}); re-download the dataset"
            ) from None
        for column in ("episode_index", "length", "data/chunk_index", "data/file_index"):
            if column not in table.column_names:
                raise DatasetError(
                    f"meta/episodes lacks the column {column!r}; the metadata is corrupt"
                )
        return table.sort_by("episode_index")

    def _check_episodes(self) -> None:
        if not self.episodes:
            raise DatasetError("the dataset has no episodes (meta/episodes lists none); "
                               "record at least one episode before augmenting")
        indices = [ep.index for ep in self.episodes]
        if indices != list(range(len(indices))):
            raise DatasetError(
                "meta/episodes does not list episodes 0..N-1 once each; it is corrupt"
            )
        if len(indices) != self.info["total_episodes"]:
            raise DatasetError(
                f"meta/info.json says {self.info['total_episodes']} episodes, meta/episodes "
                f"lists {len(indices)}; the metadata is corrupt"
            )
        for camera in self.cameras:
            if (
                camera.storage == "video"
                and f"videos/{camera.key}/from_timestamp" not in self.rows[0]
            ):
                raise DatasetError(f"meta/episodes has no video offsets for {camera.key!r}")

    # -- reading ---------------------------------------------------------------

    def data_file(self, episode: SourceEpisode) -> Path:
        row = self.rows[episode.index]
        return self.root / self.info["data_path"].format(
            chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
        )

    def video_file(self, episode: SourceEpisode, camera: Camera) -> Path:
        row = self.rows[episode.index]
        return self.root / self.video_path.format(
            video_key=camera.key,
            chunk_index=row[f"videos/{camera.key}/chunk_index"],
            file_index=row[f"videos/{camera.key}/file_index"],
        )

    def data_schema(self) -> pa.Schema:
        # Every data file has the rows' schema; a shard's download holds only its own
        # episodes' files (shard_file_filter), so the first one on disk is read.
        files = (self.data_file(e) for e in self.episodes)
        first = next((f for f in files if f.exists()), self.data_file(self.episodes[0]))
        try:
            return pq.read_schema(first)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"cannot read {first}: {exc}; re-download the dataset") from None

    def read_rows(self, episode: SourceEpisode, batch_rows: int) -> Iterator[pa.RecordBatch]:
        path = self.data_file(episode)
        seen = 0
        try:
            dataset = pads.dataset(str(path), format="parquet")
            batches = dataset.to_batches(
                filter=pads.field("episode_index") == episode.index, batch_size=batch_rows
            )
            for batch in batches:
                if batch.num_rows:
                    seen += batch.num_rows
                    yield batch
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"cannot read {path}: {exc}; re-download the dataset") from None
        if seen != episode.length:
            raise DatasetError(
                f"{path} holds {seen} frames of episode {episode.index}, meta/episodes says "
                f"{episode.length}; the dataset is corrupt"
            )

    def decode_frames(
        self, episode: SourceEpisode, camera: Camera, batch_frames: int
    ) -> Iterator[np.ndarray]:
        row = self.rows[episode.index]
        return self.video_plans.decode(
            camera.key,
            self.video_file(episode, camera),
            fps=self.fps,
            num_frames=episode.length,
            start_s=float(row[f"videos/{camera.key}/from_timestamp"]),
            batch_frames=batch_frames,
            grey=camera.channels == 1,
        )

    def episode_stats(self, episode: SourceEpisode) -> dict[str, stats_mod.Stats]:
        out: dict[str, stats_mod.Stats] = {}
        for column in self.meta_table.column_names:
            if not column.startswith("stats/"):
                continue
            feature, _, stat = column[len("stats/") :].rpartition("/")
            value = self.meta_table.column(column)[episode.index].as_py()
            if value is not None:
                out.setdefault(feature, {})[stat] = np.asarray(value)
        return {feature: values for feature, values in out.items() if stats_mod.complete(values)}

    def stat_names(self) -> dict[str, list[str]]:
        """Which statistics the source keeps per feature (our new rows keep the same)."""
        names: dict[str, list[str]] = {}
        for column in self.meta_table.column_names:
            if column.startswith("stats/"):
                feature, _, stat = column[len("stats/") :].rpartition("/")
                names.setdefault(feature, []).append(stat)
        return names

    def episode_files(self, episode: SourceEpisode) -> set[Path]:
        """The source files holding the episode's frames: its data file and videos."""
        videos = (self.video_file(episode, c) for c in self.cameras if c.storage == "video")
        return {self.data_file(episode), *videos}

    def shard_file_filter(self, shard: Shard) -> Callable[[Path], bool]:
        """Which of the dataset's files (paths under its root) shard `shard` reads or
        copies: those outside data/ and videos/ (metadata: small, the same in every
        shard), those holding the shard's episodes, and in shard 0 those holding no
        episode: every file the unsplit output copies then comes from at least one
        shard, and the merge unites them."""
        episodes = self.episodes
        covered = shard.episodes(len(episodes))
        mine = set().union(*(self.episode_files(episodes[i]) for i in covered))
        anyones = (
            set().union(*(self.episode_files(e) for e in episodes)) if shard.index == 0 else None
        )
        bulky = (self.root / "data", self.root / "videos")

        def wanted(path: Path) -> bool:
            if not any(path.is_relative_to(folder) for folder in bulky):
                return True
            return path in mine or (anyones is not None and path not in anyones)

        return wanted

    def create_writer(self, output: Path, keep_originals: bool, slots: int) -> LeRobotV3Writer:
        return LeRobotV3Writer(self, output, self.output_plan(keep_originals, slots))

    def create_shard_writer(
        self, output: Path, keep_originals: bool, slots: int, shard: Shard
    ) -> LeRobotV3Writer:
        return LeRobotV3Writer(self, output, self.output_plan(keep_originals, slots), shard)


class _Part:
    """A data or video file being filled by one slot, renamed to its final index at the end."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.final: tuple[int, int] | None = None  # set when the writer finishes

    @property
    def placed(self) -> tuple[int, int]:
        """(chunk, file) index; only asked for after every part was allocated."""
        if self.final is None:
            raise RuntimeError(f"{self.staging} was never given a file index")
        return self.final


class LeRobotV3Writer(DatasetWriter):
    """Writes the output, or with `shard` one shard of it: that shard's episodes only,
    numbered by the whole output's plan (augment_runner/shards.py)."""

    def __init__(
        self, reader: LeRobotV3Reader, output: Path, plan: OutputPlan, shard: Shard | None = None
    ) -> None:
        self.reader = reader
        self.output = output
        self.plan = plan
        self.shard = shard
        every = range(len(reader.episodes))
        self.covered = every if shard is None else shard.episodes(len(every))
        self.info = dict(reader.info)
        self.limits = FileLimits.of(self.info)
        self.staging = output / ".staging"
        self.records: list[EpisodeRecord] = []
        self.schema = reader.data_schema()
        self.meta_schema = reader.meta_table.schema
        self.stat_names = reader.stat_names()
        # Per slot: its data parts and the series filling them.
        self.data_parts: dict[int, list[_Part]] = {}
        self._data_series: dict[int, DataSeries] = {}
        # Per (slot, camera): its video parts and the series filling them.
        self.video_parts: dict[tuple[int, str], list[_Part]] = {}
        self._video_series: dict[tuple[int, str], VideoSeries] = {}
        self.written_videos: set[str] = set()
        # Where the new files went, [slot, chunk, file] in placing order, and the new
        # meta/episodes file's [chunk, file]: a shard's manifest lists them.
        self.placed_data: list[list[int]] = []
        self.placed_videos: dict[str, list[list[int]]] = {}
        self.episodes_meta: list[int] | None = None

    # -- layout ----------------------------------------------------------------

    def start(self) -> None:
        self.staging.mkdir(parents=True)
        if self.plan.keep_originals:
            copy_tree(self.reader.root, self.output, V3_REWRITTEN_META, self._wanted)
        else:
            (self.output / "meta").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(
                self.reader.root / "meta/tasks.parquet", self.output / "meta/tasks.parquet"
            )

    def reuse_source_videos(self, camera: Camera) -> bool:
        # In place, episodes keep their lengths and order, so an unaugmented camera's
        # files and offsets stay valid as they are.
        return not self.plan.keep_originals

    def copy_source_videos(self, camera: Camera) -> None:
        src = self.reader.root / "videos" / camera.key
        dst = self.output / "videos" / camera.key
        if not dst.exists():
            copy_tree(src, dst, wanted=self._wanted)

    @cached_property
    def _wanted(self) -> Callable[[Path], bool] | None:
        """Which source files a shard copies (None: all): see shard_file_filter."""
        return None if self.shard is None else self.reader.shard_file_filter(self.shard)

    def open_episode(self, slot: int, source: SourceEpisode) -> V3EpisodeWriter:
        return V3EpisodeWriter(self, slot, source)

    # -- parts -----------------------------------------------------------------

    def data_series(self, slot: int) -> DataSeries:
        """The slot's data files (each staged as a part until finish names it)."""
        series = self._data_series.get(slot)
        if series is None:
            parts = self.data_parts.setdefault(slot, [])

            def new_path(n: int) -> Path:
                parts.append(_Part(self.staging / f"data-{slot}-{n}.parquet"))
                return parts[-1].staging

            series = DataSeries(self.schema, self.limits.data_bytes, new_path)
            self._data_series[slot] = series
        return series

    def concatenator(self, slot: int, camera: Camera) -> tuple[VideoConcatenator, _Part]:
        """The video file the slot's next episode of `camera` is appended to."""
        key = (slot, camera.key)
        series = self._video_series.get(key)
        if series is None:
            parts = self.video_parts.setdefault(key, [])
            safe = camera.key.replace("/", "_")

            def new_path(n: int) -> Path:
                parts.append(_Part(self.staging / f"video-{slot}-{safe}-{n}.mp4"))
                return parts[-1].staging

            fps = self.reader.video_format(camera).fps
            series = VideoSeries(fps, self.limits.video_bytes, new_path)
            self._video_series[key] = series
        concatenator, n = series.begin_episode()
        return concatenator, self.video_parts[key][n]

    # -- metadata --------------------------------------------------------------

    def finish(self) -> None:
        for data in self._data_series.values():
            data.close()
        for video in self._video_series.values():
            video.close()
        self._place_data_parts()
        self._place_video_parts()
        self._write_episodes_meta()
        self._write_info()
        all_stats = self._original_stats() + [r.stats for r in self.records]  # order-free
        write_json(
            self.output / "meta/stats.json", stats_mod.to_json(stats_mod.aggregate(all_stats))
        )
        shutil.rmtree(self.staging)

    def _allocate(self, parts: list[_Part], last: tuple[int, int] | None) -> tuple[int, int] | None:
        for part in parts:
            last = (0, 0) if last is None else next_file(*last, self.limits.chunks_size)
            part.final = last
        return last

    def _place_data_parts(self) -> None:
        last = last_file(self.output, "data/*/*.parquet") if self.plan.keep_originals else None
        for slot in sorted(self.data_parts):
            last = self._allocate(self.data_parts[slot], last)
            for part in self.data_parts[slot]:
                self.placed_data.append([slot, *part.placed])
                target = self.output / self.info["data_path"].format(
                    chunk_index=part.placed[0], file_index=part.placed[1]
                )
                target.parent.mkdir(parents=True, exist_ok=True)
                part.staging.rename(target)

    def _place_video_parts(self) -> None:
        for camera in self.reader.cameras:
            if camera.storage != "video" or camera.key not in self.written_videos:
                continue
            last = None
            if self.plan.keep_originals:
                last = last_file(self.output, f"videos/{camera.key}/*/*.mp4")
            for slot in range(self.plan.slots):
                parts = self.video_parts.get((slot, camera.key), [])
                last = self._allocate(parts, last)
                for part in parts:
                    self.placed_videos.setdefault(camera.key, []).append([slot, *part.placed])
                    target = self.output / self.reader.video_path.format(
                        video_key=camera.key, chunk_index=part.placed[0], file_index=part.placed[1]
                    )
                    target.parent.mkdir(parents=True, exist_ok=True)
                    part.staging.rename(target)

    def _episode_row(self, record: EpisodeRecord) -> dict[str, Any]:
        row = dict(self.reader.rows[record.source.index])  # unknown columns ride along
        data_part: _Part = record.extra["data_part"]
        row.update(
            {
                "episode_index": record.index,
                "tasks": list(record.tasks),
                "length": record.length,
                "data/chunk_index": data_part.placed[0],
                "data/file_index": data_part.placed[1],
                "dataset_from_index": record.first_frame,
                "dataset_to_index": record.first_frame + record.length,
            }
        )
        for key, (part, segment) in record.extra["videos"].items():
            row.update(
                {
                    f"videos/{key}/chunk_index": part.placed[0],
                    f"videos/{key}/file_index": part.placed[1],
                    f"videos/{key}/from_timestamp": segment.from_timestamp,
                    f"videos/{key}/to_timestamp": segment.to_timestamp,
                }
            )
        for feature, names in self.stat_names.items():
            values = record.stats.get(feature, {})
            for name in names:
                value = values.get(name)
                row[f"stats/{feature}/{name}"] = (
                    None if value is None else np.asarray(value).tolist()
                )
        return row

    def _write_episodes_meta(self) -> None:
        if not self.records:
            return  # a shard without episodes (more shards than episodes)
        pattern = "meta/episodes/*/*.parquet"
        last = last_file(self.output, pattern) if self.plan.keep_originals else None
        chunk, file = (0, 0) if last is None else next_file(*last, self.limits.chunks_size)
        self.episodes_meta = [chunk, file]
        rows = [self._episode_row(r) for r in sorted(self.records, key=lambda r: r.index)]
        for row in rows:
            if "meta/episodes/chunk_index" in row:
                row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = chunk, file
        table = pa.Table.from_pylist(rows, schema=self.meta_schema)
        path = self.output / EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="snappy")

    def _write_info(self) -> None:
        info = self.info
        info["total_episodes"] = self.plan.total_episodes
        info["total_frames"] = self.plan.total_frames
        info["total_tasks"] = self.reader.total_tasks  # meta/tasks.parquet is the source's
        info["splits"] = {"train": f"0:{self.plan.total_episodes}"}
        write_json(self.output / "meta/info.json", info)

    def _original_stats(self) -> list[dict[str, stats_mod.Stats]]:
        if not self.plan.keep_originals:
            return []
        return [self.reader.source_stats(self.reader.episodes[i]) for i in self.covered]

    def shard_parts(self) -> ShardParts:
        # Per new episode, [index, bytes of its first rows in memory, bytes of its rows in
        # its file], and per camera written the fps its videos are timed by: the merge
        # joins the shards' files by the writer's own rules with them.
        data_bytes = [[r.index, *r.extra["data_bytes"]] for r in sorted(self.records,
                                                                       key=lambda r: r.index)]
        rates = {c.key: self.reader.video_format(c).fps for c in self.reader.cameras
                 if c.key in self.placed_videos}
        fps = {key: [rate.numerator, rate.denominator] for key, rate in rates.items()}
        files = {"data": self.placed_data, "videos": self.placed_videos,
                 "episodes": self.episodes_meta, "data_bytes": data_bytes, "fps": fps}
        return ShardParts(files, self._original_stats(), [r.stats for r in self.records])


class V3EpisodeWriter(LeRobotEpisodeWriter):
    def __init__(self, writer: LeRobotV3Writer, slot: int, source: SourceEpisode) -> None:
        self.writer = writer
        self.slot = slot
        self.record = EpisodeRecord(
            writer.plan.episode_index(slot, source.index),
            source.length,
            source.tasks,
            source,
            slot,
            writer.plan.first_frame(slot, source.index),
            {},
            {"videos": {}},
        )
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._encoders: dict[str, FrameWriter | EpisodeCut] = {}

    def write_rows(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        if self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush_rows()

    def _flush_rows(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.writer.schema)
        series = self.writer.data_series(self.slot)
        if "data_part" not in self.record.extra:  # its first rows choose the episode's file
            n = series.begin_episode(self._pending_bytes)
            self.record.extra["data_part"] = self.writer.data_parts[self.slot][n]
            self.record.extra["data_bytes"] = [self._pending_bytes, 0]
        written = series.write(table)
        series.count(written)
        self.record.extra["data_bytes"][1] += written
        self._pending, self._pending_bytes = [], 0

    def reuse_source_frames(self, camera: Camera) -> bool:
        if self.writer.reuse_source_videos(camera):
            self.writer.copy_source_videos(camera)
            return True
        # A copy's unaugmented camera: the source episode's packets, not a re-encode.
        reader, source = self.writer.reader, self.record.source
        cut = cut_episode(
            reader.video_file(source, camera),
            float(reader.rows[source.index][f"videos/{camera.key}/from_timestamp"]),
            source.length,
            reader.video_format(camera).fps,
            self._segment_path(camera),
        )
        if cut is None:
            return False  # decoded and encoded again instead
        self._encoders[camera.key] = cut
        return True

    def _segment_path(self, camera: Camera) -> Path:
        safe = camera.key.replace("/", "_")
        return self.writer.staging / f"segment-{self.slot}-{safe}.mp4"

    def open_frames(self, camera: Camera) -> FrameWriter:
        reader = self.writer.reader
        encoder = reader.video_plans.encoder(
            camera.key, self._segment_path(camera), reader.video_format(camera), faststart=False
        )
        self._encoders[camera.key] = encoder
        return encoder

    def finish(self, stats: Mapping[str, stats_mod.Stats]) -> None:
        self._flush_rows()
        for key, encoder in self._encoders.items():
            encoder.close()
            camera = next(c for c in self.writer.reader.cameras if c.key == key)
            concatenator, part = self.writer.concatenator(self.slot, camera)
            segment = concatenator.append(encoder.path, self.record.length)
            encoder.path.unlink()
            self.record.extra["videos"][key] = (part, segment)
            self.writer.written_videos.add(key)
        self.record.stats = dict(stats)
        self.writer.records.append(self.record)
