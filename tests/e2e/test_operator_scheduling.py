"""The operator's placement and refusal paths, on the real control plane (no runner needed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from augment_dev.cluster import EmbeddedCluster
from augment_dev.stack import Stack, StackOptions
from augment_spec.contract import ENV_HF_TOKEN, LABEL_JOB_ID, LABEL_PROJECT

PROJECT = str(uuid.UUID(int=7))
B200_ONLY = {"profiles": {"deterministic": {
    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B200"}, "affinity": {}}}}


@pytest.fixture(scope="module")
def stack(cluster: EmbeddedCluster) -> Iterator[Stack]:
    cluster.kubectl("apply", "-f", "crds/augmentationjobs.augment.dev.yaml")
    options = StackOptions(namespace="sched", release="sched", api=False,
                           extra_values=B200_ONLY)
    with Stack(cluster, options) as running:
        yield running


def job_cr(name: str, **spec: object) -> dict:
    return {"apiVersion": "augment.dev/v1alpha1", "kind": "AugmentationJob",
            "metadata": {"name": name},
            "spec": {"projectId": PROJECT, "datasetId": "robotics-lab/pick-place", **spec}}


def test_unplaceable_profile_reports_the_schedulers_reason(stack: Stack) -> None:
    stack.apply(job_cr("nowhere"))
    cr = stack.wait_phase("nowhere", {"Pending"}, timeout=60)

    def reason_reported() -> dict | None:
        status = stack.cr("nowhere").get("status") or {}
        return status if "didn't match Pod's node affinity/selector" in status.get(
            "message", "") else None

    from augment_dev.kube import wait_for

    status = wait_for(reason_reported, timeout=60, what="the scheduler's reason")
    assert status["message"].startswith("waiting for a GPU node:")
    scheduled = next(c for c in status["conditions"] if c["type"] == "Scheduled")
    assert scheduled["status"] == "False" and scheduled["reason"] == "Unschedulable"
    (job,) = stack.jobs_of("nowhere")
    assert job["metadata"]["ownerReferences"][0]["uid"] == cr["metadata"]["uid"]
    labels = stack.cr("nowhere")["metadata"]["labels"]  # so the API finds it by label
    assert labels[LABEL_JOB_ID] == cr["metadata"]["uid"]
    assert labels[LABEL_PROJECT] == PROJECT
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-B200"}
    container = pod_spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    token = next(e for e in container["env"] if e["name"] == ENV_HF_TOKEN)
    assert token["valueFrom"]["secretKeyRef"]["name"] == "augment-hub-token"
    assert not any(stack.hub_token in str(e.get("value", "")) for e in container["env"])


def test_generative_fails_with_a_clear_message_and_no_job(stack: Stack) -> None:
    stack.apply(job_cr("gen", augmentationType="generative"))
    cr = stack.wait_phase("gen", {"Failed"}, timeout=60)
    assert "generative augmentation (Cosmos Transfer2.5) is currently disabled" in \
        cr["status"]["message"]
    assert stack.jobs_of("gen") == []
    events = stack.cluster.kubectl("get", "events", "-n", stack.namespace,
                                   "--field-selector", "involvedObject.name=gen").stdout
    assert "Failed" in events


def test_deleting_the_cr_removes_its_job(stack: Stack) -> None:
    from augment_dev.kube import wait_for

    stack.apply(job_cr("short-lived"))
    wait_for(lambda: stack.jobs_of("short-lived"), timeout=60, what="the Job")
    stack.cluster.kubectl("delete", "augmentationjob", "short-lived", "-n", stack.namespace)
    wait_for(lambda: not stack.jobs_of("short-lived"), timeout=60,
             what="the garbage collector to remove the Job")
