"""Round trips through the real huggingface_hub client against the local Hub server."""

import os

# The local Hub has no Xet storage: the client must upload with LFS. This is read when
# huggingface_hub is first imported, so it is set before any import of it.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from pathlib import Path
from unittest.mock import ANY

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, close_session, hf_hub_download
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from augment_cli.main import main as augment_main
from augment_dev.hub import LocalHub
from augment_runner.errors import REDACTED, redact
from augment_runner.hub import (
    HubError,
    HubUnavailable,
    check_output,
    download_dataset,
    resolve_token,
    upload_dataset,
)
from augment_runner.hubretry import MAX_RETRY_AFTER_SECONDS, TIMEOUT_ENV, Retry
from augment_spec.contract import EXIT_BAD_INPUT, EXIT_HUB_UNAVAILABLE

TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
README = b"---\nlicense: apache-2.0\ntags: [LeRobot]\n---\n# Test dataset\n"
# The provenance file every output of ours holds: it marks a Hub dataset as ours to replace.
OURS = b'{"tool": {"name": "augment-operator", "version": "1.0"}}'


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
        "meta/augmentation.json": OURS,
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
    info = HfApi(endpoint=hub.endpoint, token="tok-alice").dataset_info(
        "alice/out", files_metadata=True
    )
    assert info.private  # outputs are private unless asked otherwise
    lfs = {s.rfilename for s in info.siblings if s.lfs}
    assert lfs == {
        "data/chunk-000/episode_000000.parquet",
        next(p for p in v1 if p.endswith(".mp4")),
    }

    dest = tmp_path / "dl"
    assert download_dataset("alice/out", dest, token="tok-alice") == sha1
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
    assert download_dataset("alice/out", dest, revision="main", token="tok-alice") == sha2
    assert {k: v for k, v in read_folder(dest).items() if k != ".gitattributes"} == v2

    # The old commit is still there, byte for byte, even downloaded over the newer one.
    assert download_dataset("alice/out", dest, revision=sha1, token="tok-alice") == sha1
    assert {k: v for k, v in read_folder(dest).items() if k != ".gitattributes"} == v1


def test_failed_commit_leaves_repo_unchanged(hub: LocalHub, tmp_path: Path) -> None:
    write_dataset(tmp_path / "v1", os.urandom(1000))
    sha1 = upload_dataset(tmp_path / "v1", "alice/out", "tok-alice", "v1")
    before = hub.files("alice/out")
    write_dataset(tmp_path / "v2", os.urandom(200_000), info='{"fps": 10}')

    # The commit is received and stored, then fails just before the branch would move.
    hub.fail_next(r"^POST /api/datasets/alice/out/commit/", stage="publish")
    with pytest.raises(HubUnavailable, match="HTTP 500"):
        upload_dataset(tmp_path / "v2", "alice/out", "tok-alice", "v2", retry=Retry(attempts=1))
    assert hub.head("alice/out") == sha1
    assert hub.files("alice/out") == before
    assert download_dataset("alice/out", tmp_path / "dl", token="tok-alice") == sha1

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
    public = hub.seed("alice/public", {"a.txt": b"a", "meta/augmentation.json": OURS})
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
        (
            lambda: upload_dataset(tmp_path / "out", "alice/public", "tok-bob", "m", public=True),
            "denied (403)",
        ),
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
    monkeypatch.setenv("HF_TOKEN", "  from-file\n")  # kubectl create secret --from-file
    assert resolve_token() == "from-file"
    monkeypatch.setenv("HF_TOKEN", "\n")
    assert resolve_token() is None
    monkeypatch.delenv("HF_TOKEN")
    assert resolve_token() is None
    for bad in ("hf_a\nhf_b", "hf a", "hf_\x00a", "hf_\u00e9"):
        with pytest.raises(HubError, match=r"^the Hub token is malformed"):
            resolve_token(bad)


# A Secret that is not a Hub token at all, as a wrong hf_token_secret_name would give.
PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq7BFUpkGp3+LQmlQ\n"
    "Yx2eqzDV+xeG8kx/sQFV18S5JhzGeIRg3YBhd8Q2Cw9HlD6YH2pRWw7YHnJx8lVz\n"
    "-----END PRIVATE KEY-----\n"
)


def secret_pieces(secret: str) -> list[str]:
    return [p for p in [secret.strip(), *secret.split()] if len(p) >= 6]


def test_token_with_a_trailing_newline_works(hub: LocalHub, tmp_path: Path) -> None:
    sha = hub.seed("alice/secret", {"a.txt": b"a"}, private=True)
    assert download_dataset("alice/secret", tmp_path / "dl", token="tok-alice\n") == sha


