"""Operator throughput: a burst of AugmentationJobs until every one has its Job.

`run(results, quick, cluster=None)` adds `results["operator"]`. On a real control plane
without the pod executor (no runner pod ever runs), `augment operator` runs as a local
process watching the bench namespace, with a config whose runner settings need nothing
that is not there (no Hub token Secret); each job's runner account, Role and RoleBinding
are made by the operator with the Job, as in a cluster. After
one warm-up job, N AugmentationJobs are created at once from parallel threads, and:

- time to all Jobs: from the first create request to the last Job seen on a watch
  of the namespace's Jobs (target: 1,000 in at most 60 s);
- per job latency: its create request -> its Job on the watch (p50/p99);
- reconcile duration: the operator's own `augment_reconcile_seconds` histogram from
  /metrics, before and after the burst (p50/p99 interpolated within buckets, as
  Prometheus' histogram_quantile does), and reconciles per job from the operator's
  `augment_reconciles_total` counter, by trigger (a change of the CR, of its Job or
  pods, the periodic resync): every handler invocation counts (target: at most 1.5);
- why: CPU cores used by the operator and each control-plane process during the burst,
  kopf's worker limit, and the throughput that limit allows at the measured mean
  reconcile time (workers / mean seconds).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from augment_spec.contract import LABEL_MANAGED_BY, MANAGED_BY_OPERATOR
from bench.common import (
    CpuMeter,
    apiserver_client,
    control_plane_pids,
    cr_manifest,
    cr_path,
    latency_summary,
    load_average,
    log_tail,
    measure_on_cluster,
    start_process,
    venv_tool,
    verdict,
    wait_http,
)

NAMESPACE = "bench"
JOB_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY_OPERATOR}"
HISTOGRAM = "augment_reconcile_seconds"
RECONCILES = "augment_reconciles_total"
TARGET_RECONCILES_PER_JOB = 1.5


@dataclass(frozen=True)
class OperatorBenchConfig:
    jobs: int
    target_seconds: float  # for `jobs` jobs
    creators: int = 16  # client threads creating the CRs
    timeout_s: float = 180


FULL = OperatorBenchConfig(jobs=1000, target_seconds=60, timeout_s=600)
QUICK = OperatorBenchConfig(jobs=200, target_seconds=12, timeout_s=120)  # same rate as FULL


def kopf_max_workers() -> int:
    """What the operator's own settings hook sets, read by running it."""
    import kopf

    from augment_operator.cli import configure_kopf

    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    return int(settings.execution.max_workers)


# ------------------------------------------------------------------ the operator


BENCH_CONFIG: dict[str, Any] = {
    # Runner settings that need nothing the bench namespace lacks.
    "runner": {"hubTokenSecretName": None},
}


def write_config(workdir: Path, config: dict[str, Any]) -> Path:
    path = workdir / f"operator-{secrets.token_hex(3)}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class OperatorProcess:
    def __init__(
        self, cluster: Any, workdir: Path, namespace: str, config: dict[str, Any] | None = None
    ) -> None:
        from augment_dev.cluster import free_port

        self.port = free_port()
        self.log = workdir / f"operator-{self.port}.log"
        args = [
            venv_tool("augment"), "operator", "--namespace", namespace,
            "--liveness-port", "0", "--metrics-port", str(self.port),
            "--config", str(write_config(workdir, config or BENCH_CONFIG)),
        ]  # fmt: skip
        self.proc = start_process(args, self.log, {"KUBECONFIG": str(cluster.kubeconfig)})

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def wait_ready(self) -> None:
        try:
            wait_http(self.metrics_url, timeout=60, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"operator did not start: {exc}\n{log_tail(self.log)}") from None

    def metrics(self) -> str:
        import httpx

        return httpx.get(self.metrics_url, timeout=10).text

    def stop(self) -> None:
        from augment_dev.cluster import stop_process

        stop_process(self.proc)


# ------------------------------------------------------------ Prometheus histogram


def parse_histogram(text: str, name: str) -> dict[str, Any]:
    """Cumulative buckets, count and sum of an unlabelled histogram in exposition text."""
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
        elif line.startswith(f"{name}_count "):
            count = float(line.split()[-1])
        elif line.startswith(f"{name}_sum "):
            total = float(line.split()[-1])
    return {"buckets": sorted(buckets), "count": count, "sum": total}


