"""`augment jobs` against the real API app, served by uvicorn on localhost.

The API's collaborators are doubles (tests/api_doubles.py has the pattern): `Operator`
stands in for the apiserver the store writes to and for the operator that moves jobs
along, feeding the watch cache the API reads as the informer would. Each read of a job
can move it one step along a script, so `watch` sees every step, whatever the machine's
load. The end-to-end run on the embedded cluster is tests/e2e/test_jobs_client.py.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import uvicorn
from api_doubles import EXAMPLE_KEYS, PROJECT, closed_port, job_cr

from augment_api.app import create_app
from augment_api.auth import load_key_ring
from augment_api.cache import Entry, JobCache
from augment_api.errors import Conflict
from augment_api.settings import Settings
from augment_api.store import Created
from augment_cli import jobs
from augment_cli.client import ENV_CONFIG, ENV_KEY, ENV_URL, ApiClient
from augment_cli.client import redact as client_redact
from augment_cli.main import main as augment
from augment_runner.cli import _build_spec
from augment_runner.cli import add_arguments as add_run_arguments
from augment_spec.contract import (
    ANNOTATION_CANCEL,
    CANCEL_REQUESTED,
    TERMINAL_PHASES,
    phase_of,
    progress_status,
)
from augment_spec.crd import cr_spec_from_spec
from augment_spec.model import AugmentationSpec

KEY = "dev-team-a-key"  # examples/api-keys.yaml: may use PROJECT only


class ScriptedCache(JobCache):
    """The watch cache, where a job given a script takes its next status on each read."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, list[dict[str, Any]]] = {}

    def entry(self, uid: UUID) -> Entry | None:
        script = self.scripts.get(str(uid))
        if script:
            found = super().entry(uid)
            assert found is not None
            cr = copy.deepcopy(found.cr)
            cr["status"] = script.pop(0)
            self.apply({"type": "MODIFIED", "object": cr})
        return super().entry(uid)


class Operator:
    """The apiserver (create, cancel) and the operator (status), as the API sees them."""

    def __init__(self) -> None:
        self.cache = ScriptedCache()
        self.cache.replace([], listed_since=time.monotonic())
        self.created: list[tuple[AugmentationSpec, str | None]] = []

    def create(self, spec: AugmentationSpec, *, created_by: str,
               idempotency_key: str | None = None) -> Created:
        cr = job_cr(spec.project_id, name=f"aug-{len(self.created)}")
        cr["spec"] = cr_spec_from_spec(spec)
        self.created.append((spec, idempotency_key))
        self.cache.apply({"type": "ADDED", "object": cr})
        return Created(cr, created=True)

    def request_cancel(self, cr: dict[str, Any]) -> dict[str, Any]:
        if phase_of(cr) in TERMINAL_PHASES:
            raise Conflict(f"job {cr['metadata']['uid']} has already finished")
        cr = copy.deepcopy(cr)
        cr["metadata"]["annotations"] = {ANNOTATION_CANCEL: CANCEL_REQUESTED}
        self.cache.apply({"type": "MODIFIED", "object": cr})
        return cr

    def add(self, phase: str | None = None, project: str = PROJECT, **status: Any) -> str:
        cr = job_cr(project, phase)
        cr["status"] = {**(cr.get("status") or {}), **status}
        self.cache.apply({"type": "ADDED", "object": cr})
        return str(cr["metadata"]["uid"])

    def script(self, uid: str, *statuses: dict[str, Any]) -> None:
        self.cache.scripts[uid] = list(statuses)


@dataclass
class Api:
    url: str
    operator: Operator


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    operator = Operator()
    app = create_app(Settings(rate_limit_per_s=0), store=operator,
                     keys=load_key_ring(EXAMPLE_KEYS), cache=operator.cache)
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv(ENV_URL, url)
    monkeypatch.setenv(ENV_KEY, KEY)
    monkeypatch.setenv(ENV_CONFIG, str(tmp_path / "no-config.yaml"))
    yield Api(url, operator)
    server.should_exit = True
    thread.join(timeout=10)


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*argv: str) -> Ran:
        code = augment(["jobs", *argv])
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)
    return run


