"""`augment`: one command line for every part of the product.

Each subcommand lives with the component it runs; this module only dispatches, and
imports a component when its subcommand is chosen so `augment crd` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with `add_arguments(parser)` and `main(args) -> int`, help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("augment_runner.cli", "augment a dataset (locally, or as the Job's entrypoint)"),
    "api": ("augment_api.cli", "serve the REST API"),
    "operator": ("augment_operator.cli", "run the operator"),
    "crd": ("augment_spec.cli", "print the AugmentationJob CRD generated from the spec"),
    "openapi": ("augment_api.openapi_cli", "print the REST API's OpenAPI document"),
    "dev-cluster": ("augment_testing.cli", "start the embedded Kubernetes control plane"),
    "hub": ("augment_testing.hub_cli", "serve a local Hugging Face Hub for tests and demos"),
    "demo": ("augment_testing.demo", "the whole stack on the embedded control plane"),
}


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="augment", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    args = build_parser(chosen).parse_args(argv)
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
