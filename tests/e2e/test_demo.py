"""`augment-dev demo` as a newcomer runs it (`make demo`): a subprocess with its own cluster.

Each test pays one extra control-plane start (~10 s): the demo must build and remove
everything itself, so it cannot share the session's cluster.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AUGMENT_DEV = Path(sys.executable).parent / "augment-dev"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class DemoProcess:
    """A running `augment-dev demo` whose output lines are read as they are printed."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(AUGMENT_DEV), "demo", *args], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.fresh: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self.fresh.put(line)
        self.fresh.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.fresh.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the demo exited before {pattern!r}:\n{self.output}")
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r} in {timeout}s:\n{self.output}")

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.2)  # let the reader thread take the last lines
        return code

    def workdir(self) -> Path:
        found = re.search(r"\(workdir (\S+)\)", self.output)
        assert found, self.output
        return Path(found.group(1))

    def kill(self) -> None:
        """After a failed assertion: SIGTERM lets the demo clean up; SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def processes_of(workdir: Path) -> list[str]:
    """Live processes started for that cluster: etcd and the apiserver name the workdir on
    their command line; pods (operator, API, runner) have their HOME under it."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if str(workdir).encode() in text:
            found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()[:200]!r}")
    return found


def assert_nothing_left(workdir: Path) -> None:
    assert processes_of(workdir) == []
    assert not workdir.exists()


def test_demo_runs_the_whole_stack_and_exits_0(tmp_path: Path) -> None:
    demo = DemoProcess("--out", str(tmp_path))
    try:
        code = demo.wait(timeout=420)
    finally:
        demo.kill()
    output = demo.output
    assert code == 0, output
    for expected in (
        "[1/6] starting a Kubernetes control plane",
        "[2/6] installing the CRD and the Helm chart",
        "[3/6] seeding the local Hub with examples/sample-dataset as robotics-lab/sample",
        "curl -sS -X POST http://127.0.0.1:",
        "X-Api-Key: ak_",
        '-> 201 {"job_id": ',
        "get augjob -n augment",
        "everything was stopped and removed",
    ):
        assert expected in output, f"{expected!r} missing:\n{output}"
    assert re.search(r"\] Running\s", output), output
    assert re.search(r"\] Succeeded 100% \(3/3\)\s+augmented dataset uploaded", output), output
    assert re.search(r"output dataset robotics-lab/sample-augmented at commit [0-9a-f]{40}",
                     output), output
    assert re.search(r"aug-\S+\s+deterministic\s+robotics-lab/sample\s+Succeeded\s+100% \(3/3\)",
                     output), output
    assert re.search(r"curl -L -o preview.png http://127.0.0.1:\d+/datasets/"
                     r"robotics-lab/sample-augmented/resolve/main/preview.png", output), output
    assert (tmp_path / "preview.png").read_bytes().startswith(PNG_MAGIC)
    assert "Traceback" not in output
    assert_nothing_left(demo.workdir())


def test_ctrl_c_mid_job_stops_everything_cleanly(tmp_path: Path) -> None:
    # The Hub holds the output's upload until the gate file exists, and the test makes it
    # only after the interrupt: however slow the machine, the job cannot finish first.
    gate = tmp_path / "upload-gate"
    demo = DemoProcess("--out", str(tmp_path), "--hold-upload-until", str(gate))
    try:
        # Every episode augmented, the upload waiting: operator, API and runner all up.
        demo.wait_for_line(r"\] Running\s+100% \(3/3\)", timeout=300)
        workdir = demo.workdir()
        assert processes_of(workdir)
        demo.proc.send_signal(signal.SIGINT)
        gate.touch()
        code = demo.wait(timeout=120)
    finally:
        gate.touch()
        demo.kill()
    output = demo.output
    assert code == 130, output
    assert f"the Hub holds the job's upload until {gate} exists" in output
    assert "interrupted" in output and "Succeeded" not in output
    assert output.rstrip().endswith("everything was stopped and removed"), output
    assert "Traceback" not in output
    assert not (tmp_path / "preview.png").exists()
    assert_nothing_left(workdir)


def test_sigterm_while_the_chart_installs_stops_everything_cleanly(tmp_path: Path) -> None:
    """`kill` (SIGTERM) half-way through the set-up: the partial stack is removed too."""
    demo = DemoProcess("--out", str(tmp_path))
    try:
        demo.wait_for_line(r"^\[2/6\] installing", timeout=300)
        workdir = demo.workdir()
        demo.proc.send_signal(signal.SIGTERM)
        code = demo.wait(timeout=120)
    finally:
        demo.kill()
    output = demo.output
    assert code == 130, output
    assert output.rstrip().endswith("everything was stopped and removed"), output
    assert "Traceback" not in output
    assert_nothing_left(workdir)
