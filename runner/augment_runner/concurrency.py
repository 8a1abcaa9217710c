"""One worker thread per augmented copy, fed through a bounded queue.

The decoder (the caller's thread) hands every decoded batch to each copy's queue; each
copy's thread transforms and encodes its batches in order. Decoding, the copies'
transforms and their encoders then overlap: PyAV's codecs and the NumPy transform
engine release the GIL in their heavy parts. A queue holds at most `depth` batches,
so memory stays bounded whatever the episode length.

A worker that fails stops its copy and keeps draining its queue (so the decoder never
blocks on it); the caller sees the worker's own exception, unchanged, at its next
`put` or at `join`. An exception in the caller stops every worker before it
propagates (`close`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class CopyWorkers:
    """`handlers[slot](item)` runs on slot's own thread, items in the order they were put."""

    def __init__(
        self, handlers: list[Callable[[Any], None]], depth: int = 2, name: str = "copy"
    ) -> None:
        self._queues: list[queue.Queue] = [queue.Queue(maxsize=depth) for _ in handlers]
        self._errors: list[BaseException | None] = [None] * len(handlers)
        self._abort = threading.Event()
        self._stopped = False
        self._threads = [
            threading.Thread(
                target=self._loop, args=(slot, handler), name=f"{name}-{slot}", daemon=True
            )
            for slot, handler in enumerate(handlers)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self, slot: int, handler: Callable[[Any], None]) -> None:
        q = self._queues[slot]
        while True:
            item = q.get()
            if item is _STOP:
                return
            if self._abort.is_set() or self._errors[slot] is not None:
                continue  # drain, so a producer never blocks on a dead copy
            try:
                handler(item)
            except BaseException as exc:  # re-raised in the caller thread
                self._errors[slot] = exc
                self._abort.set()

    def _raise_first(self) -> None:
        for error in self._errors:
            if error is not None:
                raise error

    def put(self, item: Any) -> None:
        """Queue `item` for every copy (blocks while a queue is full)."""
        self._raise_first()
        for q in self._queues:
            q.put(item)

    def join(self) -> None:
        """Wait until every copy has handled everything; raise the first failure."""
        self._stop()
        self._raise_first()

    def close(self) -> None:
        """Stop every worker without finishing the queued work (after a failure)."""
        self._abort.set()
        self._stop()

    def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for q in self._queues:
            q.put(_STOP)
        for thread in self._threads:
            thread.join()
