"""Tools the test bed takes from Debian (buildah for the images, Chromium for the
dashboard's browser test): installed with apt-get where missing, as root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

# apt-get fails at once when another apt holds its lock; a second installer waits instead.
APT_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=600")


def missing_packages(tools: Mapping[str, str]) -> list[str]:
    """The packages of `tools` ({command: Debian package}) whose command is not on PATH."""
    return sorted({package for command, package in tools.items() if not shutil.which(command)})


def install_missing(tools: Mapping[str, str], purpose: str) -> None:
    """Install from Debian the packages of the `tools` missing from PATH; nothing to do
    (and no apt call) when every command is there."""
    missing = missing_packages(tools)
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SystemExit(f"{purpose} needs {', '.join(missing)} on PATH (installed by "
                         "this tool only as root on Debian)")
    print(f"[debian] installing {', '.join(missing)} for {purpose}", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", *APT_LOCK_WAIT, "update", "-q"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", *APT_LOCK_WAIT, "install", "-y", "-q", "--no-install-recommends",
                    *missing], check=True, env=env, stdout=subprocess.DEVNULL)
