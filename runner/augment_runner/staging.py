"""A sharded job on the Hub (docs/design.md, Scale out): each shard's pod commits its
shard folder to a staging branch of the output dataset, and the finalize pod merges them
into one commit on main, then deletes the staging branches. A job that fails or is
cancelled leaves no branch either: its cleanup pod deletes them (`discard`).

Readers of main never see a partial dataset: until the finalize commit, the shards live
on branches only. A shard's branch is its checkpoint: a retried pod (or the shard's
second try after a crash) finds its shard there, complete, and does not augment it
again. The finalize step can run again too: staging branches are deleted only after the
commit to main, so a missing one means an earlier finalize published the dataset.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from augment_spec.model import AugmentationSpec, OutputVisibility

from .errors import AugmentError
from .hub import branch_files, delete_branch, download_dataset, download_file, upload_dataset
from .provenance import PROVENANCE_PATH, recorded_spec
from .shards import SHARD_MANIFEST, Shard, ShardManifest

if TYPE_CHECKING:  # the dataset libraries load only where a shard is read
    from .formats.lerobot_v3 import LeRobotV3Reader


def staging_branch(job_uid: str, index: int) -> str:
    """The branch of the output dataset holding shard `index` of job `job_uid`."""
    return f"augment-staging-{job_uid}-{index}"


def download_shard_source(
    repo_id: str, dest: Path, revision: str | None, token: str | None, shard: Shard
) -> str:
    """Download only what shard `shard` of a Hub dataset needs into `dest`: the metadata
    first (everything outside data/ and videos/), then, from the same commit, the data
    and video files the shard's episodes live in (the format's shard_file_filter), not
    the other shards'. A dataset that cannot be split is refused after the metadata, so
    that costs no data download. Returns the commit sha."""
    sha = download_dataset(repo_id, dest, revision, token, select=_metadata)
    reader = _splittable(dest)
    wanted = reader.shard_file_filter(shard)
    schema = None if shard.episodes(len(reader.episodes)) else _schema_file(reader, dest)

    def select(remote: set[str]) -> set[str]:
        # A shard without episodes (more shards than episodes) writes no row but still
        # reads the rows' schema from one data file.
        return {p for p in remote if wanted(dest / p) or p == schema}

    download_dataset(repo_id, dest, sha, token, select=select)
    return sha


def _metadata(remote: set[str]) -> set[str]:
    return {p for p in remote if p.split("/", 1)[0] not in ("data", "videos")}


def _splittable(root: Path) -> LeRobotV3Reader:
    """The reader of a downloaded dataset's metadata, when the dataset can be split."""
    from .formats.lerobot_v3 import VERSION, LeRobotV3Reader

    info = _json(root / "meta/info.json")
    if info.get("codebase_version") != VERSION:
        kind = f"LeRobot {info['codebase_version']}" if info.get("codebase_version") else "plain"
        raise AugmentError(
            f"{kind} datasets cannot be split into shards (LeRobot v3.0 can): set shards to 1"
        )
    return LeRobotV3Reader(root)


def _schema_file(reader: LeRobotV3Reader, root: Path) -> str:
    return reader.data_file(reader.episodes[0]).relative_to(root).as_posix()


def shard_on_branch(
    spec: AugmentationSpec, repo_id: str, branch: str, shard: Shard, token: str | None
) -> ShardManifest | None:
    """The shard's manifest when `branch` already holds this very shard (same shard of
    the same split, made from the same spec by this tool); None otherwise."""
    files = branch_files(repo_id, branch, token)
    if files is None or not {SHARD_MANIFEST, PROVENANCE_PATH} <= files:
        return None
    with tempfile.TemporaryDirectory(prefix="augment-shard-check-") as tmp:
        manifest_path = download_file(repo_id, branch, SHARD_MANIFEST, Path(tmp), token)
        manifest = ShardManifest.read(manifest_path.parent)
        provenance = _json(download_file(repo_id, branch, PROVENANCE_PATH, Path(tmp), token))
    made = provenance.get("spec") == recorded_spec(spec)
    return manifest if made and manifest.shard == shard else None


def push_shard(
    folder: Path, spec: AugmentationSpec, repo_id: str, branch: str, shard: Shard,
    token: str | None, source_id: str | None,
) -> str:
    """Commit the shard's folder to its staging branch; the commit's sha."""
    return upload_dataset(
        folder, repo_id, token,
        f"Stage shard {shard} of {spec.dataset_id} (augment-operator)",
        source_repo_id=source_id,
        public=spec.output_visibility is OutputVisibility.public,
        overwrite=spec.overwrite,
        branch=branch,
    )


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

    result = merge_shards(folders, output)
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