def step(phase: str, done: int = 0, total: int = 4, message: str | None = None,
         **more: Any) -> dict[str, Any]:
    status = {"phase": phase, **progress_status(done, total), **more}
    if message:
        status["message"] = message
    return status


def described(text: str) -> dict[str, str]:
    """`get`'s `field: value` lines."""
    return {name: value.strip() for name, value in
            (line.split(":", 1) for line in text.splitlines())}


# ---------------------------------------------------------------- submit

SPEC_FLAGS = ["--transforms", "noise,blur", "--mode", "independent", "--copies", "4",
              "--seed", "9", "--cameras", "top, wrist,", "--revision", "v1",
              "--noise-sigma-max", "7.5", "--grey-cameras"]


def test_submit_sends_the_flags_augment_run_takes(api: Api, run: Any) -> None:
    ran = run("submit", "--project-id", PROJECT, "--dataset", "lab/pick", "--name", "pick",
              "--push-to", "lab/pick-aug", *SPEC_FLAGS)
    assert ran.code == 0, ran.err
    ((sent, idempotency_key),) = api.operator.created
    # `augment run` with the same flags makes the same spec, field for field.
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    local = _build_spec({"project_id": PROJECT, "name": "pick"},
                        parser.parse_args(["--dataset", "lab/pick", "--push-to", "lab/pick-aug",
                                           *SPEC_FLAGS]), "lab/pick", None)
    assert sent == local
    assert sent.augment_cameras == ["top", "wrist"] and sent.source_revision == "v1"
    assert idempotency_key is not None  # a retried submit cannot make a second job
    header, row = ran.out.splitlines()
    assert header.split() == ["JOB", "ID", "STATUS", "MESSAGE"]
    assert row.split()[1:] == ["Pending", "augmentation", "job", "created"]


def test_submit_json_is_the_apis_answer_and_the_config_gives_the_project(
        api: Api, run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"project_id: {PROJECT}\n")
    monkeypatch.setenv(ENV_CONFIG, str(config))
    ran = run("submit", "--dataset", "lab/pick", "--output", "json",
              "--idempotency-key", "pick-1")
    assert ran.code == 0, ran.err
    answer = json.loads(ran.out)
    assert answer["status"] == "Pending" and UUID(answer["job_id"])
    ((sent, idempotency_key),) = api.operator.created
    assert str(sent.project_id) == PROJECT and idempotency_key == "pick-1"


@pytest.mark.parametrize(("argv", "error"), [
    (["--copies", "0"], "augment_copies: Input should be greater than or equal to 1"),
    (["--brightness-min", "10", "--brightness-max", "5"],
     "augment_brightness_min must be <= augment_brightness_max"),
])
def test_a_bad_spec_is_refused_before_anything_is_sent(api: Api, run: Any, argv: list[str],
                                                       error: str) -> None:
    ran = run("submit", "--project-id", PROJECT, "--dataset", "lab/pick", *argv)
    assert ran.code == jobs.EXIT_USAGE
    assert ran.err == f"augment jobs submit: {error}\n"
    assert api.operator.created == []


def test_submit_without_a_project_says_where_to_give_one(api: Api, run: Any) -> None:
    ran = run("submit", "--dataset", "lab/pick")
    assert ran.code == jobs.EXIT_USAGE
    assert "pass --project-id or set project_id in the config file" in ran.err


def test_another_projects_submit_is_the_apis_one_line_403(api: Api, run: Any) -> None:
    other = str(uuid.uuid4())
    ran = run("submit", "--project-id", other, "--dataset", "lab/pick")
    assert ran.code == jobs.EXIT_ERROR and ran.out == ""
    assert ran.err == (f"augment jobs submit: this API key may not use project {other} "
                       "(HTTP 403)\n")


# ---------------------------------------------------------------- list, get, cancel

