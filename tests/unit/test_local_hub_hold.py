"""LocalHub.hold: the test bed's gate, with which a test decides when a Hub client goes on
(tests/e2e/test_demo.py interrupts the demo while the job's upload waits on it)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import httpx

from augment_dev.hub import LocalHub


def test_a_held_request_waits_for_its_gate_and_others_do_not(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with LocalHub(tmp_path / "hub") as hub:
        hub.seed("lab/src", {"README.md": b"hello"})
        hub.hold(r"^GET /api/datasets/lab/src$", gate)
        answers: list[int] = []
        held = threading.Thread(
            target=lambda: answers.append(
                httpx.get(f"{hub.endpoint}/api/datasets/lab/src", timeout=30).status_code))
        held.start()
        other = httpx.get(f"{hub.endpoint}/api/datasets/lab/src/revision/main", timeout=30)
        assert other.status_code == 200  # not matched: answered while the other waits
        time.sleep(0.5)
        assert held.is_alive() and answers == []
        gate.touch()
        held.join(timeout=10)
        assert answers == [200]


def test_stopping_the_hub_releases_held_requests(tmp_path: Path) -> None:
    hub = LocalHub(tmp_path / "hub").start()
    hub.hold(r"^GET /api/whoami", tmp_path / "never")
    failed = threading.Event()

    def ask() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{hub.endpoint}/api/whoami-v2", timeout=30)
        failed.set()

    threading.Thread(target=ask, daemon=True).start()
    time.sleep(0.3)
    started = time.monotonic()
    hub.stop()
    assert time.monotonic() - started < 5  # not waiting for the gate, nor a 10 s join
    assert failed.wait(10)
