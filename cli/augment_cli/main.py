"""`augment`: one command line for every part of the product.

Each subcommand lives with the component it runs; this module only dispatches, and
imports a component when its subcommand is chosen so `augment crd` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from types import ModuleType

# subcommand -> (module with `add_arguments(parser)` and `main(args) -> int`, help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("augment_runner.cli", "augment a dataset (locally, or as the Job's entrypoint)"),
    "merge": ("augment_runner.merge_cli", "merge the shards of one job (augment run --shard)"),
    "api": ("augment_api.cli", "serve the REST API"),
    "operator": ("augment_operator.cli", "run the operator"),
    "crd": ("augment_spec.cli", "print the AugmentationJob CRD generated from the spec"),
    "openapi": ("augment_api.openapi_cli", "print the REST API's OpenAPI document"),
    "jobs": ("augment_cli.jobs", "submit, list, follow and cancel jobs through the REST API"),
}
# subcommand -> the pyproject.toml extra holding its component's dependencies: each image
# installs only the extras of what it runs (the runner image has no FastAPI, for one).
EXTRAS = {
    "run": "runner", "merge": "runner", "api": "api", "operator": "operator", "openapi": "api",
}


@dataclass(frozen=True)
class Command:
    """A command line made of lazily imported subcommands (`augment`, `augment-dev`)."""

    prog: str
    description: str
    subcommands: dict[str, tuple[str, str]]
    extras: dict[str, str] = field(default_factory=dict)

    def load(self, name: str) -> ModuleType:
        """The subcommand's module; a dependency its extra would bring is named in one line."""
        module = self.subcommands[name][0]
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as err:
            extra = self.extras.get(name)
            ours = {m.partition(".")[0] for m, _ in self.subcommands.values()}
            if extra is None or (err.name or "").partition(".")[0] in ours:
                raise  # not a missing extra: a bug, keep the traceback
            raise SystemExit(f"{self.prog} {name}: this installation lacks the '{extra}' "
                             f"extra ({err}): pip install 'augment-operator[{extra}]'") from err

    def build_parser(self, chosen: str | None) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.prog,
                                         description=self.description.splitlines()[0])
        sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        for name, (_, help_text) in self.subcommands.items():
            sp = sub.add_parser(name, help=help_text, description=help_text)
            if name == chosen:
                self.load(name).add_arguments(sp)
        return parser

    def main(self, argv: list[str] | None = None) -> int:
        argv = sys.argv[1:] if argv is None else argv
        chosen = next((a for a in argv if a in self.subcommands), None)
        args = self.build_parser(chosen).parse_args(argv)
        try:
            return int(self.load(args.command).main(args) or 0)
        except KeyboardInterrupt:
            return 130


AUGMENT = Command("augment", __doc__, SUBCOMMANDS, EXTRAS)
build_parser = AUGMENT.build_parser
main = AUGMENT.main


if __name__ == "__main__":
    sys.exit(main())
