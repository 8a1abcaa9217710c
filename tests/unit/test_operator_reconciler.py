"""The Reconciler's loop around the decisions: one reconcile at a time per CR."""

from __future__ import annotations

import copy
import threading
import time
import uuid
from typing import Any

from augment_operator.config import OperatorConfig
from augment_operator.handlers import Reconciler

PROJECT = str(uuid.uuid4())


class SlowKube:
    """An in-memory stand-in for the operator's Kube: one CR whose Job has completed.
    Reading the Job takes a while, as on a busy apiserver, so that two reconciles that
    run together overlap."""

    def __init__(self) -> None:
        self.cr: dict[str, Any] = {
            "apiVersion": "augment.dev/v1alpha1", "kind": "AugmentationJob",
            "metadata": {"name": "pick", "namespace": "ns", "uid": "u-1", "generation": 1,
                         "labels": {}, "annotations": {}},
            "spec": {"projectId": PROJECT, "datasetId": "lab/pick"},
            "status": {"phase": "Running"}}
        self.job = {"metadata": {"name": "pick-run", "ownerReferences": [{"uid": "u-1"}]},
                    "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
        self.status_writes = 0
        self.version = 1

    def get_cr(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.cr)

    def patch_cr_status(self, namespace: str, name: str,
                        status: dict[str, Any]) -> dict[str, Any]:
        self.status_writes += 1
        self.cr["status"].update(copy.deepcopy(status))
        return self._written()

    def patch_cr_labels(self, namespace: str, name: str,
                        labels: dict[str, str]) -> dict[str, Any]:
        self.cr["metadata"]["labels"].update(labels)
        return self._written()

    def _written(self) -> dict[str, Any]:
        """The CR as a write returns it, with the next resourceVersion."""
        self.version += 1
        self.cr["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.cr)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        time.sleep(0.2)
        return copy.deepcopy(self.job) if name == "pick-run" else None

    def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        return []

    def access_granted(self, namespace: str, name: str) -> bool:
        return False

    def delete_access(self, namespace: str, name: str) -> None:
        pass


class CountingReconciler(Reconciler):
    def __init__(self, kube: SlowKube) -> None:
        super().__init__(OperatorConfig(), kube)  # type: ignore[arg-type]
        self.announced: list[str] = []

    def announce(self, cr: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        self.announced.append(reason)


def test_events_arriving_together_announce_a_phase_change_once() -> None:
    kube = SlowKube()
    reconciler = CountingReconciler(kube)
    threads = [threading.Thread(target=reconciler.reconcile, args=("ns", "pick"))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert kube.cr["status"]["phase"] == "Succeeded"
    assert reconciler.announced == ["Succeeded"]
    assert kube.status_writes == 1


def test_the_job_version_a_reconcile_read_needs_no_reconcile_of_its_own() -> None:
    kube = SlowKube()
    kube.job["metadata"].update(namespace="ns", resourceVersion="7")
    reconciler = CountingReconciler(kube)
    job = copy.deepcopy(kube.job)
    assert not reconciler.reads.covered("job", job, "MODIFIED")
    reconciler.reconcile("ns", "pick")
    assert reconciler.reads.covered("job", job, "MODIFIED")
    job["metadata"]["resourceVersion"] = "8"  # changed since
    assert not reconciler.reads.covered("job", job, "MODIFIED")
