"""The operator-wide resync sweep: which CRs it looks at again, when, and in what context."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from augment_operator.config import OperatorConfig
from augment_operator.handlers import Reconciler
from augment_operator.status import Decision, StartLimits, decide
from augment_operator.sweep import Sweep
from augment_spec.contract import Phase

POSTED_TO: contextvars.ContextVar[str] = contextvars.ContextVar("posted_to")


def cr(name: str, phase: str | None, version: str = "1") -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version},
            "status": {"phase": phase} if phase else {}}


class ScriptedReconciler(Reconciler):
    """Each CR's reconcile decides what DECISIONS says (or fails); records each one
    with its trigger and the Event queue its context names."""

    def __init__(self, interval: float) -> None:
        super().__init__(OperatorConfig.model_validate({"resyncSeconds": interval}))
        self.calls: list[tuple[str, str, str]] = []
        self._trigger = ""

    def reconcile(self, namespace: str, name: str, trigger: str = "cr") -> Decision | None:
        self._trigger = trigger
        return super().reconcile(namespace, name, trigger)

    def _reconcile(self, cr: dict[str, Any]) -> Decision:
        name = cr["metadata"]["name"]
        self.calls.append((name, self._trigger, POSTED_TO.get("none")))
        if name == "broken":
            raise RuntimeError("the apiserver refused")
        return copy.copy(DECISIONS[name])


DECISIONS = {
    "expired": Decision(Phase.Pending, "Unschedulable", "waiting", expires_in=0.0),
    "later": Decision(Phase.Pending, "Unschedulable", "waiting", expires_in=3600.0),
    "queued": Decision(Phase.Queued, "Queued", "queued in Kueue LocalQueue gpu"),
    "starting": Decision(Phase.Pending, "Starting", "waiting for the runner pod"),
    "running": Decision(Phase.Running, "Running", "augmenting"),
    "done": Decision(Phase.Succeeded, "Final", "uploaded"),
}


def handler_context() -> contextvars.Context:
    POSTED_TO.set("kopf's queue")
    return contextvars.copy_context()


def test_the_sweep_looks_again_only_where_no_event_may_come() -> None:
    reconciler = ScriptedReconciler(interval=0.05)
    for name in [*DECISIONS, "broken"]:
        reconciler.bodies.seen(cr(name, "Succeeded" if name == "done" else "Pending"),
                               "ADDED")
        with contextlib.suppress(RuntimeError):
            reconciler.reconcile("ns", name)  # its event
    reconciler.calls.clear()
    time.sleep(0.06)  # an interval
    context = contextvars.Context().run(handler_context)
    sweep = Sweep(reconciler, interval=0.05)
    with ThreadPoolExecutor(2) as executor:
        # An expired start limit, a Kueue queue's reason, a reconcile that failed.
        assert sweep.once(executor, context) == 3
        assert sweep.once(executor, context) == 1  # the expired limit again at once
        time.sleep(0.06)
        assert sweep.once(executor, context) == 3
    assert sorted(set(reconciler.calls)) == [("broken", "resync", "kopf's queue"),
                                             ("expired", "resync", "kopf's queue"),
                                             ("queued", "resync", "kopf's queue")]


def test_a_waiting_pods_decision_says_when_its_start_limit_expires() -> None:
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    at = created + dt.timedelta(seconds=100)
    limits = StartLimits(schedule_seconds=600, start_seconds=300)
    pod = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {
        "phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                                            "message": "0/1 nodes are available"}]}}
    assert decide(CR, JOB, [pod], None, None, at=at, limits=limits).expires_in == 500
    assert decide(CR, JOB, [pod], None, None, at=at).expires_in is None  # no limit
    pod["status"] = {"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:40Z"}],
        "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
    assert decide(CR, JOB, [pod], None, None, at=at, limits=limits).expires_in == 240
    pod["status"]["containerStatuses"] = [{"state": {"running": {}}}]
    pod["status"]["phase"] = "Running"
    assert decide(CR, JOB, [pod], None, None, at=at, limits=limits).expires_in is None


CR = {"metadata": {"name": "pick", "namespace": "ns", "uid": "u-1"}, "spec": {},
      "status": {"phase": "Pending"}}
JOB = {"metadata": {"name": "pick-run"}, "spec": {}, "status": {}}


def test_the_sweep_runs_every_interval_once_it_has_a_handlers_context() -> None:
    reconciler = ScriptedReconciler(interval=0.05)
    reconciler.bodies.seen(cr("expired", "Pending"), "ADDED")
    reconciler.reconcile("ns", "expired")
    reconciler.calls.clear()
    sweep = Sweep(reconciler, interval=0.05)
    with ThreadPoolExecutor(1) as executor:
        sweep.start(executor)
        time.sleep(0.3)
        assert reconciler.calls == []  # no handler ran yet: no context to post Events in
        sweep.remember(contextvars.Context().run(handler_context))
        deadline = time.monotonic() + 5
        while len(reconciler.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        sweep.stop()
    assert reconciler.calls[:2] == [("expired", "resync", "kopf's queue")] * 2
