"""REST API latency and throughput at a fixed concurrency, against a real apiserver.

`run(results, quick, cluster=None)` adds `results["api"]`. `augment api` runs as a
local process (one uvicorn worker, as the chart deploys it) against the bench cluster's
namespace, with a keys file holding one key for every project. Over loopback, a fixed
number of closed-loop clients (50: each waits for its answer before sending the next)
share a bounded number of requests per phase:

- POST /v1/augmentation: creates real AugmentationJobs (target: requests per second
  at least 0.8x the apiserver's own create rate, below);
- GET /healthz: the same server with no Kubernetes call, the framework's own floor;
- POST again through one httpx.AsyncClient, as a Python caller would see it;
- GET /v1/augmentation/{id} of the jobs made by the first POST phase, and
  GET /v1/augmentation (a page of 20 of every job in the namespace, newest first), both
  from the API's watch cache (target: p99 at most 20 ms each);
- apiserver create: the same CRs POSTed straight to the apiserver at the same
  concurrency (strict field validation, as the API asks): the floor under POST.

The API runs without its per-key rate limit and project quota: the bench measures what
it can serve, not what it lets one client have.

The load generator runs on the same cores as the server. httpx spends a few ms of CPU
per request, which on 2 cores is taken from the server being measured, so the target
phases use a minimal keep-alive HTTP/1.1 client (~0.1 ms per request); each phase
reports its client's CPU per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import resource
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.common import (
    BENCH_PROJECT,
    CpuMeter,
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
TARGET_READ_P99_MS = 20.0  # GET by id and list
TARGET_POST_RPS_RATIO = 0.8  # POST requests/s over the apiserver's own creates/s
CONNECTION_ERROR = 0  # the status recorded for a request whose connection failed


@dataclass(frozen=True)
class ApiBenchConfig:
    concurrency: int
    posts: int
    gets: int
    lists: int
    healthz: int
    apiserver_creates: int
    warmup: int = 10


FULL = ApiBenchConfig(
    concurrency=50, posts=500, gets=1000, lists=500, healthz=500, apiserver_creates=500
)
QUICK = ApiBenchConfig(
    concurrency=50, posts=150, gets=300, lists=150, healthz=150, apiserver_creates=150
)


# ------------------------------------------------------------------------ the server


class ApiProcess:
    def __init__(self, cluster: Any, workdir: Path, namespace: str) -> None:
        from augment_dev.cluster import free_port

        self.key = f"bench_{secrets.token_hex(16)}"
        keys = workdir / "api-keys.yaml"
        digest = hashlib.sha256(self.key.encode()).hexdigest()
        keys.write_text(
            yaml.safe_dump({"keys": [{"name": "bench", "sha256": digest, "projects": "*"}]})
        )
        self.port = free_port()
        self.log = workdir / "api.log"
        args = [
            venv_tool("augment"), "api", "--host", "127.0.0.1", "--port", str(self.port),
            "--namespace", namespace, "--api-keys", str(keys),
            "--kubeconfig", str(cluster.kubeconfig), "--rate-limit", "0",
            "--project-job-quota", "0",
        ]  # fmt: skip
        self.proc = start_process(args, self.log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        try:
            wait_http(f"{self.url}/readyz", timeout=60, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"API did not start: {exc}\n{log_tail(self.log)}") from None

    def stop(self) -> None:
        from augment_dev.cluster import stop_process

        stop_process(self.proc)


# ------------------------------------------------------------------------ the load


class RawConnection:
    """One keep-alive HTTP/1.1 connection with the least client work possible.

    On a 2-core machine the load generator shares the cores with the server: httpx
    costs a few ms of CPU per request, this ~0.1 ms (both are measured and reported),
    so the server's latency is measured with this one and httpx is shown beside it.
    """

    def __init__(self, host: str, port: int, ssl_context: Any = None) -> None:
        self.host, self.port, self.ssl = host, port, ssl_context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> RawConnection:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ssl, limit=1 << 24
        )
        return self

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if "content-length" in fields:
            return status, await self.reader.readexactly(int(fields["content-length"]))
        return status, await self._chunked()

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()
        await self.reader.readline()
        return b"".join(parts)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


Request = Callable[[int], tuple[str, str, bytes]]  # index -> (method, path, body)


@dataclass
class Phase:
    latencies: list[float]
    statuses: Counter
    seconds: float
    client_cpu_s: float
    bodies: list[bytes]

    def summary(self, ok: int) -> dict[str, Any]:
        good = self.statuses.get(ok, 0)
        done = max(len(self.latencies), 1)
        return {
            **latency_summary(self.latencies),
            "ok": good,
            "errors": {str(k): v for k, v in self.statuses.items() if k != ok},
            "requests_per_second": round(good / self.seconds, 1) if self.seconds else None,
            "seconds": round(self.seconds, 2),
            "client_cpu_ms_per_request": round(1000 * self.client_cpu_s / done, 2),
        }


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def raw_load(
    connect: Callable[[], RawConnection],
    request: Request,
    indices: range,
    concurrency: int,
    headers: dict[str, str] | None = None,
) -> Phase:
    """`concurrency` closed-loop clients, one connection each, share the requests."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    bodies: list[bytes] = []
    todo = iter(indices)  # shared: one event loop, so next() needs no lock

    async def client() -> None:
        conn = await connect().open()
        try:
            for index in todo:
                method, path, body = request(index)
                start = time.perf_counter()
                try:
                    status, payload = await conn.request(method, path, body, headers)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    # Counted as status 0 ("connection error"), then a new connection:
                    # an overloaded server dropping connections is a result, not a crash.
                    status, payload = CONNECTION_ERROR, b""
                    await conn.close()
                    conn = await connect().open()
                latencies.append(time.perf_counter() - start)
                statuses[status] += 1
                bodies.append(payload)
        finally:
            await conn.close()

    cpu, started = process_cpu_s(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return Phase(latencies, statuses, seconds, process_cpu_s() - cpu, bodies)


async def httpx_load(
    base_url: str, request: Request, indices: range, concurrency: int, headers: dict[str, str]
) -> Phase:
    """The same closed loop through one httpx.AsyncClient: what a Python client sees."""
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    todo = iter(indices)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=120
    ) as http:
        json_type = {"Content-Type": "application/json"}

        async def client() -> None:
            for index in todo:
                method, path, body = request(index)
                start = time.perf_counter()
                try:
                    resp = await http.request(method, path, content=body or None, headers=json_type)
                    status = resp.status_code
                except httpx.HTTPError:
                    status = CONNECTION_ERROR
                latencies.append(time.perf_counter() - start)
                statuses[status] += 1

        await client_warmup(http)
        cpu, started = process_cpu_s(), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return Phase(latencies, statuses, seconds, process_cpu_s() - cpu, [])


