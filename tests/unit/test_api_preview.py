"""GET /v1/augmentation/{id}/preview: the runner's contact sheet, read from the output
dataset on the local Hub server through the real huggingface_hub client.

The jobs come from a watch cache the test fills (tests/api_doubles.py); their status
records an output commit the test published on the Hub, as a runner would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from api_doubles import HEADERS, OPS, PROJECT, ExplodingStore, job_cr, make_client, synced_cache
from fastapi.testclient import TestClient

from augment_api.preview import PreviewCache
from augment_dev.hub import LocalHub
from augment_runner.preview import PreviewCollector
from augment_spec.contract import (
    OUTPUT_PREVIEW_MEDIA_TYPE,
    OUTPUT_PREVIEW_PATH,
    STATUS_OUTPUT_DATASET_ID,
    STATUS_OUTPUT_REVISION,
)

HUB_TOKEN = "hf_preview_reader"
OUTPUT = "lab/pusht-augmented"
OTHER_PROJECT = "5a0d7c1e-2b3f-4e5a-8c9d-0e1f2a3b4c5d"


def contact_sheet(path: Path) -> bytes:
    """A sheet as the runner makes it: one source row, one augmented copy."""
    collector = PreviewCollector("observation.images.top", copies=1)
    collector.start_episode(0, 4, ["lighting"])
    frames = np.full((4, 24, 32, 3), 90, dtype=np.uint8)
    collector.add_source(0, "observation.images.top", frames, 0)
    collector.add_copy(0, "observation.images.top", 0, frames // 2, 0)
    return collector.save(path).read_bytes()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub", {HUB_TOKEN: "lab"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


@pytest.fixture
def sheet(tmp_path: Path) -> bytes:
    return contact_sheet(tmp_path / OUTPUT_PREVIEW_PATH)


def finished(project: str, revision: str | None, phase: str = "Succeeded") -> dict[str, Any]:
    cr = job_cr(project, phase)
    cr["status"][STATUS_OUTPUT_DATASET_ID] = OUTPUT
    if revision is not None:
        cr["status"][STATUS_OUTPUT_REVISION] = revision
    return cr


def client_for(*crs: dict[str, Any], token_file: Path | None) -> TestClient:
    return make_client(ExplodingStore(), cache=synced_cache(*crs), hub_token_file=token_file)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "hub-token"
    path.write_text(HUB_TOKEN + "\n")  # as a Secret written by hand often ends
    return path


def preview_url(cr: dict[str, Any]) -> str:
    return f"/v1/augmentation/{cr['metadata']['uid']}/preview"


def test_serves_the_sheet_of_the_published_commit(hub: LocalHub, sheet: bytes,
                                                  token_file: Path) -> None:
    revision = hub.seed(OUTPUT, {OUTPUT_PREVIEW_PATH: sheet}, private=True)
    # The branch moves on (a later job writes the same dataset): the job's commit is read.
    hub.seed(OUTPUT, {OUTPUT_PREVIEW_PATH: b"\x89PNG a later sheet"})
    job = finished(PROJECT, revision)
    with client_for(job, token_file=token_file) as c:
        r = c.get(preview_url(job), headers=HEADERS)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == OUTPUT_PREVIEW_MEDIA_TYPE
        assert r.content == sheet
        assert r.headers["etag"] == f'"{revision}"'
        reads = len(hub.calls)
        again = c.get(preview_url(job), headers=HEADERS)
        assert again.content == sheet and len(hub.calls) == reads, "served from the cache"
        unchanged = c.get(preview_url(job), headers={**HEADERS, "If-None-Match": r.headers["etag"]})
        assert unchanged.status_code == 304 and unchanged.content == b""


def test_other_projects_jobs_are_404_like_the_other_reads(hub: LocalHub, sheet: bytes,
                                                          token_file: Path) -> None:
    job = finished(OTHER_PROJECT, hub.seed(OUTPUT, {OUTPUT_PREVIEW_PATH: sheet}))
    with client_for(job, token_file=token_file) as c:
        hidden = c.get(preview_url(job), headers=HEADERS)
        assert hidden.status_code == 404
        assert hidden.json() == c.get(f"/v1/augmentation/{job['metadata']['uid']}",
                                      headers=HEADERS).json()
        assert c.get(preview_url(job), headers=OPS).content == sheet
        assert c.get(preview_url(job)).status_code == 401


@pytest.mark.parametrize(("phase", "detail"), [
    ("Running", "has no preview yet: its output is not published (Running); try again "
                "when it is"),
    ("Failed", "has no preview: it ended Failed without publishing its output"),
])
def test_a_job_without_published_output_is_409(hub: LocalHub, phase: str, detail: str) -> None:
    job = finished(PROJECT, None, phase)
    with client_for(job, token_file=None) as c:
        r = c.get(preview_url(job), headers=HEADERS)
    assert r.status_code == 409
    assert r.json() == {"detail": f"augmentation job {job['metadata']['uid']} {detail}"}
    assert hub.calls == []


def test_an_output_without_a_sheet_is_404(hub: LocalHub, token_file: Path) -> None:
    revision = hub.seed(OUTPUT, {"README.md": b"# no preview here\n"})
    job = finished(PROJECT, revision)
    with client_for(job, token_file=token_file) as c:
        r = c.get(preview_url(job), headers=HEADERS)
    assert r.status_code == 404
    assert r.json() == {"detail": f"the output dataset '{OUTPUT}' at revision {revision} "
                                  f"has no {OUTPUT_PREVIEW_PATH}"}


def test_a_private_output_without_a_token_is_404(hub: LocalHub, sheet: bytes,
                                                 tmp_path: Path) -> None:
    revision = hub.seed(OUTPUT, {OUTPUT_PREVIEW_PATH: sheet}, private=True)
    job = finished(PROJECT, revision)
    # The optional Secret was never made: its file is absent, reads are anonymous.
    with client_for(job, token_file=tmp_path / "absent-secret") as c:
        r = c.get(preview_url(job), headers=HEADERS)
    assert r.status_code == 404
    assert r.json() == {"detail": f"the output dataset '{OUTPUT}' at revision {revision} is "
                                  "not on the Hub, or is private and the API has no Hub token "
                                  "to read it (api.hubToken)"}


def test_a_private_output_the_token_may_not_read_is_404(hub: LocalHub, sheet: bytes,
                                                        tmp_path: Path) -> None:
    hub.tokens["hf_other_user"] = "someone-else"
    revision = hub.seed(OUTPUT, {OUTPUT_PREVIEW_PATH: sheet}, private=True)
    job = finished(PROJECT, revision)
    token_file = tmp_path / "hub-token"
    token_file.write_text("hf_other_user")
    with client_for(job, token_file=token_file) as c:
        r = c.get(preview_url(job), headers=HEADERS)
    assert r.status_code == 404
    assert r.json() == {"detail": f"the output dataset '{OUTPUT}' at revision {revision} is "
                                  "not on the Hub, or the API's Hub token may not read it"}


def test_a_token_the_hub_rejects_is_502_without_the_token(hub: LocalHub, sheet: bytes,
                                                          tmp_path: Path) -> None:
    revision = hub.seed(OUTPUT, {OUTPUT_PREVIEW_PATH: sheet}, private=True)
    job = finished(PROJECT, revision)
    token_file = tmp_path / "hub-token"
    token_file.write_text("hf_revoked_token")
    with client_for(job, token_file=token_file) as c:
        r = c.get(preview_url(job), headers=HEADERS)
    assert r.status_code == 502
    assert r.json() == {"detail": "the Hub rejected the API's Hub token (401) reading the "
                                  f"preview of dataset '{OUTPUT}' at revision {revision}: "
                                  "check the Secret it comes from"}


@pytest.mark.parametrize("content", ["-----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN\n",
                                     "hf_t\u00f6ken"])
def test_a_malformed_token_is_502_without_a_byte_of_it(hub: LocalHub, sheet: bytes,
                                                       tmp_path: Path, content: str) -> None:
    revision = hub.seed(OUTPUT, {OUTPUT_PREVIEW_PATH: sheet}, private=True)
    job = finished(PROJECT, revision)
    token_file = tmp_path / "hub-token"
    token_file.write_text(content)
    with client_for(job, token_file=token_file) as c:
        r = c.get(preview_url(job), headers=HEADERS)
    assert r.status_code == 502
    assert r.json() == {"detail": "the API's Hub token is malformed: check the Secret it "
                                  "comes from (api.hubToken)"}


def test_a_failing_hub_is_502_without_the_token(hub: LocalHub, sheet: bytes,
                                                token_file: Path) -> None:
    revision = hub.seed(OUTPUT, {OUTPUT_PREVIEW_PATH: sheet}, private=True)
    job = finished(PROJECT, revision)
    hub.fail_next(r"preview\.png", status=500, times=100)
    with client_for(job, token_file=token_file) as c:
        r = c.get(preview_url(job), headers=HEADERS)
    assert r.status_code == 502
    assert r.json() == {"detail": f"the Hub failed to serve the preview of dataset '{OUTPUT}' "
                                  f"at revision {revision} (500)"}
    assert HUB_TOKEN not in r.text


def test_an_unreachable_hub_is_502(monkeypatch: pytest.MonkeyPatch, token_file: Path) -> None:
    from api_doubles import closed_port

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    job = finished(PROJECT, "0" * 40)
    with client_for(job, token_file=token_file) as c:
        r = c.get(preview_url(job), headers=HEADERS)
    assert r.status_code == 502
    assert r.json()["detail"].startswith("the Hub could not be reached to read the preview")


def test_the_cache_is_bounded_in_entries_and_bytes() -> None:
    cache = PreviewCache(entries=2, max_bytes=10)
    cache.put(("a", "1"), b"1234")
    cache.put(("b", "1"), b"1234")
    assert cache.get(("a", "1")) == b"1234"  # now the most recently used
    cache.put(("c", "1"), b"12")  # a third entry: the least recently used (b) goes
    assert cache.get(("b", "1")) is None and cache.get(("a", "1")) == b"1234"
    cache.put(("d", "1"), b"12345678")  # over 10 bytes together: the oldest go
    assert cache.get(("a", "1")) is None and cache.get(("c", "1")) is None
    assert cache.size == 8
    cache.put(("e", "1"), b"x" * 11)  # larger than the whole cache: not kept
    assert cache.get(("e", "1")) is None and cache.get(("d", "1")) == b"12345678"


def test_the_openapi_document_describes_the_png() -> None:
    with make_client(ExplodingStore()) as c:
        operation = c.get("/openapi.json").json()["paths"][
            "/v1/augmentation/{job_id}/preview"]["get"]
    assert list(operation["responses"]["200"]["content"]) == [OUTPUT_PREVIEW_MEDIA_TYPE]
    assert {"404", "409", "502"} <= set(operation["responses"])
    assert operation["responses"]["409"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/ErrorResponse"}


def test_the_job_view_names_the_published_commit() -> None:
    job = finished(PROJECT, "a" * 40)
    with client_for(job, token_file=None) as c:
        view = c.get(f"/v1/augmentation/{job['metadata']['uid']}", headers=HEADERS).json()
    assert view["output_revision"] == "a" * 40
    assert str(uuid.UUID(view["job_id"])) == job["metadata"]["uid"]
