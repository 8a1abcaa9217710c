"""LeRobot's own reader as the judge of our output, in a virtualenv of its own.

LeRobot brings torch and pins an older huggingface_hub, so it cannot share the
project's environment. The judge environment is built once, outside the repo, keyed
by its requirements file, like the Kubernetes binaries.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from augment_dev import REPO_ROOT
from augment_dev.binaries import CACHE_ROOT, log

JUDGE_DIR = REPO_ROOT / "tests" / "judge"
REQUIREMENTS = JUDGE_DIR / "requirements.txt"


def judge_python() -> Path:
    key = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    venv = CACHE_ROOT / "lerobot-judge" / key
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    log(f"building LeRobot's reader environment in {venv} (cold: a few minutes, torch)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
                   check=True)
    (venv / ".complete").touch()
    return python


def lerobot_read(dataset: Path) -> dict[str, Any]:
    """What LeRobotDataset sees in a local dataset folder; raises with its error."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [str(judge_python()), str(JUDGE_DIR / "lerobot_read.py"), str(dataset)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    if result.returncode != 0:
        raise AssertionError(f"LeRobot could not load {dataset}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(judge_python())
