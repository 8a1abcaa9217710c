"""What the API, the operator and the runner agree on: one module, imported by each.

They run as separate processes, from separate images, and meet only through the
Kubernetes API: the AugmentationJob's address, its labels, annotations and status, the
runner pod's environment and its exit code. Every such name and value lives here, so
no side re-types the other's. They are wire formats: a change breaks jobs already
running and resources already stored, which is why tests/unit/test_contract.py pins
each value. This module imports nothing of ours.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

# ---- the custom resource's address ----
GROUP = "augment.dev"
VERSION = "v1alpha1"
KIND = "AugmentationJob"
PLURAL = "augmentationjobs"
API_VERSION = f"{GROUP}/{VERSION}"


# ---- .status.phase ----
class Phase(StrEnum):
    Pending = "Pending"
    # The runner Job waits, suspended, for Kueue to admit it (the spec or its defaults name
    # a queue: docs/design.md, Queues); the message says why Kueue has not admitted it yet.
    Queued = "Queued"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"
    Cancelled = "Cancelled"


# Sticky: once a job reaches one, nothing moves it again (and there is nothing to cancel).
TERMINAL_PHASES = frozenset({Phase.Succeeded, Phase.Failed, Phase.Cancelled})


def phase_of(cr: dict[str, Any]) -> Phase:
    """The CR's phase; Pending until the operator has written one."""
    return Phase((cr.get("status") or {}).get(STATUS_PHASE) or Phase.Pending)


# ---- labels ----
LABEL_PROJECT = f"{GROUP}/project-id"  # on CRs, Jobs and pods: the spec's project id
LABEL_JOB = f"{GROUP}/job"  # on a runner Job and its pods: job_label_value(their CR's name)
LABEL_JOB_ID = f"{GROUP}/job-id"  # the CR's uid, the API's job_id: `kubectl get -l` finds it
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_API = "augment-api"  # CRs the API created
MANAGED_BY_OPERATOR = "augment-operator"  # runner Jobs and their pods
LABEL_VALUE_MAX = 63  # Kubernetes' limit on a label value; a CR name may have 253 characters


def job_label_value(cr_name: str) -> str:
    """LABEL_JOB's value for a CR: its name, or, when the name is too long for a label, a
    prefix of it and a digest of the whole (deterministic, so `-l` still selects)."""
    if len(cr_name) <= LABEL_VALUE_MAX:
        return cr_name
    digest = hashlib.sha256(cr_name.encode()).hexdigest()[:10]
    return f"{cr_name[:LABEL_VALUE_MAX - 11]}-{digest}"



# ---- Kueue (kueue.x-k8s.io), on a runner Job that goes through a queue ----
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"
KUEUE_WORKLOADS = "workloads"  # Kueue's record of one Job's admission, owned by the Job
LABEL_KUEUE_QUEUE = f"{KUEUE_GROUP}/queue-name"  # the LocalQueue (in the Job's namespace)
LABEL_KUEUE_PRIORITY = f"{KUEUE_GROUP}/priority-class"  # a WorkloadPriorityClass
LABEL_KUEUE_JOB_UID = f"{KUEUE_GROUP}/job-uid"  # Kueue's, on a Workload: its Job's uid
# On an Indexed Job: Kueue may admit it with fewer pods at once (down to this many) when
# the quota is short of its parallelism; every index still runs.
ANNOTATION_KUEUE_MIN_PARALLELISM = f"{KUEUE_GROUP}/job-min-parallelism"


# ---- annotations on a CR ----
ANNOTATION_IDEMPOTENCY = f"{GROUP}/idempotency-key"
ANNOTATION_REQUEST_HASH = f"{GROUP}/request-hash"
ANNOTATION_CREATED_BY = f"{GROUP}/created-by"  # the API key's name: "who made this?"
# On a runner Job and its pods: their CR's full name (a label value may hold only a digest).
ANNOTATION_JOB = f"{GROUP}/job"
# Spec is immutable, so a cancel is metadata: the API (or kubectl) sets it, the operator
# deletes the Job and moves the CR to Cancelled.
ANNOTATION_CANCEL = f"{GROUP}/cancel-requested"
CANCEL_REQUESTED = "true"


