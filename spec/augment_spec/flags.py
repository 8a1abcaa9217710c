"""The spec's command-line flags, derived from the model: `augment run` and
`augment jobs submit` both add them, so the two commands take the same flags.

Every augment_<name> field is --<name> (dashes for underscores), plus OTHER_FLAG_FIELDS;
each flag parses to its field's type (a comma list for a list, the members for an enum)
and defaults to None, so an unset flag keeps the model's default (they are not repeated
here). argparse's dest is the flag with '-' as '_'.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable
from enum import Enum
from typing import Any, Union, get_args, get_origin

from augment_spec.model import AugmentationSpec

OTHER_FLAG_FIELDS = {"revision": "source_revision"}
_FLAG_PREFIX = "augment_"


def _flag_fields() -> dict[str, str]:
    """flag -> spec field, in the model's field order."""
    own = {
        field.removeprefix(_FLAG_PREFIX).replace("_", "-"): field
        for field in AugmentationSpec.model_fields
        if field.startswith(_FLAG_PREFIX)
    }
    return own | OTHER_FLAG_FIELDS


def comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


_SCALAR_PARSERS: dict[object, Callable[[str], Any]] = {str: str, int: int, float: float}


def _flag_parsing(field: str) -> tuple[Callable[[str], Any], list[str] | None]:
    """(argparse type, choices) from the field's annotation, its `| None` dropped."""
    annotation = AugmentationSpec.model_fields[field].annotation
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = (a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is list:
        return comma_list, None
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return str, [member.value for member in annotation]
    parse = _SCALAR_PARSERS.get(annotation)
    if parse is not None:
        return parse, None
    raise TypeError(f"no command-line form for {field}: {annotation}")


FLAG_FIELDS: dict[str, str] = _flag_fields()


def add_spec_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per FLAG_FIELDS entry, its help the field's description."""
    fields = AugmentationSpec.model_fields
    for flag, field in FLAG_FIELDS.items():
        help_text = fields[field].description or field.replace("_", " ")
        if fields[field].annotation is bool:  # the flag alone turns it on
            parser.add_argument(f"--{flag}", action="store_true", default=None, help=help_text)
            continue
        parse, choices = _flag_parsing(field)
        parser.add_argument(f"--{flag}", type=parse, choices=choices, default=None,
                            help=help_text)


def spec_values(args: argparse.Namespace) -> dict[str, Any]:
    """field -> value of the spec flags that were given (unset ones are left out)."""
    values = {field: getattr(args, flag.replace("-", "_")) for flag, field in FLAG_FIELDS.items()}
    return {field: value for field, value in values.items() if value is not None}
