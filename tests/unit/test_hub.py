"""Round trips through the real huggingface_hub client against the local Hub server."""

import os

# The local Hub has no Xet storage: the client must upload with LFS. This is read when
# huggingface_hub is first imported, so it is set before any import of it.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from pathlib import Path
from unittest.mock import ANY

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from augment_dev.hub import LocalHub
from augment_runner.hub import HubError, download_dataset, resolve_token, upload_dataset

TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
README = b"---\nlicense: apache-2.0\ntags: [LeRobot]\n---\n# Test dataset\n"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if not hf_constants.HF_HUB_DISABLE_XET:
        pytest.fail("set HF_HUB_DISABLE_XET=1 before huggingface_hub is first imported")
    # A small page size makes every tree listing paginate.
    with LocalHub(tmp_path / "hub", TOKENS, orgs={"lab": ["alice"]}, tree_page_size=3) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


def write_dataset(folder: Path, video: bytes, info: str = '{"fps": 30}') -> dict[str, bytes]:
    files = {
        "README.md": README,
        "meta/info.json": info.encode(),
        "meta/tasks.jsonl": b'{"task_index": 0, "task": "pick"}\n',
        "data/chunk-000/episode_000000.parquet": bytes(range(256)) * 8,
        "videos/chunk-000/observation.images.top/episode_000000.mp4": video,
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return files


def read_folder(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(folder).parts
    }


def writes_to(hub: LocalHub, repo_id: str) -> list:
    return [c for c in hub.calls if c.repo == f"dataset:{repo_id}" and c.is_write]


def test_upload_then_download_pinned_revisions(hub: LocalHub, tmp_path: Path) -> None:
    video = os.urandom(1_000_000)
    v1 = write_dataset(tmp_path / "v1", video)
    sha1 = upload_dataset(tmp_path / "v1", "alice/out", "tok-alice", "Augment v1")
    assert hub.head("alice/out") == sha1
    # Binary files went through LFS: uploaded to storage, committed as pointers.
    assert any(c.method == "PUT" and c.path.startswith("/_storage/upload/") for c in hub.calls)
    info = HfApi(endpoint=hub.endpoint).dataset_info("alice/out", files_metadata=True)
    lfs = {s.rfilename for s in info.siblings if s.lfs}
    assert lfs == {
        "data/chunk-000/episode_000000.parquet",
        next(p for p in v1 if p.endswith(".mp4")),
    }

    dest = tmp_path / "dl"
    assert download_dataset("alice/out", dest) == sha1
    downloaded = read_folder(dest)
    assert downloaded.pop(".gitattributes")  # made by the Hub at repo creation
    assert downloaded == v1

    # Second commit: one file changed, one removed, one added.
    v2_dir = tmp_path / "v2"
    v2 = write_dataset(v2_dir, video, info='{"fps": 15}')
    (v2_dir / "meta/tasks.jsonl").unlink()
    (v2_dir / "meta/stats.json").write_text("{}")
    del v2["meta/tasks.jsonl"]
    v2["meta/stats.json"] = b"{}"
    sha2 = upload_dataset(v2_dir, "alice/out", "tok-alice", "Augment v2")
    assert sha2 != sha1
    assert download_dataset("alice/out", dest, revision="main") == sha2
    assert {k: v for k, v in read_folder(dest).items() if k != ".gitattributes"} == v2

    # The old commit is still there, byte for byte, even downloaded over the newer one.
    assert download_dataset("alice/out", dest, revision=sha1) == sha1
    assert {k: v for k, v in read_folder(dest).items() if k != ".gitattributes"} == v1


def test_failed_commit_leaves_repo_unchanged(hub: LocalHub, tmp_path: Path) -> None:
    write_dataset(tmp_path / "v1", os.urandom(1000))
    sha1 = upload_dataset(tmp_path / "v1", "alice/out", "tok-alice", "v1")
    before = hub.files("alice/out")
    write_dataset(tmp_path / "v2", os.urandom(200_000), info='{"fps": 10}')

    # The commit is received and stored, then fails just before the branch would move.
    hub.fail_next(r"^POST /api/datasets/alice/out/commit/", stage="publish")
    with pytest.raises(HubError, match="500"):
        upload_dataset(tmp_path / "v2", "alice/out", "tok-alice", "v2")
    assert hub.head("alice/out") == sha1
    assert hub.files("alice/out") == before
    assert download_dataset("alice/out", tmp_path / "dl") == sha1

    # Running it again finishes the job without sending the stored LFS content again.
    puts = sum(c.method == "PUT" for c in hub.calls)
    sha2 = upload_dataset(tmp_path / "v2", "alice/out", "tok-alice", "v2")
    assert sha2 != sha1
    assert sum(c.method == "PUT" for c in hub.calls) == puts
    # Once more: nothing changed, so no new commit.
    assert upload_dataset(tmp_path / "v2", "alice/out", "tok-alice", "v2") == sha2


def test_commit_on_a_moved_branch_is_rejected(hub: LocalHub) -> None:
    api = HfApi(endpoint=hub.endpoint, token="tok-alice")
    api.create_repo("alice/out", repo_type="dataset")
    base = hub.head("alice/out")
    api.create_commit(
        "alice/out", [CommitOperationAdd("a.txt", b"a")], commit_message="a", repo_type="dataset"
    )
    head = hub.head("alice/out")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(
            "alice/out",
            [CommitOperationAdd("b.txt", b"b")],
            commit_message="b",
            repo_type="dataset",
            parent_commit=base,
        )
    assert err.value.response.status_code == 412
    assert hub.head("alice/out") == head
    assert sorted(hub.files("alice/out")) == [".gitattributes", "a.txt"]


def test_large_output_uploads_lfs_in_batches_then_one_commit(hub: LocalHub, tmp_path: Path) -> None:
    files = write_dataset(tmp_path / "out", os.urandom(5000))
    sha = upload_dataset(tmp_path / "out", "lab/big", "tok-alice", "big", batch_files=2)
    assert hub.head("lab/big") == sha
    lab = [c for c in hub.calls if c.repo == "dataset:lab/big"]
    assert sum(c.path.endswith("/preupload/main") for c in lab) == 3  # 5 files, 2 per batch
    assert sum(c.path.endswith("/objects/batch") for c in lab) == 2  # batches holding LFS files
    assert sum(c.path.endswith("/commit/main") for c in lab) == 1
    assert {k: v for k, v in hub.files("lab/big").items() if k != ".gitattributes"} == files


def test_hub_errors_are_one_line_and_actionable(hub: LocalHub, tmp_path: Path) -> None:
    public = hub.seed("alice/public", {"a.txt": b"a"})
    hub.seed("alice/secret", {"a.txt": b"a"}, private=True)
    write_dataset(tmp_path / "out", b"\0video")
    dest = tmp_path / "dl"
    cases = [
        (lambda: download_dataset("alice/missing", dest), "not found"),
        (lambda: download_dataset("alice/secret", dest), "set HF_TOKEN"),
        (lambda: download_dataset("alice/secret", dest, token="tok-bob"), "not found"),
        (lambda: download_dataset("alice/public", dest, revision="v9"), "revision 'v9'"),
        (lambda: download_dataset("alice/public", dest, token="bad"), "rejected the token"),
        (lambda: upload_dataset(tmp_path / "out", "alice/x", None, "m"), "no Hugging Face token"),
        (lambda: upload_dataset(tmp_path / "out", "alice/x", "bad", "m"), "rejected the token"),
        (lambda: upload_dataset(tmp_path / "out", "alice/x", "tok-bob", "m"), "denied (403)"),
        (lambda: upload_dataset(tmp_path / "out", "alice/public", "tok-bob", "m"), "denied (403)"),
    ]
    for call, expected in cases:
        with pytest.raises(HubError) as err:
            call()
        assert expected in str(err.value) and "\n" not in str(err.value)
    assert hub.head("alice/public") == public
    assert download_dataset("alice/secret", dest, token="tok-alice") == hub.head("alice/secret")

    hub.set_gated("alice/public", approved_users=["carol"])
    with pytest.raises(HubError, match="gated"):
        download_dataset("alice/public", tmp_path / "gated", token="tok-bob")


def test_client_sees_typed_errors(hub: LocalHub) -> None:
    hub.seed("alice/public", {"a.txt": b"a"})
    api = HfApi(endpoint=hub.endpoint, token=False)
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("alice/missing")
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info("alice/public", revision="nope")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(
            "alice/public", "b.txt", repo_type="dataset", endpoint=hub.endpoint, token=False
        )


def test_source_dataset_is_never_written(hub: LocalHub, tmp_path: Path) -> None:
    source = write_dataset(tmp_path / "seed", os.urandom(3000))
    sha = hub.seed("alice/src", tmp_path / "seed")
    assert download_dataset("alice/src", tmp_path / "work", token="tok-alice") == sha
    assert read_folder(tmp_path / "work") == {**source, ".gitattributes": ANY}

    with pytest.raises(HubError, match="source dataset"):
        upload_dataset(tmp_path / "work", "Alice/SRC", "tok-alice", "m", source_repo_id="alice/src")
    upload_dataset(tmp_path / "work", "alice/dst", "tok-alice", "m", source_repo_id="alice/src")
    assert writes_to(hub, "alice/src") == []
    assert hub.head("alice/src") == sha


def test_resolve_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "from-env")
    assert resolve_token("explicit") == "explicit"
    assert resolve_token() == "from-env"
    monkeypatch.delenv("HF_TOKEN")
    assert resolve_token() is None