def test_list_prints_a_table_and_json(api: Api, run: Any) -> None:
    running = api.operator.add("Running", **progress_status(1, 4))
    api.operator.add("Succeeded", **progress_status(4, 4, finished=True))
    api.operator.add("Running", project=str(uuid.uuid4()))  # not this key's project
    ran = run("list")
    assert ran.code == 0, ran.err
    header, *rows = ran.out.splitlines()
    assert header.split() == ["JOB", "ID", "PHASE", "PROGRESS", "DATASET", "AGE"]
    assert len(rows) == 2
    assert [running, "Running", "25%", "(1/4", "episodes)", "lerobot/pusht"] in \
        [row.split()[:-1] for row in rows]
    only = json.loads(run("list", "--status", "Running", "-o", "json").out)
    assert [job["job_id"] for job in only["items"]] == [running] and only["total"] == 1


def test_list_says_how_to_see_the_next_page(api: Api, run: Any) -> None:
    for _ in range(3):
        api.operator.add("Pending")
    ran = run("list", "--limit", "2")
    assert ran.out.splitlines()[-1] == "(1 more: --offset 2)"


def test_get_describes_the_job(api: Api, run: Any) -> None:
    uid = api.operator.add("Failed", message="the runner ran out of memory (limit 8Gi)",
                           outputDatasetId="lab/out", **progress_status(2, 4))
    ran = run("get", uid)
    assert ran.code == 0, ran.err
    lines = described(ran.out)
    assert lines["job id"] == uid
    assert lines["phase"] == "Failed"
    assert lines["progress"] == "50% (2/4 episodes)"
    assert lines["message"] == "the runner ran out of memory (limit 8Gi)"
    assert lines["output"] == "lab/out"
    assert json.loads(run("get", uid, "--output", "json").out)["job_id"] == uid


def test_get_of_an_unknown_job_is_a_one_line_404(api: Api, run: Any) -> None:
    missing = str(uuid.uuid4())
    ran = run("get", missing)
    assert ran.code == jobs.EXIT_ERROR
    assert ran.err == f"augment jobs get: augmentation job {missing} not found (HTTP 404)\n"


def test_get_preview_before_the_output_is_published_is_the_apis_409(
        api: Api, run: Any, tmp_path: Path) -> None:
    uid = api.operator.add("Running")
    ran = run("get", uid, "--preview", str(tmp_path / "p.png"))
    assert ran.code == jobs.EXIT_ERROR
    assert ran.err.endswith("has no preview yet: its output is not published (Running); try "
                            "again when it is (HTTP 409)\n")
    assert not (tmp_path / "p.png").exists()


def test_cancel_then_cancel_a_finished_job(api: Api, run: Any) -> None:
    uid = api.operator.add("Running")
    ran = run("cancel", uid)
    assert ran.code == 0, ran.err
    assert ran.out == f"cancel requested for {uid} (Running)\n"
    assert json.loads(run("get", uid, "-o", "json").out)["cancel_requested"] is True
    done = api.operator.add("Succeeded")
    refused = run("cancel", done)
    assert refused.code == jobs.EXIT_ERROR
    assert refused.err == f"augment jobs cancel: job {done} has already finished (HTTP 409)\n"


# ---------------------------------------------------------------- watch

def test_watch_follows_the_job_to_success(api: Api, run: Any) -> None:
    uid = api.operator.add()
    api.operator.script(uid, step("Pending", 0, 0, "waiting for a GPU node"),
                        step("Running", 1), step("Running", 1), step("Running", 3),
                        step("Succeeded", 4, message="augmented 4 episodes"))
    ran = run("watch", uid, "--interval", "0.01", "--timeout", "60")
    assert ran.code == jobs.EXIT_OK, ran.err
    # Not a terminal: one line per change, never the same line twice.
    assert ran.err.splitlines() == [
        f"[{'-' * 30}]   0%  0 episodes  Pending  waiting for a GPU node",
        f"[{'#' * 7}{'-' * 23}]  25%  1/4 episodes  Running",
        f"[{'#' * 22}{'-' * 8}]  75%  3/4 episodes  Running",
        f"[{'#' * 30}] 100%  4/4 episodes  Succeeded  augmented 4 episodes",
    ]
    assert described(ran.out)["phase"] == "Succeeded"


