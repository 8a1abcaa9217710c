"""`augment run`: augment a dataset locally, or as the Job's entrypoint in the cluster.

Locally:   augment run --dataset examples/sample-dataset --output out/sample-augmented
From Hub:  augment run --dataset lerobot/pusht --output out/pusht-aug --push-to me/pusht-aug
In a pod:  the full spec comes from AUGMENT_SPEC (JSON) or --spec-file; the output is
           written under AUGMENT_WORKDIR and pushed to the spec's output dataset
           (the pod's environment: pod.py).

Flags left unset take the spec model's defaults (they are not repeated here). A bad
input exits with code 2 and one line on stderr saying what is wrong and what to do; a
Hub that stays unavailable after retries exits with 3 (the Job tries the pod again);
an unexpected error exits with 1 (exit codes: augment_spec.contract). Either line also
goes to AUGMENT_TERMINATION_LOG when set (Kubernetes shows it as the pod's termination
message), and neither ever holds the Hub token (see errors.redact).
"""

from __future__ import annotations

# isort: off
from . import native_threads  # noqa: F401  first: before anything below loads NumPy
# isort: on

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from augment_spec.contract import (
    ENV_CHECKPOINT_EPISODES,
    ENV_SHARD_INDEX,
    ENV_SPEC,
    EXIT_BAD_INPUT,
    EXIT_BUG,
    EXIT_HUB_UNAVAILABLE,
    EXIT_OK,
)
from augment_spec.flags import add_spec_flags, spec_values
from augment_spec.model import (
    HUB_REPO_ID_PATTERN,
    AugmentationSpec,
    OutputVisibility,
    SpecError,
    parse_spec,
)

from . import status
from .errors import SCRATCH_FULL, AugmentError, is_disk_full, redact
from .hub import (
    HubError,
    HubUnavailable,
    check_output,
    download_dataset,
    resolve_token,
    upload_dataset,
)
from .pod import PodEnv
from .shards import CHECKPOINT_EPISODES, Shard
from .staging import ShardJob, download_shard_source, stage_shard, staging_branch

# A local run belongs to no project; the spec still needs a project id.
LOCAL_PROJECT_ID = str(uuid.UUID(int=0))

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", metavar="SRC", help="source dataset: a local folder or a Hub dataset id"
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        help="folder to write (must not exist or be empty); default with a spec: a scratch folder",
    )
    parser.add_argument(
        "--push-to",
        metavar="REPO",
        help="upload the result to this Hub dataset (token from HF_TOKEN)",
    )
    parser.add_argument(
        "--spec-file",
        type=Path,
        metavar="FILE",
        help="full job spec as JSON (snake_case); AUGMENT_SPEC may hold it too",
    )
    parser.add_argument(
        "--no-push", action="store_true", help="with a spec, write the output but do not upload it"
    )
    parser.add_argument(
        "--public",
        action="store_true",
        help="create the pushed dataset public (only when the source is public, or a folder)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="allow pushing into an existing dataset this tool did not make (its files are kept)",
    )
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="write only shard K of N (0-based) into --output; `augment merge` puts the N "
        "shards together into what one run writes",
    )
    parser.add_argument("--project-id", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--batch-frames",
        type=int,
        default=64,
        metavar="N",
        help="frames per batch: bounds memory (default: %(default)s)",
    )
    add_spec_flags(parser)  # the same flags as `augment jobs submit` (augment_spec.flags)


def main(args: argparse.Namespace) -> int:
    return exit_code("augment run", lambda: _run(args))


def exit_code(prog: str, work: Callable[[], int]) -> int:
    """Run `work`; every failure becomes one line on stderr and its exit code."""
    try:
        return work()
    except HubUnavailable as exc:
        return _fail(prog, str(exc), EXIT_HUB_UNAVAILABLE)
    except (AugmentError, SpecError, HubError) as exc:
        return _fail(prog, str(exc), EXIT_BAD_INPUT)
    except OSError as exc:
        if is_disk_full(exc):  # bad input in the Job's sense: a retry fills the same disk
            return _fail(prog, SCRATCH_FULL, EXIT_BAD_INPUT)
        return _bug(prog, exc)
    except Exception as exc:
        return _bug(prog, exc)


def _bug(prog: str, exc: Exception) -> int:
    """A bug: still one line, with the traceback only on request."""
    if os.environ.get("AUGMENT_DEBUG"):
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
    return _fail(
        prog,
        f"unexpected error: {type(exc).__name__}: {exc} (a bug; rerun with "
        f"AUGMENT_DEBUG=1 for the traceback and report it)",
        EXIT_BUG,
    )


