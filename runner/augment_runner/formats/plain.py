"""Plain Hugging Face datasets with `Image` columns, read and written through `datasets`.

What counts as an episode (the unit that shares drawn parameters):
- a column holding a list of images: each row is an episode, the list its frames;
- otherwise, single images per row: consecutive rows with the same `episode_index`
  (or `episode_id`) form an episode, as in frame-per-row robot exports; without such a
  column every row is its own one-frame episode.

Copy mode keeps every source row (image bytes untouched) and appends, per source
episode, its augmented copies one after the other; in place replaces each episode by
its single augmented copy. Layouts kept: `save_to_disk` folders and parquet files
(`<split>-XXXXX-of-YYYYY.parquet`, what the Hub serves).
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image

from ..errors import DatasetError
from .base import Camera

EPISODE_COLUMNS = ("episode_index", "episode_id")
SHARD_BYTES = 500 * 2**20


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


class PlainReader:
    format_name = "datasets (plain)"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.layout = (
            "parquet"
            if not (
                (self.root / "dataset_info.json").exists()
                or (self.root / "dataset_dict.json").exists()
            )
            else "save_to_disk"
        )
        self.splits: dict[str, datasets.Dataset] = {}
        self.features = self._peek_features()
        self.cameras = [
            Camera(k, "image", 0, 0)
            for k, f in self.features.items()
            if _is_image(f) or _image_list(f)
        ]
        self.totals = (0, 0)

    def _peek_features(self) -> datasets.Features:
        try:
            if self.layout == "save_to_disk":
                loaded = datasets.load_from_disk(str(self.root))
                self.splits = (
                    dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
                )
                return next(iter(self.splits.values())).features
            files = _parquet_files(self.root)
            import pyarrow.parquet as pq

            return datasets.Features.from_arrow_schema(pq.read_schema(files[0]))
        except DatasetError:
            raise
        except Exception as exc:  # datasets raises many kinds for a broken folder
            raise DatasetError(f"`datasets` cannot load {self.root}: {exc}") from None

    def load(self, cache_dir: Path) -> dict[str, datasets.Dataset]:
        """Open every split; parquet is converted into `cache_dir`, never next to the source."""
        if self.layout == "parquet" and not self.splits:
            by_split: dict[str, list[str]] = {}
            for path in _parquet_files(self.root):
                by_split.setdefault(_split_name(path), []).append(str(path))
            try:
                for split, files in by_split.items():
                    self.splits[split] = datasets.Dataset.from_parquet(
                        files, cache_dir=str(cache_dir), split=split
                    )
            except Exception as exc:
                raise DatasetError(f"`datasets` cannot load {self.root}: {exc}") from None
        return self.splits


def _episode_groups(dataset: datasets.Dataset, list_columns: bool) -> list[range]:
    """Row ranges of the episodes of one split (see the module docstring)."""
    if list_columns:
        return [range(i, i + 1) for i in range(len(dataset))]
    key = next((k for k in EPISODE_COLUMNS if k in dataset.column_names), None)
    if key is None:
        return [range(i, i + 1) for i in range(len(dataset))]
    values = dataset[key]
    groups, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            groups.append(range(start, i))
            start = i
    return groups


def _decode(cell: dict[str, Any]) -> tuple[np.ndarray, str]:
    data = cell.get("bytes")
    if data is None and cell.get("path"):
        data = Path(cell["path"]).read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB")), (image.format or "PNG")
    except (OSError, TypeError) as exc:
        raise DatasetError(f"an image does not decode ({exc}); re-download the dataset") from None


def _encode(frame: np.ndarray, fmt: str) -> dict[str, Any]:
    buffer = io.BytesIO()
    if fmt.upper() in ("JPEG", "JPG"):
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
    else:
        Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def _augment_frames(
    frames: list[np.ndarray], augmenter: Callable[[np.ndarray, int], np.ndarray], batch_frames: int
) -> list[np.ndarray]:
    """Augment an episode's frames in batches of equal-size frames, in order."""
    out: list[np.ndarray] = []
    start = 0
    while start < len(frames):
        end = start + 1
        shape = frames[start].shape
        while end < len(frames) and end - start < batch_frames and frames[end].shape == shape:
            end += 1
        batch = np.stack(frames[start:end])
        batch.flags.writeable = False
        out.extend(augmenter(batch, start))
        start = end
    return out


