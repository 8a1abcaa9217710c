"""The README's shell commands (```console blocks, `$ ` lines), for the tests that run them.

tests/unit/test_readme.py runs the cheap ones and checks the rest statically;
tests/e2e/test_chart.py runs the kubectl ones against the embedded control plane.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from augment_dev import REPO_ROOT

README = REPO_ROOT / "README.md"
# Files a command names that the README has its reader write (they are not in the
# repository): the tests that run such a command write one of their own.
USER_FILES = {"api-keys.yaml": "the API keys the reader generates (README, Helm)",
              "hub-policy.yaml": "the Hub policy the reader writes (README, Helm)"}
CONSOLE_BLOCK = re.compile(r"^```console\n(.*?)^```", re.M | re.S)


def console_commands(readme: Path = README) -> list[str]:
    """Each `$ ` line of each console block, backslash continuations joined."""
    commands: list[str] = []
    for block in CONSOLE_BLOCK.findall(readme.read_text()):
        pending: str | None = None
        for line in block.splitlines():
            if pending is not None:
                pending += " " + line.strip()
            elif line.startswith("$ "):
                pending = line[2:].strip()
            else:
                continue  # output shown after a command
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
            else:
                commands.append(pending)
                pending = None
    return commands


def simple_commands(command: str) -> list[list[str]]:
    """`a && b` as [argv(a), argv(b)]: the README chains commands with && only."""
    words = shlex.split(command)
    chunks: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            chunks.append([])
        else:
            chunks[-1].append(word)
    return [chunk for chunk in chunks if chunk]


def program(argv: list[str]) -> str:
    return Path(argv[0]).name
