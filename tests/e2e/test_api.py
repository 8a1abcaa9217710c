"""The REST API over HTTP, with the real store, against the real control plane.

The operator is not running here: phases change only when a test writes the status
subresource itself, as the operator would. The API reads through its watch cache, so a
change made with kubectl reaches it a moment later: such reads poll (`read_job`).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_process import api_process
from fastapi.testclient import TestClient
from pydantic.alias_generators import to_camel

from augment_api.app import create_app
from augment_api.settings import Settings
from augment_api.store import idempotent_name
from augment_dev.cluster import EmbeddedCluster
from augment_dev.kube import get_json, wait_for
from augment_spec.contract import (
    ANNOTATION_CANCEL,
    ANNOTATION_IDEMPOTENCY,
    ANNOTATION_REQUEST_HASH,
    LABEL_MANAGED_BY,
    LABEL_PROJECT,
    MANAGED_BY_API,
    cancel_requested,
)
from augment_spec.crd import CAMEL, cr_spec_from_spec
from augment_spec.model import AugmentationSpec

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "augmentationjobs.augment.dev.yaml"

PROJECT_A = "3f1c2a9e-5b7d-4c1e-9f0a-1b2c3d4e5f60"
PROJECT_B = "8d7e6f5a-4b3c-4d2e-8f1a-0a9b8c7d6e5f"
KEY_A, KEY_B, KEY_OPS = "key-team-a", "key-team-b", "key-ops"
A = {"X-Api-Key": KEY_A}
B = {"X-Api-Key": KEY_B}
OPS = {"X-Api-Key": KEY_OPS}

# The seed's request, as a client would send it: only the required fields and a name.
SEED_BODY = {"project_id": PROJECT_A, "dataset_id": "lerobot/pusht", "name": "pusht lighting"}
# The seed's defaults, as they must appear (camelCase) on the custom resource.
SEED_DEFAULTS_CR = {
    "augmentationType": "deterministic",
    "augmentTransforms": "lighting",
    "augmentMode": "stacked",
    "augmentCopies": 3,
    "augmentDatasetMode": "copy",
    "augmentBrightnessMin": -15,
    "augmentBrightnessMax": 15,
    "augmentContrastMin": -10,
    "augmentContrastMax": 10,
    "augmentColorTempMin": 4000,
    "augmentColorTempMax": 6500,
}


# ---------- fixtures ----------
@pytest.fixture(scope="module")
def crd(cluster: EmbeddedCluster) -> None:
    cluster.kubectl("apply", "-f", str(CRD_FILE))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    "crd/augmentationjobs.augment.dev")


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def sha(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    keys = {"keys": [
        {"name": "team-a", "sha256": sha(KEY_A), "projects": [PROJECT_A]},
        {"name": "team-b", "sha256": sha(KEY_B), "projects": [PROJECT_B]},
        {"name": "ops", "sha256": sha(KEY_OPS), "projects": "*"},
    ]}
    path = tmp_path_factory.mktemp("api") / "api-keys.yaml"
    path.write_text(json.dumps(keys))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def module_namespace(cluster: EmbeddedCluster) -> Iterator[str]:
    name = f"api-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@contextmanager
def api_client(cluster: EmbeddedCluster, namespace: str, keys_file: Path,
               **settings: Any) -> Iterator[TestClient]:
    """The app, serving once its watch cache has loaded the namespace."""
    app = create_app(Settings(namespace=namespace, api_keys_file=keys_file,
                              kubeconfig=cluster.kubeconfig, **settings))
    with TestClient(app) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, timeout=30, interval=0.05,
                 what="the API's watch cache to load")
        yield client


@pytest.fixture
def api(cluster: EmbeddedCluster, crd: None, namespace: str,
        keys_file: Path) -> Iterator[TestClient]:
    """The app in a fresh namespace per test."""
    with api_client(cluster, namespace, keys_file) as client:
        yield client


@pytest.fixture(scope="module")
def shared_api(cluster: EmbeddedCluster, crd: None, module_namespace: str,
               keys_file: Path) -> Iterator[TestClient]:
    """The app in one namespace for the tests that must leave it empty."""
    with api_client(cluster, module_namespace, keys_file) as client:
        yield client


# ---------- helpers ----------
def crs(cluster: EmbeddedCluster, namespace: str) -> list[dict[str, Any]]:
    return get_json(cluster, "augmentationjobs", "-n", namespace)["items"]


def cr_by_uid(cluster: EmbeddedCluster, namespace: str, uid: str) -> dict[str, Any]:
    return next(cr for cr in crs(cluster, namespace) if cr["metadata"]["uid"] == uid)


def uid_of(cluster: EmbeddedCluster, namespace: str, name: str) -> str:
    return get_json(cluster, "augmentationjob", name, "-n", namespace)["metadata"]["uid"]


def read_job(api: TestClient, job_id: str, until: Callable[[dict[str, Any]], bool],
             headers: dict[str, str] = A) -> dict[str, Any]:
    """GET the job until `until(job)` holds: the watch brings kubectl's changes."""
    def answer() -> dict[str, Any] | None:
        r = api.get(f"/v1/augmentation/{job_id}", headers=headers)
        assert r.status_code in (200, 404), r.text
        return r.json() if r.status_code == 200 and until(r.json()) else None

    # 5 requests a second: under the key's rate limit however long it takes.
    job: dict[str, Any] = wait_for(answer, timeout=15, interval=0.2,
                                   what=f"GET {job_id} to show the change")
    return job


