"""LeRobot's own reader as the judge of our output, in a virtualenv of its own, and
lerobot-doctor (independent of LeRobot's code) as a second judge beside it.

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from augment_dev import REPO_ROOT
from augment_dev.binaries import CACHE_ROOT, exclusive, log

JUDGE_DIR = REPO_ROOT / "tests" / "judge"
REQUIREMENTS = JUDGE_DIR / "requirements.txt"


def _venv_python(requirements: Path, name: str) -> Path:
    """The python of the virtualenv built from `requirements` under CACHE_ROOT/name, keyed
    by the file's content; built on first use, under the build lock of its folder."""
    key = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    venv = CACHE_ROOT / name / key
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    with exclusive(venv.parent):
        if not (venv / ".complete").exists():  # another process may have built it meanwhile
            log(f"building {requirements.name} in {venv} (cold: a few minutes, torch)")
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "-r",
                            str(requirements)], check=True)
            (venv / ".complete").touch()
    return python


def judge_python() -> Path:
    """LeRobot 0.4.4 (v3.0) and lerobot-doctor."""
    return _venv_python(REQUIREMENTS, "lerobot-judge")


def _run_judge(script: str, args: list[str], what: str) -> list[str]:
    """Run a script of tests/judge/ in the judge environment; its stdout lines."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [str(judge_python()), str(JUDGE_DIR / script), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )
    if result.returncode != 0:
        raise AssertionError(f"LeRobot could not {what}:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()


def lerobot_read_many(datasets: Sequence[Path]) -> list[dict[str, Any]]:
    """What LeRobotDataset sees in each folder (one process for all); a folder it
    cannot load gives {"error": its traceback}."""
    lines = _run_judge("lerobot_read.py", [str(d) for d in datasets], "run its reader")
    return [json.loads(line) for line in lines[-len(datasets):]]


def lerobot_read(dataset: Path) -> dict[str, Any]:
    """What LeRobotDataset sees in a local dataset folder; raises with its error."""
    (summary,) = lerobot_read_many([dataset])
    if "error" in summary:
        raise AssertionError(f"LeRobot could not load {dataset}:\n{summary['error']}")
    return summary


def lerobot_write_many(shapes: Mapping[str, Path]) -> None:
    """Write each named corpus shape (tests/judge/lerobot_write.py) with LeRobot's own
    writer into its folder, all in one process."""
    args = [str(arg) for pair in shapes.items() for arg in pair]
    _run_judge("lerobot_write.py", args, f"write {', '.join(shapes)}")


def lerobot_convert(*datasets: Path) -> None:
    """Turn each v2.1 folder into v3.0 with LeRobot's own converter, in place; raises
    with its error when it refuses one."""
    _run_judge("lerobot_convert.py", [str(d) for d in datasets], "convert v2.1 to v3.0")


def lerobot_doctor(datasets: Sequence[Path]) -> list[dict[str, Any]]:
    """lerobot-doctor's JSON report (`check --json`) on each folder, in order. It exits 1
    when it reports a FAIL; only a run without a report is an error here."""
    doctor = judge_python().parent / "lerobot-doctor"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    reports = []
    for dataset in datasets:
        result = subprocess.run([str(doctor), "check", str(dataset), "--json"],
                                capture_output=True, text=True, env=env, timeout=600)
        try:
            reports.append(json.loads(result.stdout))
        except json.JSONDecodeError:
            raise AssertionError(
                f"lerobot-doctor could not check {dataset}:\n{result.stderr[-3000:]}") from None
    return reports


def doctor_failures(report: Mapping[str, Any]) -> list[str]:
    """The FAIL lines of a lerobot-doctor report, as "check: message"."""
    return [f"{check['name']}: {message['message']}"
            for check in report["checks"] for message in check["messages"]
            if message["severity"] == "FAIL"]


def lerobot_write(shape: str, path: Path) -> Path:
    """A dataset in the named shape, written by LeRobot's own writer into `path`."""
    lerobot_write_many({shape: path})
    return path


if __name__ == "__main__":
    print(judge_python())
