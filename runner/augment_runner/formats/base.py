"""What the pipeline needs from a dataset format: a reader of source episodes and a writer
of output episodes. LeRobot v3.0 and v2.1 (lerobot_v3.py, lerobot_v21.py) and plain
`datasets` folders (plain.py) implement both.
"""

from __future__ import annotations

import io
import itertools
import json
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

import datasets
import numpy as np
import pyarrow as pa
from PIL import Image

from ..codec_plan import VideoPlans
from ..errors import DatasetError
from ..shards import Shard, ShardParts, not_splittable
from ..stats import Stats
from ..video import VideoFormat, probe_video

CAMERA_DTYPES = ("video", "image")
# Feature dtypes LeRobot knows; anything else is a dataset we cannot faithfully rewrite.
NUMERIC_DTYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    }
)
KNOWN_DTYPES = NUMERIC_DTYPES | {"video", "image", "string", "language"}
# info.json keys both LeRobot versions need before anything else can be read.
REQUIRED_INFO = ("fps", "features", "total_episodes", "total_frames", "data_path")


# How a camera's frames are stored. "video": MP4 files (LeRobot). "image": one PNG per
# data row (LeRobot). "datasets_image": a plain `datasets` Image column, one image or a
# list of images per row, in whatever format the source chose.
CameraStorage = Literal["video", "image", "datasets_image"]


@dataclass(frozen=True)
class Camera:
    key: str
    storage: CameraStorage
    height: int
    width: int
    channels: int = 3
    depth: bool = False  # info "video.is_depth_map": distances, not colours

    @property
    def is_rgb(self) -> bool:
        """Colour frames the transforms are made for; grey, RGBA and depth are not."""
        return self.channels == 3 and not self.depth

    @property
    def is_grey(self) -> bool:
        """Grey levels, one channel: augmented only when the spec asks for grey cameras."""
        return self.channels == 1 and not self.depth

    @property
    def in_rows(self) -> bool:
        """LeRobot image cameras: the pipeline decodes and re-encodes their PNG cells as the
        data rows pass. The others stream apart from the rows, from
        DatasetReader.decode_frames to EpisodeWriter.open_frames."""
        return self.storage == "image"


@dataclass(frozen=True)
class SourceEpisode:
    index: int
    length: int
    tasks: tuple[str, ...]
    # The split a plain `datasets` episode is numbered within; None for LeRobot, which
    # numbers episodes across the dataset.
    split: str | None = None


@dataclass(frozen=True)
class OutputPlan:
    """Where each augmented episode of a LeRobot dataset goes.

    Output episodes are ordered copy-major: every source episode's copy 0 (slot 0), then
    every copy 1, and so on, after the originals in copy mode. Each slot then fills its
    own files front to back, so v3 offsets are contiguous within every file.
    """

    keep_originals: bool
    slots: int
    source_episodes: int
    source_frames: int
    frames_before: tuple[int, ...]  # per source episode, the frames of those before it

    @classmethod
    def of(cls, keep_originals: bool, slots: int, episodes: list[SourceEpisode]) -> OutputPlan:
        lengths = [ep.length for ep in episodes]
        before = tuple(itertools.accumulate(lengths, initial=0))[:-1]
        return cls(keep_originals, slots, len(lengths), sum(lengths), before)

    @property
    def base_episode(self) -> int:
        return self.source_episodes if self.keep_originals else 0

    @property
    def base_frame(self) -> int:
        return self.source_frames if self.keep_originals else 0

    @property
    def total_episodes(self) -> int:
        return self.base_episode + self.slots * self.source_episodes

    @property
    def total_frames(self) -> int:
        return self.base_frame + self.slots * self.source_frames

    def episode_index(self, slot: int, source_index: int) -> int:
        return self.base_episode + slot * self.source_episodes + source_index

    def first_frame(self, slot: int, source_index: int) -> int:
        return self.base_frame + slot * self.source_frames + self.frames_before[source_index]


@dataclass(frozen=True)
class StatsPlan:
    """The statistics each output episode carries (LeRobot): per numeric feature and per
    camera, with quantiles or without."""

    numeric: tuple[str, ...]
    with_quantiles: bool


class FrameSink(Protocol):
    """Takes one output episode's frames of one camera, batch by batch, in order."""

    def write(self, frames: np.ndarray) -> None: ...

    def close(self) -> None: ...