def create(api: TestClient, headers: dict[str, str] = A, **fields: Any) -> str:
    r = api.post("/v1/augmentation", headers=headers, json={**SEED_BODY, **fields})
    assert r.status_code == 201, r.text
    return r.json()["job_id"]


def set_status(cluster: EmbeddedCluster, namespace: str, name: str,
               status: dict[str, Any]) -> None:
    """Write the status subresource, as the operator would."""
    cluster.kubectl("patch", "augmentationjob", name, "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": status}))


def cr_manifest(name: str, spec: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "augment.dev/v1alpha1", "kind": "AugmentationJob",
                       "metadata": {"name": name}, "spec": spec})


def camel_spec(body: dict[str, Any]) -> dict[str, Any]:
    """An API body as a CR spec, mapped mechanically (valid or not)."""
    return {CAMEL.get(k, to_camel(k)): v for k, v in body.items()}


# ---------- create and read ----------
def test_seed_request_creates_job_with_every_default(api: TestClient, cluster: EmbeddedCluster,
                                                    namespace: str) -> None:
    r = api.post("/v1/augmentation", headers=A, json=SEED_BODY)
    assert r.status_code == 201, r.text
    created = r.json()
    job_id = str(uuid.UUID(created["job_id"]))
    assert created["status"] == "Pending" and created["message"]

    [cr] = crs(cluster, namespace)
    meta = cr["metadata"]
    assert meta["uid"] == job_id
    assert re.fullmatch(r"aug-[0-9a-f]{20}", meta["name"])
    assert meta["labels"] == {LABEL_PROJECT: PROJECT_A, LABEL_MANAGED_BY: MANAGED_BY_API}
    assert re.fullmatch(r"[0-9a-f]{64}", meta["annotations"][ANNOTATION_REQUEST_HASH])
    assert ANNOTATION_IDEMPOTENCY not in meta["annotations"]
    assert {k: cr["spec"][k] for k in SEED_DEFAULTS_CR} == SEED_DEFAULTS_CR
    assert cr["spec"] == cr_spec_from_spec(AugmentationSpec.model_validate(SEED_BODY))

    r = api.get(f"/v1/augmentation/{job_id}", headers=A)
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["job_id"] == job_id and job["name"] == meta["name"]
    assert job["namespace"] == namespace and job["project_id"] == PROJECT_A
    assert job["status"] == "Pending" and job["cancel_requested"] is False
    assert job["progress"] == {"episodes_done": 0, "episodes_total": 0, "percent": 0}
    assert job["output_dataset_id"] == "lerobot/pusht-augmented"
    assert job["created_at"] and job["started_at"] is None and job["job_name"] is None
    assert job["spec"]["name"] == "pusht lighting" and job["spec"]["augment_copies"] == 3
    assert job["spec"]["augment_brightness_min"] == -15


