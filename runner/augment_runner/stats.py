"""Per-episode feature statistics computed the way LeRobot computes them, and their aggregation.

What LeRobot does (src/lerobot/datasets/compute_stats.py, read for this module):
- numeric features: min, max, mean, std (population) and count over the episode's
  frames, per dimension; a shape-(1,) feature keeps shape (1,). min and max keep the
  feature's dtype (bool, int or float), the other statistics are floats.
- camera features (image or video): up to ~100 frames sampled evenly over the episode
  (frames larger than 300 px are strided down to ~150 px), statistics per channel over
  all sampled pixels, divided by 255 and shaped (3, 1, 1) (grey images too, as RGB);
  count = frames sampled. Frames of video deeper than 8 bits travel as uint16
  (video.py) and are divided by 65535: every camera's statistics lie in [0, 1].
- v3.0 adds the quantiles q01, q10, q50, q90 and q99, estimated from a 5000-bin
  histogram spanning [min, max] with linear interpolation inside the bin; v2.1 has none.
- dataset stats (meta/stats.json) aggregate episodes: min of mins, max of maxes,
  count-weighted mean, pooled variance, and (released v3.0 readers) count-weighted
  mean of the quantiles.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

QUANTILES: dict[str, float] = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
BASIC_STATS = ("min", "max", "mean", "std", "count")
ALL_STATS = (*BASIC_STATS, *QUANTILES)
HISTOGRAM_BINS = 5000

Stats = dict[str, np.ndarray]


def sample_frame_indices(
    length: int, min_samples: int = 100, max_samples: int = 10_000
) -> list[int]:
    """Frames of an episode that enter camera statistics (LeRobot's sampling rule)."""
    if length <= 0:
        return []
    wanted = max(min(min_samples, length), min(int(length**0.75), max_samples))
    return sorted(set(np.round(np.linspace(0, length - 1, wanted)).astype(int).tolist()))


def downsample_for_stats(frames: np.ndarray, target: int = 150, threshold: int = 300) -> np.ndarray:
    """Stride (N,H,W,C) frames down like LeRobot does before image statistics."""
    height, width = frames.shape[1:3]
    if max(height, width) < threshold:
        return frames
    step = int(width / target) if width > height else int(height / target)
    return frames[:, ::step, ::step]


def histogram_quantiles(
    values: np.ndarray, vmin: np.ndarray, vmax: np.ndarray
) -> dict[str, np.ndarray]:
    """Quantiles per column of (N, D) `values` from a HISTOGRAM_BINS-bin histogram."""
    result = {key: np.empty(values.shape[1], dtype=np.float64) for key in QUANTILES}
    count = values.shape[0]
    for column in range(values.shape[1]):
        edges = np.linspace(vmin[column] - 1e-10, vmax[column] + 1e-10, HISTOGRAM_BINS + 1)
        hist, _ = np.histogram(values[:, column], bins=edges)
        cumulative = np.cumsum(hist)
        for key, q in QUANTILES.items():
            result[key][column] = _interpolated_quantile(cumulative, edges, q * count)
    return result


def _interpolated_quantile(cumulative: np.ndarray, edges: np.ndarray, target: float) -> float:
    idx = int(np.searchsorted(cumulative, target))
    if idx == 0:
        return float(edges[0])
    if idx >= len(cumulative):
        return float(edges[-1])
    before = cumulative[idx - 1]
    in_bin = cumulative[idx] - before
    if in_bin == 0:
        return float(edges[idx])
    return float(edges[idx] + (target - before) / in_bin * (edges[idx + 1] - edges[idx]))


def _column_stats(values: np.ndarray, with_quantiles: bool) -> Stats:
    """Stats of each column of a (N, D) array; N >= 1.

    min and max keep the values' own dtype (a bool feature's are bools, an int
    feature's ints), as LeRobot's writer keeps them: a reader concatenating our rows
    with the source's needs the same types. The moments and quantiles are floats.
    """
    values = np.asarray(values)
    stats: Stats = {"min": values.min(axis=0), "max": values.max(axis=0)}
    # Bools and integers are promoted before squaring, as LeRobot does; float32 stays.
    wide = np.float64 if values.dtype.kind in "biu" else np.result_type(values.dtype, np.float32)
    floats = values.astype(wide, copy=False)
    stats["mean"] = floats.mean(axis=0)
    stats["std"] = floats.std(axis=0)
    if with_quantiles:
        if values.shape[0] < 2:
            stats.update({key: stats["mean"].copy() for key in QUANTILES})
        else:
            low, high = floats.min(axis=0), floats.max(axis=0)
            stats.update(histogram_quantiles(floats, low, high))
    return stats


def numeric_stats(values: np.ndarray, *, with_quantiles: bool) -> Stats:
    """Stats of a numeric feature over an episode: `values` is (N,) or (N, D)."""
    values = np.asarray(values)
    columns = values.reshape(len(values), -1) if values.ndim > 1 else values.reshape(-1, 1)
    stats = _column_stats(columns, with_quantiles)
    shape = values.shape[1:] if values.ndim > 1 else (1,)
    out = {key: np.asarray(value).reshape(shape) for key, value in stats.items()}
    out["count"] = np.array([len(values)])
    return out


def image_stats(frames: np.ndarray, *, with_quantiles: bool) -> Stats:
    """Per-channel stats of sampled (N,H,W,C) uint8 or uint16 frames, in 0..1 (divided
    by their dtype's white: 255 or 65535), shaped (C,1,1).

    Grey (N,H,W,1) frames give (3,1,1), three equal channels: LeRobot's writer loads
    every image as RGB before its statistics, and its readers require (3,1,1)."""
    channels = frames.shape[-1]
    white = float(np.iinfo(frames.dtype).max)
    stats = _column_stats(frames.reshape(-1, channels), with_quantiles)
    out = {
        key: (np.asarray(value, dtype=np.float64) / white).reshape(channels, 1, 1)
        for key, value in stats.items()
    }
    if channels == 1:
        out = {key: np.repeat(value, 3, axis=0) for key, value in out.items()}
    out["count"] = np.array([frames.shape[0]])
    return out


class FrameSampler:
    """Keeps the frames of one episode that LeRobot's sampling rule picks, as they stream by.

    Memory is bounded by ~100 downsampled frames whatever the episode length.
    """

    def __init__(self, length: int) -> None:
        self._wanted = sample_frame_indices(length)
        self._wanted_set = set(self._wanted)
        self._kept: list[np.ndarray] = []

    def add(self, frames: np.ndarray, frame_offset: int) -> None:
        picks = [i for i in range(len(frames)) if frame_offset + i in self._wanted_set]
        if picks:
            self._kept.append(downsample_for_stats(frames[picks]).copy())

    def stats(self, *, with_quantiles: bool) -> Stats:
        if not self._kept:
            raise ValueError("no frames were sampled for statistics")
        return image_stats(np.concatenate(self._kept), with_quantiles=with_quantiles)


def complete(stats: Mapping[str, Any] | None) -> bool:
    """Whether a feature's stats hold every statistic both LeRobot versions need."""
    return stats is not None and all(stats.get(key) is not None for key in BASIC_STATS)


def select_stats(stats: Stats, keys: Iterable[str] | None) -> Stats:
    """Keep the statistic names a dataset already uses (so file schemas stay equal)."""
    if keys is None:
        return stats
    return {key: stats[key] for key in keys if key in stats}


def aggregate_feature(per_episode: Sequence[Mapping[str, np.ndarray]]) -> Stats:
    """Dataset-level stats of one feature from its per-episode stats."""
    means = np.stack([np.asarray(s["mean"], dtype=np.float64) for s in per_episode])
    variances = np.stack([np.asarray(s["std"], dtype=np.float64) ** 2 for s in per_episode])
    counts = np.stack([np.asarray(s["count"], dtype=np.float64) for s in per_episode])
    total = counts.sum(axis=0)
    weights = counts.reshape(counts.shape + (1,) * (means.ndim - counts.ndim))
    mean = (means * weights).sum(axis=0) / total
    variance = ((variances + (means - mean) ** 2) * weights).sum(axis=0) / total
    out: Stats = {
        "min": np.min(np.stack([np.asarray(s["min"]) for s in per_episode]), axis=0),
        "max": np.max(np.stack([np.asarray(s["max"]) for s in per_episode]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": total.astype(np.int64),
    }
    for key in QUANTILES:
        if all(key in s for s in per_episode):
            values = np.stack([np.asarray(s[key], dtype=np.float64) for s in per_episode])
            out[key] = (values * weights).sum(axis=0) / total
    return out


def aggregate(
    per_episode: Sequence[Mapping[str, Mapping[str, np.ndarray]]],
) -> dict[str, Stats]:
    """meta/stats.json content from every episode's stats (features as in any episode)."""
    features = sorted({feature for stats in per_episode for feature in stats})
    return {
        feature: aggregate_feature([stats[feature] for stats in per_episode if feature in stats])
        for feature in features
    }


def to_json(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Nested lists (what LeRobot writes into stats.json and episodes_stats.jsonl)."""
    return {
        feature: {key: np.asarray(value).tolist() for key, value in values.items()}
        for feature, values in stats.items()
    }


def from_json(stats: Mapping[str, Mapping[str, Any]]) -> dict[str, Stats]:
    return {
        feature: {key: np.asarray(value) for key, value in values.items()}
        for feature, values in stats.items()
    }
