"""How many CPU threads the runner's codecs may use: the pod's CPUs, never more.

A container sees every core of its node (os.cpu_count, and usually its affinity mask),
while Kubernetes gives it a share: the CPU request (AUGMENT_THREADS, set by the
operator's Job from `requests.cpu`) and a ceiling (the limit: AUGMENT_CPU_LIMIT from
`limits.cpu`, and the cgroup's own `cpu.max` quota, which also holds outside Kubernetes,
e.g. `docker run --cpus`). Codec libraries left to themselves size their pools from
the node's cores (SVT-AV1 started about 50 threads on a 2-core machine here), which
oversubscribes the pod and collapses under a CPU limit.

The rule (docs/design.md, Threads): the pod's CPUs are the smallest of the request, the
limit, the cgroup quota and the cores the process may run on, at least one. The
decoder and the copies' encoders of one camera run at once, so each codec gets an
equal share of them, at least one thread: their pools together never exceed the pod's
CPUs unless there are more codecs than CPUs (one thread each then).

The transforms size their own pool from AUGMENT_THREADS, or where it is unset from
this_pod_cpus (transforms/numpy_engine.py), and BLAS, OpenMP and OpenCV run one thread
per call (native_threads.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from augment_spec.contract import ENV_CPU_LIMIT, ENV_THREADS

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max ..."


def _cpus_from_env(value: str | None) -> int | None:
    """A CPU count the operator's Job wrote (resourceFieldRef, divisor 1: whole CPUs,
    rounded up); None when unset or not a positive number."""
    try:
        cpus = math.ceil(float((value or "").strip()))
    except ValueError:
        return None
    return cpus if cpus >= 1 else None


def cgroup_cpus(cpu_max: str | None) -> int | None:
    """The cgroup v2 quota as whole CPUs (rounded down, at least one); None: no quota."""
    fields = (cpu_max or "").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return max(1, quota // period) if quota > 0 and period > 0 else None


def pod_cpus(environ: Mapping[str, str], cpu_max: str | None, usable_cores: int) -> int:
    """The pod's CPUs: the smallest of request, limit, quota and usable cores, >= 1."""
    bounds = [
        _cpus_from_env(environ.get(ENV_THREADS)),
        _cpus_from_env(environ.get(ENV_CPU_LIMIT)),
        cgroup_cpus(cpu_max),
        max(1, usable_cores),
    ]
    return min(b for b in bounds if b is not None)


def codec_threads(cpus: int, concurrent_codecs: int) -> int:
    """Threads for each of `concurrent_codecs` codecs sharing `cpus` CPUs."""
    return max(1, cpus // max(1, concurrent_codecs))


def _read_cpu_max() -> str | None:
    try:
        return CGROUP_CPU_MAX.read_text()
    except OSError:  # cgroup v1, or no cgroup file system: no quota known
        return None


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def this_pod_cpus() -> int:
    """pod_cpus for this process."""
    return pod_cpus(os.environ, _read_cpu_max(), _usable_cores())
