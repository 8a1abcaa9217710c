"""`augment jobs`: submit, read, list, cancel and follow jobs through the REST API.

    augment jobs submit --project-id UUID --dataset lab/pick --transforms lighting,noise
    augment jobs list --status Running
    augment jobs get JOB_ID --preview preview.png
    augment jobs watch JOB_ID
    augment jobs cancel JOB_ID

The API's address and key: --api-url/--api-key, AUGMENT_API_URL/AUGMENT_API_KEY, or the
config file (augment_cli.client). `submit` takes the spec flags of `augment run` (one
definition: augment_spec.flags). Tables by default, the API's JSON with `--output json`.
Every failure is one line on stderr; the exit codes are the EXIT_* below.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

import httpx

from augment_cli.client import (
    ENV_KEY,
    ENV_URL,
    ApiClient,
    ClientConfig,
    ClientError,
    ConfigError,
    config_path,
    load_config,
    resolve,
)
from augment_spec.contract import TERMINAL_PHASES, Phase
from augment_spec.flags import add_spec_flags, spec_values
from augment_spec.model import OutputVisibility, SpecError, parse_spec

EXIT_OK = 0
EXIT_ERROR = 1  # the request failed: the API's answer, or no answer
EXIT_USAGE = 2  # as argparse: a flag or setting is wrong or missing
EXIT_JOB_FAILED = 3  # watch: the job ended Failed
EXIT_JOB_CANCELLED = 4  # watch: the job ended Cancelled
EXIT_WATCH_TIMEOUT = 5  # watch: --timeout passed before the job ended
WATCH_EXIT = {Phase.Succeeded: EXIT_OK, Phase.Failed: EXIT_JOB_FAILED,
              Phase.Cancelled: EXIT_JOB_CANCELLED}

PROG = "augment jobs"
BAR_WIDTH = 30


class UsageError(Exception):
    """A flag or setting missing or wrong: exit EXIT_USAGE."""


# ---------------------------------------------------------------- arguments

def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-url", metavar="URL",
                        help=f"the API's base URL (env {ENV_URL}, or api_url in the config "
                             "file)")
    common.add_argument("--api-key", metavar="KEY",
                        help=f"API key (env {ENV_KEY}, or api_key in the config file; a flag "
                             "is visible to other users of this machine: prefer those)")
    common.add_argument("--output", "-o", choices=["table", "json"], default="table",
                        help="tables for people, the API's JSON for scripts")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    submit = actions.add_parser("submit", parents=[common], help="create a job",
                                description="Create a job: the flags of `augment run`.")
    submit.add_argument("--dataset", required=True, metavar="ORG/NAME",
                        help="source dataset on the Hub")
    submit.add_argument("--project-id", metavar="UUID",
                        help="project of the job (default: project_id in the config file)")
    submit.add_argument("--name", help="display name")
    submit.add_argument("--push-to", metavar="REPO",
                        help="output dataset on the Hub (default: <dataset>-augmented)")
    submit.add_argument("--public", action="store_true",
                        help="create the output public (only when the source is public)")
    submit.add_argument("--overwrite", action="store_true",
                        help="allow writing into an existing dataset this tool did not make")
    submit.add_argument("--shards", type=int, metavar="N",
                        help="runner pods the episodes are spread over")
    submit.add_argument("--spec-file", type=Path, metavar="FILE",
                        help="a job spec as JSON (snake_case); the flags override it")
    submit.add_argument("--idempotency-key", metavar="KEY",
                        help="retry-safe creation: the same key and spec give the same job "
                             "(default: a new one per submit)")
    submit.add_argument("--watch", action="store_true", help="follow the job once created")
    add_spec_flags(submit)

    get = actions.add_parser("get", parents=[common], help="show one job")
    get.add_argument("job_id", metavar="JOB_ID")
    get.add_argument("--preview", type=Path, metavar="FILE",
                     help="save the job's preview contact sheet (PNG) to FILE")

    listing = actions.add_parser("list", parents=[common], help="list jobs, newest first")
    listing.add_argument("--project-id", metavar="UUID", help="only this project's jobs")
    listing.add_argument("--status", choices=[p.value for p in Phase],
                         help="only jobs in this phase")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (1-100)")
    listing.add_argument("--offset", type=int, default=0, help="skip this many")

    cancel = actions.add_parser("cancel", parents=[common], help="ask a job to stop")
    cancel.add_argument("job_id", metavar="JOB_ID")

    watch = actions.add_parser(
        "watch", parents=[common], help="follow a job until it ends",
        description="Follow a job with a progress bar until it ends. Exit code: "
                    f"{EXIT_OK} Succeeded, {EXIT_JOB_FAILED} Failed, {EXIT_JOB_CANCELLED} "
                    f"Cancelled, {EXIT_WATCH_TIMEOUT} --timeout passed, {EXIT_ERROR} the API "
                    "failed.")
    watch.add_argument("job_id", metavar="JOB_ID")
    add_watch_flags(watch)
    add_watch_flags(submit)


def add_watch_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                        help="how often the job is read (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=0, metavar="SECONDS",
                        help="give up after this long (default: never)")


# ---------------------------------------------------------------- main

def main(args: argparse.Namespace) -> int:
    prog = f"{PROG} {args.action}"
    try:
        config = load_config(config_path())
        with connect(args, config) as client:
            return ACTIONS[args.action](client, args, config)
    except (UsageError, ConfigError) as exc:
        return fail(prog, str(exc), EXIT_USAGE)
    except ClientError as exc:
        return fail(prog, str(exc), EXIT_ERROR)
    except OSError as exc:  # --preview's file, a --spec-file
        return fail(prog, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
                    EXIT_ERROR)


def fail(prog: str, message: str, code: int) -> int:
    print(" ".join(f"{prog}: {message}".split()), file=sys.stderr)
    return code


def connect(args: argparse.Namespace, config: ClientConfig) -> ApiClient:
    """The client of the API the flags, the environment or the config file name."""
    url = resolve(args.api_url, ENV_URL, config.api_url, os.environ)
    key = resolve(args.api_key, ENV_KEY, config.api_key, os.environ)
    where = config_path()
    if not url:
        raise UsageError(f"no API address: pass --api-url, set {ENV_URL} or api_url in {where}")
    if not key:
        raise UsageError(f"no API key: set {ENV_KEY}, api_key in {where} or pass --api-key")
    return ApiClient(checked_url(url), key, on_wait=lambda line: print(
        f"{PROG} {args.action}: {line}", file=sys.stderr, flush=True))


def checked_url(url: str) -> str:
    """The API address, refused (exit 2) unless it is an http(s) URL with a host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise UsageError(f"the API address {url!r} is not a URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"the API address {url!r} is not an http:// or https:// URL "
                         "with a host")
    return url


