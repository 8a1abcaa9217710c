"""The runner's Hugging Face Hub client: download a pinned dataset, upload the output atomically.

Built on the real ``huggingface_hub`` client. The Hub address comes from ``HF_ENDPOINT`` (read at
call time) and the token from the caller or ``HF_TOKEN``; a token saved on disk by ``hf auth
login`` is deliberately not used, so a run only ever acts with the credentials it was given.
Every Hub failure is raised as a ``HubError`` whose message is one line a user can act on and
never holds the token: the messages are fixed sentences naming the dataset, the HTTP status or
the kind of network error, not the client's exception text (which can quote request headers).
Calls that fail for a passing reason (429, 5xx, timeouts) are tried again (`hubretry`); when
they keep failing, the error is a ``HubUnavailable``, which a later try of the Job may cure.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import DatasetInfo, RepoFile

from augment_spec.contract import ENV_HF_TOKEN

from . import hubretry
from .errors import redact, register_secret
from .hubretry import RETRY, Retry
from .provenance import PROVENANCE_PATH, TOOL_NAME

T = TypeVar("T")

REPO_TYPE = "dataset"
# Above either limit, LFS contents are uploaded in batches before the single final commit
# (which then only names them): at most 100 files each, the Hub's recommended commit size.
BATCH_FILES = 100
BATCH_BYTES = 1024**3
# Local folders the Hub client keeps inside a download folder; never part of a dataset.
_LOCAL_ONLY = (".cache/huggingface", ".git")
# A Hub token is one word of printable ASCII; anything else (a PEM key, a file with inner
# newlines) was read from the wrong Secret and must not be sent in a header or quoted back.
_TOKEN = re.compile(r"[\x21-\x7e]+")
MALFORMED_TOKEN = (
    "the Hub token is malformed: HF_TOKEN must hold one Hugging Face access token (one line,"
    " no spaces); check the Secret it comes from"
)


class HubError(RuntimeError):
    """A Hub operation failed; the message says what happened and what to do."""


class HubUnavailable(HubError):
    """The Hub kept failing for a passing reason (busy, down, unreachable): try again later."""


@dataclass(frozen=True)
class _Hub:
    """One token's client; every call through it is retried while the Hub is unavailable."""

    api: HfApi
    token: str | None
    retry: Retry

    def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return hubretry.call(self.retry, lambda: fn(*args, **kwargs))

    def files(self, repo_id: str, revision: str) -> dict[str, RepoFile]:
        """The files of ``repo_id`` at ``revision`` (every page of the listing, retried whole)."""
        return self(_files, self.api, repo_id, revision)


def _files(api: HfApi, repo_id: str, revision: str) -> dict[str, RepoFile]:
    tree = api.list_repo_tree(repo_id, repo_type=REPO_TYPE, revision=revision, recursive=True)
    return {f.path: f for f in tree if isinstance(f, RepoFile)}


def resolve_token(explicit: str | None = None) -> str | None:
    """The token to use: ``explicit``, else ``HF_TOKEN``, else None (anonymous).

    Surrounding whitespace is dropped (a Secret made with ``--from-file`` ends in a newline);
    a token with whitespace or control characters inside is refused with ``MALFORMED_TOKEN``.
    """
    raw = explicit or os.environ.get(ENV_HF_TOKEN) or ""
    register_secret(raw)
    token = raw.strip()
    if not token:
        return None
    if not _TOKEN.fullmatch(token):
        raise HubError(MALFORMED_TOKEN)
    return token