def test_job_applied_with_kubectl_is_readable(api: TestClient, cluster: EmbeddedCluster,
                                             namespace: str) -> None:
    # The cache has loaded the (empty) namespace: the job below can only come by the watch.
    assert api.get("/readyz").json() == {"status": "ok"}
    spec = {"projectId": PROJECT_A, "datasetId": "lerobot/aloha", "augmentCopies": 2,
            "augmentTransforms": "noise, blur"}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=cr_manifest("handmade", spec))
    uid = uid_of(cluster, namespace, "handmade")
    assert read_job(api, uid, lambda job: job["status"] == "Pending")["name"] == "handmade"
    set_status(cluster, namespace, "handmade", {
        "phase": "Running", "jobName": "handmade-run", "message": "augmenting",
        "startTime": "2025-01-02T03:04:05Z",
        "progress": {"episodesDone": 5, "episodesTotal": 20, "percent": 25, "text": "5/20"}})

    job = read_job(api, uid, lambda job: job["status"] == "Running")
    assert job["name"] == "handmade"
    assert job["progress"] == {"episodes_done": 5, "episodes_total": 20, "percent": 25}
    assert job["job_name"] == "handmade-run" and job["message"] == "augmenting"
    assert job["started_at"].startswith("2025-01-02T03:04:05")
    # The apiserver filled the defaults the manifest left out.
    assert job["spec"]["augment_copies"] == 2 and job["spec"]["augment_mode"] == "stacked"
    assert job["spec"]["augment_transforms"] == "noise,blur"
    assert api.get(f"/v1/augmentation/{uid}", headers=OPS).status_code == 200
    listed = api.get("/v1/augmentation", headers=A).json()
    assert [j["job_id"] for j in listed["items"]] == [uid]

    cluster.kubectl("delete", "augmentationjob", "handmade", "-n", namespace)
    wait_for(lambda: api.get(f"/v1/augmentation/{uid}", headers=A).status_code == 404,
             timeout=15, interval=0.2, what="the deleted job to be gone from the API")
    assert api.get("/v1/augmentation", headers=A).json()["total"] == 0


def test_list_paginates_newest_first_and_filters(api: TestClient, cluster: EmbeddedCluster,
                                                namespace: str) -> None:
    older = [create(api, name=f"job {i}") for i in range(4)]
    time.sleep(1.1)  # creationTimestamp has one-second resolution
    newest = create(api, name="newest")
    other_project = create(api, OPS, project_id=PROJECT_B)
    names = {cr["metadata"]["uid"]: cr["metadata"]["name"] for cr in crs(cluster, namespace)}
    set_status(cluster, namespace, names[older[0]], {"phase": "Running"})
    set_status(cluster, namespace, names[older[1]], {"phase": "Succeeded"})
    read_job(api, older[0], lambda job: job["status"] == "Running")
    read_job(api, older[1], lambda job: job["status"] == "Succeeded")

    pages = [api.get("/v1/augmentation", headers=A, params={"limit": 2, "offset": o}).json()
             for o in (0, 2, 4)]
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert all(p["total"] == 5 and p["limit"] == 2 for p in pages)
    ids = [j["job_id"] for p in pages for j in p["items"]]
    assert ids[0] == newest and sorted(ids) == sorted([*older, newest])
    stamps = [j["created_at"] for p in pages for j in p["items"]]
    assert stamps == sorted(stamps, reverse=True)
    assert api.get("/v1/augmentation", headers=A).json()["limit"] == 20

    def ids_where(**params: Any) -> list[str]:
        r = api.get("/v1/augmentation", headers=params.pop("headers", A), params=params)
        assert r.status_code == 200, r.text
        return [j["job_id"] for j in r.json()["items"]]

    assert ids_where(status="Running") == [older[0]]
    assert ids_where(status="Succeeded") == [older[1]]
    assert sorted(ids_where(status="Pending")) == sorted([*older[2:], newest])
    assert ids_where(status="Failed") == []
    assert len(ids_where(headers=OPS)) == 6
    assert ids_where(headers=OPS, project_id=PROJECT_B) == [other_project]
    assert ids_where(headers=B) == [other_project]
    assert ids_where(project_id=PROJECT_A) == ids_where()

    for params in ({"project_id": PROJECT_B}, {"limit": 0}, {"limit": 101}, {"offset": -1},
                   {"status": "Sleeping"}):
        r = api.get("/v1/augmentation", headers=A, params=params)
        assert r.status_code == (403 if "project_id" in params else 422), (params, r.text)
        assert isinstance(r.json()["detail"], str)


