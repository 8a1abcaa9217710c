"""Augment a dataset folder into a new, valid, bigger dataset of the same format.

Each source episode is decoded once per camera; its frames go, batch by batch, to one
augmenter and one encoder per augmented copy, so memory stays flat whatever the
episode length (batches) and the work per frame is one decode for N encodes.

The output is built in a hidden temporary folder next to the output and renamed into
place at the very end: a half-written output never looks finished, and a failure
leaves nothing behind. The source folder is only ever read.

With a shard (shards.py), the same loop writes that shard's episodes and a manifest
for `augment merge` (merge.py), which puts the shards together into this output.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from augment_spec.model import AugmentationSpec, DatasetMode, Transform

from . import codec_plan
from . import stats as stats_mod
from .concurrency import CopyWorkers
from .cpu_budget import codec_threads, this_pod_cpus
from .errors import AugmentError, DatasetError, OutputError
from .formats.base import (
    Camera,
    DatasetReader,
    DatasetWriter,
    EpisodeWriter,
    FrameSink,
    LeRobotReader,
    SourceEpisode,
    StatsPlan,
    decode_image_cells,
    image_column,
)
from .formats.detect import open_dataset
from .preview import PreviewCollector
from .provenance import (
    PREVIEW_PATH,
    TOOL_NAME,
    recorded_spec,
    write_card,
    write_provenance,
)
from .shards import Shard, ShardManifest
from .video import encoder_takes

log = logging.getLogger("augment.runner")
Progress = Callable[[int, int], None]
# Told how each video camera is decoded and encoded (one line per camera): once planned,
# and again at the end when an engine fell back to the CPU meanwhile.
VideoPlanReport = Callable[[list[str]], None]
# One copy's transforms: a batch of frames and the episode offset of its first frame in,
# the augmented batch out.
FrameAugmenter = Callable[[np.ndarray, int], np.ndarray]


def tool_version() -> str:
    try:
        return metadata.version(TOOL_NAME)
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0.0.0+source"


@dataclass(frozen=True)
class AugmentResult:
    output: Path
    preview: Path | None  # None only for a shard without frames (more shards than episodes)
    format_name: str
    source_episodes: int  # those read: a shard's only
    output_episodes: int
    augmented_episodes: int
    seconds: float


@dataclass(frozen=True)
class EpisodeCopies:
    """The augmented copies of one source episode: what each applies, with which parameters."""

    source_index: int
    transforms: list[list[Transform]]
    params: list[Any]

    def augmenter(self, slot: int, grey: bool = False) -> FrameAugmenter:
        """Copy `slot`'s transforms, for colour frames or (grey) for 1-channel ones."""
        from .transforms import Augmenter, GreyAugmenter

        return GreyAugmenter(self.params[slot]) if grey else Augmenter(self.params[slot])

    def labels(self) -> list[str]:
        return [
            f"copy {slot}: {'+'.join(t.value for t in chosen)}"
            for slot, chosen in enumerate(self.transforms)
        ]

    def describe(self, slot: int) -> dict[str, Any]:
        return {
            "copy_index": slot,
            "transforms": [t.value for t in self.transforms[slot]],
            "params": self.params[slot].to_dict(),
        }


def plan_copies(spec: AugmentationSpec, episode_index: int) -> EpisodeCopies:
    from .transforms import sample_copy_params

    transforms = spec.copy_plan(episode_index)
    params = [
        sample_copy_params(spec, chosen, episode_index, slot)
        for slot, chosen in enumerate(transforms)
    ]
    return EpisodeCopies(episode_index, transforms, params)


# ---------------------------------------------------------------- entry point