def augment_plain(
    reader: PlainReader,
    spec: Any,
    staging: Path,
    cameras: list[Camera],
    plan_copies: Callable[[Any, int], Any],
    preview: Any,
    progress: Callable[[int, int], None] | None,
    batch_frames: int,
) -> list[dict[str, Any]]:
    from augment_spec.model import DatasetMode

    # `datasets` draws progress bars for every internal step; ours is per episode.
    datasets.disable_progress_bars()
    keep = spec.augment_dataset_mode is DatasetMode.copy
    cache = staging / ".cache"
    splits = reader.load(cache)
    keys = [c.key for c in cameras]
    groups = {
        name: _episode_groups(ds, any(_image_list(ds.features[k]) for k in keys))
        for name, ds in splits.items()
    }
    total = sum(len(g) for g in groups.values())
    done = 0
    if progress:
        progress(0, total)
    provenance: list[dict[str, Any]] = []
    written: dict[str, datasets.Dataset] = {}
    source_episodes = output_episodes = 0
    for name, dataset in splits.items():
        raw = dataset.cast(
            datasets.Features({k: _undecoded(f) for k, f in dataset.features.items()})
        )
        episode_key = next((k for k in EPISODE_COLUMNS if k in raw.column_names), None)
        next_id = (max(raw[episode_key]) + 1) if (episode_key and len(raw) and keep) else 0
        entries: list[dict[str, Any]] = []

        def rows(
            raw=raw, name=name, episode_key=episode_key, next_id=next_id, entries=entries
        ) -> Iterator[dict[str, Any]]:
            nonlocal done
            out_index = 0
            if keep:
                for e, group in enumerate(groups[name]):
                    entries.append(
                        {
                            "split": name,
                            "episode_index": out_index,
                            "source_episode_index": e,
                            "copy_index": None,
                            "transforms": [],
                            "params": None,
                        }
                    )
                    out_index += 1
                    yield from (raw[i] for i in group)
            for e, group in enumerate(groups[name]):
                copies = plan_copies(spec, e)
                source_rows = [raw[i] for i in group]
                for slot in range(len(copies.transforms)):
                    new_id = next_id + e * len(copies.transforms) + slot if keep else None
                    yield from _augmented_rows(
                        source_rows,
                        keys,
                        copies,
                        slot,
                        batch_frames,
                        preview,
                        e,
                        episode_key,
                        new_id,
                    )
                    entries.append(
                        {
                            "split": name,
                            "episode_index": out_index,
                            "source_episode_index": e,
                            **copies.describe(slot),
                        }
                    )
                    out_index += 1
                done += 1
                if progress:
                    progress(done, total)

        written[name] = datasets.Dataset.from_generator(
            rows, features=raw.features, cache_dir=str(cache), split=name
        )
        written[name] = written[name].cast(dataset.features)
        provenance += entries
        source_episodes += len(groups[name])
        output_episodes += len(entries)
    _export(reader, written, staging)
    shutil.rmtree(cache, ignore_errors=True)
    reader.totals = (source_episodes, output_episodes)
    return provenance


def _augmented_rows(
    source_rows: list[dict[str, Any]],
    keys: list[str],
    copies: Any,
    slot: int,
    batch_frames: int,
    preview: Any,
    episode: int,
    episode_key: str | None,
    new_id: int | None,
) -> Iterator[dict[str, Any]]:
    """The rows of one augmented copy of one episode."""
    sequence = isinstance(source_rows[0][keys[0]], list)
    new_rows = [dict(row) for row in source_rows]
    preview.start_episode(episode, _episode_length(source_rows, keys[0], sequence), copies.labels())
    for key in keys:
        augmenter = copies.augmenter(slot)
        cells_per_row = (
            [row[key] for row in source_rows] if sequence else [[row[key] for row in source_rows]]
        )
        for r, cells in enumerate(cells_per_row):
            decoded = [_decode(cell) for cell in cells]
            frames = [f for f, _ in decoded]
            augmented = _augment_frames(frames, augmenter, batch_frames)
            if slot == 0 and frames and len({f.shape for f in frames}) == 1:
                preview.add_source(episode, key, np.stack(frames), 0)
            if augmented and len({f.shape for f in augmented}) == 1:
                preview.add_copy(episode, key, slot, np.stack(augmented), 0)
            encoded = [_encode(f, fmt) for f, (_, fmt) in zip(augmented, decoded, strict=True)]
            if sequence:
                new_rows[r][key] = encoded
            else:
                for row, cell in zip(new_rows, encoded, strict=True):
                    row[key] = cell
    for row in new_rows:
        if new_id is not None and episode_key is not None:
            row[episode_key] = new_id
        yield row


def _episode_length(rows: list[dict[str, Any]], key: str, sequence: bool) -> int:
    return len(rows[0][key]) if sequence else len(rows)


def _export(reader: PlainReader, written: dict[str, datasets.Dataset], staging: Path) -> None:
    if reader.layout == "save_to_disk":
        loaded_dict = (reader.root / "dataset_dict.json").exists()
        target = datasets.DatasetDict(written) if loaded_dict else next(iter(written.values()))
        target.save_to_disk(str(staging))
        return
    for split, dataset in written.items():
        shards = max(1, math.ceil(dataset.data.nbytes / SHARD_BYTES))
        for shard in range(shards):
            path = staging / "data" / f"{split}-{shard:05d}-of-{shards:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            dataset.shard(shards, shard, contiguous=True).to_parquet(str(path))
