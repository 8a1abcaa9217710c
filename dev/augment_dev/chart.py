"""Render the Helm chart with the project's own helm binary; no cluster needed.

The binary is the one `make binaries` builds (dev/augment_dev/binaries.py), and
is built here when missing, so the chart is checked by the same helm that installs it
in the end-to-end tests, and never skipped.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from augment_dev import REPO_ROOT
from augment_dev.binaries import ensure_binaries

CHART = REPO_ROOT / "charts" / "augment-operator"


def helm_binary() -> Path:
    """The project's helm, built (once, cached) if it is not there yet."""
    return ensure_binaries() / "helm"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm without raising: callers assert on the return code and stderr."""
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=120)


def template(values: dict[str, Any] | None = None, *extra: str,
             release: str = "augment", namespace: str = "augment") -> list[dict[str, Any]]:
    """`helm template` of the chart as a list of manifests (fails on a helm error)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values_file:
        yaml.safe_dump(values or {}, values_file)
        values_file.flush()
        result = helm("template", release, str(CHART), "--namespace", namespace,
                      "-f", values_file.name, *extra)
    if result.returncode != 0:
        raise RuntimeError(f"helm template failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m.get("kind") == kind]


def container_argv(deployment: dict[str, Any], container: str) -> list[str]:
    """command + args of one container of a rendered Deployment."""
    spec = deployment["spec"]["template"]["spec"]
    found = next(c for c in spec["containers"] if c["name"] == container)
    return [*found.get("command", []), *found.get("args", [])]
