"""What an AugmentationJob's status should say, given its Job and pods.

Pure functions: the handlers fetch the objects, this module decides, the handlers
write. Terminal phases are sticky, so a Job removed by its TTL never rewinds a result.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from augment_spec.contract import (
    PROGRESS_TOTAL,
    SHARDS_FAILED_PODS,
    STATUS_COMPLETION_TIME,
    STATUS_JOB_NAME,
    STATUS_MESSAGE,
    STATUS_OUTPUT_DATASET_ID,
    STATUS_PHASE,
    STATUS_PROGRESS,
    STATUS_SHARDS,
    STATUS_START_TIME,
    TERMINAL_PHASES,
    Phase,
    cancel_requested,
    progress_status,
    shards_status,
    summed_progress,
)

NO_JOB_REASONS = frozenset({"InvalidSpec", "ProfileDisabled"})


class Action(Enum):
    none = "none"
    create_job = "create_job"
    create_finalize_job = "create_finalize_job"  # a sharded job, every shard done
    delete_job = "delete_job"  # and a sharded job's finalize Job


@dataclass
class Decision:
    phase: Phase
    reason: str
    message: str
    action: Action = Action.none
    extra: dict[str, Any] = field(default_factory=dict)  # more status fields to write


@dataclass(frozen=True)
class Child:
    """One of the CR's Jobs (None: not there) and its pods."""

    job: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_finished(job: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond["type"], cond
    return None


def termination_message(pods: list[dict[str, Any]]) -> str:
    """The newest failed runner container's own words (its termination message)."""
    newest = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""),
                    reverse=True)
    for pod in newest:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            if terminated.get("exitCode") and terminated.get("message"):
                return str(terminated["message"]).strip().splitlines()[-1][:1000]
    return ""


def unschedulable_reason(pods: list[dict[str, Any]]) -> str:
    for pod in pods:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return cond.get("message") or cond.get("reason") or "unschedulable"
    return ""


def running(pods: list[dict[str, Any]]) -> bool:
    return any((p.get("status") or {}).get("phase") == "Running" for p in pods)


def decide(cr: dict[str, Any], job: dict[str, Any] | None, pods: list[dict[str, Any]],
           spec_error: str | None, profile_error: str | None) -> Decision:
    current = (cr.get("status") or {}).get(STATUS_PHASE)
    if current in TERMINAL_PHASES:
        return Decision(Phase(current), "Final",
                        (cr.get("status") or {}).get(STATUS_MESSAGE, ""))
    if cancel_requested(cr):
        return Decision(Phase.Cancelled, "Cancelled", "cancelled on request",
                        action=Action.delete_job if job else Action.none)
    if spec_error:
        return Decision(Phase.Failed, "InvalidSpec", spec_error)
    if profile_error:
        return Decision(Phase.Failed, "ProfileDisabled", profile_error)
    if job is None:
        return Decision(Phase.Pending, "CreatingJob", "creating the runner Job",
                        action=Action.create_job)
    finished = job_finished(job)
    if finished and finished[0] == "Complete":
        return Decision(Phase.Succeeded, "Completed", "augmented dataset uploaded")
    if finished:
        why = termination_message(pods) or finished[1].get("message") or "the runner failed"
        return Decision(Phase.Failed, finished[1].get("reason") or "JobFailed", why)
    if running(pods):
        return Decision(Phase.Running, "Running", "the runner is augmenting the dataset")
    if any((p.get("status") or {}).get("phase") == "Succeeded" for p in pods):
        # The pod is done but the Job controller has not marked the Job Complete yet.
        return Decision(Phase.Running, "Finishing", "the runner finished; the Job is completing")
    waiting = unschedulable_reason(pods)
    if waiting:
        return Decision(Phase.Pending, "Unschedulable", f"waiting for a GPU node: {waiting}")
    return Decision(Phase.Pending, "Starting", "waiting for the runner pod to start")


# Decisions a sharded job takes as they are: the shards' Job has no say in them.
_SETTLED = frozenset({"Final", "Cancelled", "InvalidSpec", "ProfileDisabled"})


def decide_sharded(cr: dict[str, Any], shards: Child, finalize: Child,
                   spec_error: str | None, profile_error: str | None) -> Decision:
    """A sharded job (docs/design.md, Scale out): the Indexed Job of its shards runs as a
    single job's runner Job does; once it completes, its finalize Job decides."""
    decision = decide(cr, shards.job, shards.pods, spec_error, profile_error)
    if decision.reason in _SETTLED:
        if decision.reason == "Cancelled" and finalize.job is not None:
            decision.action = Action.delete_job
        return decision
    if finalize.job is None and decision.reason != "Completed":
        if decision.reason == "Running":
            decision.message = "the runners are augmenting the shards"
        return decision
    return _decide_finalize(finalize)


