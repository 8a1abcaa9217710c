"""What an AugmentationJob's status should say, given its Job and pods.

Pure functions: the handlers fetch the objects, this module decides, the handlers
write. The phase comes from the Job and its pods only: a runner may patch its own CR's
status (it reports progress there), so anything it wrote in the operator's fields is
overwritten, and a terminal phase is trusted, and kept, only once the runner's
credentials are gone (the handlers revoke them before writing one). So a Job removed
by its TTL never rewinds a result, and a runner cannot declare itself done.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from augment_spec.contract import (
    LABEL_KUEUE_QUEUE,
    PROGRESS_TOTAL,
    SHARDS_FAILED_PODS,
    STATUS_COMPLETION_TIME,
    STATUS_JOB_NAME,
    STATUS_MESSAGE,
    STATUS_OUTPUT_DATASET_ID,
    STATUS_OUTPUT_REVISION,
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

NO_JOB_REASONS = frozenset({"InvalidSpec", "ProfileDisabled", "PolicyDenied"})
# Container waiting reasons that mean the pod cannot start as it is, unlike the
# ContainerCreating of a pull in progress; the kubelet keeps retrying all of them.
START_PROBLEMS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                            "ErrImageNeverPull", "CreateContainerConfigError",
                            "CreateContainerError", "RunContainerError"})
MESSAGE_MAX = 1000


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
    # A phase reached now (not one read back): revoke the runner's credentials, then
    # write it. False for a result already recorded, which is left as it is.
    final: bool = False
    started_at: str | None = None  # when the first runner container started
    # Seconds until a start limit expires and, with no event, this decision with it.
    expires_in: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more status fields to write

    @property
    def recorded(self) -> bool:
        """A terminal phase read back from a trusted status: nothing to write."""
        return self.phase in TERMINAL_PHASES and not self.final


@dataclass(frozen=True)
class Child:
    """One of the CR's Jobs (None: not there), its pods, and while the Job waits in a
    Kueue queue, the Workload Kueue keeps for it (None: none, or Kueue not installed)."""

    job: dict[str, Any] | None
    pods: list[dict[str, Any]] = field(default_factory=list)
    workload: dict[str, Any] | None = None


@dataclass(frozen=True)
class StartLimits:
    """How long a runner pod may wait before the job fails (the GPU profile's values)."""

    schedule_seconds: float = math.inf  # no node takes the pod
    start_seconds: float = math.inf  # on a node, but its container cannot start


def now() -> str:
    return stamp(dt.datetime.now(dt.UTC))


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def job_finished(job: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return cond["type"], cond
    return None


def newest_first(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""),
                  reverse=True)


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return (pod.get("status") or {}).get("containerStatuses") or []


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def memory_limit(pod: dict[str, Any], container: str) -> str | None:
    for spec in (pod.get("spec") or {}).get("containers") or []:
        if spec.get("name") == container:
            return ((spec.get("resources") or {}).get("limits") or {}).get("memory")
    return None


def pod_failure(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of one failed pod, named by what stopped it: out of memory, an
    eviction or another disruption, else the runner's own last line."""
    status = pod.get("status") or {}
    for container in containers(pod):
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            limit = memory_limit(pod, container.get("name", ""))
            at = f" at its {limit} limit" if limit else ""
            return "OOMKilled", (f"the runner ran out of memory (OOMKilled{at}): raise the "
                                 "memory limit of the job's GPU profile")
    if status.get("reason") == "Evicted":
        return "Evicted", f"the runner pod was evicted: {status.get('message') or 'evicted'}"
    disruption = condition(pod, "DisruptionTarget")
    if disruption and disruption.get("status") == "True":
        why = disruption.get("message") or disruption.get("reason") or "disrupted"
        return "Disrupted", f"the runner pod was stopped: {why}"
    for container in containers(pod):
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode") and terminated.get("message"):
            return "", str(terminated["message"]).strip().splitlines()[-1][:MESSAGE_MAX]
    return None


def failure(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """What stopped the newest runner pod that says why it failed."""
    for pod in newest_first(pods):
        found = pod_failure(pod)
        if found:
            return found
    return None


def unschedulable_reason(pods: list[dict[str, Any]]) -> str:
    for pod in pods:
        cond = condition(pod, "PodScheduled")
        if cond and cond.get("status") == "False":
            return cond.get("message") or cond.get("reason") or "unschedulable"
    return ""


def start_problem(pods: list[dict[str, Any]]) -> tuple[dict[str, Any], str] | None:
    """(pod, "Reason: message") of the newest pod whose container cannot start."""
    for pod in newest_first(pods):
        if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
            continue
        for container in containers(pod):
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in START_PROBLEMS:
                said = f"{waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
                return pod, said
    return None


def running(pods: list[dict[str, Any]]) -> bool:
    return any((p.get("status") or {}).get("phase") == "Running" for p in pods)


def succeeded(pods: list[dict[str, Any]]) -> bool:
    return any((p.get("status") or {}).get("phase") == "Succeeded" for p in pods)


def first_start(pods: list[dict[str, Any]]) -> str | None:
    """When the first runner container started, as the kubelet reported it."""
    starts = [state.get("startedAt") for pod in pods for c in containers(pod)
              for state in ((c.get("state") or {}).get("running"),
                            (c.get("state") or {}).get("terminated")) if state]
    known = [s for s in starts if s]
    return min(known) if known else None


def waited(pod: dict[str, Any], since: str | None, at: dt.datetime) -> float:
    """Seconds from `since` (else the pod's creation) to `at`."""
    began = parse_time(since) or parse_time(pod["metadata"].get("creationTimestamp"))
    return (at - began).total_seconds() if began else 0.0


def decide(cr: dict[str, Any], job: dict[str, Any] | None, pods: list[dict[str, Any]],
           spec_error: str | None, profile_error: str | None, *,
           runner_can_write: bool = False, at: dt.datetime | None = None,
           limits: StartLimits = StartLimits(), policy_error: str | None = None,
           workload: dict[str, Any] | None = None) -> Decision:
    """The phase the CR should show. `runner_can_write`: the runner's credentials still
    exist, so a terminal phase in the status may be the runner's and is not trusted.
    `policy_error`: the Hub policy forbids the job, which then gets no Job (one already
    made, under an earlier policy, runs on). `workload`: Kueue's Workload of a suspended
    Job, which says why it waits."""
    recorded = _recorded(cr, [job], runner_can_write)
    if recorded is not None:
        return recorded
    decision = _decide(cr, Child(job, pods, workload), spec_error, profile_error,
                       at or dt.datetime.now(dt.UTC), limits, publishes=True,
                       policy_error=policy_error)
    return _reached(decision, pods)


def _recorded(cr: dict[str, Any], jobs: list[dict[str, Any] | None],
              runner_can_write: bool) -> Decision | None:
    """The terminal phase the operator recorded, once no runner can write one. A
    terminal job runs nothing: a Job still going (the operator stopped between writing
    the phase and deleting it) is deleted."""
    status = cr.get("status") or {}
    current = status.get(STATUS_PHASE)
    if current not in TERMINAL_PHASES or runner_can_write:
        return None
    going = any(job is not None and job_finished(job) is None for job in jobs)
    return Decision(Phase(current), "Final", status.get(STATUS_MESSAGE, ""),
                    action=Action.delete_job if going else Action.none)


def _reached(decision: Decision, pods: list[dict[str, Any]]) -> Decision:
    decision.final = decision.phase in TERMINAL_PHASES
    decision.started_at = first_start(pods)
    return decision


def _decide(cr: dict[str, Any], runner: Child, spec_error: str | None,
            profile_error: str | None, at: dt.datetime, limits: StartLimits, *,
            publishes: bool, policy_error: str | None = None) -> Decision:
    """`publishes`: this Job's completion is the output on the Hub (a sharded job's
    shards only stage theirs: its finalize Job publishes)."""
    job, pods = runner.job, runner.pods
    # What the Job did wins over a cancel that came too late to stop it.
    finished = job_finished(job) if job else None
    if finished and finished[0] == "Complete" and (publishes or not cancel_requested(cr)):
        return Decision(Phase.Succeeded, "Completed", "augmented dataset uploaded")
    if finished and finished[0] == "Failed":
        return _failed(finished[1], pods, "the runner failed")
    if cancel_requested(cr):
        return _cancel(cr, job, pods if publishes else [])
    if spec_error:
        return Decision(Phase.Failed, "InvalidSpec", spec_error)
    if profile_error:
        return Decision(Phase.Failed, "ProfileDisabled", profile_error)
    if job is None and policy_error:
        return Decision(Phase.Failed, "PolicyDenied", policy_error)
    if job is None:
        return Decision(Phase.Pending, "CreatingJob", "creating the runner Job",
                        action=Action.create_job)
    if running(pods):
        return Decision(Phase.Running, "Running", "the runner is augmenting the dataset")
    if suspended(job):  # its pods are gone, or going (Kueue took the quota back)
        return queued(job, runner.workload)
    if succeeded(pods):
        # The pod is done but the Job controller has not marked the Job Complete yet.
        return Decision(Phase.Running, "Finishing", "the runner finished; the Job is completing")
    return _waiting(pods, at, limits)


def _failed(condition: dict[str, Any], pods: list[dict[str, Any]], otherwise: str) -> Decision:
    reason, why = failure(pods) or ("", "")
    return Decision(Phase.Failed, reason or condition.get("reason") or "JobFailed",
                    why or condition.get("message") or otherwise)


def _cancel(cr: dict[str, Any], job: dict[str, Any] | None,
            pods: list[dict[str, Any]]) -> Decision:
    """Stop the job, unless its output is already on the Hub: a publishing runner that
    exited 0, or one still running that reported its output commit, is left to finish."""
    uploaded = succeeded(pods) or (
        running(pods) and bool((cr.get("status") or {}).get(STATUS_OUTPUT_REVISION)))
    if job is not None and uploaded:
        return Decision(Phase.Running, "Finishing",
                        "cancel requested after the upload; the runner is finishing")
    return Decision(Phase.Cancelled, "Cancelled", "cancelled on request",
                    action=Action.delete_job if job else Action.none)


def decide_sharded(cr: dict[str, Any], shards: Child, finalize: Child,
                   spec_error: str | None, profile_error: str | None, *,
                   runner_can_write: bool = False, at: dt.datetime | None = None,
                   limits: StartLimits = StartLimits(),
                   policy_error: str | None = None) -> Decision:
    """A sharded job (docs/design.md, Scale out): the Indexed Job of its shards runs as a
    single job's runner Job does; once it completes, its finalize Job decides."""
    recorded = _recorded(cr, [shards.job, finalize.job], runner_can_write)
    if recorded is not None:
        return recorded
    if finalize.job is not None:
        decision = _decide_finalize(cr, finalize)
    else:
        decision = _decide(cr, shards, spec_error, profile_error,
                           at or dt.datetime.now(dt.UTC), limits, publishes=False,
                           policy_error=policy_error)
        if decision.reason == "Completed":
            decision = Decision(Phase.Running, "Merging",
                                "every shard is done; starting the merge",
                                action=Action.create_finalize_job)
        elif decision.reason == "Running":
            decision.message = "the runners are augmenting the shards"
    return _reached(decision, shards.pods + finalize.pods)


def _decide_finalize(cr: dict[str, Any], finalize: Child) -> Decision:
    assert finalize.job is not None
    finished = job_finished(finalize.job)
    if finished and finished[0] == "Complete":
        return Decision(Phase.Succeeded, "Completed", "augmented dataset uploaded")
    if finished:
        return _failed(finished[1], finalize.pods, "the merge failed")
    if cancel_requested(cr):
        return _cancel(cr, finalize.job, finalize.pods)
    if suspended(finalize.job) and not running(finalize.pods):
        decision = queued(finalize.job, finalize.workload)
        decision.message = f"every shard is done; the merge is {decision.message}"
        return decision
    return Decision(Phase.Running, "Merging", "merging the shards and publishing the dataset")


def needs_cleanup(cr: dict[str, Any], decision: Decision, shards: Child, finalize: Child,
                  cleanup: Child) -> bool:
    """Whether to start the cleanup Job of a sharded job (docs/design.md, Scale out): it
    failed or was cancelled after its runner Job was made (so shards may have staged
    output), no cleanup Job exists yet, and no shard or finalize pod is still alive (one
    terminating could still push to its branch after the cleanup)."""
    if decision.phase not in (Phase.Failed, Phase.Cancelled) or cleanup.job is not None:
        return False
    if not (cr.get("status") or {}).get(STATUS_JOB_NAME) and shards.job is None:
        return False  # refused before any Job (invalid spec, disabled profile)
    alive = [p for p in shards.pods + finalize.pods
             if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    return not alive


def shard_status(cr: dict[str, Any], shards: Child, total: int) -> dict[str, Any]:
    """Status fields of a sharded job: its shards counted from the Indexed Job, and the
    progress its runners reported per shard, summed."""
    job_status = (shards.job or {}).get("status") or {}
    done = _count_indexes(job_status.get("completedIndexes"))
    failed = _count_indexes(job_status.get("failedIndexes"))
    active = int(job_status.get("active") or 0)
    failed_pods = int(job_status.get("failed") or 0)
    return {**shards_status(total, done, active, failed, failed_pods),
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
    why = (failure(shards.pods) or ("", "its runner failed"))[1]
    return f"{which}: {why} ({now_failed} shard pod(s) failed so far; each shard is retried)"


def _newest_failed_index(pods: list[dict[str, Any]]) -> str | None:
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    if not failed:
        return None
    newest = max(failed, key=lambda p: p["metadata"].get("creationTimestamp", ""))
    annotations = newest["metadata"].get("annotations") or {}
    return annotations.get("batch.kubernetes.io/job-completion-index")


def suspended(job: dict[str, Any]) -> bool:
    """A Job that makes no pods until someone (Kueue, when it admits it) unsuspends it."""
    return bool((job.get("spec") or {}).get("suspend"))


def queued(job: dict[str, Any], workload: dict[str, Any] | None) -> Decision:
    """A Job suspended in a Kueue queue, and why, in Kueue's words (its Workload's
    conditions). Kueue reports no position here: only its visibility API has one."""
    queue = (job["metadata"].get("labels") or {}).get(LABEL_KUEUE_QUEUE)
    where = f"queued in Kueue LocalQueue {queue}" if queue else "suspended"
    if workload is None:
        return Decision(Phase.Queued, "Queued",
                        f"{where}: waiting for Kueue to take the Job in (no Workload yet)")
    return Decision(Phase.Queued, "Queued", f"{where}: {_kueue_says(workload)}")


def _kueue_says(workload: dict[str, Any]) -> str:
    """Why Kueue holds the Workload back, from its conditions, the most telling first: an
    eviction (preempted, then queued again), an admission not yet acted on, else the
    QuotaReserved False that says what is short ("couldn't assign flavors to pod set
    main: insufficient unused quota for nvidia.com/gpu in flavor ..., 1 more needed")."""
    conditions = {c.get("type"): c for c in (workload.get("status") or {}).get("conditions")
                  or []}
    evicted = conditions.get("Evicted") or {}
    if evicted.get("status") == "True":
        return f"evicted ({evicted.get('reason')}): {evicted.get('message', '')}".strip(": ")
    admitted = conditions.get("Admitted") or {}
    if admitted.get("status") == "True":
        return "admitted by Kueue; the Job is about to start"
    reserved = conditions.get("QuotaReserved") or {}
    if reserved.get("status") == "False":
        said = reserved.get("message") or reserved.get("reason") or "no quota reserved"
        return f"{reserved.get('reason') or 'Pending'}: {said}"
    return "waiting for Kueue to admit the Workload"


def _waiting(pods: list[dict[str, Any]], at: dt.datetime, limits: StartLimits) -> Decision:
    """A Job whose pod does not run yet: why, and whether it waited too long."""
    waiting = unschedulable_reason(pods)
    if waiting:
        pod = newest_first(pods)[0]
        waited_s = waited(pod, None, at)
        if waited_s > limits.schedule_seconds:
            return Decision(Phase.Failed, "ScheduleTimeout",
                            f"no GPU node took the runner pod within "
                            f"{limits.schedule_seconds:.0f}s: {waiting}",
                            action=Action.delete_job)
        return Decision(Phase.Pending, "Unschedulable", f"waiting for a GPU node: {waiting}",
                        expires_in=_left(limits.schedule_seconds, waited_s))
    problem = start_problem(pods)
    if problem:
        pod, said = problem
        scheduled = condition(pod, "PodScheduled") or {}
        waited_s = waited(pod, scheduled.get("lastTransitionTime"), at)
        if waited_s > limits.start_seconds:
            return Decision(Phase.Failed, "StartTimeout",
                            f"the runner pod did not start within "
                            f"{limits.start_seconds:.0f}s: {said}", action=Action.delete_job)
        return Decision(Phase.Pending, "CannotStart", f"the runner pod cannot start: {said}",
                        expires_in=_left(limits.start_seconds, waited_s))
    return Decision(Phase.Pending, "Starting", "waiting for the runner pod to start")


def _left(limit: float, waited_s: float) -> float | None:
    return None if math.isinf(limit) else max(0.0, limit - waited_s)


def conditions_for(decision: Decision, generation: int,
                   previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ready / Scheduled conditions; lastTransitionTime moves only when the status flips."""
    ready = "True" if decision.phase is Phase.Succeeded else (
        "False" if decision.phase in TERMINAL_PHASES else "Unknown")
    scheduled = "False" if decision.reason in ("Queued", "Unschedulable",
                                               "ScheduleTimeout") else (
        "True" if decision.phase in (Phase.Running, Phase.Succeeded)
        or decision.reason in ("CannotStart", "StartTimeout") else "Unknown")
    wanted = {"Ready": ready, "Scheduled": scheduled}
    old = {c["type"]: c for c in previous}
    out = []
    for kind, status in wanted.items():
        before = old.get(kind, {})
        out.append({
            "type": kind, "status": status, "reason": decision.reason,
            "message": decision.message[:MESSAGE_MAX], "observedGeneration": generation,
            "lastTransitionTime": before.get("lastTransitionTime") if before.get("status")
            == status else now(),
        })
    return out


def status_patch(cr: dict[str, Any], decision: Decision, job_name: str,
                 output_dataset_id: str | None) -> dict[str, Any]:
    """The operator-owned status fields, all of them every time, so whatever else wrote
    them is overwritten; progress belongs to the runner until the end."""
    status = cr.get("status") or {}
    generation = cr["metadata"].get("generation", 1)
    patch: dict[str, Any] = {
        STATUS_PHASE: decision.phase.value,
        STATUS_MESSAGE: decision.message[:MESSAGE_MAX],
        "observedGeneration": generation,
        "conditions": conditions_for(decision, generation, status.get("conditions") or []),
    }
    if decision.reason not in NO_JOB_REASONS:
        patch[STATUS_JOB_NAME] = job_name
    if output_dataset_id:
        patch[STATUS_OUTPUT_DATASET_ID] = output_dataset_id
    if decision.started_at:
        patch[STATUS_START_TIME] = decision.started_at
    elif decision.phase is Phase.Running and not status.get(STATUS_START_TIME):
        patch[STATUS_START_TIME] = now()
    elif decision.phase is Phase.Pending and status.get(STATUS_START_TIME):
        patch[STATUS_START_TIME] = None  # no runner container has started yet
    if decision.phase in TERMINAL_PHASES:
        if decision.final or not status.get(STATUS_COMPLETION_TIME):
            patch[STATUS_COMPLETION_TIME] = now()
    elif status.get(STATUS_COMPLETION_TIME):
        patch[STATUS_COMPLETION_TIME] = None  # a job not finished has no completion time
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
        elif key == STATUS_COMPLETION_TIME and value is not None and status.get(key):
            continue  # rewritten only with the phase: a later reconcile must not move it
        elif status.get(key) != value:
            return True
    return False