async def client_warmup(http: Any) -> None:
    await http.get("/healthz")


def post_body(index: int) -> bytes:
    return json.dumps({
        "project_id": BENCH_PROJECT,
        "dataset_id": "bench/source",
        "augment_transforms": "lighting,noise,blur",
        "augment_seed": index,
    }).encode()  # fmt: skip


def post(index: int) -> tuple[str, str, bytes]:
    return "POST", "/v1/augmentation", post_body(index)


async def api_phases(
    api: ApiProcess, cfg: ApiBenchConfig, meter: CpuMeter
) -> dict[str, Any]:
    def connect() -> RawConnection:
        return RawConnection("127.0.0.1", api.port)

    headers = {"X-Api-Key": api.key}
    await raw_load(connect, post, range(cfg.warmup), 1, headers)  # first-call costs
    meter.start()
    posts = await raw_load(connect, post, range(cfg.posts), cfg.concurrency, headers)
    cores = meter.stop()
    ids = [json.loads(b)["job_id"] for b in posts.bodies if b.startswith(b'{"job_id"')]
    ids = ids or ["00000000-0000-0000-0000-000000000000"]

    def get(index: int) -> tuple[str, str, bytes]:
        return "GET", f"/v1/augmentation/{ids[index % len(ids)]}", b""

    def healthz(index: int) -> tuple[str, str, bytes]:
        return "GET", "/healthz", b""

    def listing(index: int) -> tuple[str, str, bytes]:
        return "GET", "/v1/augmentation?limit=20", b""

    health = await raw_load(connect, healthz, range(cfg.healthz), cfg.concurrency, headers)
    offset = cfg.posts + cfg.warmup  # other seeds: distinct requests, not replays
    via_httpx = await httpx_load(
        api.url, post, range(offset, offset + cfg.posts), cfg.concurrency, headers
    )
    await raw_load(connect, listing, range(cfg.warmup), 1, headers)  # the first sort
    meter.start()
    gets = await raw_load(connect, get, range(cfg.gets), cfg.concurrency, headers)
    get_cores = meter.stop()
    meter.start()
    lists = await raw_load(connect, listing, range(cfg.lists), cfg.concurrency, headers)
    list_cores = meter.stop()
    return {
        "post": {**posts.summary(201), "server_cpu_cores": cores},
        "get_by_id": {**gets.summary(200), "server_cpu_cores": get_cores},
        "list": {**lists.summary(200), "server_cpu_cores": list_cores},
        "healthz": health.summary(200),
        "post_httpx_client": via_httpx.summary(201),
    }


async def apiserver_creates(cluster: Any, cfg: ApiBenchConfig, namespace: str) -> dict:
    """The same CRs created straight on the apiserver (strict field validation, as the
    API asks): what one create costs the control plane at this concurrency."""
    run_id = secrets.token_hex(3)
    path = cr_path(namespace) + "?fieldValidation=Strict"
    host, port = cluster.server.removeprefix("https://").rsplit(":", 1)
    context = cluster.ssl_context()

    def connect() -> RawConnection:
        return RawConnection(host, int(port), context)

    def create(index: int) -> tuple[str, str, bytes]:
        manifest = cr_manifest(f"bench-direct-{run_id}-{index:04d}", namespace, index)
        return "POST", path, json.dumps(manifest).encode()

    await raw_load(connect, create, range(cfg.warmup), 1)
    start = cfg.warmup  # names the warm-up did not take
    phase = await raw_load(
        connect, create, range(start, start + cfg.apiserver_creates), cfg.concurrency
    )
    return phase.summary(201)


