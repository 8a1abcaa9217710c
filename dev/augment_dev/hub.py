"""A local stand-in for the Hugging Face Hub, for tests and demos.

It speaks the part of the Hub HTTP API that the real ``huggingface_hub`` client uses for
model and dataset repos: create a repo, repo info, tree listing, refs, tags and branches,
preupload, the LFS batch API (basic transfer), NDJSON commits, and file resolution. Point
the client at it with ``HF_ENDPOINT`` (or ``HfApi(endpoint=...)``); the client is not patched.

The client uploads through Xet storage whenever ``hf_xet`` is installed; this server has no
Xet storage, so clients must run with ``HF_HUB_DISABLE_XET=1`` set before ``huggingface_hub``
is imported (see ``LocalHub.client_env``). Files are then uploaded with the LFS protocol.

Storage, under ``root``:

- ``blobs/<sha256>``: file contents, content addressed, shared by all repos;
- ``repos/<type>s/<namespace>/<name>/meta.json``: visibility, gating, creation date;
- ``.../commits/<sha>.json``: immutable snapshots ``{path: {sha256, size, lfs, oid}}``;
- ``.../refs.json``: branches and tags -> commit sha, replaced atomically.

A commit is parsed and checked in full, its regular files are written to the blob store,
its snapshot is written, and only then does the branch move: a failed commit is never seen.

Like the real Hub, LFS contents are served from a different origin (a second port, standing
in for the CDN) through signed URLs, so the client downloads them without its token.

Faults are injected with ``fail_next`` (or ``POST /_local/fail-next`` with the same fields as
JSON, for a server in another process): the next requests matching a pattern are answered
with an error status (with ``Retry-After`` if asked), after a delay if asked, either before
they take effect, just before a commit is published, or after they took effect. ``hold``
keeps the requests matching a pattern waiting until a file exists: a test decides when a
client may go on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

# Files stored with LFS, as the real Hub's default .gitattributes does (subset).
_LFS_EXTENSIONS = """
.7z .arrow .avi .bin .bz2 .ckpt .gif .gz .h5 .jpeg .jpg .mkv .mov .mp4 .npy .npz .onnx
.parquet .pkl .png .pt .pth .safetensors .tar .tfrecord .wav .webm .webp .zip .zst
"""
LFS_EXTENSIONS = tuple(_LFS_EXTENSIONS.split())
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
REPO_TYPES = ("model", "dataset")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


@dataclass(frozen=True)
class Call:
    """One request the server answered. ``repo`` is ``"<type>:<namespace>/<name>"`` or None."""

    method: str
    path: str
    status: int
    repo: str | None = None

    @property
    def is_write(self) -> bool:
        return self.method not in ("GET", "HEAD")


FAULT_STAGES = ("request", "publish", "response")


@dataclass
class _Failure:
    pattern: re.Pattern[str]
    status: int
    times: int
    stage: str
    retry_after: str | None
    delay: float


class HubHTTPError(Exception):
    """An error answer, with the headers the client turns into typed exceptions."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        commit: str = "",
        retry_after: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit
        self.retry_after = retry_after

    def response(self) -> Response:
        headers = {"X-Error-Message": self.message.encode("ascii", "replace").decode()}
        if self.code:
            headers["X-Error-Code"] = self.code
        if self.commit:
            headers["X-Repo-Commit"] = self.commit
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        return JSONResponse({"error": self.message}, self.status, headers=headers)


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _file_entry(sha256: str, size: int, content: bytes | None) -> dict[str, Any]:
    """A snapshot entry; ``content`` None means an LFS file (the repo holds a pointer to it)."""
    if content is not None:
        return {"sha256": sha256, "size": size, "oid": _git_oid(content), "lfs": None}
    pointer = _LFS_POINTER.format(oid=sha256, size=size).encode()
    lfs = {"oid": sha256, "size": size, "pointerSize": len(pointer)}
    return {"sha256": sha256, "size": size, "oid": _git_oid(pointer), "lfs": lfs}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _check_path(path: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HubHTTPError(400, f"Invalid path in repo: {path!r}")
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class HubStore:
    """Repos on disk: a content-addressed blob store plus immutable commit snapshots."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    # blobs
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha):
            _write_atomic(self.blob_path(sha), data)
        return sha

    # repos
    def repo_dir(self, repo_type: str, repo_id: str) -> Path:
        ns, _, name = repo_id.partition("/")
        if not (_NAME.match(ns) and _NAME.match(name)) or ".." in repo_id:
            raise HubHTTPError(400, f"Invalid repo id: {repo_id!r}")
        return self.root / "repos" / f"{repo_type}s" / ns / name

    def meta(self, repo_type: str, repo_id: str) -> dict[str, Any] | None:
        path = self.repo_dir(repo_type, repo_id) / "meta.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def refs(self, repo_type: str, repo_id: str) -> dict[str, dict[str, str]]:
        return json.loads((self.repo_dir(repo_type, repo_id) / "refs.json").read_text())

    def commit(self, repo_type: str, repo_id: str, sha: str) -> dict[str, Any]:
        path = self.repo_dir(repo_type, repo_id) / "commits" / f"{sha}.json"
        return json.loads(path.read_text())

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> bool:
        """Create a repo with an initial commit holding ``.gitattributes``; False if it exists."""
        rdir = self.repo_dir(repo_type, repo_id)
        with self.lock:
            if (rdir / "meta.json").is_file():
                return False
            meta = {"private": private, "gated": None, "createdAt": _now()}
            _write_atomic(rdir / "refs.json", b'{"branches": {}, "tags": {}}')
            _write_atomic(rdir / "meta.json", json.dumps(meta).encode())
        attributes = "".join(
            f"*{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in LFS_EXTENSIONS
        )
        self.apply_commit(
            repo_type,
            repo_id,
            "main",
            [("file", ".gitattributes", attributes.encode())],
            message="initial commit",
            parent=None,
            create_branch=True,
        )
        return True

    def set_meta(self, repo_type: str, repo_id: str, **changes: Any) -> None:
        with self.lock:
            meta = self.meta(repo_type, repo_id)
            if meta is None:
                raise KeyError(repo_id)
            meta.update(changes)
            _write_atomic(
                self.repo_dir(repo_type, repo_id) / "meta.json", json.dumps(meta).encode()
            )

    def resolve(self, repo_type: str, repo_id: str, revision: str) -> str | None:
        """Branch, tag, full commit sha or a prefix of at least 7 hex digits -> commit sha."""
        refs = self.refs(repo_type, repo_id)
        for kind in ("branches", "tags"):
            name = revision.removeprefix(f"refs/{'heads' if kind == 'branches' else 'tags'}/")
            if name in refs[kind]:
                return refs[kind][name]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            commits = self.repo_dir(repo_type, repo_id) / "commits"
            found = [p.stem for p in commits.glob(f"{revision}*.json")]
            if len(found) == 1:
                return found[0]
        return None

    def apply_commit(
        self,
        repo_type: str,
        repo_id: str,
        branch: str,
        ops: Iterable[tuple[str, str, Any]],
        message: str,
        parent: str | None,
        create_branch: bool = False,
        before_publish: Callable[[], None] | None = None,
    ) -> str:
        """Apply ``(kind, path, payload)`` operations on top of the branch head, atomically.

        kinds: ``file`` (payload: bytes), ``lfsFile`` (payload: (sha256, size)),
        ``deletedFile`` and ``deletedFolder`` (payload ignored).
        """
        with self.lock:
            head = self.refs(repo_type, repo_id)["branches"].get(branch)
            if head is None and not create_branch:
                raise HubHTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if parent is not None and (head is None or not head.startswith(parent)):
                raise HubHTTPError(
                    412,
                    "A commit has happened since. Please refresh and try again.",
                    commit=head or "",
                )
            files: dict[str, dict[str, Any]] = (
                dict(self.commit(repo_type, repo_id, head)["files"]) if head else {}
            )
            for kind, path, payload in ops:
                _check_path(path)
                if kind == "file":
                    files[path] = _file_entry(self.put_blob(payload), len(payload), payload)
                elif kind == "lfsFile":
                    sha, size = payload
                    if not self.has_blob(sha, size):
                        raise HubHTTPError(
                            422,
                            f"Your push was rejected because an LFS pointer ({path}) points to"
                            f" a file that does not exist in the LFS store: {sha}",
                        )
                    files[path] = _file_entry(sha, self.blob_path(sha).stat().st_size, None)
                elif kind == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubHTTPError(
                            404, f"A file with this name doesn't exist: {path}", "EntryNotFound"
                        )
                elif kind == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubHTTPError(
                            404, f"A folder with this name doesn't exist: {path}", "EntryNotFound"
                        )
                    for p in doomed:
                        del files[p]
                else:
                    raise HubHTTPError(400, f"Unknown commit operation: {kind}")
            snapshot = {
                "parent": head,
                "message": message,
                "date": _now(),
                "files": dict(sorted(files.items())),
            }
            body = json.dumps(snapshot, sort_keys=True).encode()
            sha = hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()
            _write_atomic(self.repo_dir(repo_type, repo_id) / "commits" / f"{sha}.json", body)
            if before_publish is not None:
                before_publish()
            refs = self.refs(repo_type, repo_id)
            refs["branches"][branch] = sha
            _write_atomic(
                self.repo_dir(repo_type, repo_id) / "refs.json", json.dumps(refs).encode()
            )
            return sha


class LocalHub:
    """Runs the Hub stand-in with uvicorn on 127.0.0.1 in a background thread.

    ``tokens`` maps a token to a user name. A user may write to its own namespace and to
    the organisations that list it in ``orgs`` (org -> members); private repos are visible
    to those writers only. ``calls`` logs every request answered.
    """

    def __init__(
        self,
        root: Path | str,
        tokens: Mapping[str, str] | None = None,
        orgs: Mapping[str, Iterable[str]] | None = None,
        *,
        port: int = 0,
        tree_page_size: int = 1000,
    ):
        self.store = HubStore(Path(root))
        self.tokens = dict(tokens or {})
        self.orgs = {org: set(members) for org, members in (orgs or {}).items()}
        self.port = port
        self.tree_page_size = tree_page_size
        self.calls: list[Call] = []
        self._failures: list[_Failure] = []
        self._failures_lock = threading.Lock()
        self._holds: list[tuple[re.Pattern[str], Path]] = []
        self._stopping = threading.Event()  # releases held requests
        self._secret = secrets.token_bytes(16)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""
        self.storage_url = ""
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}", self._endpoint, methods=["GET", "HEAD", "POST", "PUT", "DELETE"]
                )
            ]
        )

    # lifecycle
    def start(self) -> LocalHub:
        self._stopping.clear()
        api_sock = socket.create_server(("127.0.0.1", self.port))
        storage_sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{api_sock.getsockname()[1]}"
        self.storage_url = f"http://127.0.0.1:{storage_sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [api_sock, storage_sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("LocalHub did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client_env(self) -> dict[str, str]:
        """Environment for a client process: this endpoint, and uploads through LFS."""
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_DISABLE_XET": "1"}

    # test helpers (server side, no HTTP)
    def fail_next(
        self,
        pattern: str,
        status: int = 500,
        times: int = 1,
        stage: str = "request",
        *,
        retry_after: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``times`` requests whose ``"METHOD /path"`` matches with ``status``.

        ``stage``: ``"request"`` fails them before they take effect; ``"publish"`` (commits
        only) parses, checks and stores the commit and fails just before its branch would
        move; ``"response"`` lets them take effect and loses the answer. ``retry_after`` is
        sent as the ``Retry-After`` header; ``delay`` seconds pass before the answer (longer
        than the client's timeout, it is a request that gets no answer).
        """
        if stage not in FAULT_STAGES:
            raise ValueError(f"stage must be one of {FAULT_STAGES}, got {stage!r}")
        failure = _Failure(re.compile(pattern), status, times, stage, retry_after, delay)
        with self._failures_lock:
            self._failures.append(failure)

    def pending_failures(self) -> int:
        """How many injected failures no request has met yet: 0 once the last one is being
        answered (with its ``delay``, the request it met is held until then)."""
        with self._failures_lock:
            return sum(f.times for f in self._failures)

    def hold(self, pattern: str, until: Path) -> None:
        """Keep each request whose ``"METHOD /path"`` matches waiting, unanswered, until the
        file ``until`` exists (or the Hub stops)."""
        with self._failures_lock:
            self._holds.append((re.compile(pattern), Path(until)))

    def seed(
        self,
        repo_id: str,
        files: Path | str | Mapping[str, bytes],
        *,
        repo_type: str = "dataset",
        private: bool = False,
        message: str = "Seed",
    ) -> str:
        """Create a repo (if needed) and commit a folder or ``{path: bytes}``; returns the sha."""
        if isinstance(files, (str, Path)):
            root = Path(files)
            items = {
                p.relative_to(root).as_posix(): p.read_bytes()
                for p in sorted(root.rglob("*"))
                if p.is_file()
            }
        else:
            items = dict(files)
        self.store.create_repo(repo_type, repo_id, private)
        ops = []
        for path, data in items.items():
            if self._is_lfs(path, len(data), data[:512]):
                ops.append(("lfsFile", path, (self.store.put_blob(data), len(data))))
            else:
                ops.append(("file", path, data))
        return self.store.apply_commit(repo_type, repo_id, "main", ops, message, parent=None)

    def set_gated(
        self, repo_id: str, approved_users: Iterable[str], repo_type: str = "dataset"
    ) -> None:
        """Gate a repo: only its writers and ``approved_users`` may download its files."""
        self.store.set_meta(repo_type, repo_id, gated=sorted(approved_users))

    def head(self, repo_id: str, repo_type: str = "dataset", branch: str = "main") -> str | None:
        if self.store.meta(repo_type, repo_id) is None:
            return None
        return self.store.refs(repo_type, repo_id)["branches"].get(branch)

    def files(
        self, repo_id: str, revision: str = "main", repo_type: str = "dataset"
    ) -> dict[str, bytes]:
        sha = self.store.resolve(repo_type, repo_id, revision)
        if sha is None:
            raise KeyError(f"{repo_id}@{revision}")
        entries = self.store.commit(repo_type, repo_id, sha)["files"]
        return {p: self.store.blob_path(e["sha256"]).read_bytes() for p, e in entries.items()}

    # HTTP
    async def _endpoint(self, request: Request) -> Response:
        body = await request.body()
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        ctx = _Ctx(
            request.method,
            raw_path.decode("latin-1"),
            dict(request.query_params),
            request.headers,
            body,
        )
        try:
            response = await run_in_threadpool(self._serve, ctx)
        except HubHTTPError as err:
            response = err.response()
        except Exception as err:  # a bug here: answer it, and keep it in the log
            response = HubHTTPError(500, f"LocalHub internal error: {err!r}").response()
        self.calls.append(Call(ctx.method, unquote(ctx.raw_path), response.status_code, ctx.repo))
        return response

    def _failure(self, ctx: _Ctx, stage: str) -> None:
        request = f"{ctx.method} {unquote(ctx.raw_path)}"
        with self._failures_lock:  # requests are served by several threads
            matching = (f for f in self._failures if f.stage == stage and f.pattern.search(request))
            failure = next(matching, None)
            if failure is None:
                return
            failure.times -= 1
            if failure.times <= 0:
                self._failures.remove(failure)
        time.sleep(failure.delay)
        raise HubHTTPError(
            failure.status,
            "Injected failure (LocalHub.fail_next)",
            retry_after=failure.retry_after,
        )

    def _wait_for_holds(self, ctx: _Ctx) -> None:
        request = f"{ctx.method} {unquote(ctx.raw_path)}"
        with self._failures_lock:
            gates = [until for pattern, until in self._holds if pattern.search(request)]
        while not all(gate.exists() for gate in gates) and not self._stopping.wait(0.1):
            pass

    def _serve(self, ctx: _Ctx) -> Response:
        if ctx.method == "POST" and ctx.raw_path == "/_local/fail-next":
            return self._fail_next_endpoint(ctx)
        self._wait_for_holds(ctx)
        self._failure(ctx, "request")
        response = self._handle(ctx)
        self._failure(ctx, "response")
        return response

    def _fail_next_endpoint(self, ctx: _Ctx) -> Response:
        """``fail_next`` over HTTP, for a server in another process (``augment-dev hub``)."""
        fields = ctx.json()
        retry_after = fields.get("retry_after")
        try:
            self.fail_next(
                str(fields["pattern"]),
                int(fields.get("status", 500)),
                int(fields.get("times", 1)),
                str(fields.get("stage", "request")),
                retry_after=None if retry_after is None else str(retry_after),
                delay=float(fields.get("delay", 0.0)),
            )
        except (KeyError, ValueError, re.error) as err:
            raise HubHTTPError(400, f"Invalid fault: {err}") from err
        return JSONResponse({"queued": len(self._failures)})

    def _handle(self, ctx: _Ctx) -> Response:
        segs = [unquote(s) for s in ctx.raw_path.split("/")[1:]]
        m = ctx.method
        if segs[:2] == ["api", "repos"] and segs[2:] == ["create"] and m == "POST":
            return self._create_repo(ctx)
        if segs == ["api", "validate-yaml"] and m == "POST":
            return self._validate_yaml(ctx)
        if segs == ["api", "whoami-v2"] and m == "GET":
            return self._whoami(ctx)
        if segs[0] == "_storage" and len(segs) == 3:
            return self._storage(ctx, segs[1], segs[2])
        if segs[0] == "api" and len(segs) >= 4 and segs[1] in ("models", "datasets"):
            repo_type, repo_id, rest = segs[1][:-1], f"{segs[2]}/{segs[3]}", segs[4:]
            ctx.repo = f"{repo_type}:{repo_id}"
            if m == "GET" and rest == []:
                return self._info(ctx, repo_type, repo_id, "main")
            if m == "GET" and len(rest) == 2 and rest[0] == "revision":
                return self._info(ctx, repo_type, repo_id, rest[1])
            if m == "GET" and len(rest) >= 2 and rest[0] == "tree":
                return self._tree(ctx, repo_type, repo_id, rest[1], "/".join(rest[2:]))
            if m == "GET" and rest == ["refs"]:
                return self._refs(ctx, repo_type, repo_id)
            if m == "POST" and len(rest) == 2 and rest[0] == "preupload":
                return self._preupload(ctx, repo_type, repo_id, rest[1])
            if m == "POST" and len(rest) == 2 and rest[0] == "commit":
                return self._commit(ctx, repo_type, repo_id, rest[1])
            if m == "POST" and len(rest) == 2 and rest[0] == "tag":
                return self._tag(ctx, repo_type, repo_id, rest[1])
            if m in ("POST", "DELETE") and len(rest) == 2 and rest[0] == "branch":
                return self._branch(ctx, repo_type, repo_id, rest[1])
            if rest and rest[0] in ("xet-read-token", "xet-write-token"):
                raise HubHTTPError(
                    501,
                    "LocalHub has no Xet storage: set HF_HUB_DISABLE_XET=1 "
                    "before importing huggingface_hub (uploads then use LFS)",
                )
        repo_type = "dataset" if segs[0] == "datasets" else "model"
        segs = segs[1:] if segs[0] == "datasets" else segs
        if len(segs) == 6 and segs[1].endswith(".git") and segs[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{segs[0]}/{segs[1][:-4]}"
            ctx.repo = f"{repo_type}:{repo_id}"
            if m == "POST" and segs[5] == "batch":
                return self._lfs_batch(ctx, repo_type, repo_id)
            if m == "POST" and segs[5] == "verify":
                return self._lfs_verify(ctx, repo_type, repo_id)
        if len(segs) >= 5 and segs[2] == "resolve" and m in ("GET", "HEAD"):
            repo_id = f"{segs[0]}/{segs[1]}"
            ctx.repo = f"{repo_type}:{repo_id}"
            return self._resolve(ctx, repo_type, repo_id, segs[3], "/".join(segs[4:]))
        raise HubHTTPError(404, f"Not found: {ctx.method} {unquote(ctx.raw_path)}")

    # auth
    def _user(self, ctx: _Ctx) -> str | None:
        auth = ctx.headers.get("authorization")
        if auth is None:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _may_write_ns(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or user in self.orgs.get(namespace, ()))

    def _readable(
        self, ctx: _Ctx, repo_type: str, repo_id: str
    ) -> tuple[str | None, dict[str, Any]]:
        user = self._user(ctx)
        meta = self.store.meta(repo_type, repo_id)
        if meta is None or (
            meta["private"] and not self._may_write_ns(user, repo_id.split("/")[0])
        ):
            raise HubHTTPError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        return user, meta

    def _writable(self, ctx: _Ctx, repo_type: str, repo_id: str) -> str:
        user = self._user(ctx)
        if user is None:
            raise HubHTTPError(401, f"You must be authenticated to write to {repo_id}")
        self._readable(ctx, repo_type, repo_id)
        if not self._may_write_ns(user, repo_id.split("/")[0]):
            raise HubHTTPError(403, f"You don't have the rights to write to {repo_type} {repo_id}")
        return user

    def _rev(self, repo_type: str, repo_id: str, revision: str) -> str:
        sha = self.store.resolve(repo_type, repo_id, revision)
        if sha is None:
            raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    # handlers
    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        prefix = "datasets/" if repo_type == "dataset" else ""
        return f"{self.endpoint}/{prefix}{repo_id}"

    def _create_repo(self, ctx: _Ctx) -> Response:
        payload = ctx.json()
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubHTTPError(400, f"LocalHub does not support {repo_type} repos")
        namespace = payload.get("organization")
        user = self._user(ctx)
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to create a repo")
        repo_id = f"{namespace or user}/{payload.get('name')}"
        ctx.repo = f"{repo_type}:{repo_id}"
        self.store.repo_dir(repo_type, repo_id)  # validates the id
        if not self._may_write_ns(user, namespace or user):
            raise HubHTTPError(
                403,
                f"You don't have the rights to create a {repo_type} under the"
                f" namespace {namespace!r}",
            )
        private = payload.get("visibility", "private" if payload.get("private") else "public")
        url = self._repo_url(repo_type, repo_id)
        if not self.store.create_repo(repo_type, repo_id, private != "public"):
            return JSONResponse(
                {"error": f"You already created this {repo_type} repo", "url": url}, 409
            )
        return JSONResponse({"url": url, "name": repo_id}, 200)

    def _whoami(self, ctx: _Ctx) -> Response:
        user = self._user(ctx)
        if user is None:
            raise HubHTTPError(401, "Invalid username or password.")
        orgs = [{"name": org} for org, members in sorted(self.orgs.items()) if user in members]
        return JSONResponse(
            {
                "type": "user",
                "name": user,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"role": "write"}},
            }
        )

    def _validate_yaml(self, ctx: _Ctx) -> Response:
        """Check the YAML front matter of a README.md (the client asks before committing one)."""
        content = str(ctx.json().get("content", ""))
        errors = []
        if content.startswith("---\n"):
            front, sep, _ = content[4:].partition("\n---")
            try:
                data = yaml.safe_load(front) if sep else None
                if not sep or not isinstance(data, (dict, type(None))):
                    errors.append("README.md metadata must be a YAML mapping between '---' lines")
            except yaml.YAMLError as err:
                errors.append(f"Invalid YAML in README.md metadata: {err}")
        status = 400 if errors else 200
        return JSONResponse({"errors": [{"message": e} for e in errors], "warnings": []}, status)

    def _info(self, ctx: _Ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        _, meta = self._readable(ctx, repo_type, repo_id)
        sha = self._rev(repo_type, repo_id, revision)
        commit = self.store.commit(repo_type, repo_id, sha)
        with_blobs = ctx.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, entry in commit["files"].items():
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    sibling["lfs"] = {**entry["lfs"], "sha256": entry["sha256"]}
            siblings.append(sibling)
        return JSONResponse(
            {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": sha,
                "lastModified": commit["date"],
                "createdAt": meta["createdAt"],
                "private": meta["private"],
                "gated": "manual" if meta["gated"] is not None else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "usedStorage": sum(e["size"] for e in commit["files"].values()),
            }
        )

    def _tree(self, ctx: _Ctx, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
        self._readable(ctx, repo_type, repo_id)
        sha = self._rev(repo_type, repo_id, revision)
        files = self.store.commit(repo_type, repo_id, sha)["files"]
        recursive = ctx.query.get("recursive", "").lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in files):
            raise HubHTTPError(404, f"{path} does not exist on {revision}", "EntryNotFound", sha)
        entries: dict[str, dict[str, Any]] = {}
        for p, entry in files.items():
            if not p.startswith(prefix):
                continue
            parts = PurePosixPath(p[len(prefix) :]).parts
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):  # folders on the way
                folder = prefix + "/".join(parts[:i])
                oid = hashlib.sha1(f"{sha}:{folder}".encode()).hexdigest()
                entries.setdefault(folder, {"type": "directory", "oid": oid, "path": folder})
            if recursive or len(parts) == 1:
                item = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": p}
                entries[p] = {**item, "lfs": entry["lfs"]} if entry["lfs"] else item
        listing = [entries[k] for k in sorted(entries)]
        cursor = int(ctx.query.get("cursor", "0") or 0)
        page = listing[cursor : cursor + self.tree_page_size]
        headers = {}
        if cursor + self.tree_page_size < len(listing):
            quoted = "/" + quote(path, safe="") if path else ""
            nxt = (
                f"{self.endpoint}/api/{repo_type}s/{repo_id}/tree/{quote(revision, safe='')}"
                f"{quoted}?recursive={str(recursive).lower()}&cursor={cursor + self.tree_page_size}"
            )
            headers["Link"] = f'<{nxt}>; rel="next"'
        return JSONResponse(page, headers=headers)

    def _refs(self, ctx: _Ctx, repo_type: str, repo_id: str) -> Response:
        self._readable(ctx, repo_type, repo_id)
        refs = self.store.refs(repo_type, repo_id)

        def fmt(kind: str, name: str, sha: str) -> dict[str, str]:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}

        return JSONResponse(
            {
                "branches": [fmt("heads", n, s) for n, s in sorted(refs["branches"].items())],
                "tags": [fmt("tags", n, s) for n, s in sorted(refs["tags"].items())],
                "converts": [],
                "pullRequests": [],
            }
        )

    def _tag(self, ctx: _Ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        self._writable(ctx, repo_type, repo_id)
        sha = self._rev(repo_type, repo_id, revision)
        tag = str(ctx.json().get("tag", ""))
        if not _NAME.match(tag):
            raise HubHTTPError(400, f"Invalid tag name: {tag!r}")
        with self.store.lock:
            refs = self.store.refs(repo_type, repo_id)
            if tag in refs["tags"]:
                raise HubHTTPError(409, f"Tag {tag} already exists")
            refs["tags"][tag] = sha
            rdir = self.store.repo_dir(repo_type, repo_id)
            _write_atomic(rdir / "refs.json", json.dumps(refs).encode())
        return JSONResponse({"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": sha})

    def _branch(self, ctx: _Ctx, repo_type: str, repo_id: str, branch: str) -> Response:
        """Create a branch (at ``startingPoint``, default main's head) or delete one; main
        is never deleted."""
        self._writable(ctx, repo_type, repo_id)
        if not _NAME.match(branch):
            raise HubHTTPError(400, f"Invalid branch name: {branch!r}")
        start = None
        if ctx.method == "POST":
            start = self._rev(repo_type, repo_id, str(ctx.json().get("startingPoint") or "main"))
        with self.store.lock:
            refs = self.store.refs(repo_type, repo_id)
            if ctx.method == "DELETE":
                if branch == "main" or branch not in refs["branches"]:
                    raise HubHTTPError(403 if branch == "main" else 404,
                                       f"Cannot delete branch {branch}")
                del refs["branches"][branch]
            elif branch in refs["branches"]:
                raise HubHTTPError(409, f"Branch {branch} already exists")
            else:
                refs["branches"][branch] = start
            rdir = self.store.repo_dir(repo_type, repo_id)
            _write_atomic(rdir / "refs.json", json.dumps(refs).encode())
        return JSONResponse({})

    @staticmethod
    def _is_lfs(path: str, size: int, sample: bytes) -> bool:
        return path.lower().endswith(LFS_EXTENSIONS) or size > LFS_SIZE_THRESHOLD or b"\0" in sample

    def _preupload(self, ctx: _Ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        self._writable(ctx, repo_type, repo_id)
        if ctx.query.get("create_pr"):
            raise HubHTTPError(400, "LocalHub does not support pull requests")
        sha = self._rev(repo_type, repo_id, revision)
        current = self.store.commit(repo_type, repo_id, sha)["files"]
        answer = []
        for item in ctx.json().get("files", []):
            path = _check_path(item["path"])
            lfs = self._is_lfs(path, int(item["size"]), base64.b64decode(item.get("sample", "")))
            remote = current.get(path)
            oid = None
            if remote is not None and bool(remote["lfs"]) == lfs:
                oid = remote["sha256"] if lfs else remote["oid"]
            answer.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        return JSONResponse({"files": answer, "commitOid": sha})

    def _commit(self, ctx: _Ctx, repo_type: str, repo_id: str, revision: str) -> Response:
        self._writable(ctx, repo_type, repo_id)
        if ctx.query.get("create_pr"):
            raise HubHTTPError(400, "LocalHub does not support pull requests")
        header: dict[str, Any] = {}
        ops: list[tuple[str, str, Any]] = []
        try:
            for line in ctx.body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    header = value
                elif key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubHTTPError(400, f"Unsupported encoding: {value.get('encoding')}")
                    ops.append(
                        ("file", value["path"], base64.b64decode(value["content"], validate=True))
                    )
                elif key == "lfsFile":
                    if value.get("algo", "sha256") != "sha256" or not _SHA256.match(value["oid"]):
                        raise HubHTTPError(400, f"Invalid LFS oid for {value['path']}")
                    ops.append(("lfsFile", value["path"], (value["oid"], value.get("size"))))
                elif key in ("deletedFile", "deletedFolder"):
                    ops.append((key, value["path"], None))
                else:
                    raise HubHTTPError(400, f"Unknown commit key: {key}")
        except (ValueError, KeyError, TypeError, binascii.Error) as err:
            raise HubHTTPError(400, f"Malformed commit payload: {err}") from err
        if not header.get("summary"):
            raise HubHTTPError(400, "Commit summary is required")
        branch = revision.removeprefix("refs/heads/")
        if branch not in self.store.refs(repo_type, repo_id)["branches"]:
            raise HubHTTPError(
                404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound"
            )
        message = header["summary"] + (
            "\n\n" + header["description"] if header.get("description") else ""
        )
        sha = self.store.apply_commit(
            repo_type,
            repo_id,
            branch,
            ops,
            message,
            parent=header.get("parentCommit"),
            before_publish=lambda: self._failure(ctx, "publish"),
        )
        return JSONResponse(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{sha}",
                "pullRequestUrl": None,
                "hookOutput": "",
            }
        )

    def _sign(self, action: str, sha256: str) -> str:
        return hmac.new(self._secret, f"{action}:{sha256}".encode(), "sha256").hexdigest()

    def _storage_href(self, action: str, sha256: str) -> str:
        """A signed URL on the storage origin; ``action`` is ``upload`` or ``blobs``."""
        return f"{self.storage_url}/_storage/{action}/{sha256}?sig={self._sign(action, sha256)}"

    def _lfs_batch(self, ctx: _Ctx, repo_type: str, repo_id: str) -> Response:
        payload = ctx.json()
        if payload.get("operation") != "upload":
            raise HubHTTPError(400, "LocalHub's LFS batch API only supports uploads")
        self._writable(ctx, repo_type, repo_id)
        verify = f"{self._repo_url(repo_type, repo_id)}.git/info/lfs/objects/verify"
        objects = []
        for obj in payload.get("objects", []):
            oid, size = str(obj.get("oid")), int(obj.get("size", -1))
            if not _SHA256.match(oid) or size < 0:
                objects.append(
                    {"oid": oid, "size": size, "error": {"code": 422, "message": "Invalid object"}}
                )
            elif self.store.has_blob(oid, size):
                objects.append({"oid": oid, "size": size})  # already stored: nothing to upload
            else:
                href = f"{self._storage_href('upload', oid)}&size={size}"
                objects.append(
                    {
                        "oid": oid,
                        "size": size,
                        "authenticated": True,
                        "actions": {"upload": {"href": href}, "verify": {"href": verify}},
                    }
                )
        return JSONResponse(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            media_type="application/vnd.git-lfs+json",
        )

    def _lfs_verify(self, ctx: _Ctx, repo_type: str, repo_id: str) -> Response:
        self._writable(ctx, repo_type, repo_id)
        payload = ctx.json()
        if not self.store.has_blob(str(payload.get("oid")), payload.get("size")):
            raise HubHTTPError(404, f"LFS object {payload.get('oid')} not found")
        return JSONResponse({"success": True})

    def _storage(self, ctx: _Ctx, action: str, sha256: str) -> Response:
        """The stand-in for the CDN / object store: signed URLs, no Hub token."""
        if action not in ("upload", "blobs") or not _SHA256.match(sha256):
            raise HubHTTPError(404, "No such storage object")
        if not hmac.compare_digest(ctx.query.get("sig", ""), self._sign(action, sha256)):
            raise HubHTTPError(403, "Signature does not match")
        if action == "upload" and ctx.method == "PUT":
            if hashlib.sha256(ctx.body).hexdigest() != sha256 or len(ctx.body) != int(
                ctx.query.get("size", -1)
            ):
                raise HubHTTPError(400, "Uploaded content does not match its sha256 or size")
            self.store.put_blob(ctx.body)
            return Response(status_code=200, headers={"ETag": f'"{sha256}"'})
        if action == "blobs" and ctx.method in ("GET", "HEAD") and self.store.has_blob(sha256):
            return FileResponse(
                self.store.blob_path(sha256),
                headers={"ETag": f'"{sha256}"'},
                media_type="application/octet-stream",
            )
        raise HubHTTPError(404, "No such storage object")

    def _resolve(
        self, ctx: _Ctx, repo_type: str, repo_id: str, revision: str, path: str
    ) -> Response:
        user, meta = self._readable(ctx, repo_type, repo_id)
        sha = self._rev(repo_type, repo_id, revision)
        if meta["gated"] is not None and not (
            self._may_write_ns(user, repo_id.split("/")[0]) or user in meta["gated"]
        ):
            raise HubHTTPError(
                403,
                f"Access to {repo_type} {repo_id} is restricted. You must have"
                " access to it and be authenticated to access it.",
                "GatedRepo",
            )
        entry = self.store.commit(repo_type, repo_id, sha)["files"].get(path)
        if entry is None:
            raise HubHTTPError(404, f"Entry not found: {path}", "EntryNotFound", sha)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"]}"'}
        if entry["lfs"]:
            location = self._storage_href("blobs", entry["sha256"])
            headers.update(
                {
                    "Location": location,
                    "X-Linked-Etag": f'"{entry["sha256"]}"',
                    "X-Linked-Size": str(entry["size"]),
                }
            )
            return Response(status_code=302, headers=headers)
        return FileResponse(
            self.store.blob_path(entry["sha256"]),
            headers=headers,
            media_type="application/octet-stream",
        )


@dataclass
class _Ctx:
    method: str
    raw_path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    repo: str | None = None

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError as err:
            raise HubHTTPError(400, f"Invalid JSON body: {err}") from err
        if not isinstance(value, dict):
            raise HubHTTPError(400, "Expected a JSON object")
        return value
