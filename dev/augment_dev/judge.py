"""LeRobot's own reader as the judge of our output, in a virtualenv of its own, and
lerobot-doctor (independent of LeRobot's code) as a second judge beside it.

LeRobot brings torch and pins an older huggingface_hub, so it cannot share the
project's environment. Two judge environments are built once, outside the repo, each
keyed by its requirements file, like the Kubernetes binaries: LeRobot 0.4.4 for v3.0
(with lerobot-doctor) and LeRobot 0.3.3, the last release that reads v2.1, for v2.1.
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
REQUIREMENTS_V21 = JUDGE_DIR / "requirements-v21.txt"
V21 = "v2.1"


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
            # The pip a venv starts with (Python's bundled one) backtracks through every
            # huggingface_hub release on LeRobot 0.3's hub requirement with extras.
            pip = [str(python), "-m", "pip", "install", "-q"]
            subprocess.run([*pip, "--upgrade", "pip"], check=True)
            subprocess.run([*pip, "-r", str(requirements)], check=True)
            (venv / ".complete").touch()
    return python


def judge_python(version: str = "v3.0") -> Path:
    """LeRobot 0.4.4 and lerobot-doctor for v3.0; LeRobot 0.3.3 for v2.1."""
    if version == V21:
        return _venv_python(REQUIREMENTS_V21, "lerobot-judge-v21")
    return _venv_python(REQUIREMENTS, "lerobot-judge")


def _run_judge(script: str, args: list[str], what: str, version: str = "v3.0") -> list[str]:
    """Run a script of tests/judge/ in the judge environment of `version`; its stdout."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [str(judge_python(version)), str(JUDGE_DIR / script), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )
    if result.returncode != 0:
        raise AssertionError(f"LeRobot could not {what}:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()


def _version(dataset: Path) -> str:
    info = json.loads((dataset / "meta" / "info.json").read_text())
    return V21 if info.get("codebase_version") == V21 else "v3.0"


def lerobot_read_many(datasets: Sequence[Path]) -> list[dict[str, Any]]:
    """What LeRobotDataset sees in each folder, in order: v2.1 folders through LeRobot
    0.3.3, the others through 0.4.4 (one process per version); a folder it cannot load
    gives {"error": its traceback}."""
    by_version: dict[str, list[int]] = {}
    for number, dataset in enumerate(datasets):
        by_version.setdefault(_version(dataset), []).append(number)
    summaries: dict[int, dict[str, Any]] = {}
    for version, numbers in by_version.items():
        args = [str(datasets[n]) for n in numbers]
        lines = _run_judge("lerobot_read.py", args, "run its reader", version)
        summaries.update(zip(numbers, map(json.loads, lines[-len(numbers):]), strict=True))
    return [summaries[n] for n in range(len(datasets))]


def lerobot_read(dataset: Path) -> dict[str, Any]:
    """What LeRobotDataset sees in a local dataset folder; raises with its error."""
    (summary,) = lerobot_read_many([dataset])
    if "error" in summary:
        raise AssertionError(f"LeRobot could not load {dataset}:\n{summary['error']}")
    return summary


def lerobot_write_many(shapes: Mapping[str, Path], version: str = "v3.0") -> None:
    """Write each named corpus shape (tests/judge/lerobot_write.py) with LeRobot's own
    writer of `version` (v3.0: 0.4.4, v2.1: 0.3.3) into its folder, in one process."""
    args = [str(arg) for pair in shapes.items() for arg in pair]
    _run_judge("lerobot_write.py", args, f"write {', '.join(shapes)}", version)


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
    print(judge_python(V21))
