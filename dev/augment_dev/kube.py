"""Small waiting helpers over kubectl for tests and demos."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from augment_dev.cluster import EmbeddedCluster
from augment_spec.crd import crd_yaml


def get_json(cluster: EmbeddedCluster, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.5,
             what: str = "condition") -> Any:
    """Poll until predicate() is truthy; return its value or fail with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def job_condition(cluster: EmbeddedCluster, namespace: str, name: str) -> str | None:
    job = get_json(cluster, "job", name, "-n", namespace)
    for cond in job.get("status", {}).get("conditions") or []:
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return cond["type"]
    return None


def install_crd(cluster: EmbeddedCluster) -> None:
    """Apply the AugmentationJob CRD generated from the installed spec, wherever this runs
    (crds/ holds the same text, checked by `make test`, but only in a checkout)."""
    cluster.kubectl("apply", "-f", "-", input=crd_yaml())