# ---------------------------------------------------------------- actions

def submit(client: ApiClient, args: argparse.Namespace, config: ClientConfig) -> int:
    body = submitted_spec(args, config.project_id)
    created = client.submit(body, args.idempotency_key or str(uuid.uuid4()))
    if args.watch:
        return follow(client, str(created["job_id"]), args)
    show(args, created, lambda: table([("JOB ID", "STATUS", "MESSAGE")],
                                      [(created["job_id"], created["status"],
                                        created.get("message") or "")]))
    return EXIT_OK


def submitted_spec(args: argparse.Namespace, default_project: UUID | None) -> dict[str, Any]:
    """The request body: the spec file, then the flags; checked against the spec model
    here, so a mistake is named before anything is sent."""
    body = spec_file(args.spec_file) if args.spec_file is not None else {}
    body["dataset_id"] = args.dataset
    project = args.project_id or body.get("project_id") or default_project
    if not project:
        raise UsageError("no project: pass --project-id or set project_id in the config file")
    body["project_id"] = str(project)
    given = {"name": args.name, "output_dataset_id": args.push_to, "shards": args.shards,
             "output_visibility": OutputVisibility.public.value if args.public else None,
             "overwrite": True if args.overwrite else None}
    body |= {field: value for field, value in given.items() if value is not None}
    body |= spec_values(args)
    try:
        parse_spec(body)
    except SpecError as exc:
        raise UsageError(str(exc)) from None
    return body


def spec_file(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read the spec file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"{path}: a spec is a JSON object")
    return body


def get(client: ApiClient, args: argparse.Namespace, _: ClientConfig) -> int:
    job = client.get(args.job_id)
    show(args, job, lambda: describe(job))
    if args.preview is not None:
        args.preview.write_bytes(client.preview(args.job_id))
        # On stderr with --output json: stdout stays one JSON document.
        print(f"preview saved to {args.preview}",
              file=sys.stderr if args.output == "json" else sys.stdout)
    return EXIT_OK


def list_jobs(client: ApiClient, args: argparse.Namespace, _: ClientConfig) -> int:
    page = client.list(project_id=args.project_id, status=args.status, limit=args.limit,
                       offset=args.offset)
    now = datetime.now(UTC)
    rows = [(job["job_id"], job["status"], progress_text(job), dataset_of(job),
             age(job.get("created_at"), now)) for job in page["items"]]

    def render() -> str:
        shown = table([("JOB ID", "PHASE", "PROGRESS", "DATASET", "AGE")], rows)
        more = page["total"] - page["offset"] - len(rows)
        return shown + (f"\n({more} more: --offset {page['offset'] + len(rows)})"
                        if more > 0 else "")

    show(args, page, render)
    return EXIT_OK


