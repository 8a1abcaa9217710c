"""`augment jobs` against the real API of a chart install on the embedded control plane.

The operator, the API and the runners run as the chart's pods (`Stack`), the Hub is the
local one, and the client is the installed `augment` command in a process of its own,
configured through its environment as a user would. One job runs to the end: submit,
watch, list, and its preview, which the API reads from the private output dataset with
the chart's Hub token Secret. Another, whose source download the Hub holds, is
cancelled while it waits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from augment_dev import chart
from augment_dev.cluster import EmbeddedCluster
from augment_dev.datasets import make_lerobot_v3
from augment_dev.kube import wait_for
from augment_dev.stack import HUB_USER, Stack, StackOptions
from augment_spec.contract import OUTPUT_PREVIEW_PATH

pytestmark = pytest.mark.e2e

AUGMENT = str(Path(sys.executable).parent / "augment")
CRD = chart.REPO_ROOT / "crds" / "augmentationjobs.augment.dev.yaml"
PROJECT = str(uuid.UUID(int=16))
EXIT_CANCELLED = 4  # augment_cli.jobs.EXIT_JOB_CANCELLED, as a script sees it


@pytest.fixture(scope="module")
def stack(cluster: EmbeddedCluster) -> Iterator[Stack]:
    cluster.kubectl("apply", "-f", str(CRD))
    options = StackOptions(namespace="jobs-cli", release="jobs-cli", project_ids=(PROJECT,))
    with Stack(cluster, options) as running:
        yield running


def augment_jobs(stack: Stack, tmp_path: Path, *argv: str,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"AUGMENT_API_URL": stack.api_url, "AUGMENT_API_KEY": stack.api_key,
           "AUGMENT_CONFIG": str(tmp_path / "no-config.yaml")}
    return subprocess.run([AUGMENT, "jobs", *argv], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})


def seeded_source(stack: Stack, tmp_path: Path, name: str) -> str:
    repo = f"{HUB_USER}/{name}"
    stack.hub.seed(repo, make_lerobot_v3(tmp_path / name, episodes=2, frames=8,
                                         codec="libx264"))
    return repo


def submitted(stack: Stack, tmp_path: Path, dataset: str) -> str:
    done = augment_jobs(stack, tmp_path, "submit", "--project-id", PROJECT, "--dataset",
                        dataset, "--transforms", "lighting,noise", "--copies", "1",
                        "--output", "json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["job_id"])


def test_submit_watch_list_and_preview(stack: Stack, tmp_path: Path) -> None:
    job_id = submitted(stack, tmp_path, seeded_source(stack, tmp_path, "cli-src"))

    watched = augment_jobs(stack, tmp_path, "watch", job_id, "--interval", "0.5",
                           "--timeout", "240", timeout=300)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    bar = watched.stderr.splitlines()  # not a terminal: one line per change
    assert bar[-1].startswith("[" + "#" * 30 + "] 100%  2/2 episodes  Succeeded"), bar
    assert len(bar) == len(set(bar))
    assert "phase:     Succeeded" in watched.stdout

    listed = augment_jobs(stack, tmp_path, "list", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    (job,) = [j for j in json.loads(listed.stdout)["items"] if j["job_id"] == job_id]
    assert job["status"] == "Succeeded" and job["output_revision"]
    table = augment_jobs(stack, tmp_path, "list", "--status", "Succeeded")
    assert [job_id, "Succeeded", "100%", "(2/2", "episodes)", f"{HUB_USER}/cli-src"] in \
        [row.split()[:-1] for row in table.stdout.splitlines()[1:]]

    preview = tmp_path / "preview.png"
    got = augment_jobs(stack, tmp_path, "get", job_id, "--preview", str(preview))
    assert got.returncode == 0, got.stderr
    assert got.stdout.splitlines()[-1] == f"preview saved to {preview}"
    published = stack.hub.files(job["output_dataset_id"], job["output_revision"])
    assert preview.read_bytes() == published[OUTPUT_PREVIEW_PATH]
    assert preview.read_bytes().startswith(b"\x89PNG")


def test_cancel_a_job_waiting_on_its_source(stack: Stack, tmp_path: Path) -> None:
    source = seeded_source(stack, tmp_path, "cli-held")
    release = tmp_path / "release-the-source"
    stack.hub.hold(r"cli-held", until=release)  # the runner's download waits
    try:
        job_id = submitted(stack, tmp_path, source)
        wait_for(lambda: json.loads(augment_jobs(stack, tmp_path, "get", job_id, "-o", "json")
                                    .stdout)["status"] == "Running",
                 timeout=120, interval=1, what="the held job to run")
        early = augment_jobs(stack, tmp_path, "get", job_id, "--preview",
                             str(tmp_path / "none.png"))
        assert early.returncode == 1
        assert early.stderr.strip().endswith("has no preview yet: its output is not "
                                             "published (Running); try again when it is "
                                             "(HTTP 409)")

        cancelled = augment_jobs(stack, tmp_path, "cancel", job_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout == f"cancel requested for {job_id} (Running)\n"
        watched = augment_jobs(stack, tmp_path, "watch", job_id, "--interval", "0.5",
                               "--timeout", "120", timeout=180)
        assert watched.returncode == EXIT_CANCELLED, watched.stdout + watched.stderr
        assert "phase:     Cancelled" in watched.stdout

        again = augment_jobs(stack, tmp_path, "cancel", job_id)
        assert again.returncode == 1 and again.stderr.strip().endswith("(HTTP 409)")
        assert stack.api_key not in again.stderr + watched.stderr
    finally:
        release.touch()
