"""A sharded job's pods against a (local) Hub, without Kubernetes: each shard's
`augment run` commits to its staging branch, `augment merge` publishes one commit on
main (docs/design.md, Scale out). The pods' environment is what the operator's Jobs set
(augment_spec.contract); Kubernetes' JOB_COMPLETION_INDEX picks the shard."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from same_dataset import assert_same_dataset

from augment_cli.main import main as augment_main
from augment_dev.datasets import make_lerobot_v3, make_lerobot_v21, make_plain_image_dataset
from augment_dev.hub import LocalHub
from augment_runner.errors import AugmentError
from augment_runner.formats.detect import open_dataset
from augment_runner.hub import branch_files, download_dataset
from augment_runner.pipeline import augment_dataset
from augment_runner.shards import Shard, pieces
from augment_runner.staging import download_shard_source, staging_branch
from augment_spec.contract import (
    ENV_CHECKPOINT_EPISODES,
    ENV_HF_TOKEN,
    ENV_JOB_UID,
    ENV_SHARD_INDEX,
    ENV_SPEC,
    ENV_WORKDIR,
    EXIT_OK,
)
from augment_spec.model import parse_spec

PROJECT = "00000000-0000-0000-0000-00000000abcd"
TOP, SIDE = "observation.images.top", "observation.images.side"
UID = "3f2a9c1e-0000-4000-8000-000000000001"
OUTPUT = "alice/robot-aug"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub", tokens={"tok-alice": "alice"}) as server:
        for key, value in server.client_env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv(ENV_HF_TOKEN, "tok-alice")
        yield server


@pytest.fixture
def source(tmp_path: Path, hub: LocalHub) -> Path:
    folder = make_lerobot_v3(tmp_path / "src", episodes=5, frames=[6, 5, 7, 4, 6],
                             cameras=(TOP,), image_cameras=(SIDE,))
    hub.seed("lab/robot", folder)
    return folder


def spec(shards: int) -> dict[str, Any]:
    return {"project_id": PROJECT, "dataset_id": "lab/robot", "output_dataset_id": OUTPUT,
            "augment_copies": 2, "augment_transforms": "lighting,noise", "shards": shards}


def pod(monkeypatch: pytest.MonkeyPatch, workdir: Path, shards: int,
        index: int | None = None) -> None:
    """The environment of one of the job's pods (a fresh scratch volume each)."""
    monkeypatch.setenv(ENV_SPEC, json.dumps(spec(shards)))
    monkeypatch.setenv(ENV_JOB_UID, UID)
    monkeypatch.setenv(ENV_WORKDIR, str(workdir))
    if index is None:
        monkeypatch.delenv(ENV_SHARD_INDEX, raising=False)
    else:
        monkeypatch.setenv(ENV_SHARD_INDEX, str(index))


def run_shard(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shards: int, index: int,
              capsys: pytest.CaptureFixture[str]) -> str:
    pod(monkeypatch, tmp_path / f"pod-{index}-{len(list(tmp_path.glob('pod-*')))}", shards, index)
    code = augment_main(["run"])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    return captured.out


def finalize(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shards: int,
             capsys: pytest.CaptureFixture[str]) -> str:
    pod(monkeypatch, tmp_path / f"finalize-{len(list(tmp_path.glob('finalize-*')))}", shards)
    code = augment_main(["merge"])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    return captured.out


