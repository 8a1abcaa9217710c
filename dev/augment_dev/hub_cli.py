"""``augment-dev hub``: serve the local Hugging Face Hub stand-in until Ctrl-C (for demos)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from augment_dev.hub import LocalHub


def _pair(value: str, sep: str, what: str) -> tuple[str, str]:
    left, found, right = value.partition(sep)
    if not (found and left and right):
        raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
    return left, right


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="folder holding the repos")
    parser.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN:USER",
        type=lambda v: _pair(v, ":", "TOKEN:USER"),
        help="accept TOKEN as USER (repeatable); USER may write to its own namespace",
    )
    parser.add_argument(
        "--org",
        action="append",
        default=[],
        metavar="ORG:USER[,USER...]",
        type=lambda v: _pair(v, ":", "ORG:USER[,USER...]"),
        help="let these users write to namespace ORG (repeatable)",
    )
    parser.add_argument(
        "--seed-dataset",
        action="append",
        default=[],
        metavar="REPO_ID=LOCAL_FOLDER",
        type=lambda v: _pair(v, "=", "REPO_ID=LOCAL_FOLDER"),
        help="at start, commit LOCAL_FOLDER as dataset REPO_ID (repeatable)",
    )


def main(args: argparse.Namespace) -> int:
    orgs = {org: users.split(",") for org, users in args.org}
    hub = LocalHub(args.root, dict(args.token), orgs, port=args.port)
    for repo_id, folder in args.seed_dataset:
        if not Path(folder).is_dir():
            print(f"augment-dev hub: --seed-dataset {repo_id}: {folder} is not a folder",
                  file=sys.stderr)
            return 2
        sha = hub.seed(repo_id, Path(folder), message=f"Seed from {folder}")
        print(f"seeded dataset {repo_id} at {sha}")
    try:
        hub.start()
    except OSError as err:
        print(f"augment-dev hub: cannot listen on port {args.port}: {err}", file=sys.stderr)
        return 1
    print(f"Local Hub serving {args.root} at {hub.endpoint}")
    print("Point clients at it with:")
    for key, value in hub.client_env().items():
        print(f"  export {key}={value}")
    sys.stdout.flush()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
        print("stopping")
    finally:
        hub.stop()
    return 0

