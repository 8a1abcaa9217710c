"""The dashboard's static files (/ui) and the events endpoint it reads, without a cluster.
The dashboard in a real browser against the real stack: tests/e2e/test_dashboard.py."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import pytest
from api_doubles import HEADERS, PROJECT, ExplodingStore, job_cr, make_client, synced_cache

from augment_api.dashboard import CONTENT_SECURITY_POLICY, UI_DIR, UI_FILES

OTHER_PROJECT = "9e6b2f4a-1c3d-4e5f-8a7b-6c5d4e3f2a1b"


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, and the text inside <script>s."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data.strip()


def page_tags() -> Tags:
    parser = Tags()
    parser.feed((UI_DIR / "index.html").read_text())
    return parser


@pytest.fixture
def client() -> Any:
    return make_client(ExplodingStore())


def test_every_file_of_the_dashboard_is_in_the_package() -> None:
    assert sorted(p.name for p in UI_DIR.iterdir()) == sorted(UI_FILES)


def test_ui_redirects_to_the_folder_whose_relative_urls_the_page_uses(client: Any) -> None:
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code in (301, 307) and r.headers["location"].endswith("/ui/")


@pytest.mark.parametrize("path, media_type", [
    ("/ui/", "text/html"), ("/ui/index.html", "text/html"),
    ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css"),
    ("/ui/favicon.svg", "image/svg+xml"),
])
def test_ui_files_are_served_without_a_key_under_the_security_policy(
        client: Any, path: str, media_type: str) -> None:
    r = client.get(path)  # the page is public; what it shows needs the key
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(media_type)
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"


def test_ui_files_are_read_only(client: Any) -> None:
    r = client.post("/ui/app.js")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert r.json() == {"detail": "Method Not Allowed"}
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_a_missing_ui_file_is_a_404_and_nothing_outside_the_folder_is_served(
        client: Any) -> None:
    assert client.get("/ui/nope.js").status_code == 404
    assert client.get("/ui/%2e%2e/dashboard.py").status_code == 404


def test_the_policy_allows_only_this_origin_and_no_inline_code() -> None:
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["img-src"] == "'self' blob:"  # the preview, fetched with the key
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_the_page_has_no_inline_script_style_or_handler() -> None:
    tags = page_tags()
    scripts = [attrs for tag, attrs in tags.tags if tag == "script"]
    assert scripts == [{"src": "app.js", "defer": None}] and tags.script_text == ""
    assert not any(tag == "style" for tag, _ in tags.tags)
    for tag, attrs in tags.tags:
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)


def test_the_page_loads_only_files_of_the_dashboard() -> None:
    linked = {attrs.get("src") or attrs.get("href") for tag, attrs in page_tags().tags
              if tag in ("script", "link")}
    assert linked == {"app.js", "style.css", "favicon.svg"} and linked <= set(UI_FILES)


def test_the_script_writes_no_server_data_as_html() -> None:
    script = (UI_DIR / "app.js").read_text()
    sinks = re.findall(r"\.(?:inner|outer)HTML|insertAdjacentHTML|document\.write|\beval\(|"
                       r"new Function", script)
    assert sinks == []
    assert "sessionStorage" in script and "localStorage" not in script


# ---- GET /v1/augmentation/{id}/events ----
class EventStore:
    """Stands in for JobStore's events_of: the Events as the apiserver lists them."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.asked: list[str] = []

    def events_of(self, cr: dict[str, Any]) -> list[dict[str, Any]]:
        self.asked.append(cr["metadata"]["uid"])
        return self.events


def k8s_event(reason: str, last: str, kind: str = "Normal", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "reason": reason, "message": f"{reason}!", "firstTimestamp": last,
            "lastTimestamp": last, **extra}


def test_events_of_a_job_come_oldest_first() -> None:
    cr = job_cr(PROJECT, phase="Failed")
    store = EventStore([
        k8s_event("Failed", "2025-01-02T03:06:00Z", kind="Warning"),
        k8s_event("Running", "2025-01-02T03:05:00Z", count=2),
        # an events.k8s.io-style Event: eventTime only
        {"type": "Normal", "reason": "Pending", "eventTime": "2025-01-02T03:04:06.000000Z"},
    ])
    client = make_client(store, cache=synced_cache(cr))
    r = client.get(f"/v1/augmentation/{cr['metadata']['uid']}/events", headers=HEADERS)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(e["reason"], e["type"], e["count"]) for e in items] == [
        ("Pending", "Normal", 1), ("Running", "Normal", 2), ("Failed", "Warning", 1)]
    assert items[0]["first_seen"] == items[0]["last_seen"] == "2025-01-02T03:04:06Z"
    assert items[0]["message"] == "" and items[2]["message"] == "Failed!"
    assert store.asked == [cr["metadata"]["uid"]]


def test_events_of_one_second_are_ordered_by_their_event_time() -> None:
    cr = job_cr(PROJECT, phase="Running")
    second = "2025-01-02T03:05:00Z"
    store = EventStore([
        k8s_event("Running", second, eventTime="2025-01-02T03:05:00.900000Z"),
        k8s_event("Pending", second, eventTime="2025-01-02T03:05:00.100000Z"),
    ])
    client = make_client(store, cache=synced_cache(cr))
    r = client.get(f"/v1/augmentation/{cr['metadata']['uid']}/events", headers=HEADERS)
    assert [e["reason"] for e in r.json()["items"]] == ["Pending", "Running"]


def test_events_of_another_projects_job_are_a_404_that_asks_kubernetes_nothing() -> None:
    cr = job_cr(OTHER_PROJECT)
    client = make_client(ExplodingStore(), cache=synced_cache(cr))
    r = client.get(f"/v1/augmentation/{cr['metadata']['uid']}/events", headers=HEADERS)
    assert r.status_code == 404
    assert client.get(f"/v1/augmentation/{cr['metadata']['uid']}/events").status_code == 401


def test_the_events_endpoint_is_in_the_openapi_document(client: Any) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    operation = paths["/v1/augmentation/{job_id}/events"]["get"]
    assert operation["summary"] == "List Job Events"
    assert {"200", "401", "404", "503"} <= set(operation["responses"])
    assert not any(path.startswith("/ui") for path in paths)
