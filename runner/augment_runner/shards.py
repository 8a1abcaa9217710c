"""One job split into shards, and what each shard leaves for the merge (docs/design.md,
Scale out).

Shard k of n augments a fixed, contiguous range of source episodes, so the merged
output keeps the source's episode order. Every shard reads the whole source's episode
table and numbers its output episodes and frames as the unsplit job would; parameters
are drawn per (seed, source episode, copy), so a shard draws what the unsplit job
draws. Merging therefore never changes a data row or decodes a frame: it joins the
shards' files as the unsplit job fills them and writes the metadata that spans them.

A shard's folder is not a dataset: it holds its episodes' files and `shard.json`, the
manifest saying which shard it is and what the merge needs (its new files, and the
statistics that enter the dataset's aggregate).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import stats as stats_mod
from .errors import AugmentError

SHARD_MANIFEST = "shard.json"
# Source episodes a sharded job's pod augments between two checkpoints (a piece: pieces),
# unless the pod's environment says otherwise (contract.ENV_CHECKPOINT_EPISODES).
CHECKPOINT_EPISODES = 10
# 2: the files' sizes and frame rates the merge joins files by (formats/*_merge.py).
MANIFEST_VERSION = 2


def not_splittable(kind: str, remedy: str) -> AugmentError:
    """The one-line refusal of a source that cannot be split (only LeRobot v3.0 can)."""
    return AugmentError(f"{kind} datasets cannot be split into shards (LeRobot v3.0 can): "
                        f"{remedy}")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise AugmentError(
                f"shard {self.index}/{self.count} does not exist: K/N needs N >= 1 and "
                f"0 <= K < N"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`K/N`, as `--shard` takes it."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise AugmentError(f"--shard {text!r} is not K/N (for example 0/4)")
        return cls(int(match[1]), int(match[2]))

    def episodes(self, total: int) -> range:
        """Positions of this shard's episodes among `total`: ceil(k*total/n) up to
        ceil((k+1)*total/n). Shard 0 is never empty, so it holds the first episode (the
        preview's); with fewer episodes than shards the last shards are empty."""
        def start(k: int) -> int:
            return -(-k * total // self.count)  # ceil(k * total / count)

        return range(start(self.index), start(self.index + 1))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def pieces(shard: Shard, total: int, per_piece: int) -> list[Shard]:
    """The pieces a shard's pod stages one commit at a time, so that a retried pod
    finds the finished ones (docs/design.md, Scale out): each shard of n is split into
    b pieces of at most about `per_piece` of the `total` source episodes, and piece i of
    shard k is shard k*b+i of n*b. As ceil(k*total/n) = ceil(k*b*total/(n*b)), shard k's
    pieces hold exactly its episodes, in order, and the n*b pieces of all shards are one
    split of the source that `augment merge` puts together like any other."""
    if per_piece < 1:
        raise AugmentError(f"a piece holds at least one episode, not {per_piece}")
    largest = len(Shard(0, shard.count).episodes(total))
    per_shard = max(1, -(-largest // per_piece))  # ceil
    return [Shard(shard.index * per_shard + i, shard.count * per_shard)
            for i in range(per_shard)]


@dataclass
class ShardParts:
    """What a format's writer made in a shard, for the merge: `files` (format specific:
    the new files, so the merge can tell them from copied source files), and the
    per-episode statistics entering the dataset's aggregate, in the unsplit job's order
    (the originals kept, then the augmented episodes)."""

    files: dict[str, Any] = field(default_factory=dict)
    original_stats: list[dict[str, stats_mod.Stats]] = field(default_factory=list)
    episode_stats: list[dict[str, stats_mod.Stats]] = field(default_factory=list)


@dataclass
class ShardManifest:
    shard: Shard
    format_name: str
    source_episodes: int  # in the whole source, not in this shard
    episodes: range  # positions of this shard's source episodes
    parts: ShardParts

    def to_json(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "shard": self.shard.index,
            "shards": self.shard.count,
            "format": self.format_name,
            "source_episodes": self.source_episodes,
            "episodes": [self.episodes.start, self.episodes.stop],
            "files": self.parts.files,
            "original_stats": [stats_mod.to_json(s) for s in self.parts.original_stats],
            "episode_stats": [stats_mod.to_json(s) for s in self.parts.episode_stats],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: Path) -> ShardManifest:
        try:
            if data["version"] != MANIFEST_VERSION:
                raise AugmentError(
                    f"{where} is a version {data['version']} shard manifest; this augment reads "
                    f"version {MANIFEST_VERSION}: make the shards and merge them with one version"
                )
            start, stop = data["episodes"]
            return cls(
                Shard(int(data["shard"]), int(data["shards"])),
                str(data["format"]),
                int(data["source_episodes"]),
                range(int(start), int(stop)),
                ShardParts(
                    dict(data["files"]),
                    [stats_mod.from_json(s) for s in data["original_stats"]],
                    [stats_mod.from_json(s) for s in data["episode_stats"]],
                ),
            )
        except (KeyError, TypeError, ValueError):
            raise AugmentError(
                f"{where} is not a complete shard manifest; make the shard again"
            ) from None

    def write(self, root: Path) -> Path:
        path = root / SHARD_MANIFEST
        # Floats keep every digit (json writes repr), so merged statistics equal the
        # unsplit job's.
        path.write_text(json.dumps(self.to_json()) + "\n")
        return path

    @classmethod
    def read(cls, root: Path) -> ShardManifest:
        path = root / SHARD_MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise AugmentError(
                f"{root} is not a shard (it has no {SHARD_MANIFEST}); make shards with "
                f"augment run --shard K/N"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AugmentError(f"{path} is not valid JSON; make the shard again") from None
        if not isinstance(data, dict):
            raise AugmentError(f"{path} is not a shard manifest; make the shard again")
        return cls.from_json(data, path)


@dataclass(frozen=True)
class ShardFolder:
    """A shard's folder and its manifest, as the merge reads them."""

    root: Path
    manifest: ShardManifest


def check_complete(manifests: Sequence[ShardManifest], where: Sequence[Path]) -> None:
    """The manifests are the shards 0..n-1 of one split of one source, each once, in
    order; anything else cannot be merged into the unsplit job's output."""
    first = manifests[0]
    count = first.shard.count
    for manifest, root in zip(manifests, where, strict=True):
        if manifest.shard.count != count:
            raise AugmentError(
                f"{root} is shard {manifest.shard} but {where[0]} is shard {first.shard}: "
                f"merge the shards of one split"
            )
        if (manifest.format_name, manifest.source_episodes) != (
            first.format_name,
            first.source_episodes,
        ):
            raise AugmentError(
                f"{root} was made from a different source than {where[0]} ({manifest.format_name}, "
                f"{manifest.source_episodes} episodes); merge the shards of one job"
            )
        if manifest.episodes != manifest.shard.episodes(manifest.source_episodes):
            raise AugmentError(f"{root} does not hold the episodes of shard {manifest.shard}")
    indices = [m.shard.index for m in manifests]
    repeated = sorted({i for i in indices if indices.count(i) > 1})
    if repeated:
        raise AugmentError(f"shard {repeated[0]}/{count} is given more than once")
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise AugmentError(
            f"shard {missing[0]}/{count} is missing ({len(missing)} of {count} missing); "
            f"give every shard's folder"
        )
