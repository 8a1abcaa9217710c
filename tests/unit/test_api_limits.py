"""Per-key rate limits and per-project job quotas: the arithmetic, then over HTTP."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from api_doubles import (
    BODY,
    HEADERS,
    OPS,
    PROJECT,
    ExplodingStore,
    RecordingStore,
    job_cr,
    make_client,
    synced_cache,
)

from augment_api.cache import JobCache
from augment_api.errors import TooManyRequests
from augment_api.limits import QUOTA_RETRY_AFTER_S, ProjectQuota, RateLimiter
from augment_api.store import idempotent_name


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------- the token bucket ----------
def test_a_key_gets_its_burst_then_its_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_second=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("team-a")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("team-a")
    assert refused.value.headers["Retry-After"] == "1"  # half a second, rounded up
    assert "limit 2/s, bursts of 3" in refused.value.detail
    clock.now += 0.5  # one token back
    limiter.check("team-a")
    with pytest.raises(TooManyRequests):
        limiter.check("team-a")
    clock.now += 60  # refills up to the burst, not beyond
    for _ in range(3):
        limiter.check("team-a")
    with pytest.raises(TooManyRequests):
        limiter.check("team-a")


def test_keys_have_their_own_buckets_and_a_zero_rate_is_no_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_second=0.1, burst=1, clock=clock)
    limiter.check("team-a")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("team-a")
    assert refused.value.headers["Retry-After"] == "10"
    limiter.check("ops")  # another key: untouched by team-a's requests
    unlimited = RateLimiter(per_second=0, burst=1, clock=clock)
    for _ in range(1000):
        unlimited.check("team-a")


# ---------- the project quota ----------
def test_quota_counts_active_jobs_and_creations_in_flight() -> None:
    project = uuid.uuid4()
    active = {project: 1}
    quota = ProjectQuota(2, lambda p: active.get(p, 0))
    with quota.admit(project):  # 1 active + this one in flight = 2
        with pytest.raises(TooManyRequests) as refused, quota.admit(project):
            pass
        assert refused.value.headers["Retry-After"] == str(QUOTA_RETRY_AFTER_S)
        assert f"project {project} has 2 unfinished jobs" in refused.value.detail
        with quota.admit(uuid.uuid4()):  # another project is not affected
            pass
    with quota.admit(project):  # the creation ended (and failed: nothing was added)
        pass


def test_quota_place_is_released_when_the_creation_fails() -> None:
    project = uuid.uuid4()
    quota = ProjectQuota(1, lambda p: 0)
    with pytest.raises(RuntimeError), quota.admit(project):
        raise RuntimeError("apiserver error")
    with quota.admit(project):
        pass


def test_concurrent_admissions_never_exceed_the_quota() -> None:
    project = uuid.uuid4()
    created: list[int] = []
    quota = ProjectQuota(3, lambda p: len(created))
    refused: list[int] = []
    start = threading.Barrier(10)

    def create(i: int) -> None:
        start.wait()
        try:
            with quota.admit(project):
                time.sleep(0.05)  # the apiserver's create
                created.append(i)
        except TooManyRequests:
            refused.append(i)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(created) == 3 and len(refused) == 7


def test_quota_of_zero_is_no_limit_and_needs_no_count() -> None:
    def count(_: uuid.UUID) -> int:
        raise AssertionError("must not count")

    with ProjectQuota(0, count).admit(uuid.uuid4()):
        pass


# ---------- over HTTP ----------
def test_over_the_rate_is_429_with_retry_after() -> None:
    with make_client(ExplodingStore(), rate_limit_per_s=0.5, rate_limit_burst=2) as c:
        assert [c.get("/v1/augmentation", headers=HEADERS).status_code for _ in range(2)] \
            == [200, 200]
        r = c.get("/v1/augmentation", headers=HEADERS)
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert r.json()["detail"].startswith("too many requests for this API key")
        assert c.get("/v1/augmentation", headers=OPS).status_code == 200  # its own bucket
        assert c.get("/healthz").status_code == 200  # probes are not rate limited


def test_a_project_at_its_quota_gets_429_and_finished_jobs_do_not_count() -> None:
    store = RecordingStore()
    cache = synced_cache(job_cr(PROJECT, "Running"), job_cr(PROJECT, "Succeeded"),
                         job_cr(PROJECT, "Failed"), job_cr(uuid.uuid4(), "Running"))
    with make_client(store, cache, project_job_quota=2) as c:
        first = c.post("/v1/augmentation", headers=HEADERS, json=BODY)
        assert first.status_code == 201, first.text
        # The job just created counts, before the watch reports it.
        r = c.post("/v1/augmentation", headers=HEADERS, json=BODY)
        assert r.status_code == 429 and r.headers["retry-after"] == str(QUOTA_RETRY_AFTER_S)
        assert r.json()["detail"] == (f"project {PROJECT} has 2 unfinished jobs, its limit; "
                                      "retry when one has finished")
        assert len(store.created) == 1
        # ... and it is readable at once.
        job = c.get(f"/v1/augmentation/{first.json()['job_id']}", headers=HEADERS)
        assert job.status_code == 200 and job.json()["status"] == "Pending"


def test_a_retry_of_an_existing_job_is_not_refused_by_the_quota() -> None:
    existing = job_cr(PROJECT, "Running", name=idempotent_name(uuid.UUID(PROJECT), "k-1"))
    store = RecordingStore()
    with make_client(store, synced_cache(existing), project_job_quota=1) as c:
        other = c.post("/v1/augmentation", headers={**HEADERS, "Idempotency-Key": "k-2"},
                       json=BODY)
        assert other.status_code == 429
        again = c.post("/v1/augmentation", headers={**HEADERS, "Idempotency-Key": "k-1"},
                       json=BODY)
        assert again.status_code == 201  # the stand-in store does not replay; it was asked
        assert len(store.created) == 1


def test_before_the_cache_is_loaded_reads_and_counted_creates_are_503() -> None:
    with make_client(ExplodingStore(), JobCache()) as c:
        for r in (c.get("/v1/augmentation", headers=HEADERS),
                  c.get(f"/v1/augmentation/{uuid.uuid4()}", headers=HEADERS),
                  c.post("/v1/augmentation", headers=HEADERS, json=BODY),
                  c.get("/readyz")):
            assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
            assert r.json()["detail"] == ("jobs are not readable yet: the API is still "
                                          "loading them from Kubernetes")
        assert c.get("/healthz").status_code == 200


def test_an_unknown_id_is_404_without_asking_the_apiserver() -> None:
    mine = job_cr(PROJECT, "Running")
    theirs = job_cr(uuid.uuid4(), "Running")
    with make_client(ExplodingStore(), synced_cache(mine, theirs)) as c:
        assert c.get(f"/v1/augmentation/{mine['metadata']['uid']}",
                     headers=HEADERS).status_code == 200
        for job_id in (uuid.uuid4(), theirs["metadata"]["uid"]):
            r = c.get(f"/v1/augmentation/{job_id}", headers=HEADERS)
            assert r.status_code == 404 and r.json() == {
                "detail": f"augmentation job {job_id} not found"}