def _fail(prog: str, message: str, code: int) -> int:
    line = redact(" ".join(f"{prog}: {message}".split()))
    print(line, file=sys.stderr)
    log = PodEnv.read().termination_log
    if log:
        with contextlib.suppress(OSError):  # the message is on stderr anyway
            log.write_text(line + "\n")
    return code


# ---------------------------------------------------------------- the run


def _run(args: argparse.Namespace) -> int:
    from .pipeline import augment_dataset

    token = resolve_token()  # a malformed token fails here, before any download or GPU work
    pod = PodEnv.read()
    base = spec_from_pod(args.spec_file, pod)
    in_pod = base is not None
    src = args.dataset or (base or {}).get("dataset_id")
    if not src:
        raise AugmentError("no source dataset: pass --dataset SRC (a folder or a Hub dataset id)")
    local_source = _local_folder(src)
    spec = _build_spec(base or {}, args, src, local_source)
    shard = _shard(args.shard, spec, pod, in_pod)
    push_to = args.push_to or (spec.target_dataset_id if in_pod and not args.no_push else None)
    branch = _staging_branch(shard, pod) if push_to else None
    source_id = None if local_source else src
    if push_to:
        _check_push(spec, push_to, token, source_id)
    if push_to and shard is not None and branch is not None:
        return _run_staged(ShardJob(spec, shard, push_to, branch, token,
                                    _checkpoint_episodes(pod), args.batch_frames),
                           pod, source_id, local_source)
    workdir = pod.workdir or Path(tempfile.mkdtemp(prefix="augment-"))
    owns_workdir = pod.workdir is None
    output = (args.output or workdir / "output").resolve()
    if args.output is None:
        _clear_scratch(output)
    try:
        if local_source is not None:
            source, revision = local_source, spec.source_revision
        else:
            source = workdir / "source"
            if shard is None:
                revision = download_dataset(src, source, spec.source_revision, token)
            else:  # only the shard's episodes' files
                revision = download_shard_source(src, source, spec.source_revision, token, shard)
        if push_to:
            status.report_started(revision or "local", push_to)
        result = augment_dataset(
            spec,
            source,
            output,
            progress=_progress(shard),
            batch_frames=args.batch_frames,
            source_id=source_id,
            source_revision=revision,
            shard=shard,
            video_report=status.report_video_plan,
        )
        if shard is not None:
            print(f"shard {shard}: {result.source_episodes} source episode(s)")
        print(f"output: {result.output}")
        if result.preview is not None:
            print(f"preview: {result.preview}")
        if push_to:
            commit = upload_dataset(
                result.output,
                push_to,
                token,
                f"Augment {spec.dataset_id} ({spec.augment_transforms}, "
                f"{spec.augment_dataset_mode.value}/{spec.augment_mode.value}) "
                "with augment-operator",
                source_repo_id=source_id,
                public=spec.output_visibility is OutputVisibility.public,
                overwrite=spec.overwrite,
            )
            status.report_output(commit)
            print(f"pushed: {push_to}@{commit}")
    finally:
        if local_source is None:
            shutil.rmtree(workdir / "source", ignore_errors=True)
        if owns_workdir and args.output is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    return EXIT_OK


def _run_staged(job: ShardJob, pod: PodEnv, source_id: str | None,
                local_source: Path | None) -> int:
    """A sharded job's pod: its shard staged piece by piece on its branch (staging.py)."""
    workdir = pod.workdir or Path(tempfile.mkdtemp(prefix="augment-"))
    try:
        staged = stage_shard(
            job, workdir, source_id, local_source,
            started=lambda revision: status.report_started(revision, job.repo_id),
            progress=_progress(job.shard),
        )
    finally:
        shutil.rmtree(workdir / "source", ignore_errors=True)
        if pod.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    made = staged.pieces - staged.found
    if staged.found:
        print(f"shard {job.shard}: {staged.found} of {staged.pieces} piece(s) already on "
              f"{job.repo_id}@{job.branch}, not made again")
    print(f"shard {job.shard}: {staged.episodes} source episode(s); staged {made} piece(s) "
          f"on {job.repo_id}@{job.branch}")
    return EXIT_OK


def _checkpoint_episodes(pod: PodEnv) -> int:
    if pod.checkpoint_episodes is None:
        return CHECKPOINT_EPISODES
    if not pod.checkpoint_episodes.isdigit() or int(pod.checkpoint_episodes) < 1:
        raise AugmentError(
            f"{ENV_CHECKPOINT_EPISODES}={pod.checkpoint_episodes!r} is not a number of "
            f"episodes (1 or more); fix the GPU profile's env"
        )
    return int(pod.checkpoint_episodes)