# ---------- auth ----------
@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "wrong"}, {"X-Api-Key": ""}],
                         ids=["missing", "wrong", "empty"])
def test_missing_or_wrong_key_is_401(shared_api: TestClient, headers: dict[str, str]) -> None:
    job = uuid.uuid4()
    for method, path in (("POST", "/v1/augmentation"), ("GET", "/v1/augmentation"),
                         ("GET", f"/v1/augmentation/{job}"),
                         ("DELETE", f"/v1/augmentation/{job}")):
        r = shared_api.request(method, path, headers=headers,
                               json=SEED_BODY if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"].startswith("APIKey")
        assert r.json()["detail"] in ("invalid API key",
                                      "missing API key: send it in the X-Api-Key header")


def test_other_projects_are_403_on_create_and_404_on_read(api: TestClient,
                                                         cluster: EmbeddedCluster,
                                                         namespace: str) -> None:
    r = api.post("/v1/augmentation", headers=A, json={**SEED_BODY, "project_id": PROJECT_B})
    assert r.status_code == 403
    assert r.json() == {"detail": f"this API key may not use project {PROJECT_B}"}
    assert crs(cluster, namespace) == []

    job_id = create(api)
    missing = uuid.uuid4()
    for method in ("GET", "DELETE"):
        hidden = api.request(method, f"/v1/augmentation/{job_id}", headers=B)
        absent = api.request(method, f"/v1/augmentation/{missing}", headers=B)
        assert hidden.status_code == absent.status_code == 404
        # The same answer as for a job that does not exist: nothing is revealed.
        assert hidden.json()["detail"].replace(job_id, "X") == \
            absent.json()["detail"].replace(str(missing), "X")
    [cr] = crs(cluster, namespace)
    assert ANNOTATION_CANCEL not in cr["metadata"].get("annotations", {})


def test_generative_is_400_and_creates_nothing(shared_api: TestClient, cluster: EmbeddedCluster,
                                              module_namespace: str) -> None:
    r = shared_api.post("/v1/augmentation", headers=A,
                        json={**SEED_BODY, "augmentation_type": "generative"})
    assert r.status_code == 400
    assert r.json() == {"detail": "generative augmentation (Cosmos Transfer2.5) is currently "
                                  "disabled; use augmentation_type=deterministic"}
    assert crs(cluster, module_namespace) == []


# ---------- validation: the API and the CRD agree ----------
BASE = {"project_id": PROJECT_A, "dataset_id": "lerobot/pusht"}
# (case id, fields over BASE, fragment of the API's detail, fragment of the apiserver's
# refusal; None: the refusal must name the field, `spec.<camelCase field>`)
BAD_BODIES: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("copies-0", {"augment_copies": 0}, "augment_copies", None),
    ("copies-21", {"augment_copies": 21}, "augment_copies", None),
    ("copies-fraction", {"augment_copies": 2.5}, "augment_copies", None),
    ("copies-text", {"augment_copies": "three"}, "augment_copies", None),
    ("copies-bool", {"augment_copies": True}, "augment_copies: Input should be a valid integer",
     None),
    ("copies-numeric-text", {"augment_copies": "3"}, "augment_copies", None),
    ("brightness-min-low", {"augment_brightness_min": -51}, "augment_brightness_min", None),
    ("brightness-max-high", {"augment_brightness_max": 51}, "augment_brightness_max", None),
    ("contrast-min-low", {"augment_contrast_min": -51}, "augment_contrast_min", None),
    ("contrast-max-high", {"augment_contrast_max": 51}, "augment_contrast_max", None),
    ("color-temp-min-low", {"augment_color_temp_min": 1999}, "augment_color_temp_min", None),
    ("color-temp-min-high", {"augment_color_temp_min": 6501, "augment_color_temp_max": 9000},
     "augment_color_temp_min", None),
    ("color-temp-max-low", {"augment_color_temp_max": 3999}, "augment_color_temp_max", None),
    ("color-temp-max-high", {"augment_color_temp_max": 10001}, "augment_color_temp_max", None),
    ("brightness-min-gt-max", {"augment_brightness_min": 20, "augment_brightness_max": 10},
     "augment_brightness_min must be <= augment_brightness_max",
     "augment_brightness_min must be <= augment_brightness_max"),
    ("contrast-min-gt-max", {"augment_contrast_min": 20, "augment_contrast_max": 10},
     "augment_contrast_min must be <= augment_contrast_max",
     "augment_contrast_min must be <= augment_contrast_max"),
    ("color-temp-min-gt-max", {"augment_color_temp_min": 6000, "augment_color_temp_max": 5000},
     "augment_color_temp_min must be <= augment_color_temp_max",
     "augment_color_temp_min must be <= augment_color_temp_max"),
    ("noise-min-gt-max", {"augment_noise_sigma_min": 9, "augment_noise_sigma_max": 3},
     "augment_noise_sigma_min must be <= augment_noise_sigma_max",
     "augment_noise_sigma_min must be <= augment_noise_sigma_max"),
    ("blur-min-gt-max", {"augment_blur_sigma_min": 3, "augment_blur_sigma_max": 1},
     "augment_blur_sigma_min must be <= augment_blur_sigma_max",
     "augment_blur_sigma_min must be <= augment_blur_sigma_max"),
    ("occlusion-min-gt-max", {"augment_occlusion_area_min": 0.3,
                              "augment_occlusion_area_max": 0.1},
     "augment_occlusion_area_min must be <= augment_occlusion_area_max",
     "augment_occlusion_area_min must be <= augment_occlusion_area_max"),
    ("occlusion-area-zero", {"augment_occlusion_area_min": 0}, "augment_occlusion_area_min",
     None),
    ("output-is-source", {"output_dataset_id": "lerobot/pusht"},
     "output_dataset_id must differ from dataset_id", "output_dataset_id must differ"),
    ("transform-unknown", {"augment_transforms": "lighting,sparkle"}, "unknown transform", None),
    ("transform-case", {"augment_transforms": "Lighting"}, "unknown transform", None),
    ("transform-duplicate", {"augment_transforms": "noise,blur,noise"}, "more than once",
     "more than once"),
    ("transform-empty", {"augment_transforms": ""}, "augment_transforms", None),
    ("transform-empty-item", {"augment_transforms": "noise,,blur"}, "augment_transforms", None),
    ("type-unknown", {"augmentation_type": "magic"}, "augmentation_type", None),
    ("mode-unknown", {"augment_mode": "sideways"}, "augment_mode", None),
    ("dataset-mode-unknown", {"augment_dataset_mode": "replace"}, "augment_dataset_mode", None),
    ("name-too-long", {"name": "n" * 256}, "name", None),
    ("project-not-uuid", {"project_id": "project-7"}, "project_id", None),
    ("dataset-missing", {"dataset_id": None}, "dataset_id", None),
    ("dataset-bad-id", {"dataset_id": "no spaces/allowed here"}, "dataset_id", None),
    ("seed-negative", {"augment_seed": -1}, "augment_seed", None),
    ("seed-too-big", {"augment_seed": 2**31}, "augment_seed", None),
    ("cameras-empty-name", {"augment_cameras": [""]}, "augment_cameras", None),
    ("cameras-too-many", {"augment_cameras": [f"cam{i}" for i in range(33)]},
     "augment_cameras", None),
    ("secret-bad-name", {"hf_token_secret_name": "Bad_Name"}, "hf_token_secret_name", None),
    ("unknown-field", {"colour": "red"}, "colour", "colour"),
]