def cancel_annotations() -> dict[str, str]:
    """The annotations that ask the operator to stop a job."""
    return {ANNOTATION_CANCEL: CANCEL_REQUESTED}


def cancel_requested(cr: dict[str, Any]) -> bool:
    """Whether the CR asks to be stopped (any letter case, as a human may type it)."""
    annotations = (cr.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION_CANCEL, "")).lower() == CANCEL_REQUESTED


# ---- the runner pod: environment set by the operator's Job, read by the runner ----
ENV_SPEC = "AUGMENT_SPEC"  # the full spec as snake_case JSON
ENV_JOB_NAME = "AUGMENT_JOB_NAME"  # the CR whose status the runner patches ...
ENV_JOB_NAMESPACE = "AUGMENT_JOB_NAMESPACE"  # ... and its namespace
ENV_WORKDIR = "AUGMENT_WORKDIR"  # scratch space for the source and the output
ENV_TERMINATION_LOG = "AUGMENT_TERMINATION_LOG"  # where the one-line failure goes
ENV_THREADS = "AUGMENT_THREADS"  # transform threads (the pod sees the node's cores)
ENV_BACKEND = "AUGMENT_BACKEND"  # numpy | cupy | auto; a profile's env may set it
ENV_HF_TOKEN = "HF_TOKEN"  # from the profile's or the spec's Secret
ENV_JOB_UID = "AUGMENT_JOB_UID"  # the CR's uid: names a sharded job's staging branches
# Source episodes per checkpoint of a sharded job's pod (a piece committed to its staging
# branch); unset: the runner's default. A profile's env may set it, the same for every pod.
ENV_CHECKPOINT_EPISODES = "AUGMENT_CHECKPOINT_EPISODES"
# The pod's CPU limit in whole CPUs (limits.cpu; the node's allocatable CPUs when the
# profile sets none): a ceiling on the runner's codec threads, with the cgroup's quota.
ENV_CPU_LIMIT = "AUGMENT_CPU_LIMIT"
# The video engines of the profile's GPU nodes (docs/design.md, Video codecs): the codecs
# NVDEC decodes and NVENC encodes there, as video_codecs_value writes them. The runner
# plans each camera's decode and encode from them (augment_runner/codec_plan.py).
ENV_VIDEO_DECODE = "AUGMENT_VIDEO_DECODE"
ENV_VIDEO_ENCODE = "AUGMENT_VIDEO_ENCODE"
# Set by Kubernetes itself in each pod of an Indexed Job: the shard the pod augments.
ENV_SHARD_INDEX = "JOB_COMPLETION_INDEX"
# Kubernetes' default terminationMessagePath: what the runner writes there becomes the
# pod's termination message, which the operator copies into the CR's status.message.
TERMINATION_LOG_PATH = "/dev/termination-log"


def video_codecs_value(codecs: frozenset[str] | set[str] | list[str]) -> str:
    """A set of codec names (FFmpeg's: h264, hevc, av1) as one environment value."""
    return ",".join(sorted(codecs))


def video_codecs(value: str | None) -> frozenset[str]:
    """The codecs an ENV_VIDEO_* value names; unset or empty: none."""
    return frozenset(part.strip().lower() for part in (value or "").split(",") if part.strip())


# ---- the runner's exit code ----
EXIT_OK = 0
EXIT_BUG = 1  # unexpected: a retry may help
EXIT_BAD_INPUT = 2  # the input is wrong: no retry can fix it, so the Job fails at once
# The Hub kept failing for a passing reason (429, 5xx, timeouts) after the runner's own
# retries: the Job tries the pod again (counted against its backoffLimit), never FailJob.
EXIT_HUB_UNAVAILABLE = 3

