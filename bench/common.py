"""Helpers shared by the benchmarks: statistics, targets, processes, the bench cluster."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
CRD_FILE = REPO_ROOT / "crds" / "augmentationjobs.augment.dev.yaml"


# ---------------------------------------------------------------------- statistics


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50/p90/p99/max/mean in milliseconds (linear interpolation between samples)."""
    if not seconds:
        return {"count": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "count": len(ms),
        "p50_ms": round(float(p50), 2),
        "p90_ms": round(float(p90), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(float(ms.max()), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def verdict(value: float | None, target: float, higher_is_better: bool) -> dict[str, Any]:
    """PASS/MISS against a target, with the margin as a signed percentage of the target:
    positive is headroom, negative is how far the figure misses. None (not measured,
    e.g. the burst did not finish in time) is a MISS without a margin."""
    op = ">=" if higher_is_better else "<="
    if value is None:
        return {"value": None, "target": target, "op": op, "pass": False, "margin_pct": None}
    passed = value >= target if higher_is_better else value <= target
    margin = (value - target) / target if higher_is_better else (target - value) / target
    return {
        "value": value,
        "target": target,
        "op": op,
        "pass": bool(passed),
        "margin_pct": round(100 * margin, 1),
    }


def best_of(fn: Callable[[], Any], reps: int) -> float:
    """Shortest wall time of `reps` calls: on a shared machine the minimum is the figure
    least disturbed by other people's work."""
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


# ------------------------------------------------------------------------- machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def realtime_processes() -> list[str]:
    """User processes at a real-time scheduling policy (kernel threads left out): such a
    process spinning takes its core from everything else, this benchmark included."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        if proc.name == str(os.getpid()):
            continue
        with contextlib.suppress(OSError, IndexError):
            if not (proc / "cmdline").read_bytes():
                continue  # a kernel thread
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[38]) != 0:
                found.append(f"{proc.name} {(proc / 'comm').read_text().strip()}")
    return found


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpus_usable": usable_cores(),
        "cpus_total": os.cpu_count(),
        "load_average_1_5_15": load_average(),
        "realtime_processes": realtime_processes(),
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "commit": git_commit(),
    }


# ----------------------------------------------------------------------- processes


def ensure_normal_scheduling() -> bool:
    """Put the calling thread back to SCHED_OTHER; True if it was not.

    Run as root, SVT-AV1 (libsvtav1) switches the thread that opens an encoder to
    SCHED_FIFO priority 99 and starts its own threads so. Every thread and process
    started afterwards inherits that: Go control-plane processes spinning at real-time
    priority on 2 cores starve the kernel's loopback networking and livelock. Runner
    pods run as non-root, where SVT cannot do this, so the bench undoes it.
    """
    if not hasattr(os, "sched_getscheduler") or os.sched_getscheduler(0) == os.SCHED_OTHER:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class CpuMeter:
    """CPU cores used by named processes between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, float] = {}
        self._started = 0.0
        self.cores: dict[str, float] = {}

    def start(self) -> None:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._started = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._started, 1e-9)
        self.cores = {
            name: round((cpu_seconds(pid) - self._before[name]) / wall, 2)
            for name, pid in self.pids.items()
        }
        return self.cores


def usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# A pure-Python busy loop: CPU-bound, little memory traffic. It says it runs (one byte
# on stdout) before spinning, so the measurement starts with every spinner on a core.
_SPIN = "import sys; sys.stdout.write('1'); sys.stdout.flush()\nwhile True: pass"


@contextlib.contextmanager
def competing_load(processes: int | None = None) -> Iterator[CpuMeter]:
    """One CPU-bound process per usable core (or `processes`) while the block runs: the
    normal state of a pod on a busy node. Yields a CpuMeter of the spinners, stopped on
    exit (its `cores` say how much of the machine they took); they are killed on exit."""
    ensure_normal_scheduling()  # the spinners inherit this thread's policy
    procs = [
        subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE)
        for _ in range(processes or usable_cores())
    ]
    meter = CpuMeter({f"spinner-{i}": p.pid for i, p in enumerate(procs)})
    try:
        for proc in procs:
            if proc.stdout is None or proc.stdout.read(1) != b"1":
                raise RuntimeError(f"load process {proc.pid} did not start")
        meter.start()
        yield meter
        meter.stop()
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def venv_tool(name: str) -> str:
    """A console script of the running interpreter's environment (e.g. `augment`)."""
    return str(Path(sys.executable).parent / name)


def start_process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """A child in its own session (stopped as a group), its output into `log`."""
    ensure_normal_scheduling()  # the child inherits this thread's policy
    with log.open("ab") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:2]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:  # not up yet
            last = str(exc)
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s: {last}")


def log_tail(path: Path, chars: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


# ------------------------------------------------------------------------- cluster


@contextlib.contextmanager
def bench_cluster(namespace: str) -> Iterator[Any]:
    """A real control plane without the pod executor, the CRD established and
    `namespace` created: what the operator and API benchmarks talk to."""
    from augment_dev.cluster import EmbeddedCluster

    ensure_normal_scheduling()  # the control plane inherits this thread's policy
    with EmbeddedCluster(run_pods=False) as cluster:
        prepare_cluster(cluster, namespace)
        yield cluster


def prepare_cluster(cluster: Any, namespace: str) -> None:
    cluster.kubectl("apply", "-f", str(CRD_FILE))
    cluster.kubectl(
        "wait", "--for=condition=established", "--timeout=60s",
        "crd/augmentationjobs.augment.dev",
    )  # fmt: skip
    if cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", namespace)


def kube_api_client(cluster: Any) -> Any:
    """A kubernetes ApiClient for the cluster's admin kubeconfig, pool sized for threads."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 64
    return client.ApiClient(configuration)


def control_plane_pids(cluster: Any) -> dict[str, int]:
    return {name: proc.pid for name, proc in cluster.processes.items()}


def apiserver_client(cluster: Any, connections: int = 32) -> Any:
    """A plain HTTPS client for the apiserver (admin certificate): cheaper per request
    than the kubernetes package, so the measuring side steals little CPU."""
    import httpx

    return httpx.Client(
        base_url=cluster.server, verify=cluster.ssl_context(), timeout=60,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )  # fmt: skip


def cr_path(namespace: str) -> str:
    from augment_spec.contract import GROUP, PLURAL, VERSION

    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


def cr_manifest(name: str, namespace: str, index: int) -> dict[str, Any]:
    """A valid AugmentationJob, its spec made by the shared spec model."""
    from augment_spec.contract import API_VERSION, KIND
    from augment_spec.crd import cr_spec_from_spec
    from augment_spec.model import parse_spec

    spec = parse_spec({
        "project_id": BENCH_PROJECT,
        "dataset_id": "bench/source",
        "augment_transforms": "lighting,noise,blur",
        "augment_seed": index,
    })  # fmt: skip
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": cr_spec_from_spec(spec),
    }


BENCH_PROJECT = "00000000-0000-0000-0000-0000000be4c0"


def measure_on_cluster(cluster: Any, namespace: str, prefix: str,
                       measure: Callable[[Any, Path], dict]) -> dict:
    """Run measure(cluster, workdir) on the given cluster, or on one of its own."""
    import shutil
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if cluster is None:
            with bench_cluster(namespace) as own:
                return measure(own, workdir)
        prepare_cluster(cluster, namespace)
        return measure(cluster, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