def test_shards_stage_on_branches_and_the_merge_publishes_one_commit(
    hub: LocalHub, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The unsplit job first, as the reference.
    pod(monkeypatch, tmp_path / "whole-pod", 1)
    assert augment_main(["run"]) == EXIT_OK, capsys.readouterr().err
    whole = tmp_path / "whole"
    download_dataset(OUTPUT, whole)
    published = hub.head(OUTPUT)

    branches = [staging_branch(UID, k) for k in range(3)]
    for index in range(3):
        assert "staged 1 piece(s)" in run_shard(monkeypatch, tmp_path, 3, index, capsys)
    assert hub.head(OUTPUT) == published  # readers of main see nothing of the shards yet
    assert all(hub.head(OUTPUT, branch=b) is not None for b in branches)

    # A shard's pod tried again finds its shard staged and does not augment it again.
    staged = hub.head(OUTPUT, branch=branches[1])
    assert "1 of 1 piece(s) already on" in run_shard(monkeypatch, tmp_path, 3, 1, capsys)
    assert hub.head(OUTPUT, branch=branches[1]) == staged

    out = finalize(monkeypatch, tmp_path, 3, capsys)
    assert "pushed: " in out and "3 shards merged" in out
    head = hub.head(OUTPUT)
    assert head != published
    assert all(hub.head(OUTPUT, branch=b) is None for b in branches)  # staging removed
    merged = tmp_path / "merged"
    download_dataset(OUTPUT, merged)
    assert_same_dataset(whole, merged, source)

    # The finalize step tried again (say its pod was lost after the commit) changes nothing.
    assert "earlier try published" in finalize(monkeypatch, tmp_path, 3, capsys)
    assert hub.head(OUTPUT) == head


def test_a_finalize_lost_between_commit_and_cleanup_finishes_the_cleanup(
    hub: LocalHub, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for index in range(2):
        run_shard(monkeypatch, tmp_path, 2, index, capsys)
    finalize(monkeypatch, tmp_path, 2, capsys)
    head = hub.head(OUTPUT)
    # As if the last try had deleted one branch only: the other is left to the next.
    for index in range(2):
        run_shard(monkeypatch, tmp_path, 2, index, capsys)
    hub_branch = staging_branch(UID, 0)
    from augment_runner.hub import delete_branch

    delete_branch(OUTPUT, hub_branch, None)
    assert "earlier try published" in finalize(monkeypatch, tmp_path, 2, capsys)
    assert hub.head(OUTPUT) == head
    assert hub.head(OUTPUT, branch=staging_branch(UID, 1)) is None


def test_a_sharded_pod_without_its_index_exits_2(
    hub: LocalHub, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pod(monkeypatch, tmp_path / "pod", 2)
    assert augment_main(["run"]) == 2
    err = capsys.readouterr().err
    assert ENV_SHARD_INDEX in err and len(err.strip().splitlines()) == 1
    assert hub.head(OUTPUT) is None
    assert augment_main(["merge"]) == 2
    assert "never pushed" in capsys.readouterr().err


def test_a_failed_jobs_cleanup_deletes_its_staging_branches_and_can_run_again(
    hub: LocalHub, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Shard 1 of 3 never ran (its pod failed): the other two are staged.
    for index in (0, 2):
        run_shard(monkeypatch, tmp_path, 3, index, capsys)
    branches = [staging_branch(UID, k) for k in range(3)]
    assert [hub.head(OUTPUT, branch=b) is not None for b in branches] == [True, False, True]

    pod(monkeypatch, tmp_path / "cleanup", 3)
    assert augment_main(["merge", "--discard"]) == EXIT_OK
    assert "2 staging branch(es)" in capsys.readouterr().out
    assert all(hub.head(OUTPUT, branch=b) is None for b in branches)
    on_main = branch_files(OUTPUT, "main", None)
    assert on_main is not None and on_main <= {".gitattributes"}  # main saw nothing

    # Idempotent: a cleanup pod tried again (or one for a job that staged nothing) is fine.
    assert augment_main(["merge", "--discard"]) == EXIT_OK
    assert "0 staging branch(es)" in capsys.readouterr().out


def test_a_shard_downloads_the_metadata_and_its_own_episodes_files_only(
    hub: LocalHub, source: Path, tmp_path: Path
) -> None:
    # A source whose episodes live in files of their own (tiny file size limits), and a
    # data file no episode uses.
    spread = tmp_path / "spread"
    shutil.copytree(source, spread)
    info = json.loads((spread / "meta/info.json").read_text())
    info.update(chunks_size=2, data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6)
    (spread / "meta/info.json").write_text(json.dumps(info))
    rolled = tmp_path / "rolled"
    augment_dataset(parse_spec({"project_id": PROJECT, "dataset_id": "lab/spread",
                                "augment_copies": 1, "augment_transforms": "noise"}),
                    spread, rolled)
    (rolled / "data/chunk-009").mkdir()
    (rolled / "data/chunk-009/notes.txt").write_text("no episode lives here\n")
    hub.seed("lab/rolled", rolled)
    reader = open_dataset(rolled)
    every = {p.relative_to(rolled).as_posix() for p in rolled.rglob("*") if p.is_file()}
    metadata = {p for p in every if not p.startswith(("data/", "videos/"))}
    for index in range(3):
        dest = tmp_path / f"shard-{index}"
        download_shard_source("lab/rolled", dest, None, None, Shard(index, 3))
        got = {p.relative_to(dest).as_posix() for p in dest.rglob("*")
               if p.is_file() and ".cache" not in p.parts}
        mine = {path.relative_to(rolled).as_posix()
                for i in Shard(index, 3).episodes(len(reader.episodes))
                for path in reader.episode_files(reader.episodes[i])}
        unused = {"data/chunk-009/notes.txt"} if index == 0 else set()
        assert got - {".gitattributes"} == metadata | mine | unused, index
        others = {path.relative_to(rolled).as_posix() for e in reader.episodes
                  for path in reader.episode_files(e)} - mine
        assert others and not got & others  # no other shard's data or video file


@pytest.mark.parametrize("kind", ["LeRobot v2.1", "plain"])
def test_a_v21_or_plain_dataset_is_refused_for_shards_before_its_data_is_downloaded(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], kind: str,
) -> None:
    if kind == "plain":
        folder = make_plain_image_dataset(tmp_path / "plain", layout="parquet")
    else:
        folder = make_lerobot_v21(tmp_path / "v21", episodes=2, frames=4)
    hub.seed("lab/robot", folder)
    with pytest.raises(AugmentError, match=f"^{kind} datasets cannot be split"):
        download_shard_source("lab/robot", tmp_path / "dl", None, None, Shard(0, 2))
    assert not (tmp_path / "dl/data").exists()  # the metadata only
    pod(monkeypatch, tmp_path / "pod", 2, 1)
    assert augment_main(["run"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("augment run")]
    assert line.endswith("cannot be split into shards (LeRobot v3.0 can): set shards to 1")


def staged_pieces(hub: LocalHub, branch: str) -> list[str]:
    """The messages of the commits on `branch` that staged a piece, oldest first."""
    store, sha, messages = hub.store, hub.head(OUTPUT, branch=branch), []
    while sha is not None:
        commit = store.commit("dataset", OUTPUT, sha)
        messages.append(commit["message"])
        sha = commit["parent"]
    return [m.split(" of shard")[0] for m in reversed(messages) if m.startswith("Stage piece")]


def test_a_shard_pod_killed_mid_way_resumes_without_redoing_a_finished_piece(
    hub: LocalHub, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pod(monkeypatch, tmp_path / "whole-pod", 1)
    assert augment_main(["run"]) == EXIT_OK, capsys.readouterr().err
    whole = tmp_path / "whole"
    download_dataset(OUTPUT, whole)

    # One episode per checkpoint: shard 0 of 2 (episodes 0-2) is staged in 3 pieces.
    monkeypatch.setenv(ENV_CHECKPOINT_EPISODES, "1")
    pod(monkeypatch, tmp_path / "pod-first", 2, 0)
    branch = staging_branch(UID, 0)
    first_piece = "pieces/0-of-6/shard.json"
    runner = subprocess.Popen([sys.executable, "-m", "augment_cli.main", "run"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while first_piece not in on_branch(hub, branch):
            assert runner.poll() is None and time.monotonic() < deadline, "no piece staged"
            time.sleep(0.02)
        # Hold the pod's next call to the output (its next piece's upload) and kill it:
        # the next piece is being augmented or waits to be uploaded.
        gate = tmp_path / "gate"
        hub.hold(rf"^GET /api/datasets/{OUTPUT}", until=gate)
    finally:
        runner.kill()
        runner.wait()
    gate.touch()
    assert staged_pieces(hub, branch) == ["Stage piece 0/6"]  # killed mid-way

    # The retried pod (a fresh scratch volume) makes the two other pieces only.
    out = run_shard(monkeypatch, tmp_path, 2, 0, capsys)
    assert "1 of 3 piece(s) already on" in out and "staged 2 piece(s)" in out
    assert staged_pieces(hub, branch) == [f"Stage piece {k}/6" for k in range(3)]
    run_shard(monkeypatch, tmp_path, 2, 1, capsys)
    assert "2 shards merged" in finalize(monkeypatch, tmp_path, 2, capsys)
    merged = tmp_path / "merged"
    download_dataset(OUTPUT, merged)
    assert_same_dataset(whole, merged, source)  # no episode lost, none twice


def on_branch(hub: LocalHub, branch: str) -> set[str]:
    head = hub.head(OUTPUT, branch=branch)
    return set(hub.store.commit("dataset", OUTPUT, head)["files"]) if head else set()


def test_pieces_split_a_shard_exactly_and_together_split_the_source() -> None:
    for total, count, per_piece in ((5, 2, 1), (1000, 8, 10), (7, 3, 100), (2, 4, 3)):
        every = []
        for index in range(count):
            shard = Shard(index, count)
            parts = pieces(shard, total, per_piece)
            assert [e for p in parts for e in p.episodes(total)] == list(shard.episodes(total))
            assert all(len(p.episodes(total)) <= per_piece for p in parts)
            every += parts
        assert [p.index for p in every] == list(range(every[0].count))  # one split, in order
    assert len(pieces(Shard(0, 8), 1000, 10)) == 13  # ceil(125 / 10)