# ---- .status fields (camelCase, as the CRD's status schema names them) ----
# The operator writes phase, message, jobName, startTime, completionTime and the final
# progress; the runner writes progress while it works, and the revisions; the API reads.
# Each runner may patch only its own CR's status (a per-job ServiceAccount and Role), and
# the operator derives its fields from the Job and pods, never from what a runner wrote.
STATUS_PHASE = "phase"
STATUS_MESSAGE = "message"
STATUS_JOB_NAME = "jobName"
STATUS_START_TIME = "startTime"
STATUS_COMPLETION_TIME = "completionTime"
STATUS_PROGRESS = "progress"
STATUS_SOURCE_REVISION = "sourceRevision"
STATUS_OUTPUT_DATASET_ID = "outputDatasetId"
STATUS_OUTPUT_REVISION = "outputRevision"
PROGRESS_DONE = "episodesDone"
PROGRESS_TOTAL = "episodesTotal"
PROGRESS_PERCENT = "percent"
PROGRESS_TEXT = "text"  # for `kubectl get`
# How the runner decodes and encodes each camera's video, and why (one line per
# camera): written once the runner has planned them (augment_runner/codec_plan.py).
STATUS_VIDEO_PLAN = "videoPlan"


def progress_status(done: int, total: int, *, finished: bool = False) -> dict[str, Any]:
    """The status patch for `done` of `total` source episodes processed; `finished`:
    100% even when no total was ever reported."""
    percent = 100 if finished else int(100 * done / total) if total else 0
    return {STATUS_PROGRESS: {PROGRESS_DONE: done, PROGRESS_TOTAL: total,
                              PROGRESS_PERCENT: percent,
                              PROGRESS_TEXT: f"{percent}% ({done}/{total})"}}


# A sharded job (docs/design.md, Scale out): each shard's runner reports its own progress
# under its index (merge patches of different keys never overwrite each other); the
# operator sums them into `progress` and counts the shards from the Indexed Job.
STATUS_SHARD_PROGRESS = "shardProgress"
STATUS_SHARDS = "shards"
SHARDS_TOTAL = "total"
SHARDS_DONE = "done"
SHARDS_RUNNING = "running"
SHARDS_FAILED = "failed"  # shards that kept failing (the job fails)
SHARDS_FAILED_PODS = "failedPods"  # shard pods that failed, each retried while it may be
SHARDS_TEXT = "text"  # for `kubectl get`


def shard_progress_status(index: int, done: int, total: int) -> dict[str, Any]:
    """The status patch for `done` of `total` source episodes of shard `index`."""
    return {STATUS_SHARD_PROGRESS: {str(index): {PROGRESS_DONE: done, PROGRESS_TOTAL: total}}}


def summed_progress(status: dict[str, Any]) -> tuple[int, int]:
    """(done, total) over the shards that reported so far."""
    entries = (status.get(STATUS_SHARD_PROGRESS) or {}).values()
    return (sum(int(e.get(PROGRESS_DONE, 0)) for e in entries),
            sum(int(e.get(PROGRESS_TOTAL, 0)) for e in entries))


def shards_status(
    total: int, done: int, running: int, failed: int, failed_pods: int
) -> dict[str, Any]:
    """The status patch counting a sharded job's shards."""
    return {STATUS_SHARDS: {SHARDS_TOTAL: total, SHARDS_DONE: done, SHARDS_RUNNING: running,
                            SHARDS_FAILED: failed, SHARDS_FAILED_PODS: failed_pods,
                            SHARDS_TEXT: f"{done}/{total}"}}


def video_plan_status(lines: list[str]) -> dict[str, Any]:
    """The status patch saying how each camera's video is decoded and encoded."""
    return {STATUS_VIDEO_PLAN: "; ".join(lines)}


def started_status(source_revision: str, output_dataset_id: str) -> dict[str, Any]:
    """The status patch once the source is downloaded: what is read, where it goes."""
    return {STATUS_SOURCE_REVISION: source_revision, STATUS_OUTPUT_DATASET_ID: output_dataset_id}


def output_status(output_revision: str) -> dict[str, Any]:
    """The status patch once the output is pushed: the Hub commit holding it."""
    return {STATUS_OUTPUT_REVISION: output_revision}


# ---- the output dataset: files the runner writes and the API serves ----
# The contact sheet of a source episode and its augmented copies, at the top of the output
# (the dataset card shows it; GET /v1/augmentation/{id}/preview serves it).
OUTPUT_PREVIEW_PATH = "preview.png"
OUTPUT_PREVIEW_MEDIA_TYPE = "image/png"
