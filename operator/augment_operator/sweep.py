"""The periodic look at unfinished jobs: one operator-wide sweep, not a kopf timer per CR.

A kopf timer needs kopf's finalizer on every CR: one more write per job, whose watch
event is reconciled again, and one more write to let the CR go when it is deleted. The
sweep needs neither. Every resync interval it reconciles each unfinished
AugmentationJob seen on the watch that its last reconcile asked to look at again by
then (`Reconciler.due`): a start limit has expired, Kueue's reason (its Workloads are
not watched) is to be refreshed, or that reconcile failed and is tried again.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from concurrent.futures import Executor, wait
from typing import Protocol

log = logging.getLogger("augment.operator")


class Resyncable(Protocol):
    def unfinished(self) -> list[tuple[str, str]]: ...

    def due(self, namespace: str, name: str) -> bool: ...

    def reconcile(self, namespace: str, name: str, trigger: str = "cr") -> object: ...


class Sweep:
    """Runs `once` every `interval` seconds on a thread of its own, once it has both an
    executor to run the reconciles in and a handler's context to run them in."""

    def __init__(self, reconciler: Resyncable, interval: float) -> None:
        self.reconciler = reconciler
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._context: contextvars.Context | None = None

    def start(self, executor: Executor) -> None:
        """Run the reconciles in `executor`: kopf's own, so that they share its worker
        limit with the event handlers."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(executor,),
                                            name="resync-sweep", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """No new sweep starts (one under way finishes its reconciles)."""
        self._stop.set()
        self._thread = None

    def remember(self, context: contextvars.Context) -> None:
        """The context of a kopf handler (the first one called): kopf posts a
        Kubernetes Event (`kopf.info`, `kopf.warn`) to a queue that only its handlers'
        context names, and a reconcile may post one."""
        if self._context is None:
            self._context = context

    def _run(self, executor: Executor) -> None:
        while not self._stop.wait(self.interval):
            if self._context is not None:
                self.once(executor, self._context)

    def once(self, executor: Executor, context: contextvars.Context) -> int:
        """Reconcile every unfinished CR due for a look, all in `executor`, and wait
        for them; how many were reconciled."""
        due = [(namespace, name) for namespace, name in self.reconciler.unfinished()
               if self.reconciler.due(namespace, name)]
        # A Context may be entered by one thread at a time: each call gets a copy.
        futures = [executor.submit(context.copy().run, self._resync, namespace, name)
                   for namespace, name in due]
        wait(futures)
        return len(due)

    def _resync(self, namespace: str, name: str) -> None:
        try:
            self.reconciler.reconcile(namespace, name, trigger="resync")
        except Exception:  # the next sweep tries again
            log.exception("%s/%s: resync failed", namespace, name)