def parse_counter(text: str, name: str, label: str) -> dict[str, float]:
    """A labelled counter's value per value of `label`, from exposition text."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and f'{label}="' in line:
            key = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            values[key] = float(line.split()[-1])
    return values


def histogram_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    old = dict(before["buckets"])
    return {
        "buckets": [(le, c - old.get(le, 0.0)) for le, c in after["buckets"]],
        "count": after["count"] - before["count"],
        "sum": after["sum"] - before["sum"],
    }


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' estimate: linear within the bucket holding the q-th observation."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1
            return lower_bound + (le - lower_bound) * share
        lower_bound, lower_count = le, count
    return None


def settled_histogram(
    op: OperatorProcess, before: dict[str, Any], reconciles: int, timeout: float = 15,
    quiet: float = 1.0,
) -> dict[str, Any]:
    """The histogram once it holds `reconciles` more observations and none came for
    `quiet` seconds: a reconcile is observed after its status patch, so the one that made
    the last Job may still be running when that Job appears on the watch, and the events
    the burst caused (the Jobs', their pods') are still arriving."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while True:
        after = parse_histogram(op.metrics(), HISTOGRAM)
        if after["count"] != last:
            last, since = after["count"], time.monotonic()
        enough = after["count"] - before["count"] >= reconciles
        if (enough and time.monotonic() - since >= quiet) or time.monotonic() > deadline:
            return after
        time.sleep(0.1)


def reconcile_summary(
    delta: dict[str, Any], jobs: int, by_trigger: dict[str, float] | None = None
) -> dict[str, Any]:
    count = delta["count"]
    p50, p99 = (histogram_quantile(q, delta["buckets"]) for q in (0.5, 0.99))
    triggers = by_trigger or {}
    return {
        "count": int(count),
        "per_job": round(count / jobs, 2) if jobs else None,
        "per_job_by_trigger": {k: round(v / jobs, 2) for k, v in sorted(triggers.items())}
        if jobs else {},
        "mean_ms": round(1000 * delta["sum"] / count, 1) if count else None,
        "p50_ms": round(1000 * p50, 1) if p50 is not None else None,
        "p99_ms": round(1000 * p99, 1) if p99 is not None else None,
        "sum_s": round(delta["sum"], 2),
    }


# ---------------------------------------------------------------------- the watch


class JobWatch(threading.Thread):
    """When each operator-made Job of the namespace first appears, from a watch stream
    (raw JSON lines: only the name is read, so the watcher costs little CPU)."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        super().__init__(daemon=True, name="job-watch")
        self.client = apiserver_client(cluster, connections=2)
        self.path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        self.seen: dict[str, float] = {}
        self.error: BaseException | None = None
        self._done = threading.Event()
        listing = self.client.get(self.path, params={"labelSelector": JOB_SELECTOR}).json()
        self.resource_version = listing["metadata"]["resourceVersion"]
        for item in listing["items"]:
            self.seen[item["metadata"]["name"]] = time.monotonic()

    def run(self) -> None:
        params = {
            "watch": "1",
            "labelSelector": JOB_SELECTOR,
            "timeoutSeconds": "2",
            "allowWatchBookmarks": "true",
        }
        try:
            while not self._done.is_set():
                params["resourceVersion"] = self.resource_version
                with self.client.stream("GET", self.path, params=params) as stream:
                    for line in stream.iter_lines():
                        if line:
                            self._event(json.loads(line))
        except BaseException as exc:  # reported by the bench, not lost in a thread
            self.error = exc

    def _event(self, event: dict[str, Any]) -> None:
        meta = event["object"]["metadata"]
        self.resource_version = meta.get("resourceVersion", self.resource_version)
        if event["type"] == "ADDED":
            self.seen.setdefault(meta["name"], time.monotonic())

    def wait_for(self, names: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.error is not None:
                raise RuntimeError(f"job watch failed: {self.error}")
            if names <= self.seen.keys():
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)
        self.client.close()


# -------------------------------------------------------------------------- burst


def create_crs(cluster: Any, namespace: str, names: list[str], threads: int) -> dict[str, float]:
    """Create the CRs from `threads` threads; returns each one's request start time."""
    sent: dict[str, float] = {}
    path = cr_path(namespace)
    with apiserver_client(cluster, connections=threads) as client:

        def create(item: tuple[int, str]) -> None:
            index, name = item
            sent[name] = time.monotonic()
            resp = client.post(path, json=cr_manifest(name, namespace, index))
            if resp.status_code != 201:
                raise RuntimeError(f"creating {name}: {resp.status_code} {resp.text[:300]}")

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(create, enumerate(names)))
    return sent


def job_name_of(cr_name: str) -> str:
    from augment_operator.jobs import job_name

    return job_name(cr_name)