def bad_body(overrides: dict[str, Any]) -> dict[str, Any]:
    body = {**BASE, **overrides}
    return {k: v for k, v in body.items() if v is not None}  # None: leave the field out


@pytest.mark.parametrize(("overrides", "api_fragment", "cluster_fragment"),
                         [pytest.param(*case[1:], id=case[0]) for case in BAD_BODIES])
def test_api_and_crd_reject_the_same_bodies(shared_api: TestClient, cluster: EmbeddedCluster,
                                           module_namespace: str, overrides: dict[str, Any],
                                           api_fragment: str,
                                           cluster_fragment: str | None) -> None:
    body = bad_body(overrides)
    r = shared_api.post("/v1/augmentation", headers=A, json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and api_fragment in detail, detail

    manifest = cr_manifest("dry-run-check", camel_spec(body))
    result = cluster.kubectl("apply", "--dry-run=server", "-n", module_namespace, "-f", "-",
                             input=manifest, check=False)
    assert result.returncode != 0, f"the apiserver accepted {body}"
    # Refused for the same reason: the same message, or at least the same field.
    expected = cluster_fragment or f"spec.{next(iter(camel_spec(overrides)))}"
    assert expected in result.stderr, result.stderr
    assert crs(cluster, module_namespace) == []


def test_valid_bodies_pass_both(shared_api: TestClient, cluster: EmbeddedCluster,
                                module_namespace: str) -> None:
    """The control for the table above: the same path accepts a good body."""
    edge = {**BASE, "augment_copies": 20, "augment_brightness_min": -50,
            "augment_brightness_max": 50, "augment_color_temp_min": 6500,
            "augment_color_temp_max": 6500, "augment_transforms": "occlusion,lighting"}
    result = cluster.kubectl("apply", "--dry-run=server", "-n", module_namespace, "-f", "-",
                             input=cr_manifest("dry-run-check", camel_spec(edge)), check=False)
    assert result.returncode == 0, result.stderr
    assert crs(cluster, module_namespace) == []
    # The API accepts it too (checked last, so the table's namespace stays empty meanwhile).
    r = shared_api.post("/v1/augmentation", headers=A, json=edge)
    assert r.status_code == 201, r.text
    shared_api.delete(f"/v1/augmentation/{r.json()['job_id']}", headers=A)
    cluster.kubectl("delete", "augmentationjobs", "--all", "-n", module_namespace)


def test_spec_of_an_existing_job_is_immutable(api: TestClient, cluster: EmbeddedCluster,
                                             namespace: str) -> None:
    create(api)
    [cr] = crs(cluster, namespace)
    result = cluster.kubectl("patch", "augmentationjob", cr["metadata"]["name"], "-n", namespace,
                             "--type=merge", "-p", '{"spec": {"augmentCopies": 5}}', check=False)
    assert result.returncode != 0 and "spec is immutable" in result.stderr
    assert crs(cluster, namespace)[0]["spec"]["augmentCopies"] == 3


# ---------- idempotency ----------
def test_idempotency_key_returns_the_same_job(api: TestClient, cluster: EmbeddedCluster,
                                             namespace: str) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = api.post("/v1/augmentation", headers={**A, **key}, json=SEED_BODY)
    assert first.status_code == 201, first.text
    # The same request, spelled differently (defaults explicit): same job, 200.
    again = api.post("/v1/augmentation", headers={**A, **key},
                     json={**SEED_BODY, "augment_copies": 3, "augment_mode": "stacked"})
    assert again.status_code == 200, again.text
    assert again.json()["job_id"] == first.json()["job_id"]

    [cr] = crs(cluster, namespace)
    assert cr["metadata"]["name"] == idempotent_name(uuid.UUID(PROJECT_A), "order-42")
    assert cr["metadata"]["annotations"][ANNOTATION_IDEMPOTENCY] == "order-42"

    changed = api.post("/v1/augmentation", headers={**A, **key},
                       json={**SEED_BODY, "augment_copies": 4})
    assert changed.status_code == 409
    assert "different request body" in changed.json()["detail"]
    # Keys are per project: another project may use the same key for its own job.
    other = api.post("/v1/augmentation", headers={**OPS, **key},
                     json={**SEED_BODY, "project_id": PROJECT_B})
    assert other.status_code == 201 and other.json()["job_id"] != first.json()["job_id"]
    assert len(crs(cluster, namespace)) == 2

    bad = api.post("/v1/augmentation", headers={**A, "Idempotency-Key": "x" * 256},
                   json=SEED_BODY)
    assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["detail"]


# ---------- cancel ----------
def test_delete_requests_cancel_and_refuses_finished_jobs(api: TestClient,
                                                         cluster: EmbeddedCluster,
                                                         namespace: str) -> None:
    running = create(api, name="to cancel")
    r = api.delete(f"/v1/augmentation/{running}", headers=A)
    assert r.status_code == 202, r.text
    assert r.json()["job_id"] == running and r.json()["cancel_requested"] is True
    assert r.json()["status"] == "Pending"
    cr = cr_by_uid(cluster, namespace, running)
    assert cancel_requested(cr)  # by the rule the operator acts on
    assert api.delete(f"/v1/augmentation/{running}", headers=A).status_code == 202  # again: ok

    done = create(api, name="finished")
    set_status(cluster, namespace, cr_by_uid(cluster, namespace, done)["metadata"]["name"],
               {"phase": "Succeeded", "completionTime": "2025-01-02T03:04:05Z"})
    r = api.delete(f"/v1/augmentation/{done}", headers=A)
    assert r.status_code == 409
    assert r.json() == {"detail": f"job {done} has already finished (Succeeded); "
                                  "there is nothing to cancel"}
    annotations = cr_by_uid(cluster, namespace, done)["metadata"].get("annotations", {})
    assert ANNOTATION_CANCEL not in annotations
    job = read_job(api, done, lambda job: job["status"] == "Succeeded")
    assert job["completed_at"].startswith("2025-01-02")


def post_event(cluster: EmbeddedCluster, namespace: str, cr: dict[str, Any], reason: str,
               when: str) -> None:
    """A core v1 Event about `cr`, as the operator (kopf) posts one."""
    meta = cr["metadata"]
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:10]}"},
        "involvedObject": {"apiVersion": cr["apiVersion"], "kind": cr["kind"],
                           "name": meta["name"], "namespace": namespace, "uid": meta["uid"]},
        "type": "Normal", "reason": reason, "message": f"job is {reason}",
        "firstTimestamp": when, "lastTimestamp": when, "count": 1,
        "source": {"component": "augment-operator"},
    }))


