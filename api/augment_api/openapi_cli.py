"""`augment openapi`: print the REST API's OpenAPI document (no cluster needed)."""

from __future__ import annotations

import argparse
import json

from augment_api.app import create_app
from augment_api.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--indent", type=int, default=2)


def main(args: argparse.Namespace) -> int:
    # The store is lazy, so building the app contacts no cluster.
    print(json.dumps(create_app(Settings()).openapi(), indent=args.indent))
    return 0