class EpisodeWriter(ABC):
    """Receives one output episode: its rows, its streamed cameras' frames, then its
    statistics."""

    @property
    @abstractmethod
    def episode_index(self) -> int:
        """Its index in the output (within its split, for plain datasets)."""

    @abstractmethod
    def index_columns(self, offset: int, rows: int) -> dict[str, np.ndarray]:
        """The columns this episode numbers itself, for its rows offset..offset+rows-1; the
        pipeline puts them into the rows it writes and into the statistics."""

    @abstractmethod
    def write_rows(self, batch: pa.RecordBatch) -> None: ...

    @abstractmethod
    def open_frames(self, camera: Camera) -> FrameSink: ...

    def reuse_source_frames(self, camera: Camera) -> bool:
        """Take an unaugmented streamed camera from the source without decoding it."""
        return False

    @abstractmethod
    def finish(self, stats: Mapping[str, Stats]) -> None:
        """The episode is complete; `stats` is empty where the format keeps no statistics."""


class DatasetWriter(ABC):
    @abstractmethod
    def start(self) -> None:
        """Lay down what does not depend on the augmented episodes (originals, tasks)."""

    @abstractmethod
    def open_episode(self, slot: int, source: SourceEpisode) -> EpisodeWriter:
        """The writer of augmented copy `slot` of `source`; the format decides where it
        goes (in copy mode, after the originals, which keep their indices)."""

    @abstractmethod
    def finish(self) -> None:
        """Write the metadata that describes every episode (totals, offsets, stats)."""

    def shard_parts(self) -> ShardParts:
        """What the merge needs from a shard, once finished (formats that write shards)."""
        raise NotImplementedError(f"{type(self).__name__} writes no shards")


class DatasetReader(ABC):
    """A dataset opened read-only."""

    format_name: str
    root: Path
    cameras: list[Camera]
    episodes: list[SourceEpisode]

    @abstractmethod
    def read_rows(self, episode: SourceEpisode, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The episode's data rows, in order, in batches of at most `batch_rows`."""

    @abstractmethod
    def data_schema(self) -> pa.Schema:
        """The schema the pipeline gives the rows it writes."""

    @abstractmethod
    def decode_frames(
        self, episode: SourceEpisode, camera: Camera, batch_frames: int
    ) -> Iterator[np.ndarray]:
        """A streamed camera's frames of the episode, in order, in (N,H,W,3) uint8 batches
        of at most `batch_frames`."""

    def stats_plan(self) -> StatsPlan | None:
        """The statistics output episodes carry; None where the format keeps none."""
        return None

    def episode_stats(self, episode: SourceEpisode) -> dict[str, Stats]:
        """The source episode's statistics, as its metadata has them."""
        return {}

    @cached_property
    def video_plans(self) -> VideoPlans:
        """How each video camera is decoded and encoded (codec_plan.py); the pipeline
        fills it, and a camera it has no plan for goes through the CPU."""
        return VideoPlans()

    @cached_property
    def computed_stats(self) -> dict[int, dict[str, Stats]]:
        """Per episode index: statistics the source lacks, computed from its frames."""
        return {}

    def source_stats(self, episode: SourceEpisode) -> dict[str, Stats]:
        """The episode's statistics: the source's own, completed by the computed ones."""
        return {**self.computed_stats.get(episode.index, {}), **self.episode_stats(episode)}

    @abstractmethod
    def create_writer(self, output: Path, keep_originals: bool, slots: int) -> DatasetWriter:
        """The writer of the output in `output`: the originals when keep_originals, then
        `slots` augmented copies of every source episode."""

    def create_shard_writer(
        self, output: Path, keep_originals: bool, slots: int, shard: Shard
    ) -> DatasetWriter:
        """The writer of one shard (augment_runner/shards.py): the episodes of `shard`
        only, numbered as in the whole output, with what the merge needs."""
        raise not_splittable(self.format_name, "run without --shard")


class LeRobotReader(DatasetReader):
    """A LeRobot dataset opened read-only."""

    info: dict[str, Any]
    stats_quantiles: bool  # whether the version's statistics have quantiles (v3.0)

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return self.info["features"]

    @property
    def total_frames(self) -> int:
        return sum(ep.length for ep in self.episodes)

    @abstractmethod
    def video_file(self, episode: SourceEpisode, camera: Camera) -> Path: ...

    @cached_property
    def _video_formats(self) -> dict[str, VideoFormat]:
        return {}

    def video_format(self, camera: Camera) -> VideoFormat:
        """The camera's codec, pixel format, fps and size, probed once from its first file."""
        formats = self._video_formats
        if camera.key not in formats:
            path = self.video_file(self.episodes[0], camera)
            if not path.exists():
                raise DatasetError(f"video {path} is missing; re-download the dataset")
            formats[camera.key] = probe_video(path)
        return formats[camera.key]

    def stats_plan(self) -> StatsPlan:
        numeric = tuple(k for k, ft in self.features.items() if ft["dtype"] in NUMERIC_DTYPES)
        return StatsPlan(numeric, self.stats_quantiles)

    @abstractmethod
    def episode_stats(self, episode: SourceEpisode) -> dict[str, Stats]:
        """The source's own statistics of the episode (features it lacks are absent)."""

    def output_plan(self, keep_originals: bool, slots: int) -> OutputPlan:
        return OutputPlan.of(keep_originals, slots, self.episodes)


# ---------------------------------------------------------------- shared helpers


def load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{what} is missing ({path}); is this a complete dataset?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{what} is not valid JSON ({path}: {exc}); re-download it") from None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # LeRobot writes its metadata JSON with an indent of 4.
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n")


def load_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{what} is missing ({path}); is this a complete dataset?") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path} line {number} is not valid JSON: {exc}") from None
    return rows


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def load_info(root: Path) -> dict[str, Any]:
    """meta/info.json with the keys every LeRobot reader needs, or a DatasetError."""
    info = load_json(root / "meta/info.json", "meta/info.json")
    missing = [key for key in REQUIRED_INFO if key not in info]
    if missing:
        raise DatasetError(f"meta/info.json lacks {', '.join(missing)}; the metadata is corrupt")
    fps = info["fps"]
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0:
        raise DatasetError(f"meta/info.json gives fps {fps!r}, not a positive number; fix it")
    check_features(info["features"], "meta/info.json")
    return info