def download_dataset(
    repo_id: str,
    dest: Path,
    revision: str | None = None,
    token: str | None = None,
    *,
    retry: Retry = RETRY,
    select: Callable[[set[str]], set[str]] | None = None,
) -> str:
    """Download dataset ``repo_id`` at ``revision`` (default: main) into ``dest``; with
    ``select``, only the files it picks from the commit's file list (a shard's, say).

    The revision is resolved to a commit sha first and that sha is downloaded, so the files
    all come from one commit even if the branch moves meanwhile. Afterwards ``dest`` holds
    exactly that commit's files plus the client's ``.cache/huggingface`` bookkeeping folder:
    any other file in ``dest`` (say, from an earlier download) is deleted, and files already
    there with the right content are not downloaded again (a retried download resumes).
    Returns the commit sha.
    """
    dest = Path(dest)
    hub = _hub(resolve_token(token), retry)
    with _hub_errors(repo_id, revision, hub.token, "download"):
        sha = hub(hub.api.dataset_info, repo_id, revision=revision).sha
        if sha is None:
            raise HubError(f"dataset '{repo_id}' has no commit to download")
        expected = {path: f.size for path, f in hub.files(repo_id, sha).items()}
        if select is not None:
            picked = select(set(expected))
            expected = {path: size for path, size in expected.items() if path in picked}
        hub(
            snapshot_download,
            repo_id,
            repo_type=REPO_TYPE,
            revision=sha,
            local_dir=dest,
            endpoint=hub.api.endpoint,
            token=hub.token or False,
            # Exact paths, their glob characters escaped: the client matches with fnmatch.
            allow_patterns=None if select is None else [glob.escape(p) for p in expected],
        )
    local = _local_files(dest)
    for rel in sorted(set(local) - set(expected)):
        local[rel].unlink()
    _remove_empty_dirs(dest)
    wrong = [p for p, size in expected.items() if p not in local or local[p].stat().st_size != size]
    if wrong:
        raise HubError(
            f"download of dataset '{repo_id}' at {sha} is incomplete ({len(wrong)} file(s), e.g."
            f" '{wrong[0]}'): retry; if it persists, check the Hub's status"
        )
    return sha


def check_output(
    repo_id: str,
    token: str | None,
    *,
    source_repo_id: str | None = None,
    public: bool = False,
    overwrite: bool = False,
    retry: Retry = RETRY,
) -> bool:
    """Refuse, before any work, an output this job may not write; True if it must be private.

    The rules are `upload_dataset`'s, which checks them again at commit time: this early
    check only makes a refusal cost no download and no GPU time.
    """
    _check_not_source(repo_id, source_repo_id)
    hub = _hub(_upload_token(repo_id, token), retry)
    private = _must_be_private(hub, public, source_repo_id)
    with _hub_errors(repo_id, None, hub.token, "upload"):
        try:
            info = hub(hub.api.dataset_info, repo_id)
        except RepositoryNotFoundError:
            return private
        if info.sha is not None:
            remote = set(hub.files(repo_id, info.sha))
            _check_may_write(hub, repo_id, info, remote, private, public, overwrite)
    return private