def test_events_lists_the_events_about_that_job_only(api: TestClient, cluster: EmbeddedCluster,
                                                    namespace: str) -> None:
    mine, other = create(api, name="with events"), create(api, name="other")
    cr = cr_by_uid(cluster, namespace, mine)
    post_event(cluster, namespace, cr, "Running", "2025-01-02T03:05:00Z")
    post_event(cluster, namespace, cr, "Pending", "2025-01-02T03:04:00Z")
    post_event(cluster, namespace, cr_by_uid(cluster, namespace, other), "Failed",
               "2025-01-02T03:06:00Z")
    r = api.get(f"/v1/augmentation/{mine}/events", headers=A)
    assert r.status_code == 200, r.text
    assert [(e["reason"], e["message"], e["last_seen"]) for e in r.json()["items"]] == [
        ("Pending", "job is Pending", "2025-01-02T03:04:00Z"),
        ("Running", "job is Running", "2025-01-02T03:05:00Z")]
    assert api.get(f"/v1/augmentation/{mine}/events", headers=B).status_code == 404


# ---------- limits and documents ----------
def test_oversized_body_is_413(shared_api: TestClient, cluster: EmbeddedCluster,
                               module_namespace: str) -> None:
    r = shared_api.post("/v1/augmentation", headers=A,
                        json={**SEED_BODY, "name": "n" * (65 * 1024)})
    assert r.status_code == 413
    assert r.json() == {"detail": "request body is larger than the limit of 65536 bytes"}
    assert crs(cluster, module_namespace) == []


