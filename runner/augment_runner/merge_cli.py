"""`augment merge`: put the shards of one job together into the dataset one run writes.

    augment run --dataset SRC --shard 0/2 --output out/shard-0 [flags]
    augment run --dataset SRC --shard 1/2 --output out/shard-1 [same flags]
    augment merge out/shard-0 out/shard-1 --output out/dataset

The shards may run on different machines; the merge needs every shard's folder. Exit
codes and the one-line failure are `augment run`'s.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from augment_spec.contract import EXIT_OK

from .cli import exit_code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "shards", nargs="+", type=Path, metavar="SHARD_DIR",
        help="every shard's folder (augment run --shard K/N --output SHARD_DIR), any order",
    )
    parser.add_argument(
        "--output", required=True, type=Path, metavar="DIR",
        help="folder to write the merged dataset into (must not exist or be empty)",
    )


def main(args: argparse.Namespace) -> int:
    return exit_code("augment merge", lambda: _merge(args))


def _merge(args: argparse.Namespace) -> int:
    from .merge import merge_shards

    result = merge_shards(args.shards, args.output)
    print(f"merged {result.shards} shard(s), {result.episodes} episode(s) in "
          f"{result.seconds:.1f}s")
    print(f"output: {result.output}")
    return EXIT_OK