def warm_up(cluster: Any, watch: JobWatch, namespace: str, run_id: str) -> None:
    """One job through the whole path: the operator's watch is up and its code warm."""
    name = f"bench-{run_id}-warmup"
    create_crs(cluster, namespace, [name], 1)
    if not watch.wait_for({job_name_of(name)}, timeout=60):
        raise RuntimeError("the operator made no Job for the warm-up AugmentationJob in 60 s")


def burst(cluster: Any, op: OperatorProcess, cfg: OperatorBenchConfig, namespace: str) -> dict:
    watch = JobWatch(cluster, namespace)
    watch.start()
    try:
        run_id = secrets.token_hex(3)  # a second run in the same namespace gets new names
        warm_up(cluster, watch, namespace, run_id)
        names = [f"bench-{run_id}-{i:04d}" for i in range(cfg.jobs)]
        wanted = {job_name_of(n): n for n in names}
        text = op.metrics()
        before = parse_histogram(text, HISTOGRAM)
        calls_before = parse_counter(text, RECONCILES, "trigger")
        meter = CpuMeter({"operator": op.proc.pid, **control_plane_pids(cluster)})
        meter.start()
        started = time.monotonic()
        sent = create_crs(cluster, namespace, names, cfg.creators)
        created_s = time.monotonic() - started
        complete = watch.wait_for(set(wanted), cfg.timeout_s)
        cores = meter.stop()
        seen = {wanted[j]: t for j, t in watch.seen.items() if j in wanted}
        after = settled_histogram(op, before, len(seen))
        calls = parse_counter(op.metrics(), RECONCILES, "trigger")
    finally:
        watch.stop()
    by_trigger = {k: v - calls_before.get(k, 0.0) for k, v in calls.items()}
    last = max(seen.values(), default=started)
    return {
        "complete": complete,
        "jobs_seen": len(seen),
        "create_requests_s": round(created_s, 2),
        "all_jobs_s": round(last - started, 2) if complete else None,
        "latency": latency_summary([seen[n] - sent[n] for n in seen]),
        "progress": sorted(round(t - started, 3) for t in seen.values()),
        "reconcile": reconcile_summary(histogram_delta(before, after), cfg.jobs, by_trigger),
        "cpu_cores": cores,
    }


def analyse(measured: dict[str, Any], cfg: OperatorBenchConfig, workers: int) -> dict[str, Any]:
    seconds = measured["all_jobs_s"]
    rec = measured["reconcile"]
    rate = cfg.jobs / seconds if seconds else None
    mean_s = (rec["mean_ms"] or 0) / 1000
    capacity = workers / mean_s if mean_s else None  # reconciles/s the worker limit allows
    needed = (rec["per_job"] or 1) * cfg.jobs / cfg.target_seconds  # reconciles/s for target
    return {
        "jobs_per_second": round(rate, 1) if rate else None,
        "kopf_max_workers": workers,
        "reconciles_per_second_allowed_by_workers": round(capacity, 1) if capacity else None,
        "reconciles_per_second_needed_for_target": round(needed, 1),
        "worker_busy_fraction": round(rec["sum_s"] / (workers * seconds), 2) if seconds else None,
    }


def run(
    results: dict,
    quick: bool,
    cluster: Any = None,
    config: OperatorBenchConfig | None = None,
    namespace: str = NAMESPACE,
) -> dict:
    """Benchmark the operator; adds results["operator"] and returns results."""
    cfg = config or (QUICK if quick else FULL)
    started = time.perf_counter()
    load_start = load_average()
    measured = measure_on_cluster(
        cluster, namespace, "augment-bench-operator-",
        lambda on, workdir: _measure(on, cfg, workdir, namespace))
    workers = kopf_max_workers()
    seconds = measured["all_jobs_s"]
    results["operator"] = {
        **measured,
        "analysis": analyse(measured, cfg, workers),
        "target": verdict(seconds, cfg.target_seconds, False),
        "target_reconciles_per_job": verdict(
            measured["reconcile"]["per_job"], TARGET_RECONCILES_PER_JOB, False
        ),
        "config": {**asdict(cfg), "namespace": namespace, "pods_run": False},
        "seconds": round(time.perf_counter() - started, 1),
        # No competing load is started: the machine's own state is all there is.
        "machine_state": {"load_average_1_5_15": {"start": load_start, "end": load_average()}},
    }
    return results


def _measure(
    cluster: Any, cfg: OperatorBenchConfig, workdir: Path, namespace: str
) -> dict[str, Any]:
    op = OperatorProcess(cluster, workdir, namespace)
    try:
        op.wait_ready()
        return burst(cluster, op, cfg, namespace)
    except Exception as exc:
        raise RuntimeError(f"{exc}\noperator log:\n{log_tail(op.log)}") from exc
    finally:
        op.stop()
