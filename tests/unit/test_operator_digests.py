"""Which Job and pod events the operator reconciles: every one that can change a
decision, none that only bring what no decision reads."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from augment_operator.digests import Digests, Reads
from augment_operator.status import Child, StartLimits, decide, shard_status

AT = dt.datetime(2026, 1, 1, 0, 30, tzinfo=dt.UTC)
LIMITS = StartLimits(schedule_seconds=600, start_seconds=300)
CR = {"metadata": {"name": "pick", "namespace": "ns", "uid": "u-1", "generation": 1},
      "spec": {}, "status": {"phase": "Pending", "jobName": "pick-run"}}


def a_job(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "pick-run", "namespace": "ns", "uid": "j-1",
                         "resourceVersion": "10", "ownerReferences": [{"uid": "u-1"}]},
            "spec": {"completions": 1, "suspend": False},
            "status": {"active": 1, "ready": 0, "terminating": 0,
                       "startTime": "2026-01-01T00:00:01Z", **status}}


def an_indexed_job(**status: Any) -> dict[str, Any]:
    job = a_job(**status)
    job["spec"].update(completionMode="Indexed", completions=4, parallelism=4)
    return job


def a_pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "pick-run-x", "namespace": "ns", "uid": "p-1",
                         "resourceVersion": "11",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "runner"}]},
            "status": {"phase": "Pending", "qosClass": "Burstable", **status}}


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: insufficient nvidia.com/gpu",
                 "lastTransitionTime": "2026-01-01T00:00:02Z"}
SCHEDULED = {"type": "PodScheduled", "status": "True",
             "lastTransitionTime": "2026-01-01T00:00:03Z"}


def waiting(reason: str) -> list[dict[str, Any]]:
    return [{"name": "runner", "ready": False, "image": "runner:1",
             "state": {"waiting": {"reason": reason, "message": "pull failed"}}}]


# Updates that bring nothing a decision reads, each from the object before it.
IDLE_JOB_UPDATES = [
    lambda j: j["status"].update(ready=1),
    lambda j: j["status"].update(terminating=1, uncountedTerminatedPods={"failed": ["x"]}),
    lambda j: j["status"].update(startTime="2026-01-01T00:00:05Z"),
    lambda j: j["metadata"].update(resourceVersion="99", managedFields=[{"manager": "kcm"}]),
    lambda j: j["status"].update(active=0),  # read for an Indexed Job only
]
IDLE_POD_UPDATES = [
    lambda p: p["status"].update(podIP="10.0.0.3", podIPs=[{"ip": "10.0.0.3"}],
                                 hostIP="10.0.1.1"),
    lambda p: p["status"].update(conditions=[SCHEDULED, {"type": "Initialized",
                                                         "status": "True"}]),
    lambda p: p["status"]["containerStatuses"][0].update(imageID="sha256:ab", ready=True,
                                                         started=True),
    lambda p: p["metadata"].update(resourceVersion="12"),
]
# Updates a decision may read: each must be reconciled.
JOB_CHANGES = [
    lambda j: j["status"].update(conditions=[{"type": "Failed", "status": "True",
                                              "reason": "BackoffLimitExceeded"}]),
    lambda j: j["status"].update(conditions=[{"type": "Complete", "status": "True"}]),
    lambda j: j["status"].update(failed=1),
    lambda j: j["spec"].update(suspend=True),
    lambda j: j["metadata"].update(labels={"kueue.x-k8s.io/queue-name": "gpu"}),
    lambda j: j["metadata"].update(uid="j-2"),  # deleted and made again
]
POD_CHANGES = [
    lambda p: p["status"].update(phase="Running"),
    lambda p: p["status"].update(phase="Failed"),
    lambda p: p["status"].update(conditions=[UNSCHEDULABLE]),
    lambda p: p["status"].update(conditions=[dict(UNSCHEDULABLE, message="0/3 nodes")]),
    lambda p: p["status"].update(containerStatuses=waiting("ImagePullBackOff")),
    lambda p: p["status"]["containerStatuses"][0].update(
        state={"terminated": {"exitCode": 1, "reason": "OOMKilled"}}),
    lambda p: p["status"].update(reason="Evicted", message="low on memory"),
    lambda p: p["status"].update(conditions=[SCHEDULED, {
        "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]),
]


def changed_after(kind: str, before: dict[str, Any], update: Any) -> bool:
    digests = Digests()
    assert digests.changed(kind, before, "ADDED")  # the first event of an object
    after = copy.deepcopy(before)
    update(after)
    return digests.changed(kind, after, "MODIFIED")


def scheduled_pod() -> dict[str, Any]:
    return a_pod(conditions=[SCHEDULED], containerStatuses=waiting("ContainerCreating"))


@pytest.mark.parametrize("update", IDLE_JOB_UPDATES)
def test_job_updates_no_decision_reads_are_not_reconciled(update: Any) -> None:
    assert not changed_after("job", a_job(), update)
    # ... and indeed leave the decision as it was.
    after = a_job()
    update(after)
    assert decide(CR, after, [], None, None, at=AT) == decide(CR, a_job(), [], None, None, at=AT)


@pytest.mark.parametrize("update", IDLE_POD_UPDATES)
def test_pod_updates_no_decision_reads_are_not_reconciled(update: Any) -> None:
    assert not changed_after("pod", scheduled_pod(), update)
    after = scheduled_pod()
    update(after)
    assert decide(CR, a_job(), [after], None, None, at=AT, limits=LIMITS) == \
        decide(CR, a_job(), [scheduled_pod()], None, None, at=AT, limits=LIMITS)


@pytest.mark.parametrize("update", JOB_CHANGES)
def test_job_changes_a_decision_may_read_are_reconciled(update: Any) -> None:
    assert changed_after("job", a_job(), update)


@pytest.mark.parametrize("update", POD_CHANGES)
def test_pod_changes_a_decision_may_read_are_reconciled(update: Any) -> None:
    assert changed_after("pod", scheduled_pod(), update)


def test_an_indexed_jobs_shard_counts_are_reconciled() -> None:
    for update in (lambda j: j["status"].update(active=3),
                   lambda j: j["status"].update(completedIndexes="0-1"),
                   lambda j: j["status"].update(failedIndexes="2")):
        assert changed_after("job", an_indexed_job(), update)
    fewer = an_indexed_job(active=3)
    assert shard_status(CR, Child(fewer), 4) != shard_status(CR, Child(an_indexed_job()), 4)


def test_a_deleted_object_is_reconciled_and_forgotten() -> None:
    digests = Digests()
    assert digests.changed("pod", a_pod(), "ADDED")
    assert not digests.changed("pod", a_pod(), "MODIFIED")
    assert digests.changed("pod", a_pod(), "DELETED")
    assert digests.changed("pod", a_pod(), "ADDED")  # one of the same name, made again


def versioned(version: str) -> dict[str, Any]:
    pod = a_pod(conditions=[UNSCHEDULABLE])
    pod["metadata"]["resourceVersion"] = version
    return pod


def test_an_event_bringing_a_version_a_reconcile_read_is_covered() -> None:
    reads = Reads()
    assert not reads.covered("pod", versioned("11"), "ADDED")  # nothing read yet
    reads.read("pod", versioned("12"))  # a reconcile listed the pods after the event
    assert reads.covered("pod", versioned("11"), "ADDED")
    assert reads.covered("pod", versioned("12"), "MODIFIED")
    assert not reads.covered("pod", versioned("13"), "MODIFIED")  # newer than any read
    assert not reads.covered("job", versioned("12"), "MODIFIED")  # another kind
    reads.read("pod", versioned("10"))  # an older read never lowers what was read
    assert reads.covered("pod", versioned("12"), "MODIFIED")
    assert not reads.covered("pod", versioned("12"), "DELETED")
    assert not reads.covered("pod", versioned("12"), "ADDED")  # forgotten with the deletion
    reads.read("pod", versioned("opaque"))
    assert not reads.covered("pod", versioned("opaque"), "MODIFIED")