def check_features(features: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(features, dict) or not features:
        raise DatasetError(f"{where} has no 'features'; the dataset metadata is corrupt")
    for key, ft in features.items():
        dtype = ft.get("dtype") if isinstance(ft, dict) else None
        if dtype not in KNOWN_DTYPES:
            raise DatasetError(
                f"feature {key!r} has dtype {dtype!r}, which LeRobot does not define "
                f"(known: {', '.join(sorted(KNOWN_DTYPES))}); fix meta/info.json"
            )
        if "shape" not in ft:
            raise DatasetError(f"feature {key!r} has no shape in {where}; fix meta/info.json")
    return features


def cameras_of(features: Mapping[str, Mapping[str, Any]]) -> list[Camera]:
    cameras = []
    for key, ft in features.items():
        if ft["dtype"] in CAMERA_DTYPES:
            height, width, channels = _height_width_channels(key, ft)
            info = ft.get("info") or {}
            depth = bool(info.get("video.is_depth_map", False))
            cameras.append(Camera(key, ft["dtype"], height, width, channels, depth))
    return cameras


def _height_width_channels(key: str, ft: Mapping[str, Any]) -> tuple[int, int, int]:
    shape = list(ft["shape"])
    names = list(ft.get("names") or [])
    if len(shape) != 3:
        raise DatasetError(f"camera {key!r} has shape {shape}, expected 3 dimensions")
    if names and names[0] in ("channel", "channels"):  # (c, h, w) layouts of old ports
        return int(shape[1]), int(shape[2]), int(shape[0])
    return int(shape[0]), int(shape[1]), int(shape[2])


def hf_features(features: Mapping[str, Mapping[str, Any]]) -> datasets.Features:
    """The `datasets` schema LeRobot uses for the data parquet (videos live elsewhere)."""
    out: dict[str, Any] = {}
    for key, ft in features.items():
        shape = tuple(ft["shape"])
        if ft["dtype"] == "video":
            continue
        if ft["dtype"] == "image":
            out[key] = datasets.Image()
        elif shape == (1,):
            out[key] = datasets.Value(ft["dtype"])
        elif len(shape) == 1:
            out[key] = datasets.Sequence(datasets.Value(ft["dtype"]), length=shape[0])
        else:
            array_type = {
                2: datasets.Array2D,
                3: datasets.Array3D,
                4: datasets.Array4D,
                5: datasets.Array5D,
            }[len(shape)]
            out[key] = array_type(shape=shape, dtype=ft["dtype"])
    return datasets.Features(out)


def decode_image_cells(
    cells: list[Mapping[str, Any] | None], where: str, channels: int = 3
) -> np.ndarray:
    """(N,H,W,3) uint8 RGB from `datasets` Image cells ({bytes, path}); with channels=1,
    (N,H,W,1) grey levels from 8-bit grey images."""
    frames = []
    for cell in cells:
        data = (cell or {}).get("bytes")
        if not data:
            raise DatasetError(f"{where}: an image cell has no embedded bytes; re-download it")
        try:
            with Image.open(io.BytesIO(data)) as image:
                frames.append(_pixels(image, channels, where))
        except OSError as exc:
            raise DatasetError(
                f"{where}: an image cannot be decoded ({exc}); re-download it"
            ) from None
    return np.stack(frames)


def _pixels(image: Image.Image, channels: int, where: str) -> np.ndarray:
    if channels != 1:
        return np.asarray(image.convert("RGB"))
    if image.mode != "L":  # converting 16-bit or alpha levels would change what they mean
        raise DatasetError(
            f"{where}: a 1-channel image is stored as {image.mode}; the runner reads 1-channel "
            f"images as 8-bit grey (L) only"
        )
    return np.asarray(image)[..., np.newaxis]


def encode_png(frame: np.ndarray) -> bytes:
    """PNG of an (H,W,3) RGB or (H,W,1) grey frame (the grey one as an 8-bit grey PNG)."""
    buffer = io.BytesIO()
    pixels = frame[..., 0] if frame.shape[-1] == 1 else frame
    # compress_level 1: PNG is lossless anyway; level 6 (PIL's default) is several times slower.
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_column(frames: np.ndarray, type_: pa.DataType) -> pa.Array:
    return pa.array([{"bytes": encode_png(f), "path": None} for f in frames], type=type_)


def copy_tree(
    source: Path,
    dest: Path,
    rewritten_meta: tuple[str, ...] = (),
    wanted: Callable[[Path], bool] | None = None,
) -> None:
    """Byte-for-byte copy of a dataset folder, leaving out hidden folders (hub caches)
    and the files the writer rewrites anyway: the card and preview at the top (also those
    of a source that was itself augmented) and `rewritten_meta` under meta/. With
    `wanted`, only the files it accepts (a shard's), and no folder left empty by it."""

    def unwanted(path: Path) -> bool:
        if wanted is None:
            return False
        if path.is_dir():
            return not any(wanted(p) for p in path.rglob("*") if p.is_file())
        return not wanted(path)

    def ignore(folder: str, names: list[str]) -> list[str]:
        where = Path(folder)
        rewritten = ("README.md", "preview.png") if where == source else (
            rewritten_meta if where == source / "meta" else ())
        return [
            n for n in names if n.startswith(".") or n in rewritten or unwanted(where / n)
        ]

    shutil.copytree(source, dest, ignore=ignore, dirs_exist_ok=True, copy_function=shutil.copyfile)


@dataclass
class EpisodeRecord:
    """What the writer remembers of an output episode until the metadata is written."""

    index: int
    length: int
    tasks: tuple[str, ...]
    source: SourceEpisode
    slot: int
    first_frame: int
    stats: dict[str, Stats]
    extra: dict[str, Any] = field(default_factory=dict)


class LeRobotEpisodeWriter(EpisodeWriter):
    """What the episode writers of both LeRobot versions share: the record they fill, and
    the numbering of the episode_index and global frame index columns."""

    record: EpisodeRecord

    @property
    def episode_index(self) -> int:
        return self.record.index

    def index_columns(self, offset: int, rows: int) -> dict[str, np.ndarray]:
        first = self.record.first_frame + offset
        return {
            "episode_index": np.full(rows, self.record.index, dtype=np.int64),
            "index": np.arange(first, first + rows, dtype=np.int64),
        }
