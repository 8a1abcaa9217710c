"""`augment api` as a real process on a free port, for the end-to-end tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from augment_dev.cluster import free_port
from augment_dev.kube import wait_for


@contextmanager
def api_process(kubeconfig: Path, namespace: str, keys_file: Path, log: Path,
                *flags: str) -> Iterator[str]:
    """Start `augment api`, wait until /healthz answers, yield its URL; the server's
    output goes to `log` (shown if it exits early). Stopped on exit."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "augment_cli.main", "api", "--port", str(port),
             "--namespace", namespace, "--api-keys", str(keys_file), "--kubeconfig",
             str(kubeconfig), "--log-level", "warning", *flags],
            stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"augment api exited: {log.read_text()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=30, interval=0.2, what="augment api to listen")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
