"""The runner's Hugging Face Hub client: download a pinned dataset, upload the output atomically.

Built on the real ``huggingface_hub`` client. The Hub address comes from ``HF_ENDPOINT`` (read at
call time) and the token from the caller or ``HF_TOKEN``; a token saved on disk by ``hf auth
login`` is deliberately not used, so a run only ever acts with the credentials it was given.
Every Hub failure is raised as a ``HubError`` whose message is one line a user can act on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile

from augment_spec.contract import ENV_HF_TOKEN

REPO_TYPE = "dataset"
# Above either limit, LFS contents are uploaded in batches before the single final commit.
BATCH_FILES = 256
BATCH_BYTES = 1024**3
# Local folders the Hub client keeps inside a download folder; never part of a dataset.
_LOCAL_ONLY = (".cache/huggingface", ".git")


class HubError(RuntimeError):
    """A Hub operation failed; the message says what happened and what to do."""


def resolve_token(explicit: str | None = None) -> str | None:
    """The token to use: ``explicit``, else ``HF_TOKEN``, else None (anonymous)."""
    return explicit or os.environ.get(ENV_HF_TOKEN) or None


def download_dataset(
    repo_id: str, dest: Path, revision: str | None = None, token: str | None = None
) -> str:
    """Download dataset ``repo_id`` at ``revision`` (default: main) into ``dest``.

    The revision is resolved to a commit sha first and that sha is downloaded, so the files
    all come from one commit even if the branch moves meanwhile. Afterwards ``dest`` holds
    exactly that commit's files plus the client's ``.cache/huggingface`` bookkeeping folder:
    any other file in ``dest`` (say, from an earlier download) is deleted, and files already
    there with the right content are not downloaded again. Returns the commit sha.
    """
    dest = Path(dest)
    token = resolve_token(token)
    api = _api(token)
    with _hub_errors(repo_id, revision, token, "download"):
        sha = api.dataset_info(repo_id, revision=revision).sha
        if sha is None:
            raise HubError(f"dataset '{repo_id}' has no commit to download")
        tree = api.list_repo_tree(repo_id, repo_type=REPO_TYPE, revision=sha, recursive=True)
        expected = {f.path: f.size for f in tree if isinstance(f, RepoFile)}
        snapshot_download(
            repo_id,
            repo_type=REPO_TYPE,
            revision=sha,
            local_dir=dest,
            endpoint=api.endpoint,
            token=token or False,
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


def upload_dataset(
    folder: Path,
    repo_id: str,
    token: str | None,
    commit_message: str,
    source_repo_id: str | None = None,
    *,
    private: bool | None = None,
    batch_files: int = BATCH_FILES,
    batch_bytes: int = BATCH_BYTES,
) -> str:
    """Make dataset ``repo_id``'s main branch hold exactly ``folder``, in one atomic commit.

    Creates the repo if it does not exist (``private`` only applies then). Remote files
    missing from ``folder`` are deleted in the same commit (``.gitattributes`` is kept). When
    the output is large (more than ``batch_files`` files or ``batch_bytes`` bytes) the LFS
    contents are uploaded first in batches of that size; re-running after an interruption
    skips what the Hub already has. The commit names the head it was built on, so a
    concurrent change makes it fail instead of being overwritten. Nothing is visible
    on the repo until the final commit succeeds. Returns the commit sha.
    """
    if (
        source_repo_id is not None
        and repo_id.strip("/").lower() == source_repo_id.strip("/").lower()
    ):
        raise HubError(
            f"refusing to upload to '{repo_id}': it is the source dataset, which is never"
            " written; choose another output dataset id"
        )
    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"cannot upload '{folder}': it is not a folder")
    token = resolve_token(token)
    if token is None:
        raise HubError(
            f"no Hugging Face token to upload '{repo_id}': set HF_TOKEN to a token with write"
            f" access to the '{repo_id.split('/')[0]}' namespace"
        )
    local = _local_files(folder)
    if not local:
        raise HubError(f"cannot upload '{folder}': it holds no files")
    api = _api(token)
    with _hub_errors(repo_id, None, token, "upload"):
        try:
            parent = api.dataset_info(repo_id).sha
        except RepositoryNotFoundError:
            # Only create when missing: no write call on an existing repo.
            api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
            parent = api.dataset_info(repo_id).sha
        remote: set[str] = set()
        if parent is not None:
            tree = api.list_repo_tree(repo_id, repo_type=REPO_TYPE, revision=parent, recursive=True)
            remote = {f.path for f in tree if isinstance(f, RepoFile)}
        additions = [CommitOperationAdd(rel, str(path)) for rel, path in sorted(local.items())]
        deletions = [
            CommitOperationDelete(path) for path in sorted(remote - set(local) - {".gitattributes"})
        ]
        total = sum(op.upload_info.size for op in additions)
        if len(additions) > batch_files or total > batch_bytes:
            for batch in _batches(additions, batch_files, batch_bytes):
                api.preupload_lfs_files(
                    repo_id, additions=batch, repo_type=REPO_TYPE, free_memory=False
                )
        commit = api.create_commit(
            repo_id,
            operations=[*deletions, *additions],
            commit_message=commit_message,
            repo_type=REPO_TYPE,
            parent_commit=parent,
        )
    return commit.oid


def _api(token: str | None) -> HfApi:
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    return HfApi(endpoint=endpoint, token=token or False)


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


def _first_line(err: BaseException) -> str:
    server = getattr(err, "server_message", None)
    text = (server or str(err) or type(err).__name__).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def _hub_errors(
    repo_id: str, revision: str | None, token: str | None, action: str
) -> Iterator[None]:
    """Turn the client's exceptions into a one-line ``HubError``."""
    where = f"dataset '{repo_id}'"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        yield
    except HubError:
        raise
    except RevisionNotFoundError as err:
        raise HubError(
            f"revision '{revision or 'main'}' not found in {where}: use an existing branch,"
            " tag or commit sha"
        ) from err
    except GatedRepoError as err:
        raise HubError(
            f"{where} is gated: accept its access conditions on the Hub with the account of the"
            " token in HF_TOKEN"
        ) from err
    except RepositoryNotFoundError as err:
        hint = "check the id" + (
            ", and that HF_TOKEN can read it if it is private"
            if token
            else "; if it is private, set HF_TOKEN to a token that can read it"
        )
        raise HubError(f"{where} not found on {endpoint}: {hint}") from err
    except RemoteEntryNotFoundError as err:
        raise HubError(f"a file of {where} is missing on the Hub ({_first_line(err)})") from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise HubError(
                f"the Hub rejected the token for {where} (401): set HF_TOKEN to a valid token"
            ) from err
        if status == 403:
            need = (
                f"write access to '{repo_id.split('/')[0]}', or an output id in a namespace you own"
                if action == "upload"
                else "read access to it"
            )
            raise HubError(f"access to {where} denied (403): use a token with {need}") from err
        if status == 412:
            raise HubError(
                f"{where} changed on the Hub during the upload (412): run the upload again"
            ) from err
        raise HubError(f"Hub {action} of {where} failed ({status}): {_first_line(err)}") from err
    except (httpx2.TransportError, LocalEntryNotFoundError, ConnectionError) as err:
        raise HubError(
            f"cannot reach the Hub at {endpoint} to {action} {where}: {_first_line(err)};"
            " check the network and HF_ENDPOINT"
        ) from err
