"""Plain Hugging Face datasets with `Image` columns, read in place and written through `datasets`.

What counts as an episode (the unit that shares drawn parameters):
- with a column holding a list of images: each row is an episode, the list its frames;
- otherwise, single images per row: consecutive rows with the same `episode_index`
  (or `episode_id`) form an episode, as in frame-per-row robot exports; without such a
  column every row is its own one-frame episode.
Episodes are numbered within their split, in the source and in the output.

Copy mode keeps every source row (image bytes untouched) and appends, per source
episode, its augmented copies one after the other, their `episode_index`/`episode_id`
numbered after the split's largest; in place replaces each episode by its single
augmented copy. An augmented image keeps its source image's format (JPEG or PNG).
Layouts kept: `save_to_disk` folders and parquet files (`<split>-XXXXX-of-YYYYY.parquet`,
what the Hub serves). Every split must have the same features.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import math
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from ..errors import DatasetError
from ..stats import Stats
from .base import Camera, DatasetReader, DatasetWriter, EpisodeWriter, SourceEpisode

EPISODE_COLUMNS = ("episode_index", "episode_id")
SHARD_BYTES = 500 * 2**20
ImageCell = dict[str, Any]  # a `datasets` Image value: {"bytes": ..., "path": ...}
T = TypeVar("T")


def looks_like_plain_dataset(root: Path) -> bool:
    markers = ("dataset_info.json", "dataset_dict.json", "state.json")
    return any((root / m).exists() for m in markers) or bool(_parquet_files(root))


def _parquet_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*.parquet")
        if not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _split_name(path: Path) -> str:
    stem = path.stem
    return stem.split("-")[0] if "-" in stem else "train"


def _is_image(feature: Any) -> bool:
    return isinstance(feature, datasets.Image)


def _image_list(feature: Any) -> bool:
    inner = getattr(feature, "feature", None)
    return inner is not None and _is_image(inner)


def _undecoded(feature: Any) -> Any:
    """The same feature with images left as {bytes, path}: copies keep their exact bytes."""
    if _is_image(feature):
        return datasets.Image(decode=False)
    if _image_list(feature):
        return datasets.Sequence(datasets.Image(decode=False))
    return feature


def _split_of(episode: SourceEpisode) -> str:
    if episode.split is None:
        raise ValueError(f"episode {episode.index} has no split; it is not from a plain dataset")
    return episode.split


# ---------------------------------------------------------------- splits


class _DiskSplit:
    """A split of a `save_to_disk` folder: its memory-mapped table."""

    def __init__(self, dataset: datasets.Dataset) -> None:
        self.features = dataset.features
        self.table: pa.Table = dataset.with_format("arrow")[:].cast(self.features.arrow_schema)

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def rows(self, start: int, stop: int) -> pa.Table:
        return self.table.slice(start, stop - start)

    def batches(self) -> Iterator[pa.RecordBatch]:
        yield from self.table.to_batches()

    def column_chunks(self, name: str) -> Iterator[pa.Array]:
        yield from self.table.column(name).chunks


class _ParquetSplit:
    """A split's parquet files, read in place one row group at a time: nothing is
    converted or copied, and memory holds one row group."""

    def __init__(self, files: list[Path]) -> None:
        self.features = datasets.Features.from_arrow_schema(pq.read_schema(files[0]))
        self.schema = self.features.arrow_schema
        self.groups: list[tuple[Path, int]] = []
        self.starts: list[int] = []  # the split's row number of each group's first row
        self.num_rows = 0
        for path in files:
            meta = pq.read_metadata(path)
            for group in range(meta.num_row_groups):
                self.groups.append((path, group))
                self.starts.append(self.num_rows)
                self.num_rows += meta.row_group(group).num_rows
        self._last: tuple[int, pa.Table] | None = None

    def rows(self, start: int, stop: int) -> pa.Table:
        parts = []
        group = bisect.bisect_right(self.starts, start) - 1
        while group < len(self.groups) and self.starts[group] < stop:
            table = self._group(group)
            first = max(start - self.starts[group], 0)
            parts.append(table.slice(first, min(stop - self.starts[group], len(table)) - first))
            group += 1
        return pa.concat_tables(parts) if parts else self.schema.empty_table()

    def _group(self, group: int) -> pa.Table:
        # Consecutive episodes mostly share a row group: keep the last one read.
        if self._last is None or self._last[0] != group:
            self._last = (group, self._read(group))
        return self._last[1]

    def _read(self, group: int) -> pa.Table:
        path, index = self.groups[group]
        table = pq.ParquetFile(path).read_row_group(index)
        return table.select(self.schema.names).cast(self.schema)

    def batches(self) -> Iterator[pa.RecordBatch]:
        for group in range(len(self.groups)):
            yield from self._read(group).to_batches()

    def column_chunks(self, name: str) -> Iterator[pa.Array]:
        for path in dict.fromkeys(path for path, _ in self.groups):
            for batch in pq.ParquetFile(path).iter_batches(columns=[name]):
                yield batch.column(0)


_Split = _DiskSplit | _ParquetSplit


# ---------------------------------------------------------------- reader


class PlainReader(DatasetReader):
    format_name = "datasets (plain)"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.layout = (
            "save_to_disk"
            if (self.root / "dataset_info.json").exists()
            or (self.root / "dataset_dict.json").exists()
            else "parquet"
        )
        self.splits = self._guard(self._open_splits)
        self.features = self._common_features()
        self.cameras = [
            Camera(k, "datasets_image", 0, 0)
            for k, f in self.features.items()
            if _is_image(f) or _image_list(f)
        ]
        self.episode_key = next((k for k in EPISODE_COLUMNS if k in self.features), None)
        self._ranges: dict[tuple[str, int], range] = {}  # (split, episode) -> its rows
        self.episode_counts: dict[str, int] = {}
        # The last episode's rows: the pipeline asks for them once per camera and copy.
        self._last_rows: tuple[tuple[str, int], pa.Table] | None = None
        self.episodes = self._guard(
            lambda: [ep for split in self.splits for ep in self._episodes(split)]
        )

    def _guard(self, read: Callable[[], T]) -> T:
        try:
            return read()
        except DatasetError:
            raise
        except Exception as exc:  # `datasets` and pyarrow raise many kinds for a broken folder
            raise DatasetError(f"`datasets` cannot load {self.root}: {exc}") from None

    def _open_splits(self) -> dict[str, _Split]:
        if self.layout == "save_to_disk":
            loaded = datasets.load_from_disk(str(self.root))
            named = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
            return {name: _DiskSplit(dataset) for name, dataset in named.items()}
        by_split: dict[str, list[Path]] = {}
        for path in _parquet_files(self.root):
            by_split.setdefault(_split_name(path), []).append(path)
        return {name: _ParquetSplit(files) for name, files in by_split.items()}

    def _common_features(self) -> datasets.Features:
        features = [split.features for split in self.splits.values()]
        if not features:
            raise DatasetError(f"{self.root} has no splits; is the dataset complete?")
        for name, split in self.splits.items():
            if split.features != features[0]:
                raise DatasetError(
                    f"split {name!r} has other features than {next(iter(self.splits))!r}; "
                    f"augment the splits as separate datasets"
                )
        return features[0]

    def _episodes(self, split: str) -> list[SourceEpisode]:
        """The split's episodes (see the module docstring), remembering their rows."""
        key = self.episode_key
        if key is None or any(_image_list(self.features[c.key]) for c in self.cameras):
            ranges = [range(i, i + 1) for i in range(self.splits[split].num_rows)]
        else:
            ranges = _runs(self._column(split, key))
        lengths = [len(r) for r in ranges]
        if self.cameras and _image_list(self.features[self.cameras[0].key]):
            lengths = [n or 0 for n in self._list_lengths(split, self.cameras[0].key)]
        episodes = []
        for index, (where, length) in enumerate(zip(ranges, lengths, strict=True)):
            self._ranges[(split, index)] = where
            episodes.append(SourceEpisode(index, length, (), split))
        self.episode_counts[split] = len(episodes)
        return episodes

    def _column(self, split: str, name: str) -> list[Any]:
        return [v for chunk in self.splits[split].column_chunks(name) for v in chunk.to_pylist()]

    def _list_lengths(self, split: str, name: str) -> list[int | None]:
        chunks = self.splits[split].column_chunks(name)
        return [n for chunk in chunks for n in pc.list_value_length(chunk).to_pylist()]

    def data_schema(self) -> pa.Schema:
        return self.features.arrow_schema

    def _rows(self, episode: SourceEpisode) -> pa.Table:
        key = (_split_of(episode), episode.index)
        if self._last_rows is None or self._last_rows[0] != key:
            where = self._ranges[key]
            table = self._guard(lambda: self.splits[key[0]].rows(where.start, where.stop))
            self._last_rows = (key, table)
        return self._last_rows[1]

    def read_rows(self, episode: SourceEpisode, batch_rows: int) -> Iterator[pa.RecordBatch]:
        for batch in self._rows(episode).to_batches(max_chunksize=batch_rows):
            if batch.num_rows:
                yield batch

    def split_batches(self, split: str) -> Iterator[pa.RecordBatch]:
        """Every row of the split, in order."""
        return self.splits[split].batches()

    def _cells(self, episode: SourceEpisode, camera: Camera) -> list[ImageCell]:
        column = self._rows(episode).column(camera.key).to_pylist()
        if _image_list(self.features[camera.key]):
            return [cell for row in column for cell in row or ()]
        return column

    def decode_frames(
        self, episode: SourceEpisode, camera: Camera, batch_frames: int
    ) -> Iterator[np.ndarray]:
        """Batches of consecutive frames of one size (a list may mix sizes)."""
        batch: list[np.ndarray] = []
        for cell in self._cells(episode, camera):
            frame = _decode(cell)
            if batch and (len(batch) == batch_frames or frame.shape != batch[0].shape):
                yield np.stack(batch)
                batch = []
            batch.append(frame)
        if batch:
            yield np.stack(batch)

    def source_formats(self, episode: SourceEpisode, camera: Camera) -> list[str]:
        """The image format (JPEG, PNG, ...) of each of the episode's frames of `camera`."""
        return [_format(cell) for cell in self._cells(episode, camera)]

    def next_episode_id(self, split: str) -> int | None:
        """One past the split's largest episode id (0 when the split is empty); None
        without an episode column."""
        if self.episode_key is None:
            return None
        values = self._column(split, self.episode_key)
        if not all(isinstance(v, int) for v in values):
            raise DatasetError(
                f"column {self.episode_key!r} of split {split!r} holds values that are not "
                f"integers; copies cannot be numbered after them (use the inplace mode)"
            )
        return max(values, default=-1) + 1

    def create_writer(self, output: Path, keep_originals: bool, slots: int) -> PlainWriter:
        return PlainWriter(self, output, keep_originals, slots)


