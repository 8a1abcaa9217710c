"""Runner pods that cannot start, a CR name of 253 characters end to end, and a runner pod
evicted mid-job, on the real control plane with the chart's operator and real runners."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from augment_dev.cluster import EmbeddedCluster
from augment_dev.datasets import make_lerobot_v3
from augment_dev.kube import wait_for
from augment_dev.stack import Stack, StackOptions

PROJECT = str(uuid.UUID(int=21))
START_TIMEOUT = 20
# Deterministic jobs run on the L4 node without a single retry, so a pod failure that used
# one up would fail the job; generative jobs use an image no registry serves.
FAULTS = {"profiles": {
    "deterministic": {"backoffLimit": 0, "startTimeoutSeconds": START_TIMEOUT},
    "generative": {"enabled": True, "image": "registry.invalid/augment-runner:0.1.0",
                   "startTimeoutSeconds": START_TIMEOUT,
                   "resources": {"requests": {"cpu": "1", "memory": "1Gi",
                                              "nvidia.com/gpu": "1"},
                                 "limits": {"nvidia.com/gpu": "1"}}},
}}
SOURCE = "robotics-lab/faults-src"


@pytest.fixture(scope="module")
def stack(cluster: EmbeddedCluster) -> Iterator[Stack]:
    cluster.kubectl("apply", "-f", "crds/augmentationjobs.augment.dev.yaml")
    options = StackOptions(namespace="faults", release="faults", api=False,
                           extra_values=FAULTS, hub_token_secrets=("absent-token",))
    with Stack(cluster, options) as running:
        source = Path(tempfile.mkdtemp(prefix="src-")) / "faults"
        make_lerobot_v3(source, episodes=2, frames=8, codec="libx264")
        running.hub.seed(SOURCE, source)
        yield running


def job_cr(name: str, **spec: object) -> dict:
    return {"apiVersion": "augment.dev/v1alpha1", "kind": "AugmentationJob",
            "metadata": {"name": name},
            "spec": {"projectId": PROJECT, "datasetId": SOURCE, "augmentCopies": 1,
                     "augmentTransforms": "lighting", **spec}}


def message_of(stack: Stack, name: str) -> str:
    return str((stack.cr(name).get("status") or {}).get("message", ""))


def ends_without_a_trace(stack: Stack, name: str, cr: dict) -> None:
    """A failed start frees the node: no Job, no pod, no runner credentials left."""
    wait_for(lambda: not stack.jobs_of(name) and not stack.pods_of(name), timeout=60,
             what="the Job and its pod to be deleted")
    account = f"augment-runner-{cr['metadata']['uid']}"
    found = stack.cluster.kubectl("get", "rolebinding", account, "-n", stack.namespace,
                                  check=False)
    assert "NotFound" in found.stderr, found.stdout


@pytest.mark.parametrize(("name", "spec", "said"), [
    ("no-image", {"augmentationType": "generative"},
     'ImagePullBackOff: Back-off pulling image "registry.invalid/augment-runner:0.1.0"'),
    ("no-secret", {"hfTokenSecretName": "absent-token"},
     'CreateContainerConfigError: secret "absent-token" not found'),
])
def test_a_pod_that_cannot_start_says_why_then_fails_the_job(
        stack: Stack, name: str, spec: dict, said: str) -> None:
    stack.apply(job_cr(name, **spec))
    wait_for(lambda: said in message_of(stack, name), timeout=30,
             what=f"the waiting reason in {name}'s status")
    assert stack.cr(name)["status"]["phase"] == "Pending"
    assert message_of(stack, name) == f"the runner pod cannot start: {said}"
    cr = stack.wait_phase(name, {"Failed", "Succeeded"}, timeout=START_TIMEOUT + 60)
    status = cr["status"]
    assert status["phase"] == "Failed"
    assert status["message"] == f"the runner pod did not start within {START_TIMEOUT}s: {said}"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "StartTimeout"
    ends_without_a_trace(stack, name, cr)


def test_a_name_of_253_characters_runs_to_success(stack: Stack) -> None:
    name = "pick-" + "x" * 245 + "-ok"
    assert len(name) == 253
    stack.apply(job_cr(name, outputDatasetId="robotics-lab/long-name-out"))
    cr = stack.wait_phase(name, {"Succeeded", "Failed"}, timeout=240)
    assert cr["status"]["phase"] == "Succeeded", cr["status"].get("message")
    # Written by the runner under its own account: it could patch this long-named CR.
    assert cr["status"]["progress"]["episodesTotal"] == 2
    assert cr["status"]["outputRevision"] == stack.hub.head("robotics-lab/long-name-out")


def evict(stack: Stack, pod: str) -> None:
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": pod, "namespace": stack.namespace}}
    stack.cluster.kubectl("create", "--raw",
                          f"/api/v1/namespaces/{stack.namespace}/pods/{pod}/eviction",
                          "-f", "-", input=json.dumps(eviction))


def test_an_evicted_runner_pod_is_replaced_without_using_a_retry(stack: Stack) -> None:
    # The runner's first request to the source (its revision lookup; the operator's read
    # of meta/info.json to size the job is another path) is held: the test evicts the pod
    # while the runner is surely mid-job, however fast or loaded the machine is.
    stack.hub.fail_next(rf"^GET /api/datasets/{SOURCE}(/|$)", 503, retry_after="1", delay=60)
    stack.apply(job_cr("evicted", outputDatasetId="robotics-lab/evicted-out"))
    wait_for(lambda: stack.hub.pending_failures() == 0, timeout=120,
             what="the runner's first request to the Hub")
    (first,) = stack.pods_of("evicted")
    evict(stack, first["metadata"]["name"])
    cr = stack.wait_phase("evicted", {"Succeeded", "Failed"}, timeout=240)
    # backoffLimit is 0: had the eviction counted as a failure, the Job would have failed.
    assert cr["status"]["phase"] == "Succeeded", cr["status"].get("message")
    (job,) = stack.jobs_of("evicted")
    assert job["status"].get("succeeded") == 1
    later = [p for p in stack.pods_of("evicted") if p["metadata"]["uid"] !=
             first["metadata"]["uid"]]
    assert len(later) == 1
