"""The operator-wide resync sweep: which CRs it looks at again, and in what context."""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from augment_operator.config import OperatorConfig
from augment_operator.handlers import Reconciler
from augment_operator.sweep import Sweep

POSTED_TO: contextvars.ContextVar[str] = contextvars.ContextVar("posted_to")


def cr(name: str, phase: str | None, version: str = "1") -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version},
            "status": {"phase": phase} if phase else {}}


class RecordingReconciler(Reconciler):
    """Records each reconcile and the Event queue its context names."""

    def __init__(self) -> None:
        super().__init__(OperatorConfig())
        self.calls: list[tuple[str, str, str]] = []

    def reconcile(self, namespace: str, name: str, trigger: str = "cr") -> None:
        self._reconciled[f"{namespace}/{name}"] = time.monotonic()
        self.calls.append((name, trigger, POSTED_TO.get("none")))


def handler_context() -> contextvars.Context:
    POSTED_TO.set("kopf's queue")
    return contextvars.copy_context()


def test_the_sweep_looks_again_at_unfinished_jobs_nothing_reconciled_for_an_interval() -> None:
    reconciler = RecordingReconciler()
    for body in (cr("new", None), cr("waiting", "Pending"), cr("busy", "Running"),
                 cr("done", "Succeeded"), cr("failed", "Failed"), cr("gone", "Pending")):
        reconciler.bodies.seen(body, "ADDED")
    reconciler.bodies.seen(cr("gone", "Pending", "2"), "DELETED")
    reconciler.reconcile("ns", "busy", trigger="child")  # just now
    reconciler.calls.clear()
    context = contextvars.Context().run(handler_context)
    sweep = Sweep(reconciler, interval=60)
    with ThreadPoolExecutor(2) as executor:
        assert sweep.once(executor, context) == 2
        # Each was reconciled by the first sweep: the next one finds nothing due.
        assert sweep.once(executor, context) == 0
    assert sorted(reconciler.calls) == [("new", "resync", "kopf's queue"),
                                        ("waiting", "resync", "kopf's queue")]


def test_the_sweep_runs_every_interval_once_it_has_a_handlers_context() -> None:
    reconciler = RecordingReconciler()
    reconciler.bodies.seen(cr("waiting", "Pending"), "ADDED")
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
    assert reconciler.calls[:2] == [("waiting", "resync", "kopf's queue")] * 2
