"""The operator's placement and refusal paths, and what a runner's account may do, on the
real control plane (no runner needed: every pod here waits for a node that never comes)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from augment_dev.cluster import EmbeddedCluster
from augment_dev.kube import wait_for
from augment_dev.stack import Stack, StackOptions
from augment_spec.contract import (
    ANNOTATION_JOB,
    ENV_HF_TOKEN,
    LABEL_JOB,
    LABEL_JOB_ID,
    LABEL_PROJECT,
    cancel_annotations,
    job_label_value,
)

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


def test_a_name_of_253_characters_gets_a_job_and_a_status(stack: Stack) -> None:
    name = "a" * 250 + "-xy"  # the longest name the apiserver accepts
    stack.apply(job_cr(name))
    (job,) = wait_for(lambda: stack.jobs_of(name), timeout=60, what="the Job")
    assert job["metadata"]["labels"][LABEL_JOB] == job_label_value(name)
    assert job["metadata"]["annotations"][ANNOTATION_JOB] == name
    status = wait_for(lambda: (stack.cr(name).get("status") or {}).get("message", "")
                      .startswith("waiting for a GPU node") and stack.cr(name)["status"],
                      timeout=60, what="the scheduler's reason in the status")
    assert status["phase"] == "Pending" and status["jobName"] == job["metadata"]["name"]


def runner_account(stack: Stack, name: str) -> str:
    (job,) = wait_for(lambda: stack.jobs_of(name), timeout=60, what=f"the Job of {name}")
    return str(job["spec"]["template"]["spec"]["serviceAccountName"])


def as_account(stack: Stack, account: str, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl, impersonating a runner pod's ServiceAccount."""
    return stack.cluster.kubectl(
        *args, "-n", stack.namespace,
        f"--as=system:serviceaccount:{stack.namespace}:{account}", check=False)


def patch_status(stack: Stack, account: str, name: str,
                 status: dict) -> subprocess.CompletedProcess[str]:
    return as_account(stack, account, "patch", "augmentationjob", name, "--subresource=status",
                      "--type=merge", "-p", json.dumps({"status": status}))


FORGED = {"phase": "Succeeded", "message": "augmented dataset uploaded",
          "completionTime": "2026-01-01T00:00:00Z"}
PROGRESS = {"progress": {"episodesDone": 1, "episodesTotal": 4, "percent": 25,
                         "text": "25% (1/4)"}}


def test_a_runner_may_patch_only_its_own_jobs_status(stack: Stack) -> None:
    stack.apply(job_cr("job-a"))
    stack.apply(job_cr("job-b"))
    account_a, account_b = runner_account(stack, "job-a"), runner_account(stack, "job-b")
    assert account_a != account_b
    denied = patch_status(stack, account_a, "job-b", FORGED)
    assert denied.returncode != 0 and "forbidden" in denied.stderr, denied.stderr
    spec = as_account(stack, account_a, "patch", "augmentationjob", "job-a", "--type=merge",
                      "-p", json.dumps({"metadata": {"annotations": cancel_annotations()}}))
    assert spec.returncode != 0 and "forbidden" in spec.stderr, spec.stderr
    allowed = patch_status(stack, account_a, "job-a", PROGRESS)
    assert allowed.returncode == 0, allowed.stderr
    assert stack.cr("job-a")["status"]["progress"]["episodesDone"] == 1
    assert (stack.cr("job-b")["status"] or {}).get("phase") == "Pending"


def test_a_phase_the_runner_writes_is_overwritten_from_the_job(stack: Stack) -> None:
    stack.apply(job_cr("forger"))
    account = runner_account(stack, "forger")
    stack.wait_phase("forger", {"Pending"}, timeout=60)
    forged = patch_status(stack, account, "forger", FORGED)
    assert forged.returncode == 0, forged.stderr

    def restored() -> dict | None:
        status = stack.cr("forger")["status"]
        return status if status["phase"] == "Pending" and "completionTime" not in status \
            and status["message"].startswith("waiting for a GPU node") else None

    wait_for(restored, timeout=30, what="the operator to restore the real phase")
    # Once the job ends its runner can write nothing: the account is gone with its grant.
    stack.cluster.kubectl("annotate", "augmentationjob", "forger", "-n", stack.namespace,
                          *(f"{k}={v}" for k, v in cancel_annotations().items()))
    stack.wait_phase("forger", {"Cancelled"}, timeout=60)
    late = patch_status(stack, account, "forger", FORGED)
    assert late.returncode != 0 and "forbidden" in late.stderr, late.stderr
    for kind in ("serviceaccount", "role", "rolebinding"):
        found = stack.cluster.kubectl("get", kind, account, "-n", stack.namespace, check=False)
        assert found.returncode != 0 and "NotFound" in found.stderr, (kind, found.stdout)
    assert stack.cr("forger")["status"]["phase"] == "Cancelled"
