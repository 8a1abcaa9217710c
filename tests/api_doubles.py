"""Doubles of the API's collaborators for tests that need no cluster: a store that must not
be reached (or fails like a bug), one that records what it creates, a watch cache filled
by the test, and the real store aimed at a closed port."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from kubernetes import client as k8s

from augment_api.app import create_app
from augment_api.auth import load_key_ring
from augment_api.cache import JobCache
from augment_api.settings import Settings
from augment_api.store import Created, JobStore
from augment_spec.crd import cr_spec_from_spec
from augment_spec.model import AugmentationSpec

EXAMPLE_KEYS = Path(__file__).resolve().parents[1] / "examples" / "api-keys.yaml"
PROJECT = "0b5c6f0e-8a53-4a0c-9a43-7a3f0f0f2c11"
HEADERS = {"X-Api-Key": "dev-team-a-key"}
OPS = {"X-Api-Key": "dev-ops-key"}
BODY = {"project_id": PROJECT, "dataset_id": "lerobot/pusht"}


class ExplodingStore:
    """Stands in for JobStore where the test is about what happens on a bug, or where the
    store must not be reached at all."""

    def create(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals: /var/run/token")

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the store must not be reached (JobStore.{name})")


class RecordingStore:
    """Stands in for JobStore on create: makes the CR the apiserver would return."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def create(self, spec: AugmentationSpec, *, created_by: str,
               idempotency_key: str | None = None) -> Created:
        cr = job_cr(spec.project_id, name=f"aug-{len(self.created)}")
        cr["spec"] = cr_spec_from_spec(spec)
        self.created.append(cr)
        return Created(cr, created=True)


def job_cr(project: str | uuid.UUID, phase: str | None = None,
           name: str | None = None) -> dict[str, Any]:
    uid = str(uuid.uuid4())
    cr: dict[str, Any] = {
        "metadata": {"name": name or f"job-{uid[:8]}", "namespace": "default", "uid": uid,
                     "resourceVersion": "1", "creationTimestamp": "2025-01-02T03:04:05Z"},
        "spec": {"projectId": str(project), "datasetId": "lerobot/pusht"},
    }
    if phase is not None:
        cr["status"] = {"phase": phase}
    return cr


def synced_cache(*crs: dict[str, Any]) -> JobCache:
    cache = JobCache()
    cache.replace(list(crs), listed_since=time.monotonic())
    return cache


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unreachable_store() -> JobStore:
    configuration = k8s.Configuration(host=f"https://127.0.0.1:{closed_port()}")
    configuration.retries = False
    return JobStore("default", lambda: k8s.ApiClient(configuration), timeout_s=2)


def make_client(store: Any, cache: JobCache | None = None, **settings: Any) -> TestClient:
    """The app; reads come from `cache` (default: synced and empty) unless the store is a
    real one, whose informer then fills a cache of its own."""
    if cache is None and not isinstance(store, JobStore):
        cache = synced_cache()
    app = create_app(Settings(**settings), store=store, keys=load_key_ring(EXAMPLE_KEYS),
                     cache=cache)
    return TestClient(app)
