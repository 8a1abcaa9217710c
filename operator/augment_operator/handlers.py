"""kopf handlers: each reacts to one thing and calls the same level-triggered reconcile.

State lives in the resources (the CR's status, the Job, its pods), never in memory,
so a restarted operator picks up where the last one stopped: it adopts the existing
Job (deterministic name) and never creates a second one.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import kopf

from augment_operator import metrics
from augment_operator.config import GpuProfile, OperatorConfig
from augment_operator.jobs import (
    build_cleanup_job,
    build_finalize_job,
    build_job,
    cleanup_job_name,
    finalize_job_name,
    job_name,
    runner_access,
    runner_account_name,
)
from augment_operator.kube import Kube
from augment_operator.sizing import auto_shards, hub_endpoint, planned_shards, read_size
from augment_operator.status import (
    Action,
    Child,
    Decision,
    StartLimits,
    decide,
    decide_sharded,
    differs,
    needs_cleanup,
    shard_failure,
    shard_status,
    status_patch,
    suspended,
)
from augment_spec.contract import (
    ANNOTATION_JOB,
    GROUP,
    LABEL_JOB,
    LABEL_JOB_ID,
    LABEL_PROJECT,
    PLURAL,
    STATUS_PHASE,
    TERMINAL_PHASES,
    VERSION,
    Phase,
    phase_of,
)
from augment_spec.crd import spec_from_cr
from augment_spec.model import AugmentationSpec, SpecError
from augment_spec.policy import PolicySource

log = logging.getLogger("augment.operator")


class Reconciler:
    def __init__(self, config: OperatorConfig, kube: Kube | None = None,
                 policy: PolicySource | None = None) -> None:
        self.config = config
        self.kube = kube or Kube()
        self.policy = policy  # None: no Hub policy is enforced
        self.phase_book = metrics.PhaseBook()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock_of(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def reconcile(self, namespace: str, name: str) -> Decision | None:
        """Reconcile one CR. kopf runs handlers in a thread pool and a CR's own event,
        its Job's and its pods' can arrive together: one at a time per CR, so that each
        reads the status the one before wrote (and a phase change is announced once)."""
        key = f"{namespace}/{name}"
        with self._lock_of(key):
            return self._reconcile_now(namespace, name, key)

    def _reconcile_now(self, namespace: str, name: str, key: str) -> Decision | None:
        started = time.monotonic()
        try:
            cr = self.kube.get_cr(namespace, name)
            if cr is None:  # deleted: the garbage collector removes its Job and pods
                self.phase_book.record(key, None)
                with self._locks_guard:
                    self._locks.pop(key, None)
                return None
            decision = self._reconcile(cr)
            self.phase_book.record(key, decision.phase.value)
            return decision
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    def _reconcile(self, cr: dict[str, Any]) -> Decision:
        namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
        spec, spec_error = self._parse(cr)
        policy_error = self._policy_error(spec, namespace)
        spec = self._with_project_token(spec)
        profile = self.config.profile_for(spec.augmentation_type) if spec else None
        profile_error = self._profile_error(spec, profile)
        jname = job_name(name)
        runner = self._child(cr, jname)
        if spec is not None and profile is not None:
            spec = self._sized(cr, spec, profile, runner.job)
        account = runner_account_name(cr)
        # Only a terminal phase needs the check: any other is rewritten from the Jobs anyway.
        can_write = phase_of(cr) in TERMINAL_PHASES and self.kube.access_granted(namespace,
                                                                                 account)
        at, limits = dt.datetime.now(dt.UTC), self._limits(profile)
        sharded = spec is not None and spec.shard_count > 1
        if sharded:
            finalize = self._child(cr, finalize_job_name(name))
            decision = decide_sharded(cr, runner, finalize, spec_error, profile_error,
                                      runner_can_write=can_write, at=at, limits=limits,
                                      policy_error=policy_error)
            if not decision.recorded and spec is not None:
                decision.extra.update(shard_status(cr, runner, spec.shard_count))
        else:
            decision = decide(cr, runner.job, runner.pods, spec_error, profile_error,
                              runner_can_write=can_write, at=at, limits=limits,
                              workload=runner.workload, policy_error=policy_error)
        if decision.final:  # before the phase is written: from then on it is trusted
            self.kube.delete_access(namespace, account)
        if spec is not None and profile is not None:
            self._create(cr, decision, spec, profile)
        self._label(cr, spec)
        self._write_status(cr, decision, jname, spec)
        if sharded:
            self._announce_shard_failure(cr, decision, runner)
            if spec is not None and profile is not None:
                self._clean_up(cr, decision, spec, profile, runner, finalize)
        # After the phase: were the operator stopped in between, the Jobs still there are
        # what makes the next reconcile decide (and write) the same thing again.
        if decision.action is Action.delete_job:
            self.kube.delete_job(namespace, jname)
            if sharded:
                self.kube.delete_job(namespace, finalize_job_name(name))
        return decision

    def _sized(self, cr: dict[str, Any], spec: AugmentationSpec, profile: GpuProfile,
               runner_job: dict[str, Any] | None) -> AugmentationSpec:
        """The spec with its number of shards: the spec's own, the one chosen before, or
        for a job still to start one chosen now from the dataset's size (sizing.py). The
        Jobs get this spec, so their pods never see `shards` unset."""
        if spec.shards is not None:
            return spec
        shards = planned_shards(cr.get("status") or {}, runner_job)
        if shards is None and phase_of(cr) in TERMINAL_PHASES:
            shards = 1  # ended before any Job: nothing will run
        if shards is None:
            endpoint = hub_endpoint(self.config.runner.env, profile)
            size = read_size(spec.dataset_id, spec.source_revision, endpoint)
            shards = auto_shards(size, spec, profile)
            log.info("%s/%s: %d shard(s) for %s (%s)", cr["metadata"]["namespace"],
                     cr["metadata"]["name"], shards, spec.dataset_id,
                     "size unknown" if size is None else
                     f"{size.episodes} episodes, {size.frames} frames, {size.cameras} cameras")
        return spec.model_copy(update={"shards": shards})

    def _child(self, cr: dict[str, Any], name: str) -> Child:
        """The CR's Job of this name and its pods; one an earlier CR of the same name left
        behind is deleted, not adopted."""
        namespace = cr["metadata"]["namespace"]
        job = self.kube.get_job(namespace, name)
        if job is not None and not self._owns(cr, job):
            self.kube.delete_job(namespace, name)
            job = None
        if job is None:
            return Child(None)
        # Only a suspended Job waits for Kueue: only then is its Workload worth a read.
        workload = self.kube.job_workload(namespace, job) if suspended(job) else None
        return Child(job, self.kube.job_pods(namespace, name), workload)

    def _create(self, cr: dict[str, Any], decision: Decision, spec: AugmentationSpec,
                profile: GpuProfile) -> None:
        builders = {Action.create_job: build_job, Action.create_finalize_job: build_finalize_job}
        build = builders.get(decision.action)
        if build is not None:
            self.kube.create_access(runner_access(cr))  # the pods' account must exist first
            self.kube.create_job(build(cr, spec, profile, self.config))

    def _clean_up(self, cr: dict[str, Any], decision: Decision, spec: AugmentationSpec,
                  profile: GpuProfile, runner: Child, finalize: Child) -> None:
        """A sharded job that failed or was cancelled leaves no staging branch behind."""
        cleanup = self._child(cr, cleanup_job_name(cr["metadata"]["name"]))
        if needs_cleanup(cr, decision, runner, finalize, cleanup):
            self.kube.create_job(build_cleanup_job(cr, spec, profile, self.config))

    def _announce_shard_failure(self, cr: dict[str, Any], decision: Decision,
                                runner: Child) -> None:
        message = shard_failure(cr, decision, runner)
        if message is not None:
            # kopf's hints name its Body wrapper; it reads any mapping with metadata.
            self.announce(cr, "ShardFailed", message, warning=True)

    def announce(self, cr: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        """A Kubernetes Event on the CR (what `kubectl describe` and the API show)."""
        event = kopf.warn if warning else kopf.info
        # kopf's hints name its Body wrapper; it reads any mapping with metadata.
        event(cr, reason=reason, message=message[:1000])  # type: ignore[arg-type]

    def _parse(self, cr: dict[str, Any]) -> tuple[AugmentationSpec | None, str | None]:
        try:
            return spec_from_cr(cr.get("spec") or {}), None
        except SpecError as exc:
            return None, f"invalid spec: {exc}"

    def _policy_error(self, spec: AugmentationSpec | None, namespace: str) -> str | None:
        """Why the Hub policy forbids the job, checked here too because `kubectl apply`
        and Argo CD never pass through the API (docs/design.md, Hub policy)."""
        if spec is None or self.policy is None:
            return None
        return self.policy.current().denial(spec, namespace)

    def _with_project_token(self, spec: AugmentationSpec | None) -> AugmentationSpec | None:
        """The spec whose runner uses its project's default Hub token Secret, when it
        names none and the policy gives the project one."""
        if spec is None or self.policy is None or spec.hf_token_secret_name is not None:
            return spec
        secret = self.policy.current().default_secret(spec.project_id)
        return spec.model_copy(update={"hf_token_secret_name": secret}) if secret else spec

    @staticmethod
    def _profile_error(spec: AugmentationSpec | None, profile: GpuProfile | None) -> str | None:
        if spec is None or profile is None or profile.enabled:
            return None
        return profile.disabled_message or (
            f"augmentation type {spec.augmentation_type.value} is disabled by configuration")

    @staticmethod
    def _limits(profile: GpuProfile | None) -> StartLimits:
        if profile is None:
            return StartLimits()
        return StartLimits(schedule_seconds=profile.schedule_timeout_seconds,
                           start_seconds=profile.start_timeout_seconds)

    @staticmethod
    def _owns(cr: dict[str, Any], job: dict[str, Any]) -> bool:
        owners = job["metadata"].get("ownerReferences") or []
        return any(o.get("uid") == cr["metadata"]["uid"] for o in owners)

    def _label(self, cr: dict[str, Any], spec: AugmentationSpec | None) -> None:
        """Label every CR, kubectl-made ones too, with its job id and project, so that
        `kubectl get augjob -l augment.dev/job-id=` (or `project-id=`) finds them."""
        wanted = {LABEL_JOB_ID: cr["metadata"]["uid"]}
        if spec is not None:
            wanted[LABEL_PROJECT] = str(spec.project_id)
        labels = cr["metadata"].get("labels") or {}
        if any(labels.get(k) != v for k, v in wanted.items()):
            self.kube.patch_cr_labels(cr["metadata"]["namespace"], cr["metadata"]["name"],
                                      wanted)

    def _write_status(self, cr: dict[str, Any], decision: Decision, jname: str,
                      spec: AugmentationSpec | None) -> None:
        if decision.recorded:
            return
        patch = status_patch(cr, decision, jname, spec.target_dataset_id if spec else None)
        if not differs(cr, patch):
            return
        before = (cr.get("status") or {}).get(STATUS_PHASE)
        self.kube.patch_cr_status(cr["metadata"]["namespace"], cr["metadata"]["name"], patch)
        if before != decision.phase.value:
            metrics.TRANSITIONS.labels(phase=decision.phase.value).inc()
            self.announce(cr, decision.phase.value, decision.message,
                          warning=decision.phase is Phase.Failed)
            log.info("%s/%s: %s -> %s (%s)", cr["metadata"]["namespace"],
                     cr["metadata"]["name"], before or "-", decision.phase.value,
                     decision.message)


def register(reconciler: Reconciler, registry: kopf.OperatorRegistry) -> None:
    """Wire the handlers into a kopf registry (kept explicit for tests and the CLI)."""

    # kopf passes every handler kwarg; namespace is None only for cluster-scoped
    # objects, and every object these handlers watch is namespaced.
    def on_cr(namespace: str | None, name: str, **_: Any) -> None:
        assert namespace is not None
        reconciler.reconcile(namespace, name)

    def on_child(labels: Mapping[str, str], annotations: Mapping[str, str],
                 namespace: str | None, **_: Any) -> None:
        assert namespace is not None
        # The label holds only a digest of a long name; Jobs made before the annotation
        # existed carry the full name in the label.
        reconciler.reconcile(namespace, annotations.get(ANNOTATION_JOB) or labels[LABEL_JOB])

    cr = (GROUP, VERSION, PLURAL)
    # Every change of a CR, its status included: a runner that writes the operator's
    # fields of its own status is overwritten at once, not at the next resync. The first
    # listing after a start comes as events too, so this also resumes every job.
    kopf.on.event(*cr, registry=registry, id="reconcile")(on_cr)
    # Missed events converge: every unfinished job is looked at again on a timer.
    kopf.timer(*cr, interval=reconciler.config.resync_seconds,
               registry=registry, id="resync",
               when=lambda status, **_: (status or {}).get(STATUS_PHASE) not in
               TERMINAL_PHASES)(on_cr)
    kopf.on.event("batch", "v1", "jobs", labels={LABEL_JOB: kopf.PRESENT},
                  registry=registry)(on_child)
    kopf.on.event("", "v1", "pods", labels={LABEL_JOB: kopf.PRESENT},
                  registry=registry)(on_child)
