"""Kueue queues on the operator's side, without a cluster: which queue a job waits in,
the suspended and labelled Jobs it gets, and the Queued phase with Kueue's reason
(tests/e2e/test_kueue.py runs the same against a real Kueue)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from augment_operator.config import ConfigError, OperatorConfig, Queue, load_config
from augment_operator.jobs import build_finalize_job, build_job
from augment_operator.kube import Kube
from augment_operator.status import (
    Action,
    Child,
    decide,
    decide_sharded,
    status_patch,
)
from augment_spec.contract import (
    ANNOTATION_KUEUE_MIN_PARALLELISM,
    LABEL_KUEUE_PRIORITY,
    LABEL_KUEUE_QUEUE,
    Phase,
    cancel_annotations,
)
from augment_spec.crd import crd, spec_from_cr
from augment_spec.model import AugmentationSpec, AugmentationType, SpecError, parse_spec

PROJECT = str(uuid.UUID(int=16))
QUOTA_SHORT = ("couldn't assign flavors to pod set main: insufficient unused quota for "
               "nvidia.com/gpu in flavor gpu, 1 more needed")


def spec(**fields: Any) -> AugmentationSpec:
    return parse_spec({"project_id": PROJECT, "dataset_id": "lab/pick", **fields})


def cr(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "augment.dev/v1alpha1", "kind": "AugmentationJob",
            "metadata": {"name": "pick", "namespace": "team-a", "uid": "u-1", "generation": 1,
                         "annotations": annotations or {}},
            "spec": {"projectId": PROJECT, "datasetId": "lab/pick"}, "status": {}}


def config(namespace_queues: dict[str, str] | None = None, **profile: str) -> OperatorConfig:
    fields = {**OperatorConfig().profile_for(AugmentationType.deterministic)
              .model_dump(by_alias=True), **profile}
    return OperatorConfig.model_validate({"namespaceQueues": namespace_queues or {},
                                          "profiles": {"deterministic": fields}})


def built(cfg: OperatorConfig, job_spec: AugmentationSpec | None = None) -> dict[str, Any]:
    job_spec = job_spec or spec()
    return build_job(cr(), job_spec, cfg.profile_for(job_spec.augmentation_type), cfg)


def queued_job(queue: str | None = "gpu") -> dict[str, Any]:
    labels = {LABEL_KUEUE_QUEUE: queue} if queue else {}
    return {"metadata": {"name": "pick-run", "uid": "j-1", "labels": labels},
            "spec": {"suspend": True}, "status": {}}


def workload(*conditions: tuple[str, str, str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "job-pick-run-1a2b3"}, "status": {"conditions": [
        {"type": kind, "status": status, "reason": reason, "message": message}
        for kind, status, reason, message in conditions]}}


# ---- which queue, and the Jobs that go through it ----

def test_without_a_queue_the_job_is_built_as_before() -> None:
    job = built(OperatorConfig())
    assert "suspend" not in job["spec"]
    assert not [k for k in job["metadata"]["labels"] if k.startswith("kueue.x-k8s.io/")]


def test_the_spec_wins_over_the_namespace_which_wins_over_the_profile() -> None:
    cfg = config({"team-a": "team-a-gpu"}, queueName="shared", workloadPriorityClass="low")
    assert cfg.queue_for("team-a", spec(queue_name="mine")) == Queue("mine", "low")
    assert cfg.queue_for("team-a", spec()) == Queue("team-a-gpu", "low")
    assert cfg.queue_for("team-b", spec(workload_priority_class="high")) == \
        Queue("shared", "high")
    assert OperatorConfig().queue_for("team-a", spec(workload_priority_class="high")) is None


def test_a_queued_job_is_created_suspended_with_kueues_labels() -> None:
    job = built(config(queueName="gpu", workloadPriorityClass="batch-low"))
    assert job["spec"]["suspend"] is True
    labels = job["metadata"]["labels"]
    assert (labels[LABEL_KUEUE_QUEUE], labels[LABEL_KUEUE_PRIORITY]) == ("gpu", "batch-low")
    # Kueue reads the Job's labels; the pods keep only ours.
    assert LABEL_KUEUE_QUEUE not in job["spec"]["template"]["metadata"]["labels"]
    unprioritised = built(config(queueName="gpu"))["metadata"]["labels"]
    assert LABEL_KUEUE_PRIORITY not in unprioritised


def test_both_jobs_of_a_sharded_job_wait_in_its_queue() -> None:
    cfg = config(queueName="gpu")
    sharded = spec(shards=4)
    profile = cfg.profile_for(AugmentationType.deterministic)
    shards, merge = (build_job(cr(), sharded, profile, cfg),
                     build_finalize_job(cr(), sharded, profile, cfg))
    for job in (shards, merge):
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"][LABEL_KUEUE_QUEUE] == "gpu"
    # A quota short of 4 GPUs admits fewer shards at once instead of none.
    assert shards["metadata"]["annotations"][ANNOTATION_KUEUE_MIN_PARALLELISM] == "1"
    assert ANNOTATION_KUEUE_MIN_PARALLELISM not in merge["metadata"]["annotations"]
    unqueued = build_job(cr(), sharded, profile, OperatorConfig())
    assert ANNOTATION_KUEUE_MIN_PARALLELISM not in unqueued["metadata"]["annotations"]


def test_queue_names_must_be_kueue_names_that_fit_a_label(tmp_path: Path) -> None:
    for bad in ("GPU", "a" * 64, "gpu_queue", "-gpu"):
        with pytest.raises(SpecError, match="queue_name"):
            spec(queue_name=bad)
    path = tmp_path / "config.yaml"
    path.write_text("namespaceQueues: {team-a: Team_A}\n")
    with pytest.raises(ConfigError, match="namespaceQueues"):
        load_config(path)
    path.write_text("namespaceQueues: {team-a: gpu}\n"
                    "profiles:\n  deterministic: {queueName: shared}\n")
    loaded = load_config(path)
    assert loaded.queue_for("team-a", spec()) == Queue("gpu")
    assert loaded.queue_for("team-b", spec()) == Queue("shared")


def test_the_crd_takes_queue_and_priority_class_in_camel_case() -> None:
    props = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert props["spec"]["properties"]["queueName"]["maxLength"] == 63
    assert "workloadPriorityClass" in props["spec"]["properties"]
    assert "Queued" in props["status"]["properties"]["phase"]["enum"]
    parsed = spec_from_cr({"projectId": PROJECT, "datasetId": "lab/pick", "queueName": "gpu",
                           "workloadPriorityClass": "batch-low"})
    assert (parsed.queue_name, parsed.workload_priority_class) == ("gpu", "batch-low")


# ---- the Queued phase ----

def test_a_suspended_job_is_queued_with_kueues_reason() -> None:
    waiting = workload(("QuotaReserved", "False", "Pending", QUOTA_SHORT))
    decision = decide(cr(), queued_job(), [], None, None, workload=waiting)
    assert (decision.phase, decision.action) == (Phase.Queued, Action.none)
    assert decision.message == f"queued in Kueue LocalQueue gpu: Pending: {QUOTA_SHORT}"
    scheduled = next(c for c in status_patch(cr(), decision, "pick-run", None)["conditions"]
                     if c["type"] == "Scheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Queued")


@pytest.mark.parametrize(("found", "says"), [
    (None, "waiting for Kueue to take the Job in (no Workload yet)"),
    (workload(), "waiting for Kueue to admit the Workload"),
    (workload(("QuotaReserved", "False", "Inadmissible", "LocalQueue gpu doesn't exist")),
     "Inadmissible: LocalQueue gpu doesn't exist"),
    (workload(("QuotaReserved", "True", "QuotaReserved", ""), ("Admitted", "True", "", "")),
     "admitted by Kueue; the Job is about to start"),
    (workload(("Evicted", "True", "Preempted", "Preempted to accommodate a workload"),
              ("QuotaReserved", "False", "Pending", QUOTA_SHORT)),
     "evicted (Preempted): Preempted to accommodate a workload"),
])
def test_the_message_is_the_workloads_own_account(found: dict[str, Any] | None,
                                                   says: str) -> None:
    decision = decide(cr(), queued_job(), [], None, None, workload=found)
    assert (decision.phase, decision.message) == (
        Phase.Queued, f"queued in Kueue LocalQueue gpu: {says}")


def test_an_admitted_job_that_runs_is_running_again() -> None:
    admitted = queued_job()
    admitted["spec"]["suspend"] = False
    running_pod = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
                   "status": {"phase": "Running"}}
    assert decide(cr(), admitted, [running_pod], None, None).phase is Phase.Running
    # Preempted: Kueue suspends it again; its pod still stopping is still running.
    assert decide(cr(), queued_job(), [running_pod], None, None).phase is Phase.Running


def test_cancelling_a_queued_job_deletes_its_job() -> None:
    decision = decide(cr(cancel_annotations()), queued_job(), [], None, None,
                      workload=workload(("QuotaReserved", "False", "Pending", QUOTA_SHORT)))
    assert (decision.phase, decision.action) == (Phase.Cancelled, Action.delete_job)


def test_a_sharded_job_is_queued_for_its_shards_then_for_its_merge() -> None:
    waiting = workload(("QuotaReserved", "False", "Pending", QUOTA_SHORT))
    shards = decide_sharded(cr(), Child(queued_job(), [], waiting), Child(None), None, None)
    assert (shards.phase, shards.message) == (
        Phase.Queued, f"queued in Kueue LocalQueue gpu: Pending: {QUOTA_SHORT}")
    done = {"metadata": {"name": "pick-run"}, "spec": {},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    merge = queued_job()
    merge["metadata"]["name"] = "pick-merge"
    merging = decide_sharded(cr(), Child(done), Child(merge, [], None), None, None)
    assert merging.phase is Phase.Queued
    assert merging.message == ("every shard is done; the merge is queued in Kueue LocalQueue "
                               "gpu: waiting for Kueue to take the Job in (no Workload yet)")


# ---- reading the Workload ----

class RefusingCustomObjects:
    """The CustomObjectsApi of a cluster without Kueue (404) or of a Role without the
    Workload rule (403)."""

    def __init__(self, status: int) -> None:
        self.status = status

    def list_namespaced_custom_object(self, *args: object, **kwargs: object) -> object:
        raise ApiException(status=self.status, reason="refused")


class ListingCustomObjects:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items, self.selectors = items, []

    def list_namespaced_custom_object(self, group: str, version: str, namespace: str,
                                      plural: str, label_selector: str) -> object:
        self.selectors.append((group, version, plural, label_selector))
        return {"items": self.items}


def kube_with(custom: object) -> Kube:
    kube = Kube()
    kube.__dict__["custom"] = custom  # the cached_property's slot: no client is made
    return kube


@pytest.mark.parametrize("status", [403, 404])
def test_no_kueue_or_no_permission_reads_as_no_workload(status: int) -> None:
    assert kube_with(RefusingCustomObjects(status)).job_workload("team-a", queued_job()) is None


def test_other_api_errors_are_raised() -> None:
    with pytest.raises(ApiException):
        kube_with(RefusingCustomObjects(500)).job_workload("team-a", queued_job())


def test_the_workload_is_found_by_the_jobs_uid() -> None:
    own = {"metadata": {"name": "job-pick-run-1a2b3", "ownerReferences": [{"uid": "j-1"}]}}
    other = {"metadata": {"name": "job-other", "ownerReferences": [{"uid": "j-2"}]}}
    custom = ListingCustomObjects([other, own])
    assert kube_with(custom).job_workload("team-a", queued_job()) == own
    assert custom.selectors == [("kueue.x-k8s.io", "v1beta2", "workloads",
                                 "kueue.x-k8s.io/job-uid=j-1")]
