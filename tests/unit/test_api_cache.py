"""The API's watch cache: the index, and the informer's LIST, WATCH, resume and relist.

The informer runs against a scripted JobSource (the protocol the store implements);
tests/e2e/test_api.py and tests/e2e/test_api_brownout.py run it against the real
control plane, a silent apiserver and one that goes silent.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
from api_doubles import job_cr

from augment_api.cache import REMEMBER_S, Informer, JobCache
from augment_api.errors import Unavailable
from augment_api.store import Expired

PROJECT = uuid.uuid4()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def event(kind: str, cr: dict[str, Any], version: str) -> dict[str, Any]:
    cr = {**cr, "metadata": {**cr["metadata"], "resourceVersion": version}}
    return {"type": kind, "object": cr}


def uid(cr: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(cr["metadata"]["uid"])


# ---------- the index ----------
def test_nothing_is_readable_before_the_first_list() -> None:
    cache = JobCache()
    for read in (cache.jobs, lambda: cache.get(uuid.uuid4()), lambda: cache.active_jobs(PROJECT),
                 cache.require_synced):
        with pytest.raises(Unavailable, match="still loading them from Kubernetes"):
            read()
    cache.problem = "cannot reach the Kubernetes API server; try again later"
    with pytest.raises(Unavailable) as refused:
        cache.jobs()
    assert refused.value.detail == f"jobs are not readable yet: {cache.problem}"
    cache.replace([], listed_since=0)
    assert cache.synced and cache.jobs() == [] and cache.problem is None


def test_watch_events_add_change_and_remove_jobs() -> None:
    cache = JobCache()
    a, b = job_cr(PROJECT), job_cr(PROJECT)
    cache.replace([a], listed_since=0)
    assert cache.apply(event("ADDED", b, "5")) == "5"
    assert cache.apply(event("MODIFIED", {**a, "status": {"phase": "Running"}}, "6")) == "6"
    assert cache.get(uid(a))["status"] == {"phase": "Running"}
    assert cache.apply(event("DELETED", b, "7")) == "7"
    assert cache.get(uid(b)) is None
    assert cache.apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}) \
        == "9"
    assert [c["metadata"]["uid"] for c in cache.jobs()] == [a["metadata"]["uid"]]
    assert cache.named(a["metadata"]["name"])["metadata"]["uid"] == a["metadata"]["uid"]
    assert cache.named("no-such-name") is None


def test_a_created_job_is_served_until_the_watch_reports_it() -> None:
    clock = FakeClock()
    cache = JobCache(clock)
    cache.replace([], listed_since=clock())
    created = job_cr(PROJECT)
    cache.remember(created)
    assert cache.get(uid(created)) is created and cache.jobs() == [created]
    reported = {**created, "status": {"phase": "Running"}}
    cache.apply(event("MODIFIED", reported, "8"))
    assert cache.get(uid(created))["status"] == {"phase": "Running"}
    assert len(cache.jobs()) == 1
    cache.remember(created)  # a late create response does not hide what the watch said
    assert cache.get(uid(created))["status"] == {"phase": "Running"}


def test_remembered_jobs_expire_and_a_relist_supersedes_them() -> None:
    clock = FakeClock()
    cache = JobCache(clock)
    cache.replace([], listed_since=clock())
    never_reported = job_cr(PROJECT)
    cache.remember(never_reported)
    clock.now += REMEMBER_S + 1
    assert cache.get(uid(never_reported)) is None and cache.jobs() == []

    before, after = job_cr(PROJECT), job_cr(PROJECT)
    cache.remember(before)
    list_started = clock.now = clock.now + 1
    clock.now += 1
    cache.remember(after)  # created while the LIST ran: the list may not have it
    cache.replace([], listed_since=list_started)
    assert cache.get(uid(before)) is None  # the list began after it and does not have it
    assert cache.get(uid(after)) is after


def test_active_jobs_count_unfinished_jobs_of_the_project() -> None:
    cache = JobCache()
    cache.replace([job_cr(PROJECT), job_cr(PROJECT, "Running"), job_cr(PROJECT, "Succeeded"),
                   job_cr(PROJECT, "Failed"), job_cr(PROJECT, "Cancelled"),
                   job_cr(uuid.uuid4(), "Running")], listed_since=0)
    cache.remember(job_cr(PROJECT))
    assert cache.active_jobs(PROJECT) == 3


# ---------- the informer ----------
class ScriptedSource:
    """A JobSource playing a script: each LIST or WATCH takes the next step, whose outcome
    is a result or an exception (a watch: events, maybe ending in an exception). Once the
    script is played, the next call waits for stop_watch, as an idle watch would."""

    def __init__(self, *steps: tuple[str, Any]) -> None:
        self.steps = deque(steps)
        self.calls: list[str] = []
        self.played = threading.Event()
        self._stopped = threading.Event()

    def _next(self, kind: str) -> Any:
        if not self.steps:
            self.played.set()
            self._stopped.wait(10)
            return [] if kind == "watch" else ([], "0")
        step_kind, outcome = self.steps.popleft()
        assert step_kind == kind, (step_kind, kind)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def list_jobs(self) -> tuple[list[dict[str, Any]], str]:
        self.calls.append("list")
        result: tuple[list[dict[str, Any]], str] = self._next("list")
        return result

    def watch_jobs(self, resource_version: str) -> Iterator[dict[str, Any]]:
        self.calls.append(f"watch {resource_version}")
        for item in self._next("watch"):
            if isinstance(item, Exception):
                raise item
            yield item

    def stop_watch(self) -> None:
        self._stopped.set()


def run_until_played(source: ScriptedSource, cache: JobCache) -> None:
    informer = Informer(source, cache)
    informer.start()
    try:
        assert source.played.wait(10), f"the script stalled after {source.calls}"
    finally:
        informer.stop()


def test_informer_lists_watches_resumes_and_relists_when_expired() -> None:
    a, b, c = job_cr(PROJECT), job_cr(PROJECT), job_cr(PROJECT)
    source = ScriptedSource(
        ("list", ([a], "3")),
        ("watch", [event("ADDED", b, "5"), event("DELETED", a, "6"),
                   {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}]),
        ("watch", [Expired("too old resource version")]),  # resumed from 9: gone
        ("list", ([b, c], "20")),
        ("watch", [event("MODIFIED", {**c, "status": {"phase": "Running"}}, "21")]),
    )
    cache = JobCache()
    run_until_played(source, cache)
    assert source.calls[:5] == ["list", "watch 3", "watch 9", "list", "watch 20"]
    assert sorted(cr["metadata"]["uid"] for cr in cache.jobs()) == \
        sorted([b["metadata"]["uid"], c["metadata"]["uid"]])
    assert cache.get(uid(c))["status"] == {"phase": "Running"}
    assert source.calls[5] == "watch 21"  # the next watch goes on from the last event


def test_informer_retries_after_failures_and_resumes_where_it_was() -> None:
    a = job_cr(PROJECT)
    down = Unavailable("cannot reach the Kubernetes API server; try again later")
    seen_problem: list[str | None] = []
    cache = JobCache()

    class Observing(ScriptedSource):
        def list_jobs(self) -> tuple[list[dict[str, Any]], str]:
            seen_problem.append(cache.problem)
            return super().list_jobs()

    source = Observing(
        ("list", down),
        ("list", ([], "3")),
        ("watch", [event("ADDED", a, "4"), down]),  # the connection drops mid-watch
        ("watch", []),
    )
    started = time.monotonic()
    run_until_played(source, cache)
    assert source.calls[:4] == ["list", "list", "watch 3", "watch 4"]
    assert seen_problem == [None, down.detail]  # the failure was visible meanwhile
    assert cache.get(uid(a)) is not None and cache.problem is None
    assert time.monotonic() - started >= 0.5 + 0.5  # it waited before each retry