def cancel(client: ApiClient, args: argparse.Namespace, _: ClientConfig) -> int:
    job = client.cancel(args.job_id)
    show(args, job, lambda: f"cancel requested for {job['job_id']} ({job['status']})")
    return EXIT_OK


def watch(client: ApiClient, args: argparse.Namespace, _: ClientConfig) -> int:
    return follow(client, args.job_id, args)


ACTIONS: dict[str, Callable[[ApiClient, argparse.Namespace, ClientConfig], int]] = {
    "submit": submit, "get": get, "list": list_jobs, "cancel": cancel, "watch": watch,
}


# ---------------------------------------------------------------- watching

def follow(client: ApiClient, job_id: str, args: argparse.Namespace,
           stream: TextIO | None = None) -> int:
    """Read the job every --interval until it ends; a progress bar on stderr meanwhile,
    the job at the end on stdout. The exit code says how it ended."""
    bar = ProgressBar(stream or sys.stderr)
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    while True:
        job = client.get(job_id)
        bar.update(job)
        phase = Phase(job["status"])
        if phase in TERMINAL_PHASES:
            bar.close()
            show(args, job, partial(describe, job))
            return WATCH_EXIT[phase]
        if deadline is not None and time.monotonic() >= deadline:
            bar.close()
            return fail(f"{PROG} {args.action}", f"job {job_id} is still {phase} after "
                        f"{args.timeout:g} s", EXIT_WATCH_TIMEOUT)
        time.sleep(args.interval)


class ProgressBar:
    """One line redrawn in place on a terminal; elsewhere (a log, a pipe) one line per
    change."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.last = ""

    def update(self, job: dict[str, Any]) -> None:
        line = progress_line(job)
        if line == self.last:
            return
        self.last = line
        if self.live:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + line[:width].ljust(width))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live and self.last:
            self.stream.write("\n")
            self.stream.flush()


def progress_line(job: dict[str, Any], width: int = BAR_WIDTH) -> str:
    """`[#####-----]  50%  3/6 episodes  Running  message`."""
    progress = job.get("progress") or {}
    percent = int(progress.get("percent", 0))
    filled = width * percent // 100
    parts = [f"[{'#' * filled}{'-' * (width - filled)}] {percent:3d}%",
             episodes_text(progress), job["status"]]
    if job.get("cancel_requested") and job["status"] not in TERMINAL_PHASES:
        parts.append("(cancel requested)")
    if job.get("message"):
        parts.append(job["message"])
    return "  ".join(parts)


# ---------------------------------------------------------------- rendering

def show(args: argparse.Namespace, document: Any, render: Callable[[], str]) -> None:
    print(json.dumps(document, indent=2) if args.output == "json" else render())


def table(header: Sequence[Sequence[str]], rows: Sequence[Sequence[Any]]) -> str:
    lines = [[str(cell) for cell in row] for row in [*header, *rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                     .rstrip() for line in lines)


def episodes_text(progress: dict[str, Any]) -> str:
    done, total = progress.get("episodes_done", 0), progress.get("episodes_total", 0)
    return f"{done}/{total} episodes" if total else f"{done} episodes"


def progress_text(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    return f"{progress.get('percent', 0)}% ({episodes_text(progress)})"


def dataset_of(job: dict[str, Any]) -> str:
    return str((job.get("spec") or {}).get("dataset_id") or "")


def age(created_at: str | None, now: datetime) -> str:
    """kubectl's style: 41s, 5m, 3h, 2d."""
    if not created_at:
        return ""
    seconds = max(0, int((now - datetime.fromisoformat(created_at)).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def describe(job: dict[str, Any]) -> str:
    """One job as `field: value` lines."""
    output = job.get("output_dataset_id") or ""
    if job.get("output_revision"):
        output += f" @ {job['output_revision']}"
    shards = job.get("shards")
    fields = [
        ("job id", job["job_id"]),
        ("name", job["name"]),
        ("project", job.get("project_id") or ""),
        ("phase", job["status"] + (" (cancel requested)" if job.get("cancel_requested")
                                   and job["status"] not in TERMINAL_PHASES else "")),
        ("progress", progress_text(job)),
        ("shards", f"{shards['done']}/{shards['total']} done, {shards['running']} running, "
                   f"{shards['failed']} failed" if shards else ""),
        ("message", job.get("message") or ""),
        ("dataset", dataset_of(job)),
        ("output", output),
        ("created", job.get("created_at") or ""),
        ("started", job.get("started_at") or ""),
        ("completed", job.get("completed_at") or ""),
    ]
    shown = [(name, value) for name, value in fields if value]
    width = max(len(name) for name, _ in shown) + 1
    return "\n".join(f"{name + ':':<{width}} {value}" for name, value in shown)
