"""`augment crd`: print or write the CRD generated from the spec model."""

from __future__ import annotations

import argparse
from pathlib import Path

from augment_spec.crd import crd_yaml

CRD_PATH = Path("crds/augmentationjobs.augment.dev.yaml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--write", type=Path, nargs="?", const=CRD_PATH, default=None,
                        help=f"write to a file instead of stdout (default path: {CRD_PATH})")


def main(args: argparse.Namespace) -> int:
    text = crd_yaml()
    if args.write is None:
        print(text, end="")
    else:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
        print(f"wrote {args.write}")
    return 0
