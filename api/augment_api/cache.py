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
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from augment_api.errors import ServiceError, Unavailable
from augment_api.store import Expired, newest_first_key, project_of
from augment_spec.contract import TERMINAL_PHASES, Phase, phase_of

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


@dataclass(eq=False)
class Entry:
    """One version of a job with what every read asks of it worked out once: its
    project, phase and place in the newest-first order, and (`view`) its JSON answer,
    rendered by the first read that needs it. A new version is a new Entry."""

    cr: CR
    project: UUID | None = field(init=False)
    phase: Phase = field(init=False)
    newest_first_key: tuple[str, str] = field(init=False)
    view: bytes | None = None

    def __post_init__(self) -> None:
        self.project = project_of(self.cr)
        self.phase = phase_of(self.cr)
        self.newest_first_key = newest_first_key(self.cr)


class JobCache:
    """AugmentationJobs by uid, plus those just created that the watch has not reported."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, Entry] = {}
        self._created: dict[str, tuple[Entry, float]] = {}  # uid -> (entry, when created)
        self._names: dict[str, str] = {}  # name -> uid, of both
        self._order: list[str] | None = None  # every uid, newest first; None: to sort
        self._by_project: dict[UUID | None, list[str]] | None = None  # the same, by project
        self._synced = False
        self.problem: str | None = None  # why the informer last failed, until it succeeds

    # ---- written by the informer ----
    def replace(self, items: list[CR], listed_since: float) -> None:
        """The result of a LIST begun at `listed_since`: it holds every job created before."""
        with self._lock:
            self._jobs = {uid_of(cr): Entry(cr) for cr in items}
            self._created = {uid: entry for uid, entry in self._created.items()
                             if entry[1] >= listed_since and uid not in self._jobs}
            self._changed_members()
            self._synced = True
            self.problem = None

    def _changed_members(self) -> None:
        """Jobs came or went (the lock is held): the name index and order are redone."""
        self._order = None
        self._names = {entry.cr["metadata"].get("name", ""): uid
                       for uid, entry in [*self._jobs.items(),
                                          *((u, e) for u, (e, _) in self._created.items())]}

    def apply(self, event: CR) -> str | None:
        """One watch event; returns the resourceVersion it brings (None: none)."""
        kind, obj = event.get("type"), event.get("object") or {}
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            uid = uid_of(obj)
            with self._lock:
                was_created = self._created.pop(uid, None) is not None
                if kind == "DELETED":
                    if self._jobs.pop(uid, None) is not None or was_created:
                        self._changed_members()
                else:
                    new = uid not in self._jobs and not was_created
                    self._jobs[uid] = Entry(obj)
                    if new:
                        self._changed_members()
        return str(version) if version else None

    # ---- written by the API ----
    def remember(self, cr: CR) -> None:
        """A job this process just created, served until the watch reports it."""
        with self._lock:
            uid = uid_of(cr)
            if uid not in self._jobs:
                self._created[uid] = (Entry(cr), self._clock())
                self._names[cr["metadata"].get("name", "")] = uid
                self._order = None

    # ---- read by the API ----
    @property
    def synced(self) -> bool:
        return self._synced

    def require_synced(self) -> None:
        """503 (Unavailable) until the first LIST has completed."""
        if not self._synced:
            reason = self.problem or "the API is still loading them from Kubernetes"
            raise Unavailable(f"jobs are not readable yet: {reason}")

    def _expire_created(self) -> None:
        """Forget remembered jobs that are outdated (the lock is held)."""
        oldest = self._clock() - REMEMBER_S
        expired = [u for u, (_, when) in self._created.items() if when < oldest]
        for uid in expired:
            del self._created[uid]
        if expired:
            self._changed_members()

    def _entry(self, uid: str) -> Entry | None:
        """(the lock is held, remembered jobs expired)"""
        entry = self._jobs.get(uid)
        if entry is None and uid in self._created:
            entry = self._created[uid][0]
        return entry

    def entry(self, uid: UUID) -> Entry | None:
        """The job of that uid, or None; 503 (Unavailable) before the first LIST."""
        self.require_synced()
        with self._lock:
            self._expire_created()
            return self._entry(str(uid))

    def get(self, uid: UUID) -> CR | None:
        found = self.entry(uid)
        return found.cr if found is not None else None

    def entries(self, projects: frozenset[UUID] | None = None, phase: Phase | None = None,
                page: slice = slice(None)) -> tuple[int, list[Entry]]:
        """How many jobs of these projects (None: every job) are in this phase (None:
        any), and the `page` of them, newest first; 503 (Unavailable) before the first
        LIST. The order, per project, is sorted again only after jobs came or went, not
        on each read; without a phase only the page's entries are looked at."""
        self.require_synced()
        with self._lock:
            self._expire_created()
            if self._order is None:
                self._sort()
            assert self._order is not None and self._by_project is not None
            if projects is None:
                uids = self._order
            elif len(projects) == 1:
                uids = self._by_project.get(next(iter(projects)), [])
            else:
                keep = {u for p in projects for u in self._by_project.get(p, [])}
                uids = [u for u in self._order if u in keep]
            if phase is None:
                return len(uids), [e for e in map(self._entry, uids[page]) if e is not None]
            matching = [e for e in map(self._entry, uids) if e is not None and e.phase == phase]
            return len(matching), matching[page]

    def _sort(self) -> None:
        """(the lock is held)"""
        every = [*self._jobs.values(), *(e for e, _ in self._created.values())]
        every.sort(key=lambda e: e.newest_first_key, reverse=True)
        self._order = [uid_of(e.cr) for e in every]
        self._by_project = {}
        for entry in every:
            self._by_project.setdefault(entry.project, []).append(uid_of(entry.cr))

    def jobs(self) -> list[CR]:
        """Every job, newest first; 503 (Unavailable) before the first LIST."""
        return [entry.cr for entry in self.entries()[1]]

    def named(self, name: str) -> CR | None:
        self.require_synced()
        with self._lock:
            self._expire_created()
            uid = self._names.get(name)
            found = self._entry(uid) if uid is not None else None
            return found.cr if found is not None else None

    def active_jobs(self, project: UUID) -> int:
        """The project's jobs not in a final phase (what its quota counts)."""
        return sum(1 for e in self.entries(frozenset({project}))[1]
                   if e.phase not in TERMINAL_PHASES)


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