def test_a_malformed_token_never_reaches_a_message(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    hub.seed("alice/src", {"a.txt": b"a"})
    log = tmp_path / "termination-log"
    monkeypatch.setenv("HF_TOKEN", PEM)
    monkeypatch.setenv("AUGMENT_TERMINATION_LOG", str(log))
    code = augment_main(["run", "--dataset", "alice/src", "--output", str(tmp_path / "out")])
    err = capfd.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert err == log.read_text()
    assert err.startswith("augment run: the Hub token is malformed")
    for piece in secret_pieces(PEM):
        assert piece not in err
    assert hub.calls == []  # refused before any request carried it


def test_redact_removes_a_secret_however_it_is_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", PEM)
    header = f"Bearer {PEM}".encode()
    for text in (f"Illegal header value {header!r}", f"bad token {PEM}", str(PEM.splitlines())):
        cleaned = redact(text)
        assert REDACTED in cleaned
        for piece in secret_pieces(PEM):
            assert piece not in cleaned
    assert redact("dataset 'alice/src' not found") == "dataset 'alice/src' not found"


def is_private(hub: LocalHub, repo_id: str) -> bool:
    return hub.store.meta("dataset", repo_id)["private"]


def test_output_is_private_unless_public_is_asked_and_the_source_is_public(
    hub: LocalHub, tmp_path: Path
) -> None:
    write_dataset(tmp_path / "out", b"\0video")
    hub.seed("alice/open", {"a.txt": b"a"})
    hub.seed("alice/closed", {"a.txt": b"a"}, private=True)
    hub.seed("alice/gated", {"a.txt": b"a"})
    hub.set_gated("alice/gated", approved_users=["bob"])

    def upload(repo_id: str, source: str | None, public: bool) -> None:
        upload_dataset(tmp_path / "out", repo_id, "tok-alice", "m", source, public=public)

    upload("alice/default", "alice/open", public=False)
    upload("alice/local-public", None, public=True)  # a folder: the caller's own data
    upload("alice/open-public", "alice/open", public=True)
    upload("alice/closed-public", "alice/closed", public=True)
    upload("alice/gated-public", "alice/gated", public=True)
    assert {repo: is_private(hub, repo) for repo in [
        "alice/default", "alice/local-public", "alice/open-public", "alice/closed-public",
        "alice/gated-public",
    ]} == {
        "alice/default": True,
        "alice/local-public": False,
        "alice/open-public": False,
        "alice/closed-public": True,
        "alice/gated-public": True,
    }
    # The provenance of a private source is not published through an existing public output.
    head = hub.head("alice/open-public")
    for check in (
        lambda: upload("alice/open-public", "alice/closed", public=True),
        lambda: check_output("alice/open-public", "tok-alice", source_repo_id="alice/closed",
                             public=True),
        lambda: upload("alice/open-public", "alice/open", public=False),
    ):
        with pytest.raises(HubError, match="is public, but this job's output must be private"):
            check()
    assert hub.head("alice/open-public") == head
    assert not is_private(hub, "alice/open-public")


def test_a_dataset_made_elsewhere_is_written_only_with_overwrite(
    hub: LocalHub, tmp_path: Path
) -> None:
    files = write_dataset(tmp_path / "out", b"\0video")
    theirs = hub.seed("alice/theirs", {"notes.txt": b"mine"}, private=True)
    forged = hub.seed("alice/forged", {"meta/augmentation.json": b'{"tool": {"name": "x"}}'},
                      private=True)
    for repo_id in ("alice/theirs", "alice/forged"):
        for check in (
            lambda r=repo_id: check_output(r, "tok-alice"),
            lambda r=repo_id: upload_dataset(tmp_path / "out", r, "tok-alice", "m"),
        ):
            with pytest.raises(HubError, match=r"not made by augment-operator.*set overwrite"):
                check()
    assert (hub.head("alice/theirs"), hub.head("alice/forged")) == (theirs, forged)
    assert writes_to(hub, "alice/theirs") == writes_to(hub, "alice/forged") == []

    # With overwrite, the output goes in and nothing of theirs is deleted.
    assert check_output("alice/theirs", "tok-alice", overwrite=True) is True
    upload_dataset(tmp_path / "out", "alice/theirs", "tok-alice", "m", overwrite=True)
    assert hub.files("alice/theirs") == {**files, "notes.txt": b"mine", ".gitattributes": ANY}

    # A repo that holds nothing yet (created ahead of the job) is no one's work to lose.
    HfApi(endpoint=hub.endpoint, token="tok-alice").create_repo(
        "alice/empty", repo_type="dataset", private=True
    )
    upload_dataset(tmp_path / "out", "alice/empty", "tok-alice", "m")

    # In a dataset of ours, files the new output no longer has are deleted.
    (tmp_path / "out/meta/tasks.jsonl").unlink()
    upload_dataset(tmp_path / "out", "alice/empty", "tok-alice", "m2")
    assert "meta/tasks.jsonl" not in hub.files("alice/empty")
    assert "meta/tasks.jsonl" in hub.files("alice/theirs")


def test_run_refuses_a_foreign_output_before_downloading(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    hub.seed("alice/src", {"a.txt": b"a"})
    hub.seed("alice/theirs", {"notes.txt": b"mine"})
    monkeypatch.setenv("HF_TOKEN", "tok-alice")
    args = ["run", "--dataset", "alice/src", "--output", str(tmp_path / "o"), "--public"]
    assert augment_main([*args, "--push-to", "alice/theirs"]) == EXIT_BAD_INPUT
    assert "'alice/theirs' already exists and was not made by" in capfd.readouterr().err
    source_paths = [c.path for c in hub.calls if c.repo == "dataset:alice/src"]
    assert not [p for p in source_paths if "/resolve/" in p or "/tree/" in p]
    assert writes_to(hub, "alice/theirs") == []


def test_hub_hiccups_are_retried_honouring_retry_after(hub: LocalHub, tmp_path: Path) -> None:
    files = write_dataset(tmp_path / "seed", os.urandom(300_000))
    sha = hub.seed("alice/src", tmp_path / "seed")
    waits: list[float] = []
    retry = Retry(sleep=waits.append)

    # Download: repo info rate limited, then the tree listing and a file fail once each.
    hub.fail_next(r"^GET /api/datasets/alice/src$", 429, retry_after="7")
    hub.fail_next(r"^GET /api/datasets/alice/src/tree/", 503)
    hub.fail_next(r"/resolve/.*/meta/info\.json$", 502)
    dest = tmp_path / "dl"
    assert download_dataset("alice/src", dest, token="tok-alice", retry=retry) == sha
    assert {k: v for k, v in read_folder(dest).items() if k != ".gitattributes"} == files
    assert waits[0] == 7  # as the Hub asked
    assert [c.status for c in hub.calls if c.status >= 400] == [429, 503, 502]

    # Upload: an LFS upload fails, the commit is refused once, then lands but its answer is
    # lost: the next try finds the branch moved to exactly this commit, which is success.
    waits.clear()
    output = write_dataset(tmp_path / "out", os.urandom(300_000))  # new LFS content to send
    hub.fail_next(r"^PUT /_storage/upload/", 503, retry_after="0")
    hub.fail_next(r"^POST /api/datasets/alice/out/commit/", 503, retry_after="3")
    hub.fail_next(r"^POST /api/datasets/alice/out/commit/", 504, stage="response")
    commit = upload_dataset(tmp_path / "out", "alice/out", "tok-alice", "m", retry=retry)
    assert hub.head("alice/out") == commit
    assert {k: v for k, v in hub.files("alice/out").items() if k != ".gitattributes"} == output
    assert waits[0] == 3 and len(waits) == 2
    assert [c.status for c in hub.calls if c.path.startswith("/_storage/upload/")][:1] == [503]
    # Refused, landed with its answer lost, found landed (the branch moved to it): one commit.
    assert [c.status for c in hub.calls if "/commit/" in c.path] == [503, 504, 412]


def test_a_hub_that_keeps_failing_is_unavailable_not_bad_input(
    hub: LocalHub, tmp_path: Path
) -> None:
    hub.seed("alice/src", {"a.txt": b"a"})
    waits: list[float] = []
    hub.fail_next(r"^GET /api/datasets/alice/src", 503, times=3)
    with pytest.raises(HubUnavailable, match=r"\(HTTP 503\), retried with backoff") as err:
        download_dataset("alice/src", tmp_path / "dl", retry=Retry(3, 2.0, 60.0, waits.append))
    assert "\n" not in str(err.value)
    assert 1.0 <= waits[0] <= 2.0 and 2.0 <= waits[1] <= 4.0 and len(waits) == 2

    # A Hub asking for a longer pause than a pod waits: give up now, the Job retries later.
    waits.clear()
    too_long = str(MAX_RETRY_AFTER_SECONDS + 1)
    hub.fail_next(r"^GET /api/datasets/alice/src", 429, retry_after=too_long)
    with pytest.raises(HubUnavailable, match="HTTP 429"):
        download_dataset("alice/src", tmp_path / "dl", retry=Retry(sleep=waits.append))
    assert waits == []

    # Not a passing failure: no retry.
    with pytest.raises(HubError) as err:
        download_dataset("alice/missing", tmp_path / "dl", retry=Retry(sleep=waits.append))
    assert not isinstance(err.value, HubUnavailable) and waits == []


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(TIMEOUT_ENV, "0.5")
    close_session()  # the next request makes a client with this timeout
    yield
    monkeypatch.delenv(TIMEOUT_ENV)
    close_session()


def test_a_request_without_an_answer_times_out_and_is_retried(
    hub: LocalHub, tmp_path: Path, short_timeout: None
) -> None:
    sha = hub.seed("alice/src", {"a.txt": b"a"})
    waits: list[float] = []
    hub.fail_next(r"^GET /api/datasets/alice/src$", delay=2.0)
    assert download_dataset("alice/src", tmp_path / "dl", retry=Retry(sleep=waits.append)) == sha
    assert len(waits) == 1  # the stalled request was given up on and sent again


def test_run_exits_with_the_retryable_code_when_the_hub_stays_down(
    hub: LocalHub, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    hub.seed("alice/src", {"a.txt": b"a"})
    hub.fail_next(r"^GET /api/datasets/alice/src", 503, times=100, retry_after="0")
    code = augment_main(["run", "--dataset", "alice/src", "--output", str(tmp_path / "o")])
    assert code == EXIT_HUB_UNAVAILABLE != EXIT_BAD_INPUT
    assert "kept failing to download dataset 'alice/src' (HTTP 503)" in capfd.readouterr().err
