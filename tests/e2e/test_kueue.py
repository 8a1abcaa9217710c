"""Jobs through a real Kueue (v0.17.0, built from its Go module) on the embedded control
plane: a ClusterQueue of one `nvidia.com/gpu`, two jobs: one runs, the other waits Queued
with Kueue's reason and runs once the first is done; a queued job cancelled leaves no
Workload behind. The cluster is this module's own: Kueue's webhooks see every Job."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from augment_dev.cluster import EmbeddedCluster
from augment_dev.datasets import make_lerobot_v3
from augment_dev.kube import get_json, install_crd, wait_for
from augment_dev.kueue import Kueue
from augment_dev.stack import Stack, StackOptions
from augment_spec.contract import LABEL_KUEUE_JOB_UID, LABEL_KUEUE_PRIORITY, LABEL_KUEUE_QUEUE

NAMESPACE = "queued"
PROJECT = str(uuid.UUID(int=16))
# Kueue admits a Job only when its ClusterQueue covers every resource it asks for: the
# runner asks for CPU and memory too. One GPU: one runner at a time.
QUOTA = {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "1"}


def kueue_objects() -> list[dict[str, Any]]:
    def cluster_queue(name: str, gpus: str) -> dict[str, Any]:
        resources = [{"name": k, "nominalQuota": gpus if k == "nvidia.com/gpu" else v}
                     for k, v in QUOTA.items()]
        return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
                "metadata": {"name": name},
                "spec": {"namespaceSelector": {}, "resourceGroups": [{
                    "coveredResources": list(QUOTA),
                    "flavors": [{"name": "gpu", "resources": resources}]}]}}

    def local_queue(name: str) -> dict[str, Any]:
        return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"clusterQueue": name}}

    return [
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
         "metadata": {"name": "gpu"}},
        cluster_queue("gpu", "1"), local_queue("gpu"),
        # No GPU at all: what waits here waits until cancelled.
        cluster_queue("held", "0"), local_queue("held"),
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass",
         "metadata": {"name": "batch-low"}, "value": 10},
    ]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with EmbeddedCluster() as cluster, Kueue(cluster):
        install_crd(cluster)
        cluster.kubectl("create", "namespace", NAMESPACE)
        for obj in kueue_objects():
            cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
        # Jobs of this namespace that name no queue wait in `gpu` (the chart's default).
        options = StackOptions(namespace=NAMESPACE, release="queued", api=False,
                               extra_values={"kueue": {"namespaceQueues": {NAMESPACE: "gpu"}}})
        with Stack(cluster, options) as running:
            source = Path(tempfile.mkdtemp(prefix="src-")) / "pick-place"
            make_lerobot_v3(source, episodes=3, frames=16, codec="libx264")
            running.hub.seed("robotics-lab/pick-place", source)
            yield running


def job_cr(name: str, **spec: object) -> dict[str, Any]:
    return {"apiVersion": "augment.dev/v1alpha1", "kind": "AugmentationJob",
            "metadata": {"name": name},
            "spec": {"projectId": PROJECT, "datasetId": "robotics-lab/pick-place",
                     "augmentTransforms": "lighting,noise", "augmentCopies": 2,
                     "outputDatasetId": f"robotics-lab/{name}", **spec}}


def workloads(stack: Stack, job: dict[str, Any]) -> list[dict[str, Any]]:
    return get_json(stack.cluster, "workloads.kueue.x-k8s.io", "-n", stack.namespace, "-l",
                    f"{LABEL_KUEUE_JOB_UID}={job['metadata']['uid']}")["items"]


def queued_for_quota(stack: Stack, name: str) -> dict[str, Any] | None:
    status = stack.cr(name).get("status") or {}
    return status if status.get("phase") == "Queued" and "nvidia.com/gpu" in status.get(
        "message", "") else None


def test_one_gpu_of_quota_runs_one_job_and_queues_the_next(stack: Stack,
                                                           tmp_path: Path) -> None:
    # The first runner's commit waits for this file: it holds the GPU until the test
    # has seen the second job queued.
    gate = tmp_path / "first-may-publish"
    stack.hub.hold(r"^POST /api/datasets/robotics-lab/first/commit/", gate)
    stack.apply(job_cr("first"))
    stack.wait_phase("first", {"Running"}, timeout=180)
    stack.apply(job_cr("second"))
    status = wait_for(lambda: queued_for_quota(stack, "second"), timeout=90,
                      what="second to be Queued for want of a GPU")
    assert status["message"].startswith("queued in Kueue LocalQueue gpu: ")
    assert "insufficient" in status["message"], status["message"]  # Kueue's own words
    scheduled = next(c for c in status["conditions"] if c["type"] == "Scheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Queued")
    (job,) = stack.jobs_of("second")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][LABEL_KUEUE_QUEUE] == "gpu"  # the namespace's queue
    assert stack.pods_of("second") == []
    columns = stack.cluster.kubectl("get", "augjob", "second", "-n", stack.namespace).stdout
    assert "Queued" in columns
    assert stack.cr("first")["status"]["phase"] == "Running"

    gate.touch()
    first = stack.wait_phase("first", {"Succeeded", "Failed"}, timeout=300)["status"]
    assert first["phase"] == "Succeeded", first.get("message")
    second = stack.wait_phase("second", {"Succeeded", "Failed"}, timeout=300)["status"]
    assert second["phase"] == "Succeeded", second.get("message")
    # One GPU of quota: the second runner started only after the first had finished.
    assert first["completionTime"] <= second["startTime"]
    (admitted,) = workloads(stack, stack.jobs_of("second")[0])
    reserved = {c["type"]: c["status"] for c in admitted["status"]["conditions"]}
    assert reserved["Admitted"] == "True" and reserved["Finished"] == "True"


def test_cancelling_a_queued_job_removes_its_workload(stack: Stack) -> None:
    # The spec's queue wins over the namespace's; its priority class goes to Kueue.
    stack.apply(job_cr("held", queueName="held", workloadPriorityClass="batch-low"))
    wait_for(lambda: (stack.cr("held").get("status") or {}).get("phase") == "Queued",
             timeout=90, what="held to be Queued")
    (job,) = stack.jobs_of("held")
    assert job["metadata"]["labels"][LABEL_KUEUE_QUEUE] == "held"
    assert job["metadata"]["labels"][LABEL_KUEUE_PRIORITY] == "batch-low"
    (workload,) = wait_for(lambda: workloads(stack, job), timeout=60, what="its Workload")
    assert workload["spec"]["queueName"] == "held"
    assert workload["spec"]["priorityClassRef"]["name"] == "batch-low"
    assert workload["spec"]["priority"] == 10  # the WorkloadPriorityClass's value

    stack.cluster.kubectl("annotate", "augmentationjob", "held", "-n", stack.namespace,
                          "augment.dev/cancel-requested=true")
    cr = stack.wait_phase("held", {"Cancelled"}, timeout=60)
    assert cr["status"]["message"] == "cancelled on request"
    wait_for(lambda: not stack.jobs_of("held"), timeout=60, what="the Job to be deleted")
    wait_for(lambda: not workloads(stack, job), timeout=60,
             what="Kueue to remove the Workload")
    assert stack.pods_of("held") == []  # it never ran


def test_a_sharded_job_fits_a_smaller_quota_and_merges_through_the_queue(stack: Stack) -> None:
    # Two shards, one GPU of quota: Kueue admits one shard at a time instead of none.
    stack.apply(job_cr("sharded", shards=2))
    cr = stack.wait_phase("sharded", {"Succeeded", "Failed"}, timeout=420)
    assert cr["status"]["phase"] == "Succeeded", cr["status"].get("message")
    assert cr["status"]["shards"]["done"] == 2
    shards, merge = sorted(stack.jobs_of("sharded"), key=lambda j: j["metadata"]["name"])[::-1]
    assert shards["spec"]["completions"] == 2 and shards["spec"]["parallelism"] == 1
    for job in (shards, merge):
        assert job["metadata"]["labels"][LABEL_KUEUE_QUEUE] == "gpu"
        (admitted,) = workloads(stack, job)
        assert {c["type"]: c["status"] for c in admitted["status"]["conditions"]}[
            "Admitted"] == "True"
    (assignment,) = workloads(stack, shards)[0]["status"]["admission"]["podSetAssignments"]
    assert assignment["count"] == 1
