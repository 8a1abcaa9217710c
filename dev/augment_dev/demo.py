"""`augment-dev demo`: the whole product on the embedded control plane, in one command.

Starts a real Kubernetes control plane with fake GPU nodes, installs the Helm chart
(the operator and the REST API run as pods), serves a local Hugging Face Hub holding
examples/sample-dataset, submits a job through the REST API, follows it until it ends,
shows the result, then removes everything: also on Ctrl-C or SIGTERM.

Exit status: 0 when the job succeeded, 1 when it failed or timed out, 130 when
interrupted (after the clean-up).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from augment_dev import REPO_ROOT
from augment_dev.binaries import BUILDS, bin_dir
from augment_dev.cluster import EmbeddedCluster
from augment_dev.kube import install_crd
from augment_dev.stack import Stack, StackOptions
from augment_spec.contract import TERMINAL_PHASES

SAMPLE = REPO_ROOT / "examples" / "sample-dataset"
SOURCE_ID = "robotics-lab/sample"
PROJECT_ID = "0b5c6f0e-8a53-4a0c-9a43-7a3f0f0f2c11"
NAMESPACE = "augment"
STEPS = 6
# The request that publishes the output: once it is answered, the job can succeed.
UPLOAD_COMMIT = r"^POST /api/datasets/.+/commit/"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transforms", default="lighting,noise,blur,occlusion",
                        help="transforms of the demo job (default: %(default)s)")
    parser.add_argument("--copies", type=int, default=2,
                        help="augmented copies per episode (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds to wait for the job to finish (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="folder for a copy of the output's preview.png "
                             "(default: %(default)s)")
    parser.add_argument("--hold-upload-until", type=Path, metavar="FILE",
                        help="the local Hub keeps the job's upload (its commit) waiting "
                             "until FILE exists: the job stays Running, so a test can "
                             "interrupt the demo mid-job however slow the machine")


def say(text: str = "") -> None:
    print(text, flush=True)  # flushed: a pipe (CI, the tests) sees each line as it happens


def step(number: int, text: str) -> None:
    say(f"[{number}/{STEPS}] {text}")


class Demo:
    """The demo's resources, created step by step so any step can be undone."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster: EmbeddedCluster | None = None
        self.stack: Stack | None = None
        self.hub_root = Path(tempfile.mkdtemp(prefix="augment-demo-hub-"))

    # ---- the story ----
    def run(self) -> int:
        cluster = self.start_cluster()
        stack = self.start_stack(cluster)
        step(3, f"seeding the local Hub with {SAMPLE.relative_to(REPO_ROOT)} as {SOURCE_ID}")
        stack.hub.seed(SOURCE_ID, SAMPLE, message="Seed the demo dataset")
        job = self.submit(stack)
        final = self.follow(stack, job["job_id"])
        if final is None:
            say(f"the job did not finish within {self.args.timeout:.0f}s")
            return 1
        if final["status"] != "Succeeded":
            say(f"the job ended {final['status']}: {final.get('message') or '(no message)'}")
            return 1
        self.show_result(stack, final)
        return 0

    def start_cluster(self) -> EmbeddedCluster:
        if not all((bin_dir() / name).exists() for _, names in BUILDS.values()
                   for name in names):
            say("first run: building the Kubernetes binaries and helm from their Go modules "
                f"into {bin_dir()} (cold: ~10 min on 2 cores; cached afterwards)")
        step(1, "starting a Kubernetes control plane (etcd, kube-apiserver, "
                "controller-manager, scheduler) with nodes gpu-l4-0, gpu-h100-0, cpu-0")
        self.cluster = EmbeddedCluster()
        self.cluster.start()
        say(f"      up in {self.cluster.startup_seconds:.1f}s at {self.cluster.server} "
            f"(workdir {self.cluster.workdir})")
        say(f"      export KUBECONFIG={self.cluster.kubeconfig}")
        return self.cluster

    def start_stack(self, cluster: EmbeddedCluster) -> Stack:
        step(2, "installing the CRD and the Helm chart (operator and REST API as pods) "
                "and starting a local Hub")
        install_crd(cluster)
        options = StackOptions(namespace=NAMESPACE, release="augment", from_images=True)
        self.stack = Stack(cluster, options, hub_root=self.hub_root)
        started = time.monotonic()
        self.stack.start()
        say(f"      ready in {time.monotonic() - started:.1f}s: API {self.stack.api_url}, "
            f"Hub {self.stack.hub.endpoint}")
        if self.stack.image_fallback:
            say(f"      pods run in this environment, not from the images: "
                f"{self.stack.image_fallback}")
        else:
            refs = list(dict.fromkeys(root.ref for root in self.stack.images.values()))
            say(f"      pods run from the images {', '.join(refs)}")
        gate = self.args.hold_upload_until
        if gate is not None:
            self.stack.hub.hold(UPLOAD_COMMIT, gate)
            say(f"      the Hub holds the job's upload until {gate} exists")
        return self.stack

    def submit(self, stack: Stack) -> dict[str, Any]:
        # Public (the seeded source is public), so the preview URL below needs no token.
        body = {"project_id": PROJECT_ID, "dataset_id": SOURCE_ID,
                "augment_transforms": self.args.transforms,
                "augment_copies": self.args.copies, "output_visibility": "public"}
        url = f"{stack.api_url}/v1/augmentation"
        step(4, "submitting a job through the REST API, as this curl command would:")
        say("      " + curl_command("POST", url, stack.api_key, body))
        response = httpx.post(url, json=body, headers={"X-Api-Key": stack.api_key},
                              timeout=30)
        if response.status_code != 201:
            raise DemoError(f"POST {url} answered {response.status_code}: {response.text}")
        created = response.json()
        say(f"      -> {response.status_code} {json.dumps(created)}")
        return created

    def follow(self, stack: Stack, job_id: str) -> dict[str, Any] | None:
        step(5, f"following the job: GET {stack.api_url}/v1/augmentation/{job_id}")
        started, last = time.monotonic(), None
        while time.monotonic() - started < self.args.timeout:
            job = get_job(stack, job_id)
            line = progress_line(job)
            if line != last:
                say(f"      [{time.monotonic() - started:5.1f}s] {line}")
                last = line
            if job["status"] in TERMINAL_PHASES:
                return job
            time.sleep(0.5)
        return None

    def show_result(self, stack: Stack, job: dict[str, Any]) -> None:
        output = job["output_dataset_id"]
        step(6, f"done: output dataset {output} at commit {stack.hub.head(output)}")
        say(f"      $ kubectl --kubeconfig {stack.cluster.kubeconfig} get augjob -n {NAMESPACE}")
        table = stack.cluster.kubectl("get", "augjob", "-n", NAMESPACE).stdout
        for row in table.splitlines():
            say(f"      {row}")
        preview_url = f"{stack.hub.endpoint}/datasets/{output}/resolve/main/preview.png"
        say(f"      preview.png (while the demo runs): curl -L -o preview.png {preview_url}")
        saved = save_preview(preview_url, self.args.out)
        say(f"      preview.png saved to {saved}")

    # ---- clean-up ----
    def teardown(self) -> None:
        """Undo every step taken; a second Ctrl-C must not leave processes behind."""
        with signals_ignored():
            say("stopping: uninstalling the chart, stopping the control plane and the Hub")
            if self.stack is not None:
                self.stack.stop()
            if self.cluster is not None:
                self.cluster.stop()
            shutil.rmtree(self.hub_root, ignore_errors=True)
            say("everything was stopped and removed")


