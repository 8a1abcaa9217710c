"""A watch cache of the namespace's AugmentationJobs, so that reads never wait on Kubernetes.

An informer thread LISTs the AugmentationJobs, then WATCHes them from the list's
resourceVersion; when a watch ends it resumes from the last version it saw, and when the
apiserver no longer keeps that version (410 Gone) it LISTs again. Between attempts that
fail it waits, up to BACKOFF_MAX_S. GET by id is a dict lookup by uid and a list is a
copy of the index: neither calls the apiserver, so an apiserver that is slow or down
cannot hold them. Until the first LIST has completed there is nothing to answer from,
and reads are 503. After that the cache answers with what it last saw, however long the
apiserver is away: a stale phase rather than no answer.

A job this API has just created is served from `remember` until the watch reports it,
so a client reads its job straight after creating it (the watch lags by milliseconds to
seconds).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol
from uuid import UUID

from augment_api.errors import ServiceError, Unavailable
from augment_api.store import Expired, project_of
from augment_spec.contract import TERMINAL_PHASES, phase_of

log = logging.getLogger(__name__)

# How long a created job is served from memory when the watch has not reported it.
REMEMBER_S = 60.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0

CR = dict[str, Any]


class JobSource(Protocol):
    """Where the informer reads from (augment_api.store.JobStore)."""

    def list_jobs(self) -> tuple[list[CR], str]:
        """Every AugmentationJob and the list's resourceVersion."""
        ...

    def watch_jobs(self, resource_version: str) -> Iterator[CR]:
        """Watch events ({"type": ..., "object": ...}) after that version, until the
        apiserver ends the watch; raises Expired for a version too old."""
        ...

    def stop_watch(self) -> None:
        """Make a watch in progress return now."""
        ...


def uid_of(cr: CR) -> str:
    return str(cr["metadata"]["uid"])


class JobCache:
    """AugmentationJobs by uid, plus those just created that the watch has not reported."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, CR] = {}
        self._created: dict[str, tuple[CR, float]] = {}  # uid -> (CR, when created)
        self._synced = False
        self.problem: str | None = None  # why the informer last failed, until it succeeds

    # ---- written by the informer ----
    def replace(self, items: list[CR], listed_since: float) -> None:
        """The result of a LIST begun at `listed_since`: it holds every job created before."""
        with self._lock:
            self._jobs = {uid_of(cr): cr for cr in items}
            self._created = {uid: entry for uid, entry in self._created.items()
                             if entry[1] >= listed_since and uid not in self._jobs}
            self._synced = True
            self.problem = None

    def apply(self, event: CR) -> str | None:
        """One watch event; returns the resourceVersion it brings (None: none)."""
        kind, obj = event.get("type"), event.get("object") or {}
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            uid = uid_of(obj)
            with self._lock:
                self._created.pop(uid, None)
                if kind == "DELETED":
                    self._jobs.pop(uid, None)
                else:
                    self._jobs[uid] = obj
        return str(version) if version else None

    # ---- written by the API ----
    def remember(self, cr: CR) -> None:
        """A job this process just created, served until the watch reports it."""
        with self._lock:
            if uid_of(cr) not in self._jobs:
                self._created[uid_of(cr)] = (cr, self._clock())

    # ---- read by the API ----
    @property
    def synced(self) -> bool:
        return self._synced

    def require_synced(self) -> None:
        """503 (Unavailable) until the first LIST has completed."""
        if not self._synced:
            reason = self.problem or "the API is still loading them from Kubernetes"
            raise Unavailable(f"jobs are not readable yet: {reason}")

    def _fresh_created(self) -> dict[str, CR]:
        """Remembered jobs not yet outdated (the lock is held)."""
        oldest = self._clock() - REMEMBER_S
        for uid in [u for u, (_, when) in self._created.items() if when < oldest]:
            del self._created[uid]
        return {uid: cr for uid, (cr, _) in self._created.items()}

    def get(self, uid: UUID) -> CR | None:
        """The job of that uid, or None; 503 (Unavailable) before the first LIST."""
        self.require_synced()
        with self._lock:
            return self._jobs.get(str(uid)) or self._fresh_created().get(str(uid))

    def jobs(self) -> list[CR]:
        """Every job; 503 (Unavailable) before the first LIST."""
        self.require_synced()
        with self._lock:
            return [*self._jobs.values(), *self._fresh_created().values()]

    def named(self, name: str) -> CR | None:
        return next((cr for cr in self.jobs() if cr["metadata"].get("name") == name), None)

    def active_jobs(self, project: UUID) -> int:
        """The project's jobs not in a final phase (what its quota counts)."""
        return sum(1 for cr in self.jobs()
                   if project_of(cr) == project and phase_of(cr) not in TERMINAL_PHASES)


class Informer:
    """The thread that keeps a JobCache current from a JobSource."""

    def __init__(self, source: JobSource, cache: JobCache,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source, self.cache, self._clock = source, cache, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._version: str | None = None  # where the next watch starts; None: LIST first

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="job-informer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.source.stop_watch()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        delay = BACKOFF_MIN_S
        while not self._stop.is_set():
            try:
                if self._version is None:
                    self._relist()
                    delay = BACKOFF_MIN_S
                self._follow()
                self.cache.problem = None  # the watch ran its course
                delay = BACKOFF_MIN_S
            except Expired:
                log.info("the watch's resourceVersion expired; listing the jobs again")
                self._version = None
            except ServiceError as exc:
                self._failed(exc.detail, delay)
                delay = min(2 * delay, BACKOFF_MAX_S)
            except Exception as exc:  # a bug: keep the cache alive, and say it loudly
                log.exception("job informer failed")
                self._failed(f"internal error in the job cache ({type(exc).__name__})", delay)
                delay = min(2 * delay, BACKOFF_MAX_S)

    def _failed(self, problem: str, delay: float) -> None:
        if self._stop.is_set():
            return  # stop() broke the watch off: not a failure
        log.warning("job informer: %s; trying again in %.1f s", problem, delay)
        self.cache.problem = problem
        self._stop.wait(delay)

    def _relist(self) -> None:
        started = self._clock()
        items, version = self.source.list_jobs()
        self.cache.replace(items, started)
        self._version = version
        log.info("job cache loaded %d AugmentationJobs at resourceVersion %s", len(items),
                 version)

    def _follow(self) -> None:
        """Apply watch events until the watch ends, keeping the last version seen, from
        which the next watch resumes (also after this one failed)."""
        assert self._version is not None
        for event in self.source.watch_jobs(self._version):
            if self._stop.is_set():
                break
            self._version = self.cache.apply(event) or self._version
