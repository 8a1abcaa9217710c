"""`augment crd`: print or write the CRD generated from the spec model."""

from __future__ import annotations

import argparse
from pathlib import Path

from augment_spec.crd import crd_yaml

CRD_PATH = Path("crds/augmentationjobs.augment.dev.yaml")
CHART_CRD_PATH = Path("charts/augment-operator/crds/augmentationjobs.augment.dev.yaml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--write", action="store_true",
                        help=f"write {CRD_PATH} and the Helm chart's copy instead of printing")


def main(args: argparse.Namespace) -> int:
    text = crd_yaml()
    if not args.write:
        print(text, end="")
        return 0
    for path in (CRD_PATH, CHART_CRD_PATH):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0