class DemoError(RuntimeError):
    pass


def curl_command(method: str, url: str, api_key: str, body: dict[str, Any]) -> str:
    return shlex.join(["curl", "-sS", "-X", method, url, "-H", f"X-Api-Key: {api_key}",
                       "-H", "Content-Type: application/json", "-d", json.dumps(body)])


def get_job(stack: Stack, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.api_url}/v1/augmentation/{job_id}",
                         headers={"X-Api-Key": stack.api_key}, timeout=30)
    response.raise_for_status()
    return response.json()


def progress_line(job: dict[str, Any]) -> str:
    """`Running   33% (1/3)  the runner is augmenting the dataset`: the parts that change."""
    progress = job.get("progress") or {}
    total = progress.get("episodes_total") or 0
    done = f"{progress.get('percent', 0)}% ({progress.get('episodes_done', 0)}/{total})" \
        if total else ""
    return f"{job['status']:<10}{done:<14}{job.get('message') or ''}".rstrip()


def save_preview(url: str, folder: Path) -> Path:
    response = httpx.get(url, follow_redirects=True, timeout=30)
    response.raise_for_status()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "preview.png"
    path.write_bytes(response.content)
    return path.resolve()


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT,
                                                                     signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    # `kill` and Ctrl-C end the demo alike. SIGINT is set too: Python leaves it ignored
    # when the demo starts from a script's background job, and Ctrl-C must still work.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    demo = Demo(args)
    try:
        return demo.run()
    except KeyboardInterrupt:
        say("\ninterrupted")
        return 130
    except Exception as exc:  # one readable line; the clean-up below still runs
        say(f"augment-dev demo failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        demo.teardown()