def _decide_finalize(finalize: Child) -> Decision:
    if finalize.job is None:
        return Decision(Phase.Running, "Merging", "every shard is done; starting the merge",
                        action=Action.create_finalize_job)
    finished = job_finished(finalize.job)
    if finished and finished[0] == "Complete":
        return Decision(Phase.Succeeded, "Completed", "augmented dataset uploaded")
    if finished:
        why = (termination_message(finalize.pods) or finished[1].get("message")
               or "the merge failed")
        return Decision(Phase.Failed, finished[1].get("reason") or "JobFailed", why)
    return Decision(Phase.Running, "Merging", "merging the shards and publishing the dataset")


def shard_status(cr: dict[str, Any], shards: Child, total: int) -> dict[str, Any]:
    """Status fields of a sharded job: its shards counted from the Indexed Job, and the
    progress its runners reported per shard, summed."""
    job_status = (shards.job or {}).get("status") or {}
    done = _count_indexes(job_status.get("completedIndexes"))
    failed = _count_indexes(job_status.get("failedIndexes"))
    running = int(job_status.get("active") or 0)
    failed_pods = int(job_status.get("failed") or 0)
    return {**shards_status(total, done, running, failed, failed_pods),
            **progress_status(*summed_progress(cr.get("status") or {}))}


def _count_indexes(ranges: str | None) -> int:
    """How many indexes `1,3-5` names (the Indexed Job's completedIndexes format)."""
    count = 0
    for part in (ranges or "").split(","):
        if part:
            low, _, high = part.partition("-")
            count += int(high or low) - int(low) + 1
    return count


def shard_failure(cr: dict[str, Any], decision: Decision, shards: Child) -> str | None:
    """The Event to post when more shard pods failed than the status says: the newest
    failure's own words; None when no new pod failed."""
    before = ((cr.get("status") or {}).get(STATUS_SHARDS) or {}).get(SHARDS_FAILED_PODS, 0)
    now_failed = (decision.extra.get(STATUS_SHARDS) or {}).get(SHARDS_FAILED_PODS, 0)
    if now_failed <= before:
        return None
    index = _newest_failed_index(shards.pods)
    which = f"shard {index}" if index is not None else "a shard"
    why = termination_message(shards.pods) or "its runner failed"
    return f"{which}: {why} ({now_failed} shard pod(s) failed so far; each shard is retried)"


def _newest_failed_index(pods: list[dict[str, Any]]) -> str | None:
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if not failed:
        return None
    newest = max(failed, key=lambda p: p["metadata"].get("creationTimestamp", ""))
    annotations = newest["metadata"].get("annotations") or {}
    return annotations.get("batch.kubernetes.io/job-completion-index")


def conditions_for(decision: Decision, generation: int,
                   previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ready / Scheduled conditions; lastTransitionTime moves only when the status flips."""
    ready = "True" if decision.phase is Phase.Succeeded else (
        "False" if decision.phase in TERMINAL_PHASES else "Unknown")
    scheduled = "False" if decision.reason == "Unschedulable" else (
        "True" if decision.phase in (Phase.Running, Phase.Succeeded) else "Unknown")
    wanted = {"Ready": ready, "Scheduled": scheduled}
    old = {c["type"]: c for c in previous}
    out = []
    for kind, status in wanted.items():
        before = old.get(kind, {})
        out.append({
            "type": kind, "status": status, "reason": decision.reason,
            "message": decision.message[:1000], "observedGeneration": generation,
            "lastTransitionTime": before.get("lastTransitionTime") if before.get("status")
            == status else now(),
        })
    return out


def status_patch(cr: dict[str, Any], decision: Decision, job_name: str,
                 output_dataset_id: str | None) -> dict[str, Any]:
    """The operator-owned status fields; progress belongs to the runner until the end."""
    status = cr.get("status") or {}
    generation = cr["metadata"].get("generation", 1)
    patch: dict[str, Any] = {
        STATUS_PHASE: decision.phase.value,
        STATUS_MESSAGE: decision.message[:1000],
        "observedGeneration": generation,
        "conditions": conditions_for(decision, generation, status.get("conditions") or []),
    }
    if decision.reason not in NO_JOB_REASONS:
        patch[STATUS_JOB_NAME] = job_name
    if output_dataset_id:
        patch[STATUS_OUTPUT_DATASET_ID] = output_dataset_id
    if decision.phase is Phase.Running and not status.get(STATUS_START_TIME):
        patch[STATUS_START_TIME] = now()
    if decision.phase in TERMINAL_PHASES and not status.get(STATUS_COMPLETION_TIME):
        patch[STATUS_COMPLETION_TIME] = now()
    patch.update(decision.extra)
    if decision.phase is Phase.Succeeded:
        total = (patch.get(STATUS_PROGRESS) or status.get(STATUS_PROGRESS) or {}).get(
            PROGRESS_TOTAL, 0)
        patch.update(progress_status(total, total, finished=True))
    return patch


def differs(cr: dict[str, Any], patch: dict[str, Any]) -> bool:
    """True when writing `patch` would change something a reader cares about."""
    status = cr.get("status") or {}
    for key, value in patch.items():
        if key == "conditions":
            strip = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in value]
            have = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                    for c in status.get(key) or []]
            if strip != have:
                return True
        elif status.get(key) != value:
            return True
    return False
