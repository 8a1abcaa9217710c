"""kopf handlers: each reacts to one thing and calls the same level-triggered reconcile.

State lives in the resources (the CR's status, the Job, its pods), never in memory,
so a restarted operator picks up where the last one stopped: it adopts the existing
Job (deterministic name) and never creates a second one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from augment_operator import metrics
from augment_operator.config import OperatorConfig
from augment_operator.jobs import build_finalize_job, build_job, finalize_job_name, job_name
from augment_operator.kube import Kube
from augment_operator.status import (
    Action,
    Child,
    Decision,
    decide,
    decide_sharded,
    differs,
    shard_failure,
    shard_status,
    status_patch,
)
from augment_spec.contract import (
    ANNOTATION_CANCEL,
    GROUP,
    LABEL_JOB,
    LABEL_JOB_ID,
    LABEL_PROJECT,
    PLURAL,
    STATUS_PHASE,
    TERMINAL_PHASES,
    VERSION,
    Phase,
)
from augment_spec.crd import spec_from_cr
from augment_spec.model import AugmentationSpec, SpecError

log = logging.getLogger("augment.operator")


class Reconciler:
    def __init__(self, config: OperatorConfig, kube: Kube | None = None) -> None:
        self.config = config
        self.kube = kube or Kube()
        self.phase_book = metrics.PhaseBook()

    def reconcile(self, namespace: str, name: str) -> Decision | None:
        started = time.monotonic()
        try:
            cr = self.kube.get_cr(namespace, name)
            if cr is None:  # deleted: the garbage collector removes its Job and pods
                self.phase_book.record(f"{namespace}/{name}", None)
                return None
            decision = self._reconcile(cr)
            self.phase_book.record(f"{namespace}/{name}", decision.phase.value)
            return decision
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    def _reconcile(self, cr: dict[str, Any]) -> Decision:
        name = cr["metadata"]["name"]
        spec, spec_error = self._parse(cr)
        profile_error = self._profile_error(spec) if spec else None
        jname = job_name(name)
        runner = self._child(cr, jname)
        if spec is not None and spec.shards > 1:
            finalize = self._child(cr, finalize_job_name(name))
            decision = decide_sharded(cr, runner, finalize, spec_error, profile_error)
            if decision.reason != "Final":
                decision.extra.update(shard_status(cr, runner, spec.shards))
        else:
            decision = decide(cr, runner.job, runner.pods, spec_error, profile_error)
        if spec is not None:
            self._act(cr, decision, spec)
        self._label(cr, spec)
        self._write_status(cr, decision, jname, spec)
        if spec is not None and spec.shards > 1:
            self._announce_shard_failure(cr, decision, runner)
        return decision

    def _child(self, cr: dict[str, Any], name: str) -> Child:
        """The CR's Job of this name and its pods; one an earlier CR of the same name left
        behind is deleted, not adopted."""
        namespace = cr["metadata"]["namespace"]
        job = self.kube.get_job(namespace, name)
        if job is not None and not self._owns(cr, job):
            self.kube.delete_job(namespace, name)
            job = None
        return Child(job, self.kube.job_pods(namespace, name) if job else [])

    def _act(self, cr: dict[str, Any], decision: Decision, spec: AugmentationSpec) -> None:
        namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
        profile = self.config.profile_for(spec.augmentation_type)
        if decision.action is Action.create_job:
            self.kube.create_job(build_job(cr, spec, profile, self.config))
        elif decision.action is Action.create_finalize_job:
            self.kube.create_job(build_finalize_job(cr, spec, profile, self.config))
        elif decision.action is Action.delete_job:
            self.kube.delete_job(namespace, job_name(name))
            if spec.shards > 1:
                self.kube.delete_job(namespace, finalize_job_name(name))

    def _announce_shard_failure(self, cr: dict[str, Any], decision: Decision,
                                runner: Child) -> None:
        message = shard_failure(cr, decision, runner)
        if message is not None:
            # kopf's hints name its Body wrapper; it reads any mapping with metadata.
            kopf.warn(cr, reason="ShardFailed", message=message[:1000])  # type: ignore[arg-type]

    def _parse(self, cr: dict[str, Any]) -> tuple[AugmentationSpec | None, str | None]:
        try:
            return spec_from_cr(cr.get("spec") or {}), None
        except SpecError as exc:
            return None, f"invalid spec: {exc}"

    def _profile_error(self, spec: AugmentationSpec) -> str | None:
        profile = self.config.profile_for(spec.augmentation_type)
        if profile.enabled:
            return None
        return profile.disabled_message or (
            f"augmentation type {spec.augmentation_type.value} is disabled by configuration")

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
        patch = status_patch(cr, decision, jname, spec.target_dataset_id if spec else None)
        if not differs(cr, patch):
            return
        before = (cr.get("status") or {}).get(STATUS_PHASE)
        self.kube.patch_cr_status(cr["metadata"]["namespace"], cr["metadata"]["name"], patch)
        if before != decision.phase.value:
            metrics.TRANSITIONS.labels(phase=decision.phase.value).inc()
            event = kopf.warn if decision.phase is Phase.Failed else kopf.info
            # kopf's hints name its Body wrapper; it reads any mapping with metadata.
            event(cr, reason=decision.phase.value,  # type: ignore[arg-type]
                  message=decision.message[:1000])
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

    def on_child(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
        assert namespace is not None
        reconciler.reconcile(namespace, labels[LABEL_JOB])

    cr = (GROUP, VERSION, PLURAL)
    kopf.on.create(*cr, registry=registry, id="reconcile-created")(on_cr)
    kopf.on.resume(*cr, registry=registry, id="reconcile-resumed")(on_cr)
    kopf.on.field(*cr, field=["metadata", "annotations", ANNOTATION_CANCEL],
                  registry=registry, id="cancel")(on_cr)
    # Missed events converge: every unfinished job is looked at again on a timer.
    kopf.timer(*cr, interval=reconciler.config.resync_seconds,
               registry=registry, id="resync",
               when=lambda status, **_: (status or {}).get(STATUS_PHASE) not in
               TERMINAL_PHASES)(on_cr)
    kopf.on.event("batch", "v1", "jobs", labels={LABEL_JOB: kopf.PRESENT},
                  registry=registry)(on_child)
    kopf.on.event("", "v1", "pods", labels={LABEL_JOB: kopf.PRESENT},
                  registry=registry)(on_child)
