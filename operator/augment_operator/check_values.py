"""The Helm chart's default GPU profiles, generated from the operator's own defaults.

`default_profiles()` (config.py) is the one source. values.yaml holds its dump between
two marker comments; `--write` rewrites that block and leaves the rest of the file, its
comments included, as it is. Without `--write` this exits 1 when the block differs
(`make test` runs it; `make generate` writes it).

    python -m augment_operator.check_values [--write] [--values PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from augment_operator.config import default_profiles

VALUES_PATH = Path("charts/augment-operator/values.yaml")
BEGIN = "# BEGIN profiles: generated from operator/augment_operator/config.py by `make generate`"
END = "# END profiles"


class ValuesError(ValueError):
    pass


class _IndentedDumper(yaml.SafeDumper):
    """Indents a list under its key, as the hand-written rest of values.yaml does."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def profiles_values() -> dict[str, Any]:
    """The operator's default profiles as chart values: camelCase, unset fields left out."""
    return {kind.value: profile.model_dump(mode="json", by_alias=True, exclude_none=True)
            for kind, profile in default_profiles().items()}


def profiles_block() -> str:
    """The generated section of values.yaml, markers included."""
    body = yaml.dump({"profiles": profiles_values()}, Dumper=_IndentedDumper, sort_keys=False,
                     width=100)
    return f"{BEGIN}\n{body}{END}\n"


def _split(text: str, path: Path) -> tuple[str, str, str]:
    """(before, block, after): the block runs from the BEGIN line through the END line."""
    start, end = text.find(f"\n{BEGIN}\n"), text.find(f"\n{END}\n")
    if start < 0 or end < start:
        raise ValuesError(f"{path}: no '{BEGIN}' ... '{END}' block")
    start, end = start + 1, end + len(END) + 2
    return text[:start], text[start:end], text[end:]


def check(path: Path = VALUES_PATH) -> list[str]:
    """What is wrong with the chart's profiles (empty: they are the operator's defaults)."""
    text = path.read_text()
    _, block, _ = _split(text, path)
    problems = []
    if block != profiles_block():
        problems.append(f"{path}: the profiles block differs from the operator's defaults")
    if (yaml.safe_load(text) or {}).get("profiles") != profiles_values():
        problems.append(f"{path}: `profiles` parses to something else than the operator's "
                        "defaults (a second `profiles` key?)")
    return problems


def write(path: Path = VALUES_PATH) -> None:
    before, _, after = _split(path.read_text(), path)
    path.write_text(before + profiles_block() + after)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m augment_operator.check_values",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="regenerate the block")
    parser.add_argument("--values", type=Path, default=VALUES_PATH, help="%(default)s")
    args = parser.parse_args(argv)
    try:
        if args.write:
            write(args.values)
            print(f"wrote the profiles block of {args.values}")
            return 0
        problems = check(args.values)
    except (OSError, ValuesError) as exc:
        print(f"check_values: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"{problem}; run `make generate`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
