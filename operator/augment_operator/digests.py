"""Which Job and pod events can change a decision: the rest need no reconcile.

Two kinds need none: an event that brings only fields no decision reads (`Digests`),
and one that brings a version of the object a reconcile has already read (`Reads`).

The Job controller, the scheduler and the kubelet update a Job and its pods many times
for things no decision reads (status.py, sizing.py): a Job's ready and terminating
counts and start time, a pod's IPs, its readiness conditions, a container's image ID.
An event is reconciled when what is left of the object without those fields (its
digest) differs from the last one seen of that object, so every field not named here
(a phase, shard counts, conditions, waiting and terminated reasons, labels) still is.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from typing import Any

# Bookkeeping every object has.
META_IGNORED = frozenset({"resourceVersion", "managedFields"})
# A Job's counts and times that no decision reads. `active` is read for an Indexed Job
# only (its shards running, status.shard_status).
JOB_STATUS_IGNORED = frozenset({"ready", "terminating", "startTime",
                                 "uncountedTerminatedPods"})
# A pod's addresses and QoS class, and those of its conditions that only say whether
# it is ready (PodScheduled and DisruptionTarget are read).
POD_STATUS_IGNORED = frozenset({"podIP", "podIPs", "hostIP", "hostIPs", "qosClass"})
POD_CONDITIONS_IGNORED = frozenset({"Ready", "ContainersReady", "Initialized",
                                    "PodReadyToStartContainers"})
# Of a container's status: its state and last state are read, not these.
CONTAINER_IGNORED = frozenset({"ready", "started", "image", "imageID", "containerID",
                               "volumeMounts", "resources", "allocatedResources", "user"})


def job_digest(job: Mapping[str, Any]) -> str:
    status = {k: v for k, v in (job.get("status") or {}).items()
              if k not in JOB_STATUS_IGNORED}
    if (job.get("spec") or {}).get("completionMode") != "Indexed":
        status.pop("active", None)
    return _digest({**job, "metadata": _meta(job), "status": status})


def pod_digest(pod: Mapping[str, Any]) -> str:
    status = {k: v for k, v in (pod.get("status") or {}).items()
              if k not in POD_STATUS_IGNORED}
    status["conditions"] = [c for c in status.get("conditions") or []
                            if c.get("type") not in POD_CONDITIONS_IGNORED]
    for key in ("containerStatuses", "initContainerStatuses"):
        status[key] = [{k: v for k, v in c.items() if k not in CONTAINER_IGNORED}
                       for c in status.get(key) or []]
    return _digest({**pod, "metadata": _meta(pod), "status": status})


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (obj.get("metadata") or {}).items() if k not in META_IGNORED}


def _digest(obj: Mapping[str, Any]) -> str:
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class Digests:
    """The last digest of each Job and pod seen on the watch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, str], str] = {}

    def changed(self, kind: str, body: Mapping[str, Any], event_type: str | None) -> bool:
        """Whether this event may change a decision: the object's first event, its
        deletion, or a digest unlike the last one. Remembers the digest."""
        meta = body.get("metadata") or {}
        key = (kind, str(meta.get("namespace")), str(meta.get("name")))
        if event_type == "DELETED":
            with self._lock:
                self._seen.pop(key, None)
            return True
        digest = job_digest(body) if kind == "job" else pod_digest(body)
        with self._lock:
            before = self._seen.get(key)
            self._seen[key] = digest
        return digest != before


class Reads:
    """The newest resourceVersion of each Job and pod that a reconcile has read: an
    event that brings that version, or an older one, shows nothing that reconcile did
    not decide on (reconciles of one CR run one at a time, and one that fails is tried
    again by the resync sweep)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._read: dict[tuple[str, str, str], int] = {}

    def read(self, kind: str, body: Mapping[str, Any]) -> None:
        key, version = _versioned(kind, body)
        if version is not None:
            with self._lock:
                self._read[key] = max(version, self._read.get(key, version))

    def covered(self, kind: str, body: Mapping[str, Any], event_type: str | None) -> bool:
        """Whether a reconcile has read this version of the object, or a newer one. A
        deletion is never covered, and forgets the object."""
        key, version = _versioned(kind, body)
        with self._lock:
            if event_type == "DELETED":
                self._read.pop(key, None)
                return False
            seen = self._read.get(key)
        return version is not None and seen is not None and version <= seen


def _versioned(kind: str, body: Mapping[str, Any]) -> tuple[tuple[str, str, str], int | None]:
    """The object's key, and its resourceVersion where it is an integer (etcd's are;
    clients may not rely on it, so any other is never compared)."""
    meta = body.get("metadata") or {}
    version = meta.get("resourceVersion")
    number = int(version) if isinstance(version, str) and version.isdigit() else None
    return (kind, str(meta.get("namespace")), str(meta.get("name"))), number