def run(
    results: dict,
    quick: bool,
    cluster: Any = None,
    config: ApiBenchConfig | None = None,
    namespace: str = NAMESPACE,
) -> dict:
    """Benchmark the API; adds results["api"] and returns results."""
    cfg = config or (QUICK if quick else FULL)
    started = time.perf_counter()
    load_start = load_average()
    measured = measure_on_cluster(
        cluster, namespace, "augment-bench-api-",
        lambda on, workdir: _measure(on, cfg, workdir, namespace))
    post = measured["post"]
    floor = measured["apiserver_create"]
    results["api"] = {
        **measured,
        "ratios": {
            "post_p99_vs_apiserver_create_p99": _ratio(post.get("p99_ms"), floor.get("p99_ms")),
            "post_p50_vs_apiserver_create_p50": _ratio(post.get("p50_ms"), floor.get("p50_ms")),
            "post_rps_vs_apiserver_create_rps": _ratio(
                post.get("requests_per_second"), floor.get("requests_per_second")
            ),
            "post_httpx_p99_vs_post_p99": _ratio(
                measured["post_httpx_client"].get("p99_ms"), post.get("p99_ms")
            ),
        },
        "analysis": analysis(measured, cfg),
        "targets": {
            "get_by_id_p99_ms": verdict(
                measured["get_by_id"].get("p99_ms"), TARGET_READ_P99_MS, False
            ),
            "list_p99_ms": verdict(measured["list"].get("p99_ms"), TARGET_READ_P99_MS, False),
            "post_rps_vs_apiserver_create_rps": verdict(
                _ratio(post.get("requests_per_second"), floor.get("requests_per_second")),
                TARGET_POST_RPS_RATIO, True,
            ),
        },
        "config": {**asdict(cfg), "namespace": namespace, "uvicorn_workers": 1},
        "seconds": round(time.perf_counter() - started, 1),
        # No competing load is started: the machine's own state is all there is.
        "machine_state": {"load_average_1_5_15": {"start": load_start, "end": load_average()}},
    }
    return results


def server_log_counts(log: Path) -> dict[str, int]:
    """Warnings that explain latency: every connection urllib3 discards (its pool is
    smaller than the threads using it) is a new TLS handshake with the apiserver."""
    text = log_tail(log, chars=1 << 24)
    return {
        "apiserver_connections_discarded": text.count("Connection pool is full"),
        "warnings": sum(" WARNING " in line for line in text.splitlines()),
    }


def analysis(measured: dict[str, Any], cfg: ApiBenchConfig) -> dict[str, Any]:
    """Little's law on the floor: with `concurrency` requests always in flight, the mean
    latency cannot be below concurrency / throughput; at the apiserver's own create
    throughput that bounds what any API in front of it can reach on this machine."""
    floor_rps = measured["apiserver_create"].get("requests_per_second")
    health_rps = measured["healthz"].get("requests_per_second")
    get_rps = measured["get_by_id"].get("requests_per_second")
    return {
        # A p99 of 20 ms at this concurrency needs at least concurrency / 20 ms requests
        # per second, since the mean cannot be above the p99.
        "rps_needed_for_read_p99_target": round(1000 * cfg.concurrency / TARGET_READ_P99_MS),
        "mean_ms_floor_at_get_by_id_rps": (
            round(1000 * cfg.concurrency / get_rps, 1) if get_rps else None
        ),
        "mean_ms_floor_at_apiserver_create_rps": (
            round(1000 * cfg.concurrency / floor_rps, 1) if floor_rps else None
        ),
        "mean_ms_floor_at_healthz_rps": (
            round(1000 * cfg.concurrency / health_rps, 1) if health_rps else None
        ),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _measure(cluster: Any, cfg: ApiBenchConfig, workdir: Path, namespace: str) -> dict[str, Any]:
    api = ApiProcess(cluster, workdir, namespace)
    try:
        api.wait_ready()
        meter = CpuMeter({"api": api.proc.pid, **control_plane_pids(cluster)})
        measured = asyncio.run(api_phases(api, cfg, meter))
    except Exception as exc:
        raise RuntimeError(f"{exc}\nAPI log:\n{log_tail(api.log)}") from exc
    finally:
        api.stop()
    measured["server_log"] = server_log_counts(api.log)
    # The floor with the API stopped: its idle threads take nothing from it.
    measured["apiserver_create"] = asyncio.run(apiserver_creates(cluster, cfg, namespace))
    return measured
