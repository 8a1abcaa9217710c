"""`augment merge`: put the shards of one job together into the dataset one run writes.

    augment run --dataset SRC --shard 0/2 --output out/shard-0 [flags]
    augment run --dataset SRC --shard 1/2 --output out/shard-1 [same flags]
    augment merge out/shard-0 out/shard-1 --output out/dataset

The shards may run on different machines; the merge needs every shard's folder. Exit
codes and the one-line failure are `augment run`'s.

Without folders, in a sharded job's finalize pod (AUGMENT_SPEC, AUGMENT_JOB_UID and
AUGMENT_WORKDIR set by the operator), it merges the shards from their staging branches
and publishes the dataset in one commit (staging.py). With --discard, in the cleanup pod
of a sharded job that failed or was cancelled, it deletes the job's staging branches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from augment_spec.contract import EXIT_OK
from augment_spec.model import parse_spec

from . import status
from .cli import exit_code, spec_from_pod
from .errors import AugmentError
from .hub import resolve_token
from .pod import PodEnv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "shards", nargs="*", type=Path, metavar="SHARD_DIR",
        help="every shard's folder (augment run --shard K/N --output SHARD_DIR), any order; "
        "none in a sharded job's finalize pod",
    )
    parser.add_argument(
        "--output", type=Path, metavar="DIR",
        help="folder to write the merged dataset into (must not exist or be empty)",
    )
    parser.add_argument(
        "--discard", action="store_true",
        help="in a failed or cancelled sharded job's cleanup pod: delete its staging branches",
    )


def main(args: argparse.Namespace) -> int:
    return exit_code("augment merge", lambda: _merge(args))


def _merge(args: argparse.Namespace) -> int:
    from .merge import merge_shards

    if args.discard:
        if args.shards or args.output is not None:
            raise AugmentError("--discard takes no shard folders and no --output")
        return _finalize(discard=True)
    if not args.shards:
        return _finalize()
    if args.output is None:
        raise AugmentError("pass --output DIR: the folder to write the merged dataset into")
    result = merge_shards(args.shards, args.output)
    print(f"merged {result.shards} shard(s), {result.episodes} episode(s) in "
          f"{result.seconds:.1f}s")
    print(f"output: {result.output}")
    return EXIT_OK


def _finalize(*, discard: bool = False) -> int:
    from .staging import discard as discard_staging
    from .staging import finalize

    token = resolve_token()
    pod = PodEnv.read()
    given = spec_from_pod(None, pod)
    if given is None or pod.job_uid is None or pod.workdir is None:
        raise AugmentError(
            "give every shard's folder and --output DIR; without folders, augment merge is a "
            "sharded job's finalize step and needs its pod's environment"
        )
    spec = parse_spec(given)
    if discard:
        removed = discard_staging(spec, pod.job_uid, token)
        print(f"{spec.target_dataset_id}: {removed} staging branch(es) of this job deleted")
        return EXIT_OK
    commit = finalize(spec, pod.job_uid, pod.workdir, token, status.report_output)
    if commit is None:
        print(f"{spec.target_dataset_id}: an earlier try published this job; staging removed")
    else:
        print(f"pushed: {spec.target_dataset_id}@{commit} ({spec.shard_count} shards merged)")
    return EXIT_OK