def _shard(
    flag: str | None, spec: AugmentationSpec, pod: PodEnv, in_pod: bool
) -> Shard | None:
    """The shard this run writes: --shard K/N, or in a sharded job's runner pod the
    index Kubernetes gave the pod (docs/design.md, Scale out); None: the whole job."""
    if flag:
        return Shard.parse(flag)
    if not in_pod or spec.shard_count == 1:
        return None
    if pod.shard_index is None or not pod.shard_index.isdigit():
        raise AugmentError(
            f"the spec asks for {spec.shards} shards but {ENV_SHARD_INDEX} does not say which "
            f"this pod runs: run them as an Indexed Job, or pass --shard K/N"
        )
    return Shard(int(pod.shard_index), spec.shard_count)


def _staging_branch(shard: Shard | None, pod: PodEnv) -> str | None:
    """Where a shard is pushed: its job's staging branch, which only a job's pod has a
    name for; a shard made by hand is merged by hand (augment merge), then pushed."""
    if shard is None:
        return None
    if pod.job_uid is None:
        raise AugmentError(
            "--shard writes one shard's folder, not a dataset: merge the shards with "
            "augment merge and push the result (or pass --no-push)"
        )
    return staging_branch(pod.job_uid, shard.index)


def _check_push(
    spec: AugmentationSpec, push_to: str, token: str | None, source_id: str | None
) -> None:
    """Refuse an output this job may not write now, when it costs no download or GPU time."""
    public = spec.output_visibility is OutputVisibility.public
    private = check_output(
        push_to, token, source_repo_id=source_id, public=public, overwrite=spec.overwrite
    )
    if public and private:
        print(f"note: {push_to} will be private: the source dataset is private or gated")


def _clear_scratch(output: Path) -> None:
    """A retried Job finds its previous attempt's scratch output: it is ours to remove."""
    shutil.rmtree(output, ignore_errors=True)
    for partial in output.parent.glob(f".{output.name}.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


def spec_from_pod(spec_file: Path | None, pod: PodEnv) -> dict[str, Any] | None:
    """The full spec given to a Job: --spec-file, else AUGMENT_SPEC, else None."""
    if spec_file is not None:
        try:
            text, where = spec_file.read_text(), str(spec_file)
        except OSError as exc:
            raise AugmentError(f"cannot read the spec file {spec_file}: {exc.strerror}") from None
    elif pod.spec_json:
        text, where = pod.spec_json, ENV_SPEC
    else:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{where} must hold a JSON object with the job spec")
    return data


def _local_folder(src: str) -> Path | None:
    """SRC as a local folder, None for a Hub id; a missing path is an error."""
    path = Path(src).expanduser()
    if path.exists():
        if not path.is_dir():
            raise AugmentError(f"--dataset {src} is a file; give the dataset's folder")
        return path.resolve()
    if src.startswith((".", "/", "~")) or not re.match(HUB_REPO_ID_PATTERN, src):
        raise AugmentError(f"dataset folder {src} does not exist (and it is not a Hub dataset id)")
    return None


def _local_dataset_id(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-._") or "dataset"
    return f"local/{name[:90]}"


def _build_spec(
    base: dict[str, Any], args: argparse.Namespace, src: str, local_source: Path | None
) -> AugmentationSpec:
    data = dict(base)
    data.setdefault("project_id", args.project_id or LOCAL_PROJECT_ID)
    if args.dataset or "dataset_id" not in data:
        data["dataset_id"] = _local_dataset_id(local_source) if local_source else src
    data |= spec_values(args)  # unset flags keep the model's defaults
    if args.push_to:
        data["output_dataset_id"] = args.push_to
    if args.public:
        data["output_visibility"] = OutputVisibility.public.value
    if args.overwrite:
        data["overwrite"] = True
    return parse_spec(data)


def _progress(shard: Shard | None) -> Callable[[int, int], None] | None:
    callbacks: list[Callable[[int, int], None]] = []
    reporter = status.cluster_progress_reporter(None if shard is None else shard.index)
    if reporter is not None:
        callbacks.append(reporter)
    if sys.stderr.isatty():
        callbacks.append(_TqdmProgress())
    if not callbacks:
        return None

    def report(done: int, total: int) -> None:
        for callback in callbacks:
            callback(done, total)

    return report


class _TqdmProgress:
    """A progress bar over source episodes, on a terminal only."""

    def __init__(self) -> None:
        self.bar: Any = None  # a tqdm bar, made on the first report (tqdm loads lazily)

    def __call__(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="episode", desc="augment", file=sys.stderr)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()