def test_openapi_command_documents_the_seed_contract() -> None:
    out = subprocess.run([sys.executable, "-m", "augment_cli.main", "openapi"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    doc = json.loads(out)
    schemas = doc["components"]["schemas"]
    spec = schemas["AugmentationSpec"]
    props = spec["properties"]
    assert set(spec["required"]) == {"project_id", "dataset_id"}
    assert props["project_id"]["format"] == "uuid"
    expected = {  # field: (default, minimum, maximum), as the seed publishes them
        "augment_copies": (3, 1, 20),
        "augment_brightness_min": (-15, -50, None),
        "augment_brightness_max": (15, None, 50),
        "augment_contrast_min": (-10, -50, None),
        "augment_contrast_max": (10, None, 50),
        "augment_color_temp_min": (4000, 2000, 6500),
        "augment_color_temp_max": (6500, 4000, 10000),
    }
    for field, (default, low, high) in expected.items():
        got = props[field]
        assert (got["default"], got.get("minimum"), got.get("maximum")) == (default, low, high)
    assert props["augment_transforms"]["default"] == "lighting"
    assert props["augmentation_type"]["default"] == "deterministic"
    assert props["augment_mode"]["default"] == "stacked"
    assert props["augment_dataset_mode"]["default"] == "copy"
    assert schemas["AugmentationType"]["enum"] == ["deterministic", "generative"]
    assert schemas["AugmentMode"]["enum"] == ["stacked", "independent"]
    assert schemas["DatasetMode"]["enum"] == ["copy", "inplace"]
    assert any(b.get("maxLength") == 255 for b in props["name"]["anyOf"])
    # Rules across fields, which JSON Schema cannot express: in the description and listed.
    for text in ("augment_brightness_min must be <= augment_brightness_max",
                 "output_dataset_id must differ from dataset_id"):
        assert text in spec["description"]
    assert {"fields": ["augment_color_temp_min", "augment_color_temp_max"],
            "rule": "augment_color_temp_min <= augment_color_temp_max",
            "message": "augment_color_temp_min must be <= augment_color_temp_max"} \
        in spec["x-cross-field-rules"]
    assert set(schemas["AugmentationResponse"]["required"]) == {"job_id", "status"}
    assert schemas["ErrorResponse"]["required"] == ["detail"]

    post = doc["paths"]["/v1/augmentation"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"] \
        == "#/components/schemas/AugmentationSpec"
    assert doc["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-Api-Key"
    assert {"201", "400", "401", "403", "409", "413", "422"} <= set(post["responses"])
    for status in ("400", "401", "403", "409", "413"):
        ref = post["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/ErrorResponse"
    item = doc["paths"]["/v1/augmentation/{job_id}"]
    assert {"401", "404"} <= set(item["get"]["responses"])
    assert {"202", "401", "404", "409"} <= set(item["delete"]["responses"])


# ---------- the real server ----------
@pytest.fixture
def served(cluster: EmbeddedCluster, crd: None, namespace: str, keys_file: Path,
           tmp_path: Path) -> Iterator[str]:
    """`augment api` as a process on a free port."""
    with api_process(cluster.kubeconfig, namespace, keys_file, tmp_path / "api.log") as url:
        yield url


def test_served_api_is_ready_and_idempotent_under_concurrency(
        served: str, cluster: EmbeddedCluster, namespace: str) -> None:
    wait_for(lambda: httpx.get(f"{served}/readyz").status_code == 200, timeout=15,
             interval=0.1, what="the API's watch cache to load")
    assert httpx.get(f"{served}/docs").status_code == 200

    def post(_: int) -> httpx.Response:
        return httpx.post(f"{served}/v1/augmentation", json=SEED_BODY, timeout=30,
                          headers={**A, "Idempotency-Key": "race"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 7 + [201], [r.text for r in responses]
    assert len({r.json()["job_id"] for r in responses}) == 1
    assert len(crs(cluster, namespace)) == 1

    # A chunked upload over the limit is cut off at the limit, not parsed.
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(70):
            yield b"z" * 1024
        yield b'"}'

    r = httpx.post(f"{served}/v1/augmentation", content=chunks(),
                   headers={**A, "Content-Type": "application/json"})
    assert r.status_code == 413
