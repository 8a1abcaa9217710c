"""LeRobot v2.1: one parquet file and one MP4 per camera for every episode.

Layout (as LeRobot v2.1's reader expects it):
- meta/info.json: codebase_version "v2.1", fps, features, totals (episodes, frames,
  tasks, videos = episodes x video cameras, chunks), data_path and video_path templates
  over {episode_chunk}, {episode_index} and {video_key}.
- data/chunk-XXX/episode_XXXXXX.parquet, videos/chunk-XXX/<camera>/episode_XXXXXX.mp4
  (episode_chunk = episode_index // chunks_size); each video starts at t=0.
- meta/episodes.jsonl (episode_index, tasks, length), meta/episodes_stats.jsonl
  (episode_index, stats), meta/tasks.jsonl (task_index, task); meta/stats.json when the
  source has one (v2.1 readers aggregate episodes_stats.jsonl instead).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import stats as stats_mod
from ..codec_plan import FrameWriter
from ..errors import DatasetError
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
    load_jsonl,
    write_json,
    write_jsonl,
)

VERSION = "v2.1"
DEFAULT_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
DEFAULT_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


# Metadata the writer rewrites (a previous run's augmentation.json included).
V21_REWRITTEN_META = ("info.json", "stats.json", "augmentation.json", "episodes.jsonl",
                      "episodes_stats.jsonl")


class LeRobotV21Reader(LeRobotReader):
    format_name = "LeRobot v2.1"
    stats_quantiles = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.info = load_info(self.root)
        self.cameras = cameras_of(self.features)
        self.chunks_size = int(self.info.get("chunks_size", 1000))
        self.video_path = self.info.get("video_path") or DEFAULT_VIDEO_PATH
        self.rows = sorted(
            load_jsonl(self.root / "meta/episodes.jsonl", "meta/episodes.jsonl"),
            key=lambda r: r.get("episode_index", -1),
        )
        try:
            self.episodes = [
                SourceEpisode(
                    int(r["episode_index"]), int(r["length"]), tuple(r.get("tasks") or ())
                )
                for r in self.rows
            ]
        except (KeyError, TypeError, ValueError):
            raise DatasetError("meta/episodes.jsonl rows need episode_index and length") from None
        if not self.episodes:
            raise DatasetError("the dataset has no episodes (meta/episodes.jsonl lists none); "
                               "record at least one episode before augmenting")
        # Read now: a broken file is an input error, found before any work rather than in
        # the output that copies it.
        self.total_tasks = len(load_jsonl(self.root / "meta/tasks.jsonl", "meta/tasks.jsonl"))
        if [ep.index for ep in self.episodes] != list(range(len(self.episodes))):
            raise DatasetError("meta/episodes.jsonl does not list episodes 0..N-1 once each")
        if len(self.episodes) != self.info["total_episodes"]:
            raise DatasetError(
                f"meta/info.json says {self.info['total_episodes']} episodes, "
                f"meta/episodes.jsonl lists {len(self.episodes)}; the metadata is corrupt"
            )
        stats_path = self.root / "meta/episodes_stats.jsonl"
        # Without the file (or a line) the statistics are computed from the frames.
        stats_rows = load_jsonl(stats_path, stats_path.name) if stats_path.exists() else []
        self.stats_rows = {int(r["episode_index"]): r for r in stats_rows if "episode_index" in r}

    def path_of(self, template: str, episode_index: int, **extra: Any) -> str:
        return template.format(
            episode_chunk=episode_index // self.chunks_size, episode_index=episode_index, **extra
        )

    def data_file(self, episode: SourceEpisode) -> Path:
        return self.root / self.path_of(self.info["data_path"], episode.index)

    def video_file(self, episode: SourceEpisode, camera: Camera) -> Path:
        return self.root / self.path_of(self.video_path, episode.index, video_key=camera.key)

    def data_schema(self) -> pa.Schema:
        first = self.data_file(self.episodes[0])
        try:
            return pq.read_schema(first)
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"cannot read {first}: {exc}; re-download the dataset") from None

    def read_rows(self, episode: SourceEpisode, batch_rows: int) -> Iterator[pa.RecordBatch]:
        path = self.data_file(episode)
        seen = 0
        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                seen += batch.num_rows
                yield batch
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(f"cannot read {path}: {exc}; re-download the dataset") from None
        if seen != episode.length:
            raise DatasetError(
                f"{path} has {seen} frames, meta/episodes.jsonl says {episode.length}"
            )

    def decode_frames(
        self, episode: SourceEpisode, camera: Camera, batch_frames: int
    ) -> Iterator[np.ndarray]:
        return self.video_plans.decode(
            camera.key,
            self.video_file(episode, camera),
            fps=self.fps,
            num_frames=episode.length,
            start_s=0.0,
            batch_frames=batch_frames,
            grey=camera.channels == 1,
        )

    def episode_stats(self, episode: SourceEpisode) -> dict[str, stats_mod.Stats]:
        row = self.stats_rows.get(episode.index) or {}  # a missing entry is computed
        own = stats_mod.from_json(row.get("stats") or {})
        return {feature: values for feature, values in own.items() if stats_mod.complete(values)}

    def stat_names(self) -> dict[str, list[str]]:
        first = next(iter(self.stats_rows.values()), {}).get("stats", {})
        return {feature: list(values) for feature, values in first.items()}

    def stat_types(self) -> dict[tuple[str, str], np.dtype]:
        """Each (feature, statistic)'s type in the source's lines (ints stay ints)."""
        first = next(iter(self.stats_rows.values()), {}).get("stats", {})
        return {
            (feature, stat): np.asarray(value).dtype
            for feature, values in first.items()
            for stat, value in (values or {}).items()
            if value is not None
        }

    def create_writer(self, output: Path, keep_originals: bool, slots: int) -> LeRobotV21Writer:
        return LeRobotV21Writer(self, output, self.output_plan(keep_originals, slots))


class LeRobotV21Writer(DatasetWriter):
    def __init__(self, reader: LeRobotV21Reader, output: Path, plan: OutputPlan) -> None:
        self.reader = reader
        self.output = output
        self.plan = plan
        self.schema = reader.data_schema()
        self.stat_names = reader.stat_names()
        self.stat_types = reader.stat_types()
        self.records: list[EpisodeRecord] = []

    def start(self) -> None:
        if self.plan.keep_originals:
            copy_tree(self.reader.root, self.output, V21_REWRITTEN_META)
        else:
            (self.output / "meta").mkdir(parents=True)
            shutil.copyfile(self.reader.root / "meta/tasks.jsonl", self.output / "meta/tasks.jsonl")

    def open_episode(self, slot: int, source: SourceEpisode) -> V21EpisodeWriter:
        return V21EpisodeWriter(self, slot, source)

    def finish(self) -> None:
        self.records.sort(key=lambda r: r.index)  # written copy by copy, listed by index
        originals = self.reader.episodes if self.plan.keep_originals else []
        original_rows = [dict(self.reader.rows[ep.index]) for ep in originals]
        new_rows = [
            {
                **self.reader.rows[r.source.index],
                "episode_index": r.index,
                "tasks": list(r.tasks),
                "length": r.length,
            }
            for r in self.records
        ]
        write_jsonl(self.output / "meta/episodes.jsonl", original_rows + new_rows)
        original_stats = [self._original_stats_row(ep) for ep in originals]
        new_stats = [
            {"episode_index": r.index, "stats": stats_mod.to_json(self._kept_stats(r))}
            for r in self.records
        ]
        write_jsonl(self.output / "meta/episodes_stats.jsonl", original_stats + new_stats)
        self._write_info()
        if (self.reader.root / "meta/stats.json").exists():
            every = [stats_mod.from_json(row["stats"]) for row in original_stats + new_stats]
            write_json(
                self.output / "meta/stats.json", stats_mod.to_json(stats_mod.aggregate(every))
            )

    def _original_stats_row(self, episode: SourceEpisode) -> dict[str, Any]:
        """The source's line, as it is unless some of its statistics had to be computed."""
        if episode.index not in self.reader.computed_stats:
            return self.reader.stats_rows[episode.index]
        stats = self.reader.source_stats(episode)
        return {"episode_index": episode.index, "stats": stats_mod.to_json(stats)}

    def _kept_stats(self, record: EpisodeRecord) -> dict[str, stats_mod.Stats]:
        """The new line's stats: the statistics the source keeps, in the source's types
        (a reader concatenating every line refuses ints next to floats)."""
        kept = {}
        for feature, values in record.stats.items():
            chosen = stats_mod.select_stats(values, self.stat_names.get(feature))
            kept[feature] = {
                stat: _as_type(value, self.stat_types.get((feature, stat)))
                for stat, value in chosen.items()
            }
        return kept

    def _write_info(self) -> None:
        info = dict(self.reader.info)
        episodes = self.plan.total_episodes
        info["total_episodes"] = episodes
        info["total_frames"] = self.plan.total_frames
        info["total_tasks"] = self.reader.total_tasks  # meta/tasks.jsonl is the source's
        if "total_videos" in info or any(c.storage == "video" for c in self.reader.cameras):
            info["total_videos"] = episodes * sum(c.storage == "video" for c in self.reader.cameras)
        if "total_chunks" in info:
            info["total_chunks"] = math.ceil(episodes / self.reader.chunks_size)
        info["splits"] = {"train": f"0:{episodes}"}
        write_json(self.output / "meta/info.json", info)