def _runs(values: list[Any]) -> list[range]:
    """The row ranges of consecutive equal values."""
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append(range(start, i))
            start = i
    return runs


def _cell_bytes(cell: ImageCell | None) -> bytes:
    data = (cell or {}).get("bytes")
    if data is None and cell and cell.get("path"):
        data = Path(cell["path"]).read_bytes()
    if data is None:
        raise DatasetError("an image cell is empty; re-download the dataset")
    return data


def _decode(cell: ImageCell | None) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(_cell_bytes(cell))) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as exc:
        raise DatasetError(f"an image does not decode ({exc}); re-download the dataset") from None


def _format(cell: ImageCell | None) -> str:
    try:
        with Image.open(io.BytesIO(_cell_bytes(cell))) as image:  # reads the header only
            return image.format or "PNG"
    except OSError as exc:
        raise DatasetError(f"an image does not decode ({exc}); re-download the dataset") from None


def _encode(frame: np.ndarray, fmt: str) -> ImageCell:
    buffer = io.BytesIO()
    if fmt.upper() in ("JPEG", "JPG"):
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
    else:
        Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


# ---------------------------------------------------------------- writer


class PlainWriter(DatasetWriter):
    """Rows go, as their episodes finish, to one Arrow spool per split in <output>/.cache;
    finish() turns each spool into a `datasets.Dataset` and saves it in the source's layout."""

    def __init__(
        self, reader: PlainReader, output: Path, keep_originals: bool, slots: int
    ) -> None:
        self.reader = reader
        self.output = output
        self.keep_originals = keep_originals
        self.slots = slots
        self.cache = output / ".cache"
        self._spools: dict[str, pa.ipc.RecordBatchStreamWriter] = {}
        self._next_ids: dict[str, int] = {}  # per split, the id of its first copy

    def _spool_path(self, split: str) -> Path:
        return self.cache / f"{split}.arrows"

    def start(self) -> None:
        # `datasets` draws progress bars for every internal step; ours is per episode.
        datasets.disable_progress_bars()
        self.cache.mkdir(parents=True)
        for split in self.reader.splits:
            spool = pa.ipc.new_stream(self._spool_path(split), self.reader.data_schema())
            self._spools[split] = spool
            if self.keep_originals:
                for batch in self.reader.split_batches(split):
                    spool.write_batch(batch)
                next_id = self.reader.next_episode_id(split)
                if next_id is not None:
                    self._next_ids[split] = next_id

    def open_episode(self, slot: int, source: SourceEpisode) -> PlainEpisodeWriter:
        split = _split_of(source)
        nth = source.index * self.slots + slot  # episode-major: an episode's copies side by side
        first = self.reader.episode_counts[split] if self.keep_originals else 0
        episode_id = self._next_ids[split] + nth if split in self._next_ids else None
        return PlainEpisodeWriter(self, source, first + nth, episode_id)

    def append(self, split: str, table: pa.Table) -> None:
        for batch in table.to_batches():
            self._spools[split].write_batch(batch)

    def finish(self) -> None:
        raw = datasets.Features({k: _undecoded(f) for k, f in self.reader.features.items()})
        written: dict[str, datasets.Dataset] = {}
        for split, spool in self._spools.items():
            spool.close()
            path = self._spool_path(split)
            generated = datasets.Dataset.from_generator(
                _spooled_rows,
                features=raw,
                cache_dir=str(self.cache),
                split=split,
                gen_kwargs={"path": str(path)},
                fingerprint=_fingerprint(split, path),
            )
            written[split] = generated.cast(self.reader.features)
        self._export(written)
        shutil.rmtree(self.cache, ignore_errors=True)

    def _export(self, written: dict[str, datasets.Dataset]) -> None:
        if self.reader.layout == "save_to_disk":
            loaded_dict = (self.reader.root / "dataset_dict.json").exists()
            target = datasets.DatasetDict(written) if loaded_dict else next(iter(written.values()))
            target.save_to_disk(str(self.output))
            return
        for split, dataset in written.items():
            shards = max(1, math.ceil(dataset.data.nbytes / SHARD_BYTES))
            for shard in range(shards):
                path = self.output / "data" / f"{split}-{shard:05d}-of-{shards:05d}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                dataset.shard(shards, shard, contiguous=True).to_parquet(str(path))