@pytest.mark.parametrize(("phase", "code"), [("Failed", jobs.EXIT_JOB_FAILED),
                                             ("Cancelled", jobs.EXIT_JOB_CANCELLED)])
def test_watch_exits_non_zero_when_the_job_does_not_succeed(api: Api, run: Any, phase: str,
                                                            code: int) -> None:
    uid = api.operator.add()
    api.operator.script(uid, step("Running", 1), step(phase, 1, message="stopped"))
    ran = run("watch", uid, "--interval", "0.01", "--timeout", "60", "-o", "json")
    assert ran.code == code
    assert json.loads(ran.out)["status"] == phase


def test_watch_gives_up_after_its_timeout(api: Api, run: Any) -> None:
    uid = api.operator.add("Running")
    ran = run("watch", uid, "--interval", "0.01", "--timeout", "0.05")
    assert ran.code == jobs.EXIT_WATCH_TIMEOUT
    assert ran.err.splitlines()[-1] == \
        f"augment jobs watch: job {uid} is still Running after 0.05 s"


def test_submit_watch_follows_the_new_job(api: Api, run: Any) -> None:
    original = api.operator.create

    def create_and_script(spec: AugmentationSpec, **kwargs: Any) -> Created:
        created = original(spec, **kwargs)
        api.operator.script(created.cr["metadata"]["uid"], step("Running", 2),
                            step("Succeeded", 4))
        return created

    api.operator.create = create_and_script
    ran = run("submit", "--project-id", PROJECT, "--dataset", "lab/pick", "--watch",
              "--interval", "0.01")
    assert ran.code == 0, ran.err
    assert ran.err.splitlines()[-1].endswith("Succeeded")


def test_the_bar_redraws_one_line_on_a_terminal() -> None:
    class Terminal:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    terminal = Terminal()
    bar = jobs.ProgressBar(terminal)
    for done in (1, 1, 2):
        bar.update({"status": "Running", "progress": {"percent": 25 * done,
                                                      "episodes_done": done,
                                                      "episodes_total": 4}})
    bar.close()
    assert terminal.text.count("\r") == 2 and terminal.text.endswith("\n")
    assert terminal.text.count("\n") == 1


# ---------------------------------------------------------------- settings and errors

def test_flags_win_over_the_environment_over_the_config_file(
        api: Api, run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"api_url: http://127.0.0.1:{closed_port()}\napi_key: dev-ops-key\n")
    monkeypatch.setenv(ENV_CONFIG, str(config))
    other = api.operator.add("Running", project=str(uuid.uuid4()))
    monkeypatch.delenv(ENV_URL)
    assert "cannot reach the API" in run("list").err  # the file's address
    monkeypatch.setenv(ENV_URL, api.url)  # the environment's address, the file's key
    monkeypatch.delenv(ENV_KEY)
    assert other in run("list").out  # the ops key sees every project
    monkeypatch.setenv(ENV_KEY, "dev-ops-key")
    assert other not in run("list", "--api-key", KEY).out  # the flag's key