def upload_dataset(
    folder: Path,
    repo_id: str,
    token: str | None,
    commit_message: str,
    source_repo_id: str | None = None,
    *,
    public: bool = False,
    overwrite: bool = False,
    batch_files: int = BATCH_FILES,
    batch_bytes: int = BATCH_BYTES,
    retry: Retry = RETRY,
    branch: str | None = None,
    prefix: str | None = None,
    keep: Callable[[str], bool] | None = None,
) -> str:
    """Make dataset ``repo_id``'s main branch hold ``folder``'s files, in one atomic commit.

    Creates the repo if it does not exist: private unless ``public`` and the source (when
    it is a Hub dataset) is public and not gated. An existing repo is written only when it
    holds no files yet or this tool made it (its ``meta/augmentation.json`` names us), or
    when ``overwrite``; a public one only when the output may be public. In a repo we made,
    remote files missing from ``folder`` are deleted in the same commit (``.gitattributes``
    is kept); in another, they are kept. When the output is large (more than
    ``batch_files`` files or ``batch_bytes`` bytes) the LFS contents are uploaded first in
    batches of that size; re-running after an interruption skips what the Hub already has.
    The commit names the head it was built on, so a concurrent change makes it fail
    instead of being overwritten. Nothing is visible on the repo until the final commit
    succeeds. Returns the commit sha.

    With ``branch`` (a sharded job's staging branch, docs/design.md, Scale out), the same
    checks run on main, the branch is made from main if missing, and the commit goes to
    the branch, whose files then are exactly ``folder``'s: main is not touched. With
    ``prefix``, ``folder``'s files go under that folder of the repo, and with ``keep``,
    the remote files it accepts stay (a piece of a shard committed beside the pieces
    staged before it).
    """
    _check_not_source(repo_id, source_repo_id)
    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"cannot upload '{folder}': it is not a folder")
    hub = _hub(_upload_token(repo_id, token), retry)
    local = _local_files(folder)
    if not local:
        raise HubError(f"cannot upload '{folder}': it holds no files")
    private = _must_be_private(hub, public, source_repo_id)
    with _hub_errors(repo_id, None, hub.token, "upload"):
        try:
            info = hub(hub.api.dataset_info, repo_id)
        except RepositoryNotFoundError:
            # Only create when missing: no write call on an existing repo.
            hub(hub.api.create_repo, repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
            info = hub(hub.api.dataset_info, repo_id)
        parent = info.sha
        remote = set(hub.files(repo_id, parent)) if parent is not None else set()
        ours = _check_may_write(hub, repo_id, info, remote, private, public, overwrite)
        if branch is not None:
            hub(hub.api.create_branch, repo_id, branch=branch, repo_type=REPO_TYPE, exist_ok=True)
            parent = hub(hub.api.dataset_info, repo_id, revision=branch).sha
            remote = set(hub.files(repo_id, parent)) if parent is not None else set()
            ours = True  # a staging branch holds nothing but what this job put there
        where = {(f"{prefix}/{rel}" if prefix else rel): path for rel, path in local.items()}
        additions = [CommitOperationAdd(rel, str(path)) for rel, path in sorted(where.items())]
        kept = {p for p in remote if keep(p)} if keep is not None else set()
        doomed = remote - set(where) - kept - {".gitattributes"} if ours else set()
        total = sum(op.upload_info.size for op in additions)
        if len(additions) > batch_files or total > batch_bytes:
            for batch in _batches(additions, batch_files, batch_bytes):
                hub(
                    hub.api.preupload_lfs_files,
                    repo_id,
                    additions=batch,
                    repo_type=REPO_TYPE,
                    free_memory=False,
                )
        return _commit(hub, repo_id, additions, sorted(doomed), commit_message, parent, remote,
                       branch)


def _commit(
    hub: _Hub,
    repo_id: str,
    additions: list[CommitOperationAdd],
    deletions: list[str],
    message: str,
    parent: str | None,
    remote: set[str],
    branch: str | None = None,
) -> str:
    """Commit on top of ``parent``, retried; returns the new head's sha.

    A commit whose answer was lost (a timeout, a 502 from a proxy) may have landed: the
    next try then finds the branch moved (412). When the moved head holds exactly this
    commit's files, it is this commit, and the upload is done.
    """
    tries = 0

    def once() -> str:
        nonlocal tries
        tries += 1
        try:
            return hub.api.create_commit(
                repo_id,
                operations=[*(CommitOperationDelete(p) for p in deletions), *additions],
                commit_message=message,
                repo_type=REPO_TYPE,
                parent_commit=parent,
                revision=branch,
            ).oid
        except HfHubHTTPError as err:
            landed = None
            if tries > 1 and hubretry.status_of(err) == 412:
                expected = (remote - set(deletions)) | {op.path_in_repo for op in additions}
                landed = _head_holding(hub, repo_id, expected, additions, branch)
            if landed is None:
                raise
            return landed

    return hubretry.call(hub.retry, once)


def _head_holding(
    hub: _Hub,
    repo_id: str,
    expected: set[str],
    additions: list[CommitOperationAdd],
    branch: str | None = None,
) -> str | None:
    """The head's sha if it holds exactly ``expected``, with ``additions``' contents.

    Called inside the commit's own retries: these calls are not retried on their own.
    """
    head = hub.api.dataset_info(repo_id, revision=branch).sha
    files = _files(hub.api, repo_id, head) if head is not None else {}
    if set(files) != expected:
        return None
    for op in additions:
        remote = files[op.path_in_repo]
        if remote.lfs is not None:
            same = remote.lfs.sha256 == op.upload_info.sha256.hex()
        else:
            data = Path(str(op.path_or_fileobj)).read_bytes()
            same = remote.blob_id == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        if not same:
            return None
    return head


def branch_files(
    repo_id: str, branch: str, token: str | None, *, retry: Retry = RETRY
) -> set[str] | None:
    """The files on ``branch`` of ``repo_id``; None when the repo or the branch is missing."""
    hub = _hub(resolve_token(token), retry)
    with _hub_errors(repo_id, branch, hub.token, "download"):
        try:
            sha = hub(hub.api.dataset_info, repo_id, revision=branch).sha
        except (RepositoryNotFoundError, RevisionNotFoundError):
            return None
        return set(hub.files(repo_id, sha)) if sha is not None else set()


def download_file(
    repo_id: str, revision: str, path: str, dest: Path, token: str | None, *, retry: Retry = RETRY
) -> Path:
    """One file of ``repo_id`` at ``revision``, downloaded under the folder ``dest``."""
    hub = _hub(resolve_token(token), retry)
    with _hub_errors(repo_id, revision, hub.token, "download"):
        return Path(hub(hub.api.hf_hub_download, repo_id, path, repo_type=REPO_TYPE,
                        revision=revision, local_dir=dest))


def delete_branch(repo_id: str, branch: str, token: str | None, *, retry: Retry = RETRY) -> None:
    """Delete ``branch`` of ``repo_id``; one already gone is fine."""
    hub = _hub(_upload_token(repo_id, token), retry)
    with _hub_errors(repo_id, branch, hub.token, "upload"):
        try:
            hub(hub.api.delete_branch, repo_id, branch=branch, repo_type=REPO_TYPE)
        except HfHubHTTPError as err:
            if hubretry.status_of(err) != 404:
                raise


def _hub(token: str | None, retry: Retry) -> _Hub:
    hubretry.use_timeouts()
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    return _Hub(HfApi(endpoint=endpoint, token=token or False), token, retry)


def _check_not_source(repo_id: str, source_repo_id: str | None) -> None:
    def same(a: str, b: str) -> bool:  # Hub ids are case-insensitive
        return a.strip("/").lower() == b.strip("/").lower()

    if source_repo_id is not None and same(repo_id, source_repo_id):
        raise HubError(
            f"refusing to upload to '{repo_id}': it is the source dataset, which is never"
            " written; choose another output dataset id"
        )


def _upload_token(repo_id: str, token: str | None) -> str:
    resolved = resolve_token(token)
    if resolved is None:
        raise HubError(
            f"no Hugging Face token to upload '{repo_id}': set HF_TOKEN to a token with write"
            f" access to the '{repo_id.split('/')[0]}' namespace"
        )
    return resolved


def _must_be_private(hub: _Hub, public: bool, source_repo_id: str | None) -> bool:
    """Private unless asked for public and the source is public (a local folder is the
    caller's own data): what is derived from a private or gated dataset, provenance
    naming it included, is never published."""
    if not public:
        return True
    if source_repo_id is None:
        return False
    with _hub_errors(source_repo_id, None, hub.token, "download"):
        info = hub(hub.api.dataset_info, source_repo_id)
    return bool(info.private or info.gated)


def _check_may_write(
    hub: _Hub,
    repo_id: str,
    info: DatasetInfo,
    remote: set[str],
    private: bool,
    public: bool,
    overwrite: bool,
) -> bool:
    """Refuse writing into an existing repo we may not write; True if its files are ours."""
    if private and not info.private:
        why = "the source dataset is private or gated" if public else "output_visibility is private"
        raise HubError(
            f"output dataset '{repo_id}' is public, but this job's output must be private"
            f" ({why}): make it private on the Hub, or choose another output_dataset_id"
        )
    ours = _made_by_us(hub, repo_id, info.sha, remote)
    if not ours and not overwrite:
        raise HubError(
            f"output dataset '{repo_id}' already exists and was not made by {TOOL_NAME} (its"
            f" {PROVENANCE_PATH} does not name it): choose another output_dataset_id, or set"
            " overwrite to write into it (its other files are kept)"
        )
    return ours


def _made_by_us(hub: _Hub, repo_id: str, revision: str | None, remote: set[str]) -> bool:
    """The repo holds nothing yet (only the Hub's ``.gitattributes``) or our provenance."""
    if not remote - {".gitattributes"}:
        return True
    if revision is None or PROVENANCE_PATH not in remote:
        return False
    with tempfile.TemporaryDirectory(prefix="augment-provenance-") as tmp:
        path = hub(
            hub.api.hf_hub_download,
            repo_id,
            PROVENANCE_PATH,
            repo_type=REPO_TYPE,
            revision=revision,
            local_dir=tmp,
        )
        try:
            provenance = json.loads(Path(path).read_text())
        except (ValueError, UnicodeDecodeError):
            return False
    tool = provenance.get("tool") if isinstance(provenance, dict) else None
    return isinstance(tool, dict) and tool.get("name") == TOOL_NAME


def _batches(
    additions: list[CommitOperationAdd], max_files: int, max_bytes: int
) -> Iterator[list[CommitOperationAdd]]:
    batch: list[CommitOperationAdd] = []
    size = 0
    for op in additions:
        if batch and (len(batch) >= max_files or size + op.upload_info.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(op)
        size += op.upload_info.size
    if batch:
        yield batch


def _local_files(folder: Path) -> dict[str, Path]:
    """``{posix relative path: path}`` of the dataset files under ``folder``."""
    if not folder.is_dir():
        return {}
    files = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(rel == d or rel.startswith(d + "/") for d in _LOCAL_ONLY):
            files[rel] = path
    return files


def _remove_empty_dirs(folder: Path) -> None:
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()


def _server_says(err: HfHubHTTPError) -> str:
    """The first line of the Hub's own error message (never the client's request details)."""
    text = (err.server_message or "").strip()
    return redact(text.splitlines()[0]) if text else "no message"


@contextmanager
def _hub_errors(
    repo_id: str, revision: str | None, token: str | None, action: str
) -> Iterator[None]:
    """Turn the client's exceptions into a one-line ``HubError``."""
    try:
        yield
    except HubError:
        raise
    except Exception as err:
        mapped = _hub_error(err, repo_id, revision, token, action)
        if mapped is None:
            raise
        raise mapped from err


def _hub_error(
    err: Exception, repo_id: str, revision: str | None, token: str | None, action: str
) -> HubError | None:
    """The ``HubError`` saying what ``err`` means for the user, None for an unknown error."""
    where = f"dataset '{repo_id}'"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if hubretry.is_transient(err):
        return HubUnavailable(
            f"the Hub at {endpoint} kept failing to {action} {where}"
            f" ({hubretry.describe(err)}), retried with backoff: the Job tries again; if it"
            " persists, check the network, HF_ENDPOINT and the Hub's status"
        )
    if isinstance(err, RevisionNotFoundError):
        return HubError(
            f"revision '{revision or 'main'}' not found in {where}: use an existing branch,"
            " tag or commit sha"
        )
    if isinstance(err, GatedRepoError):
        return HubError(
            f"{where} is gated: accept its access conditions on the Hub with the account of the"
            " token in HF_TOKEN"
        )
    if isinstance(err, RepositoryNotFoundError):
        hint = "check the id" + (
            ", and that HF_TOKEN can read it if it is private"
            if token
            else "; if it is private, set HF_TOKEN to a token that can read it"
        )
        return HubError(f"{where} not found on {endpoint}: {hint}")
    if isinstance(err, RemoteEntryNotFoundError):
        return HubError(f"a file of {where} is missing on the Hub ({_server_says(err)})")
    if isinstance(err, HfHubHTTPError):
        return _http_error(err, where, repo_id, action)
    if isinstance(err, httpx2.TransportError):  # not a passing failure: a wrong address or proxy
        return HubError(
            f"cannot reach the Hub at {endpoint} to {action} {where} ({type(err).__name__}):"
            " check HF_ENDPOINT and the proxy settings"
        )
    return None


def _http_error(err: HfHubHTTPError, where: str, repo_id: str, action: str) -> HubError:
    status = hubretry.status_of(err)
    if status == 401:
        return HubError(
            f"the Hub rejected the token for {where} (401): set HF_TOKEN to a valid token"
        )
    if status == 403:
        need = (
            f"write access to '{repo_id.split('/')[0]}', or an output id in a namespace you own"
            if action == "upload"
            else "read access to it"
        )
        return HubError(f"access to {where} denied (403): use a token with {need}")
    if status == 412:
        return HubError(f"{where} changed on the Hub during the upload (412): run the upload again")
    return HubError(f"Hub {action} of {where} failed ({status}): {_server_says(err)}")