def _as_type(value: np.ndarray, wanted: np.dtype | None) -> np.ndarray:
    """`value` in the type `wanted` when no value changes (ints to floats, not back)."""
    value = np.asarray(value)
    if wanted is None or not np.can_cast(value.dtype, wanted, casting="same_kind"):
        return value
    return value.astype(wanted, copy=False)


class V21EpisodeWriter(LeRobotEpisodeWriter):
    def __init__(self, writer: LeRobotV21Writer, slot: int, source: SourceEpisode) -> None:
        self.writer = writer
        index = writer.plan.episode_index(slot, source.index)
        first = writer.plan.first_frame(slot, source.index)
        self.record = EpisodeRecord(index, source.length, source.tasks, source, slot, first, {})
        path = writer.output / writer.reader.path_of(writer.reader.info["data_path"], index)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._rows = pq.ParquetWriter(path, writer.schema, compression="snappy")
        self._encoders: list[FrameWriter] = []

    def write_rows(self, batch: pa.RecordBatch) -> None:
        self._rows.write_batch(batch)

    def _video_path(self, camera: Camera) -> Path:
        reader = self.writer.reader
        return self.writer.output / reader.path_of(
            reader.video_path, self.record.index, video_key=camera.key
        )

    def reuse_source_frames(self, camera: Camera) -> bool:
        # One file per episode: an unaugmented camera's file is the source's, byte for byte.
        target = self._video_path(camera)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.writer.reader.video_file(self.record.source, camera), target)
        return True

    def open_frames(self, camera: Camera) -> FrameWriter:
        reader = self.writer.reader
        encoder = reader.video_plans.encoder(
            camera.key, self._video_path(camera), reader.video_format(camera)
        )
        self._encoders.append(encoder)
        return encoder

    def finish(self, stats: Mapping[str, stats_mod.Stats]) -> None:
        self._rows.close()
        for encoder in self._encoders:
            encoder.close()
        self.record.stats = dict(stats)
        self.writer.records.append(self.record)
