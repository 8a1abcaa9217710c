"""HTTP behaviour that needs no cluster: limits, error shapes, unreachable apiserver.

Everything about jobs themselves is tested against the real control plane in
tests/e2e/test_api.py; here the store is either absent from the path (413, 401, 422),
a stand-in that fails on purpose (500), or the real store aimed at a closed port (503).
"""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from augment_api.app import create_app
from augment_api.auth import load_key_ring
from augment_api.errors import BadGateway, Invalid, Unavailable
from augment_api.models import Shards, job_from_cr
from augment_api.settings import Settings
from augment_api.store import JobStore, idempotent_name, request_hash, translate
from augment_spec.model import AugmentationSpec

EXAMPLE_KEYS = Path(__file__).resolve().parents[2] / "examples" / "api-keys.yaml"
PROJECT = "0b5c6f0e-8a53-4a0c-9a43-7a3f0f0f2c11"
HEADERS = {"X-Api-Key": "dev-team-a-key"}
BODY = {"project_id": PROJECT, "dataset_id": "lerobot/pusht"}


class ExplodingStore:
    """Stands in for JobStore where the test is about what happens on a bug."""

    def list_all(self) -> list[dict[str, Any]]:
        raise RuntimeError("secret internals: /var/run/token")

    def create(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("must not be reached")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unreachable_store() -> JobStore:
    configuration = k8s.Configuration(host=f"https://127.0.0.1:{closed_port()}")
    configuration.retries = 0
    return JobStore("default", lambda: k8s.ApiClient(configuration), timeout_s=2)


def make_client(store: Any, **settings: Any) -> TestClient:
    app = create_app(Settings(**settings), store=store, keys=load_key_ring(EXAMPLE_KEYS))
    return TestClient(app)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client(ExplodingStore(), max_body_bytes=2048) as c:
        yield c


def test_declared_oversized_body_is_413(client: TestClient) -> None:
    r = client.post("/v1/augmentation", headers=HEADERS,
                    json={**BODY, "name": "x" * 4000})
    assert r.status_code == 413
    assert r.json() == {"detail": "request body is larger than the limit of 2048 bytes"}


def test_streamed_oversized_body_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        yield b'{"project_id": "' + PROJECT.encode() + b'", "name": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    r = client.post("/v1/augmentation", headers={**HEADERS, "Content-Type": "application/json"},
                    content=chunks())
    assert r.status_code == 413 and "detail" in r.json()


def test_unexpected_error_is_a_bare_500(client: TestClient) -> None:
    r = client.get("/v1/augmentation", headers=HEADERS)
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error"}
    assert "secret" not in r.text


def test_auth_comes_before_validation(client: TestClient) -> None:
    r = client.post("/v1/augmentation", json={"augment_copies": 0})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("APIKey")
    assert r.json()["detail"].startswith("missing API key")


def test_validation_detail_is_readable(client: TestClient) -> None:
    r = client.post("/v1/augmentation", headers=HEADERS,
                    json={**BODY, "augment_brightness_min": 10, "augment_brightness_max": 5})
    assert r.status_code == 422
    assert r.json()["detail"] == "augment_brightness_min must be <= augment_brightness_max"
    r = client.post("/v1/augmentation", headers={**HEADERS, "Content-Type": "application/json"},
                    content=b"{not json")
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = client.post("/v1/augmentation", headers=HEADERS)
    assert r.status_code == 422 and r.json()["detail"] == "a JSON request body is required"


def test_unreachable_apiserver_is_503_and_not_ready() -> None:
    with make_client(unreachable_store()) as c:
        r = c.get("/v1/augmentation", headers=HEADERS)
        assert r.status_code == 503
        assert r.json() == {"detail": "cannot reach the Kubernetes API server; try again later"}
        assert c.get("/readyz").status_code == 503
        assert c.get("/healthz").json() == {"status": "ok"}


def test_request_hash_is_canonical() -> None:
    short = AugmentationSpec.model_validate(BODY)
    explicit = AugmentationSpec.model_validate({**BODY, "augment_copies": 3,
                                                "augment_transforms": " lighting "})
    other = AugmentationSpec.model_validate({**BODY, "augment_copies": 4})
    assert request_hash(short) == request_hash(explicit) != request_hash(other)
    canonical = json.dumps(short.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert request_hash(short) == hashlib.sha256(canonical.encode()).hexdigest()


def test_idempotent_name_depends_on_project_and_key() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    name = idempotent_name(a, "k1")
    assert name == idempotent_name(a, "k1")
    assert len(name) == len("aug-") + 20 and name.startswith("aug-")
    assert name != idempotent_name(b, "k1") and name != idempotent_name(a, "k2")


@pytest.mark.parametrize(("status", "kind", "fragment"), [
    (403, BadGateway, "not allowed to create AugmentationJobs: denied (check its RBAC)"),
    (404, Unavailable, "is the AugmentationJob CRD installed"),
    (422, Invalid, "the cluster rejected the job: denied"),
    (500, Unavailable, "unavailable (500)"),
    (418, BadGateway, "Kubernetes API error while trying to create AugmentationJobs: denied"),
])
def test_kubernetes_errors_become_readable_details(status: int, kind: type,
                                                   fragment: str) -> None:
    exc = ApiException(status=status, reason="Reason", body=json.dumps({"message": "denied"}))
    error = translate(exc, "create AugmentationJobs")
    assert isinstance(error, kind) and fragment in error.detail


def test_a_sharded_jobs_view_counts_its_shards() -> None:
    cr = {"metadata": {"uid": str(uuid.uuid4()), "name": "pick", "namespace": "lab",
                       "labels": {"augment.dev/project-id": PROJECT}},
          "spec": {"projectId": PROJECT, "datasetId": "lab/pick", "shards": 4},
          "status": {"phase": "Running", "shards": {"total": 4, "done": 1, "running": 2,
                                                    "failed": 0, "failedPods": 1,
                                                    "text": "1/4"}}}
    view = job_from_cr(cr)
    assert view.shards == Shards(total=4, done=1, running=2, failed=0, failed_pods=1)
    assert view.spec is not None and view.spec.shards == 4
    assert job_from_cr({**cr, "status": {}}).shards is None