def _spooled_rows(path: str) -> Iterator[dict[str, Any]]:
    with pa.memory_map(path) as source:
        for batch in pa.ipc.open_stream(source):
            yield from batch.to_pylist()


def _fingerprint(split: str, spool: Path) -> str:
    """A `datasets` fingerprint that follows the content: the default one hashes the
    spool's path, which is random, and the same input and spec must give the same output."""
    digest = hashlib.sha256(split.encode())
    with spool.open("rb") as f:
        while chunk := f.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


class PlainEpisodeWriter(EpisodeWriter):
    """Keeps the episode's rows until finish(), which puts the augmented images in."""

    def __init__(
        self, writer: PlainWriter, source: SourceEpisode, index: int, episode_id: int | None
    ) -> None:
        self.writer = writer
        self.source = source
        self._index = index
        self.episode_id = episode_id  # of this copy; None: the source's stays
        self._batches: list[pa.RecordBatch] = []
        self._images: dict[str, _ImageCells] = {}

    @property
    def episode_index(self) -> int:
        return self._index

    def index_columns(self, offset: int, rows: int) -> dict[str, np.ndarray]:
        key = self.writer.reader.episode_key
        if self.episode_id is None or key is None:
            return {}
        return {key: np.full(rows, self.episode_id, dtype=np.int64)}

    def write_rows(self, batch: pa.RecordBatch) -> None:
        self._batches.append(batch)

    def reuse_source_frames(self, camera: Camera) -> bool:
        return True  # the rows hold the source's images, bytes untouched

    def open_frames(self, camera: Camera) -> _ImageCells:
        sink = _ImageCells(self.writer.reader.source_formats(self.source, camera))
        self._images[camera.key] = sink
        return sink

    def finish(self, stats: Mapping[str, Stats]) -> None:
        reader = self.writer.reader
        table = pa.Table.from_batches(self._batches, schema=reader.data_schema())
        for key, sink in self._images.items():
            index = table.schema.get_field_index(key)
            field = table.schema.field(index)
            # A list camera's episode is one row: its list holds every frame.
            cells = [sink.cells] if _image_list(reader.features[key]) else sink.cells
            table = table.set_column(index, field, pa.array(cells, type=field.type))
        self.writer.append(_split_of(self.source), table)


class _ImageCells:
    """A FrameSink that encodes each frame as an Image cell in its source image's format."""

    def __init__(self, formats: list[str]) -> None:
        self.formats = formats
        self.cells: list[ImageCell] = []

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            self.cells.append(_encode(frame, self.formats[len(self.cells)]))

    def close(self) -> None:
        """Nothing to flush: the episode writer puts the cells into its rows."""
