"""HTTP behaviour that needs no cluster: limits, error shapes, unreachable apiserver.

Everything about jobs themselves is tested against the real control plane in
tests/e2e/test_api.py; here reads come from a watch cache the test fills itself, and the
store is absent from the path (413, 401, 422, reads), a stand-in that fails on purpose
(500), or the real store aimed at a closed port (503). The doubles: tests/api_doubles.py.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from api_doubles import BODY, HEADERS, PROJECT, ExplodingStore, make_client, unreachable_store
from fastapi.testclient import TestClient
from kubernetes.client.exceptions import ApiException

from augment_api.errors import BadGateway, Invalid, Unavailable
from augment_api.models import Shards, job_from_cr
from augment_api.store import idempotent_name, request_hash, translate
from augment_spec.contract import video_plan_status
from augment_spec.model import AugmentationSpec


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
    r = client.post("/v1/augmentation", headers=HEADERS, json=BODY)
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


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"project_id": "\xff\xfe"}', "the body is not UTF-8 text"),
    (b'{"augment_copies": 1' + b"0" * 5000 + b"}", "a number has too many digits"),
    (b"[" * 30000 + b"]" * 30000, "arrays or objects are nested too deeply"),
    (b'{"augment_brightness_min": NaN}', "NaN is not a JSON number"),
    (b"{not json", "Expecting property name enclosed in double quotes"),
], ids=["not-utf8", "huge-integer", "deep-nesting", "nan", "syntax"])
def test_unparseable_bodies_are_422(body: bytes, reason: str) -> None:
    # 400 is kept for "generative augmentation is disabled"; any unreadable body is a 422.
    with make_client(ExplodingStore()) as c:
        r = c.post("/v1/augmentation", headers={**HEADERS, "Content-Type": "application/json"},
                   content=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == f"request body is not valid JSON: {reason}"
    assert [e["type"] for e in r.json()["errors"]] == ["json_invalid"]


def test_a_boolean_is_not_an_integer(client: TestClient) -> None:
    r = client.post("/v1/augmentation", headers=HEADERS, json={**BODY, "augment_copies": True})
    assert r.status_code == 422
    assert r.json()["detail"] == "augment_copies: Input should be a valid integer"


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/v1/augmentation", "GET, POST"),
    ("PATCH", f"/v1/augmentation/{uuid.uuid4()}", "GET, DELETE"),
    ("POST", "/healthz", "GET"),
])
def test_405_lists_every_method_of_the_path(client: TestClient, method: str, path: str,
                                            allowed: str) -> None:
    r = client.request(method, path, headers=HEADERS)
    assert r.status_code == 405
    assert r.headers["allow"] == allowed
    assert r.json() == {"detail": "Method Not Allowed"}


def test_unreachable_apiserver_is_503_and_not_ready() -> None:
    with make_client(unreachable_store()) as c:
        def listed() -> dict[str, Any]:
            r = c.get("/v1/augmentation", headers=HEADERS)
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            return r.json()

        # The informer's first LIST is refused at once: its reason becomes the detail.
        deadline = time.monotonic() + 10
        while "still loading" in listed()["detail"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listed() == {"detail": "jobs are not readable yet: cannot reach the "
                                      "Kubernetes API server; try again later"}
        assert c.get(f"/v1/augmentation/{uuid.uuid4()}", headers=HEADERS).status_code == 503
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


def test_a_jobs_view_says_how_its_videos_are_coded() -> None:
    line = "observation.images.top: nvdec-cpu (h264), the node has no NVENC"
    cr = {"metadata": {"uid": str(uuid.uuid4()), "name": "pick", "namespace": "lab"},
          "spec": {"projectId": PROJECT, "datasetId": "lab/pick"},
          "status": {"phase": "Running", **video_plan_status([line])}}
    assert job_from_cr(cr).video_plan == line
    assert job_from_cr({**cr, "status": {}}).video_plan is None  # not planned yet