def test_a_wrong_key_is_a_one_line_401_that_never_shows_the_key(api: Api, run: Any,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.setenv(ENV_KEY, "wrong-secret-key")
    ran = run("list")
    assert ran.code == jobs.EXIT_ERROR and ran.out == ""
    assert len(ran.err.splitlines()) == 1 and ran.err.endswith("(HTTP 401)\n")
    assert "wrong-secret-key" not in ran.err


def test_an_unreachable_api_is_one_line(run: Any, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv(ENV_CONFIG, str(tmp_path / "none.yaml"))
    ran = run("get", str(uuid.uuid4()), "--api-url", url, "--api-key", "k")
    assert ran.code == jobs.EXIT_ERROR
    assert ran.err.startswith(f"augment jobs get: cannot reach the API at {url}: ")
    assert len(ran.err.splitlines()) == 1


@pytest.mark.parametrize(("config", "error"), [
    (None, "no API address: pass --api-url, set AUGMENT_API_URL or api_url in"),
    ("api_url: http://x\napi_token: k\n", "api_token: Extra inputs are not permitted"),
    ("- a list\n", "must be a mapping of settings"),
])
def test_missing_or_wrong_settings_are_usage_errors(run: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    config: str | None, error: str) -> None:
    path = tmp_path / "config.yaml"
    if config is not None:
        path.write_text(config)
    monkeypatch.setenv(ENV_CONFIG, str(path))
    monkeypatch.delenv(ENV_URL, raising=False)
    ran = run("list")
    assert ran.code == jobs.EXIT_USAGE
    assert error in ran.err and len(ran.err.splitlines()) == 1


def test_the_default_config_file_is_under_xdg_config_home(run: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    monkeypatch.delenv(ENV_URL, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert str(tmp_path / "augment" / "config.yaml") in run("list").err


# ---------------------------------------------------------------- a client install

CLIENT_MODULES = [Path(jobs.__file__), Path(jobs.__file__).with_name("client.py")]


@pytest.mark.parametrize("path", CLIENT_MODULES, ids=lambda p: p.name)
def test_the_client_imports_no_component_but_the_spec(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported.isdisjoint({"augment_api", "augment_runner", "augment_operator",
                                "fastapi", "starlette", "uvicorn", "kubernetes"})


def test_the_client_runs_without_the_server_packages(api: Api) -> None:
    """`augment jobs` where fastapi, uvicorn, kubernetes and huggingface_hub are absent."""
    uid = api.operator.add("Running")
    script = ("import sys\n"
              "for name in ('fastapi', 'starlette', 'uvicorn', 'kubernetes', 'huggingface_hub',"
              " 'numpy', 'augment_api', 'augment_runner', 'augment_operator'):\n"
              "    sys.modules[name] = None\n"
              "from augment_cli.main import main\n"
              f"sys.exit(main(['jobs', 'get', '{uid}']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ), timeout=60)
    assert result.returncode == 0, result.stderr
    assert uid in result.stdout


@pytest.mark.parametrize(("url", "error"), [
    ("http://[::1", "the API address 'http://[::1' is not a URL"),
    ("localhost:8080", "is not an http:// or https:// URL with a host"),
    ("ftp://example.org", "is not an http:// or https:// URL with a host"),
])
def test_an_api_address_that_is_not_an_http_url_is_a_usage_error(run: Any, url: str,
                                                                  error: str) -> None:
    ran = run("list", "--api-url", url, "--api-key", "a-key-for-the-test")
    assert ran.code == jobs.EXIT_USAGE
    assert error in ran.err and len(ran.err.splitlines()) == 1


def test_a_missing_spec_file_is_a_usage_error(api: Api, run: Any, tmp_path: Path) -> None:
    ran = run("submit", "--project-id", PROJECT, "--dataset", "lab/pick",
              "--spec-file", str(tmp_path / "absent.json"))
    assert ran.code == jobs.EXIT_USAGE
    assert ran.err == (f"augment jobs submit: cannot read the spec file "
                       f"{tmp_path / 'absent.json'}: No such file or directory\n")
    assert api.operator.created == []


def test_only_keys_long_enough_to_be_secret_are_redacted() -> None:
    assert client_redact("Name or service not known", "k") == "Name or service not known"
    assert client_redact("sent abcdef0123456789 twice", "abcdef0123456789") == \
        "sent *** twice"


def test_a_429_is_waited_out_and_the_wait_is_said() -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "0.1"},
                              json={"detail": "project quota reached"}),
               httpx.Response(200, json={"items": [], "total": 0})]
    said: list[str] = []
    with ApiClient("http://api.test", "a-key-for-the-test",
                   transport=httpx.MockTransport(lambda _: answers.pop(0)),
                   on_wait=said.append) as api_client:
        assert api_client.list() == {"items": [], "total": 0}
    assert said == ["waiting 0.1 s and trying again: project quota reached (HTTP 429)"]
