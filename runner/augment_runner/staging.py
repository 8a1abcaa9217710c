"""A sharded job on the Hub (docs/design.md, Scale out): each shard's pod commits its
shard, piece by piece, to a staging branch of the output dataset, and the finalize pod
merges them into one commit on main, then deletes the staging branches. A job that fails or is
cancelled leaves no branch either: its cleanup pod deletes them (`discard`).

Readers of main never see a partial dataset: until the finalize commit, the shards live
on branches only. A shard's branch is its checkpoint: a retried pod (or the shard's
second try after a crash) finds the pieces finished there and augments only the others.
The finalize step can run again too: staging branches are deleted only after the commit
to main, so a missing one means an earlier finalize published the dataset.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from augment_spec.model import AugmentationSpec, OutputVisibility

from .errors import AugmentError
from .hub import branch_files, delete_branch, download_dataset, download_file, upload_dataset
from .provenance import PROVENANCE_PATH, recorded_spec
from .shards import CHECKPOINT_EPISODES, SHARD_MANIFEST, Shard, not_splittable, pieces

if TYPE_CHECKING:  # the dataset libraries load only where a shard is read
    from .formats.lerobot_v3 import LeRobotV3Reader


PIECES = "pieces"  # the folder of a staging branch holding the shard's pieces


def staging_branch(job_uid: str, index: int) -> str:
    """The branch of the output dataset holding shard `index` of job `job_uid`."""
    return f"augment-staging-{job_uid}-{index}"


def download_shard_metadata(
    repo_id: str, dest: Path, revision: str | None, token: str | None
) -> tuple[str, LeRobotV3Reader]:
    """The first step of a shard's download: the dataset's metadata (everything outside
    data/ and videos/) and its reader. A dataset that cannot be split is refused here,
    before any data is downloaded. Returns the commit sha, which the rest comes from."""
    sha = download_dataset(repo_id, dest, revision, token, select=_metadata)
    return sha, _splittable(dest)


def download_shard_data(
    repo_id: str, dest: Path, sha: str, token: str | None, reader: LeRobotV3Reader,
    shards: list[Shard],
) -> None:
    """The second step: from the same commit, the data and video files the episodes of
    `shards` live in (the format's shard_file_filter), not the other shards'."""
    wanted = [reader.shard_file_filter(shard) for shard in shards]
    total = len(reader.episodes)
    empty = not any(shard.episodes(total) for shard in shards)
    # Shards without episodes (more shards than episodes) write no row but still read
    # the rows' schema from one data file.
    schema = reader.data_file(reader.episodes[0]).relative_to(dest).as_posix() if empty else None

    def select(remote: set[str]) -> set[str]:
        return {p for p in remote if p == schema or any(w(dest / p) for w in wanted)}

    download_dataset(repo_id, dest, sha, token, select=select)


def download_shard_source(
    repo_id: str, dest: Path, revision: str | None, token: str | None, shard: Shard
) -> str:
    """Download only what shard `shard` of a Hub dataset needs into `dest`: the metadata,
    then the files of the shard's episodes. Returns the commit sha."""
    sha, reader = download_shard_metadata(repo_id, dest, revision, token)
    download_shard_data(repo_id, dest, sha, token, reader, [shard])
    return sha


def _metadata(remote: set[str]) -> set[str]:
    return {p for p in remote if p.split("/", 1)[0] not in ("data", "videos")}


def _splittable(root: Path) -> LeRobotV3Reader:
    """The reader of a downloaded dataset's metadata, when the dataset can be split."""
    from .formats.lerobot_v3 import VERSION, LeRobotV3Reader

    info = _json(root / "meta/info.json")
    if info.get("codebase_version") != VERSION:
        kind = f"LeRobot {info['codebase_version']}" if info.get("codebase_version") else "plain"
        raise not_splittable(kind, "set shards to 1")
    return LeRobotV3Reader(root)


# ---------------------------------------------------------------- a shard's pod


def piece_folder(piece: Shard) -> str:
    """Where a piece of a shard (shards.pieces) lives on its staging branch."""
    return f"{PIECES}/{piece.index}-of-{piece.count}"


@dataclass(frozen=True)
class StagedShard:
    pieces: int  # the shard's pieces
    found: int  # already on its staging branch (an earlier try's), not made again
    episodes: int  # the shard's source episodes


@dataclass(frozen=True)
class ShardJob:
    """A sharded job's pod: what it augments and where it stages it."""

    spec: AugmentationSpec
    shard: Shard
    repo_id: str  # the output dataset, whose branch `branch` it stages on
    branch: str
    token: str | None
    per_piece: int = CHECKPOINT_EPISODES  # source episodes per piece (checkpoint)
    batch_frames: int = 64


def stage_shard(
    job: ShardJob, workdir: Path, source_id: str | None, local_source: Path | None,
    started: Callable[[str], None], progress: Callable[[int, int], None] | None,
) -> StagedShard:
    """Augment the shard piece by piece, committing each piece to the staging branch as
    it is done (one commit of a few dozen files: the Hub's recommended size), so that a
    retried pod finds the finished pieces there and makes only the others; it downloads
    only the files of those. Readers of main see none of it."""
    source = local_source or workdir / "source"
    if local_source is None:
        assert source_id is not None
        revision, reader = download_shard_metadata(
            source_id, source, job.spec.source_revision, job.token)
    else:
        revision, reader = job.spec.source_revision or "local", _splittable(local_source)
    total = len(reader.episodes)
    split = pieces(job.shard, total, job.per_piece)
    found = _staged(job, split)
    todo = [piece for piece in split if piece not in found]
    if todo and local_source is None:
        assert source_id is not None
        download_shard_data(source_id, source, revision, job.token, reader, todo)
    started(revision)
    episodes = len(job.shard.episodes(total))
    done = sum(len(piece.episodes(total)) for piece in found)
    if progress is not None:
        progress(done, episodes)
    for piece in todo:
        _stage_piece(job, piece, source, workdir / "piece", source_id, revision,
                     _offset(progress, done, episodes), keep=found)
        found.add(piece)
        done += len(piece.episodes(total))
    return StagedShard(len(split), len(split) - len(todo), episodes)


def _staged(job: ShardJob, split: list[Shard]) -> set[Shard]:
    """The pieces of `split` an earlier try committed, made from this very spec."""
    files = branch_files(job.repo_id, job.branch, job.token) or set()
    found = {p for p in split if f"{piece_folder(p)}/{SHARD_MANIFEST}" in files}
    if not found:
        return found
    first = piece_folder(min(found, key=lambda p: p.index))
    with tempfile.TemporaryDirectory(prefix="augment-shard-check-") as tmp:
        path = download_file(job.repo_id, job.branch, f"{first}/{PROVENANCE_PATH}", Path(tmp),
                             job.token)
        made = _json(path).get("spec") == recorded_spec(job.spec)
    return found if made else set()  # another spec's: replaced by this one's


def _stage_piece(
    job: ShardJob, piece: Shard, source: Path, scratch: Path, source_id: str | None,
    revision: str, progress: Callable[[int, int], None] | None, keep: set[Shard],
) -> str:
    from .pipeline import augment_dataset  # the dataset libraries, only where one runs

    shutil.rmtree(scratch, ignore_errors=True)
    try:
        result = augment_dataset(
            job.spec, source, scratch, progress=progress, batch_frames=job.batch_frames,
            source_id=source_id, source_revision=revision, shard=piece,
        )
        kept = tuple(f"{piece_folder(p)}/" for p in keep)
        return upload_dataset(
            result.output, job.repo_id, job.token,
            f"Stage piece {piece} of shard {job.shard} of {job.spec.dataset_id} "
            "(augment-operator)",
            source_repo_id=source_id,
            public=job.spec.output_visibility is OutputVisibility.public,
            overwrite=job.spec.overwrite,
            branch=job.branch,
            prefix=piece_folder(piece),
            # The pieces staged before stay; anything else (another spec's) goes.
            keep=lambda path: path.startswith(kept),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _offset(
    progress: Callable[[int, int], None] | None, before: int, total: int
) -> Callable[[int, int], None] | None:
    """A piece's progress as its shard's: the episodes of the pieces before it added."""
    if progress is None:
        return None
    return lambda done, _piece_total: progress(before + done, total)


def finalize(
    spec: AugmentationSpec, job_uid: str, workdir: Path, token: str | None,
    report_output: Callable[[str], None],
) -> str | None:
    """Merge the job's shards from their staging branches, publish the result on main in
    one commit and delete the branches. Returns the commit, or None when an earlier try
    already published (some branches are gone)."""
    repo_id = spec.target_dataset_id
    branches = [staging_branch(job_uid, k) for k in range(spec.shard_count)]
    present = [b for b in branches if branch_files(repo_id, b, token) is not None]
    if len(present) < len(branches):
        if not present and not _published(repo_id, spec, token):
            raise AugmentError(
                f"no staging branch of this job is on {repo_id} and its main branch holds "
                f"no dataset of this spec: the shards were never pushed; run the job again"
            )
        _delete(repo_id, present, token)
        return None
    shards_dir, output = workdir / "shards", workdir / "output"
    shutil.rmtree(workdir / "shards", ignore_errors=True)
    shutil.rmtree(output, ignore_errors=True)
    folders = [shards_dir / str(k) for k in range(len(branches))]
    for branch, folder in zip(branches, folders, strict=True):
        download_dataset(repo_id, folder, branch, token)
    from .merge import merge_shards  # the dataset libraries, only where a merge runs

    # Every shard's pieces are one split of the source: the merge checks it has them all.
    staged = [m.parent for f in folders for m in f.glob(f"{PIECES}/*/{SHARD_MANIFEST}")]
    result = merge_shards(staged, output)
    commit = upload_dataset(
        result.output, repo_id, token,
        f"Augment {spec.dataset_id} ({spec.augment_transforms}, "
        f"{spec.augment_dataset_mode.value}/{spec.augment_mode.value}, {spec.shard_count} shards) "
        "with augment-operator",
        source_repo_id=spec.dataset_id,
        public=spec.output_visibility is OutputVisibility.public,
        overwrite=spec.overwrite,
    )
    report_output(commit)
    _delete(repo_id, branches, token)
    return commit


def discard(spec: AugmentationSpec, job_uid: str, token: str | None) -> int:
    """Delete every staging branch of a job that failed or was cancelled; how many were
    there. Idempotent: a branch already gone (or a missing output repo) is fine."""
    repo_id = spec.target_dataset_id
    present = [
        branch for branch in (staging_branch(job_uid, k) for k in range(spec.shard_count))
        if branch_files(repo_id, branch, token) is not None
    ]
    _delete(repo_id, present, token)
    return len(present)


def _published(repo_id: str, spec: AugmentationSpec, token: str | None) -> bool:
    files = branch_files(repo_id, "main", token)
    if files is None or PROVENANCE_PATH not in files:
        return False
    with tempfile.TemporaryDirectory(prefix="augment-published-") as tmp:
        provenance = _json(download_file(repo_id, "main", PROVENANCE_PATH, Path(tmp), token))
    return bool(provenance.get("spec") == recorded_spec(spec))


def _delete(repo_id: str, branches: list[str], token: str | None) -> None:
    for branch in branches:
        delete_branch(repo_id, branch, token)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