def augment_dataset(
    spec: AugmentationSpec,
    source: Path,
    output: Path,
    progress: Progress | None = None,
    batch_frames: int = 64,
    *,
    source_id: str | None = None,
    source_revision: str | None = None,
    shard: Shard | None = None,
    video_report: VideoPlanReport | None = None,
) -> AugmentResult:
    """Write the augmented dataset for `spec` from the folder `source` into `output`;
    with `shard`, only that shard of it (see shards.py)."""
    if batch_frames < 1:
        raise AugmentError(f"batch_frames must be at least 1, got {batch_frames}")
    started = time.monotonic()
    source, output = Path(source).resolve(), Path(output).resolve()
    reader = open_dataset(source)
    check_output_folder(source, output)
    cameras = select_cameras(
        reader.cameras, spec.augment_cameras, source, grey=spec.augment_grey_cameras
    )
    refuse_unwritable_depth(reader, cameras)
    covered = _covered(reader, shard)
    planned = plan_videos(reader, spec.copies_per_episode())
    if video_report is not None and planned:
        video_report(planned)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        preview = PreviewCollector(cameras[0].key, spec.copies_per_episode())
        writer = _create_writer(reader, spec, staging, shard)
        episodes = _augment(
            reader, writer, spec, covered, cameras, preview, progress, batch_frames
        )
        final = reader.video_plans.describe()
        if video_report is not None and final != planned:
            video_report(final)
        provenance = _provenance(spec, reader, cameras, episodes, source_id, source_revision)
        write_provenance(staging, provenance)
        has_preview = shard is None or preview.has_frames
        if has_preview:
            preview.save(staging / PREVIEW_PATH)
        write_card(staging, provenance, source)
        if shard is None:
            check_valid(staging)
        else:  # not a dataset on its own: the merge checks what it makes
            total = len(reader.episodes)
            ShardManifest(
                shard, reader.format_name, total, shard.episodes(total), writer.shard_parts()
            ).write(staging)
        move_into_place(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    copies_written = sum(1 for e in episodes if e.get("copy_index") is not None)
    return AugmentResult(
        output,
        output / PREVIEW_PATH if has_preview else None,
        reader.format_name,
        len(covered),
        len(episodes),
        copies_written,
        time.monotonic() - started,
    )


def plan_videos(reader: DatasetReader, copies: int) -> list[str]:
    """Plan every video camera's decode and encode (codec_plan.py) into the reader's
    VideoPlans, log it, and return one line per camera."""
    if not isinstance(reader, LeRobotReader):
        return []  # no video files: images are decoded with the rows
    videos = [c for c in reader.cameras if c.storage == "video"]
    if not videos:
        return []
    engines, support = codec_plan.this_process()
    # One decoder and every copy's encoder of a camera run at once (cpu_budget.py).
    threads = codec_threads(this_pod_cpus(), 1 + copies)
    for camera in videos:
        fmt = reader.video_format(camera)
        path, reason = codec_plan.plan_camera(fmt, engines, support)
        reader.video_plans.plans[camera.key] = codec_plan.CameraPlan(
            camera.key, fmt.codec, fmt.pix_fmt, path, reason, threads
        )
    lines = reader.video_plans.describe()
    for line in lines:
        log.info("video %s", line)
    return lines


def _covered(reader: DatasetReader, shard: Shard | None) -> list[SourceEpisode]:
    """The source episodes this run augments: all of them, or the shard's."""
    if shard is None:
        return list(reader.episodes)
    return [reader.episodes[i] for i in shard.episodes(len(reader.episodes))]


def _create_writer(
    reader: DatasetReader, spec: AugmentationSpec, staging: Path, shard: Shard | None
) -> DatasetWriter:
    keep = spec.augment_dataset_mode is DatasetMode.copy
    slots = spec.copies_per_episode()
    if shard is None:
        return reader.create_writer(staging, keep, slots)
    return reader.create_shard_writer(staging, keep, slots, shard)


def check_output_folder(source: Path, output: Path) -> None:
    if output == source or output.is_relative_to(source) or source.is_relative_to(output):
        raise OutputError(
            f"output {output} overlaps the source {source}; the source is never written, "
            f"choose an output folder outside it"
        )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise OutputError(
            f"output folder {output} exists and is not empty; choose a new folder or empty it"
        )


def select_cameras(
    cameras: list[Camera], wanted: list[str] | None, source: Path, grey: bool = False
) -> list[Camera]:
    """The cameras to augment: those the spec names (all colour cameras by default, and
    the grey ones with `grey`), in dataset order. Depth cameras are copied unchanged
    (lighting and noise are meaningless on distances), and so are grey ones without
    `grey`."""
    if not cameras:
        raise DatasetError(f"{source} has no camera features (video or image); nothing to augment")
    if wanted is None:
        chosen = [c for c in cameras if c.is_rgb or (grey and c.is_grey)]
        if not chosen:
            raise DatasetError(
                f"{source} has only grey or depth cameras ({', '.join(c.key for c in cameras)}); "
                f"the transforms need an RGB camera, or a grey one with augment_grey_cameras"
            )
        return chosen
    known = {c.key: c for c in cameras}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise AugmentError(
            f"camera {unknown[0]!r} is not in the dataset; its cameras are "
            f"{', '.join(sorted(known))}"
        )
    refused = [
        name for name in wanted if not (known[name].is_rgb or (grey and known[name].is_grey))
    ]
    if refused:
        raise AugmentError(
            f"camera {refused[0]!r} is a grey or depth camera, which is copied unchanged; "
            f"leave it out of augment_cameras (a grey one may be augmented with "
            f"augment_grey_cameras, a depth map never)"
        )
    return [c for c in cameras if c.key in set(wanted)]


def refuse_unwritable_depth(reader: DatasetReader, cameras: list[Camera]) -> None:
    """Copies of a video camera deeper than 8 bits are written at its own depth, in its
    codec and pixel format (docs/design.md, Video codecs); where this build's encoder
    for the codec cannot write that pixel format (VP9, MPEG-4 at 10 bits), the camera is
    refused before any work rather than written at 8 bits. Cameras left out are copied
    packet for packet, whatever their bit depth."""
    if not isinstance(reader, LeRobotReader):  # the only format with video cameras
        return
    for camera in cameras:
        if camera.storage != "video":
            continue
        fmt = reader.video_format(camera)
        if fmt.bit_depth > 8 and not encoder_takes(fmt.encoder, fmt.pix_fmt):
            raise DatasetError(
                f"camera {camera.key!r} is {fmt.bit_depth}-bit {fmt.codec} video "
                f"({fmt.pix_fmt}), which {fmt.encoder} cannot write; leave it out of "
                f"augment_cameras (it is then copied unchanged) or re-encode it to 10-bit "
                f"H.264, HEVC or AV1"
            )


def check_valid(staging: Path) -> None:
    """Never move into place (so never push) an output the format's reader would reject:
    it is checked where it was built, and a failure removes it with the staging folder."""
    from .validate import validate_dataset

    problems = validate_dataset(staging)
    if problems:
        raise RuntimeError(
            f"the output is not valid ({len(problems)} problem(s), first: {problems[0]}); "
            f"nothing was written or pushed"
        )


def move_into_place(staging: Path, output: Path) -> None:
    if output.exists():
        output.rmdir()  # checked empty before we started
    os.replace(staging, output)


def _provenance(
    spec: AugmentationSpec,
    reader: DatasetReader,
    cameras: list[Camera],
    episodes: list[dict[str, Any]],
    source_id: str | None,
    source_revision: str | None,
) -> dict[str, Any]:
    return {
        "tool": {"name": TOOL_NAME, "version": tool_version()},
        "source": {
            "dataset_id": source_id or spec.dataset_id,
            "revision": source_revision or spec.source_revision or "local",
            "format": reader.format_name,
        },
        "output_dataset_id": spec.target_dataset_id,
        "dataset_mode": spec.augment_dataset_mode.value,
        "augment_mode": spec.augment_mode.value,
        "copies_per_episode": spec.copies_per_episode(),
        "seed": spec.augment_seed,
        "augmented_cameras": [c.key for c in cameras],
        # How each video camera was decoded and encoded, and why (codec_plan.py).
        "video": [plan.to_dict() for plan in reader.video_plans.plans.values()],
        "spec": recorded_spec(spec),
        "episodes": episodes,
    }


# ---------------------------------------------------------------- every episode

# What provenance records for an episode kept as it was (copy mode's originals).
ORIGINAL: dict[str, Any] = {"copy_index": None, "transforms": [], "params": None}


def _augment(
    reader: DatasetReader,
    writer: DatasetWriter,
    spec: AugmentationSpec,
    covered: list[SourceEpisode],
    cameras: list[Camera],
    preview: PreviewCollector,
    progress: Progress | None,
    batch_frames: int,
) -> list[dict[str, Any]]:
    """Write the `covered` source episodes' output with `writer`; the provenance of
    the episodes written, in output order."""
    keep = spec.augment_dataset_mode is DatasetMode.copy
    slots = spec.copies_per_episode()
    writer.start()
    # (output index, source episode, what was applied); originals keep their index.
    placed = [(ep.index, ep, ORIGINAL) for ep in covered] if keep else []
    job = _EpisodeJob(reader, {c.key for c in cameras}, batch_frames, preview)
    _report(progress, 0, len(covered))
    for done, episode in enumerate(covered, 1):
        copies = plan_copies(spec, episode.index)
        sinks = [writer.open_episode(slot, episode) for slot in range(slots)]
        job.run(episode, copies, sinks)
        placed += [(s.episode_index, episode, copies.describe(n)) for n, s in enumerate(sinks)]
        _report(progress, done, len(covered))
    writer.finish()
    splits = list(dict.fromkeys(ep.split for ep in reader.episodes))  # in reading order
    placed.sort(key=lambda p: (splits.index(p[1].split), p[0]))
    return [_episode_entry(index, source, applied) for index, source, applied in placed]


def _episode_entry(index: int, source: SourceEpisode, applied: dict[str, Any]) -> dict[str, Any]:
    split = {} if source.split is None else {"split": source.split}
    return {**split, "episode_index": index, "source_episode_index": source.index, **applied}


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


class _EpisodeJob:
    """Turns one source episode into its augmented copies (one sink per copy)."""

    def __init__(
        self,
        reader: DatasetReader,
        augmented_cameras: set[str],
        batch_frames: int,
        preview: PreviewCollector,
    ) -> None:
        self.reader = reader
        self.augmented_cameras = augmented_cameras
        self.batch_frames = batch_frames
        self.preview = preview
        self.stats = reader.stats_plan()
        self.schema = reader.data_schema()

    def run(
        self, episode: SourceEpisode, copies: EpisodeCopies, sinks: list[EpisodeWriter]
    ) -> None:
        self.preview.start_episode(episode.index, episode.length, copies.labels())
        augmenters = {
            (slot, camera.key): copies.augmenter(slot, camera.is_grey)
            for slot in range(len(sinks))
            for camera in self.reader.cameras
            if camera.key in self.augmented_cameras
        }
        samplers: dict[tuple[int, str], stats_mod.FrameSampler] = (
            {key: stats_mod.FrameSampler(episode.length) for key in augmenters}
            if self.stats is not None
            else {}
        )
        numeric = self._rows(episode, sinks, augmenters, samplers)
        for camera in self.reader.cameras:
            if not camera.in_rows:
                self._stream(episode, camera, sinks, augmenters, samplers)
        if self.stats is None:
            for sink in sinks:
                sink.finish({})
            return
        source_stats = self._complete_source_stats(self.stats, episode, numeric)
        for slot, sink in enumerate(sinks):
            stats = self._stats(self.stats, episode, slot, sink, numeric, samplers, source_stats)
            sink.finish(stats)

    # -- rows and image cameras --------------------------------------------------

    def _rows(
        self,
        episode: SourceEpisode,
        sinks: list[EpisodeWriter],
        augmenters: Mapping[tuple[int, str], FrameAugmenter],
        samplers: Mapping[tuple[int, str], stats_mod.FrameSampler],
    ) -> dict[str, np.ndarray]:
        image_channels = {
            c.key: c.channels
            for c in self.reader.cameras
            if c.in_rows and c.key in self.augmented_cameras
        }
        numeric_keys = self.stats.numeric if self.stats is not None else ()
        numeric: dict[str, list[np.ndarray]] = {k: [] for k in numeric_keys}
        offset = 0
        for batch in self.reader.read_rows(episode, self.batch_frames):
            for key in numeric_keys:
                numeric[key].append(_column_values(batch, key, episode))
            decoded = {
                key: _readonly(
                    decode_image_cells(
                        batch.column(key).to_pylist(), f"episode {episode.index} {key}", channels
                    )
                )
                for key, channels in image_channels.items()
            }
            for key, frames in decoded.items():
                self.preview.add_source(episode.index, key, frames, offset)
            for slot, sink in enumerate(sinks):
                replaced = {
                    key: pa.array(values)
                    for key, values in sink.index_columns(offset, batch.num_rows).items()
                }
                for key, frames in decoded.items():
                    frames_out = augmenters[(slot, key)](frames, offset)
                    if (slot, key) in samplers:
                        samplers[(slot, key)].add(frames_out, offset)
                    self.preview.add_copy(episode.index, key, slot, frames_out, offset)
                    replaced[key] = image_column(frames_out, self.schema.field(key).type)
                sink.write_rows(_with_columns(batch, replaced, self.schema))
            offset += batch.num_rows
        return {k: np.concatenate(v) for k, v in numeric.items()}

    # -- streamed cameras (videos, plain `datasets` images) ----------------------

    def _stream(
        self,
        episode: SourceEpisode,
        camera: Camera,
        sinks: list[EpisodeWriter],
        augmenters: Mapping[tuple[int, str], FrameAugmenter],
        samplers: Mapping[tuple[int, str], stats_mod.FrameSampler],
    ) -> None:
        is_augmented = camera.key in self.augmented_cameras
        if not is_augmented and all(sink.reuse_source_frames(camera) for sink in sinks):
            return
        frame_sinks = [sink.open_frames(camera) for sink in sinks]
        key, episode_index = camera.key, episode.index

        def handler(slot: int, frame_sink: FrameSink) -> Callable[[tuple[np.ndarray, int]], None]:
            augmenter = augmenters.get((slot, key))  # None: not augmented
            sampler = samplers.get((slot, key))

            def handle(item: tuple[np.ndarray, int]) -> None:
                frames, offset = item
                if augmenter is not None:
                    frames = augmenter(frames, offset)
                    if sampler is not None:
                        sampler.add(frames, offset)
                    self.preview.add_copy(episode_index, key, slot, frames, offset)
                frame_sink.write(frames)  # a camera left out of augment_cameras keeps its frames

            return handle

        # One thread per copy (transform + encode) while this thread decodes: see
        # concurrency.py. Each copy still sees its batches in order.
        workers = CopyWorkers([handler(slot, fs) for slot, fs in enumerate(frame_sinks)])
        try:
            offset = 0
            for frames in self.reader.decode_frames(episode, camera, self.batch_frames):
                frames = _readonly(frames)
                if is_augmented:
                    self.preview.add_source(episode_index, key, frames, offset)
                workers.put((frames, offset))
                offset += len(frames)
            workers.join()
        except BaseException:
            workers.close()
            raise
        for frame_sink in frame_sinks:
            frame_sink.close()  # at most one camera's sinks are open at a time

    # -- statistics --------------------------------------------------------------

    def _complete_source_stats(
        self, plan: StatsPlan, episode: SourceEpisode, numeric: Mapping[str, np.ndarray]
    ) -> dict[str, stats_mod.Stats]:
        """The source episode's statistics; those it lacks (LeRobot's reader does not need
        them per episode) are computed from its frames and kept for the writer."""
        own = self.reader.episode_stats(episode)
        features = (*plan.numeric, *(c.key for c in self.reader.cameras))
        missing = [f for f in features if f not in own]
        if not missing:
            return own
        cameras = {c.key: c for c in self.reader.cameras}
        computed = {
            key: (
                self._source_camera_stats(plan, episode, cameras[key])
                if key in cameras
                else stats_mod.numeric_stats(numeric[key], with_quantiles=plan.with_quantiles)
            )
            for key in missing
        }
        self.reader.computed_stats[episode.index] = computed
        return {**own, **computed}

    def _source_camera_stats(
        self, plan: StatsPlan, episode: SourceEpisode, camera: Camera
    ) -> stats_mod.Stats:
        # A pass of its own: only sources lacking camera statistics pay for it.
        sampler = stats_mod.FrameSampler(episode.length)
        if not camera.in_rows:
            batches = self.reader.decode_frames(episode, camera, self.batch_frames)
        else:
            where = f"episode {episode.index} {camera.key}"
            batches = (
                decode_image_cells(batch.column(camera.key).to_pylist(), where, camera.channels)
                for batch in self.reader.read_rows(episode, self.batch_frames)
            )
        offset = 0
        for frames in batches:
            sampler.add(frames, offset)
            offset += len(frames)
        return sampler.stats(with_quantiles=plan.with_quantiles)

    def _stats(
        self,
        plan: StatsPlan,
        episode: SourceEpisode,
        slot: int,
        sink: EpisodeWriter,
        numeric: Mapping[str, np.ndarray],
        samplers: Mapping[tuple[int, str], stats_mod.FrameSampler],
        source_stats: Mapping[str, stats_mod.Stats],
    ) -> dict[str, stats_mod.Stats]:
        values = {**numeric, **sink.index_columns(0, episode.length)}
        out = {
            key: stats_mod.numeric_stats(array, with_quantiles=plan.with_quantiles)
            for key, array in values.items()
            if key in plan.numeric
        }
        for camera in self.reader.cameras:
            sampler = samplers.get((slot, camera.key))
            if sampler is not None:
                out[camera.key] = sampler.stats(with_quantiles=plan.with_quantiles)
            elif camera.key in source_stats:
                out[camera.key] = dict(source_stats[camera.key])  # frames unchanged
        return out


def _readonly(frames: np.ndarray) -> np.ndarray:
    # One decoded batch feeds every copy: an augmenter writing into it would leak one
    # copy's pixels into the next, so make that an immediate error instead.
    frames.flags.writeable = False
    return frames


def _column_values(batch: pa.RecordBatch, key: str, episode: SourceEpisode) -> np.ndarray:
    try:
        column = batch.column(key)
    except KeyError:
        raise DatasetError(
            f"episode {episode.index}: the data has no column {key!r} that "
            f"meta/info.json declares; the dataset is corrupt"
        ) from None
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(column), -1)
    if pa.types.is_primitive(column.type) or pa.types.is_boolean(column.type):
        return column.to_numpy(zero_copy_only=False)
    return np.asarray(column.to_pylist())


def _with_columns(
    batch: pa.RecordBatch, replaced: Mapping[str, pa.Array], schema: pa.Schema
) -> pa.RecordBatch:
    arrays = []
    for field in schema:
        array = replaced.get(field.name)
        if array is None:
            array = batch.column(field.name)
        elif array.type != field.type:
            array = array.cast(field.type)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
