"""kopf handlers: each reacts to one thing and calls the same level-triggered reconcile.

State lives in the resources (the CR's status, the Job, its pods), never in memory,
so a restarted operator picks up where the last one stopped: it adopts the existing
Job (deterministic name) and never creates a second one.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import kopf

from augment_operator import metrics
from augment_operator.config import GpuProfile, OperatorConfig
from augment_operator.digests import Digests, Reads
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
from augment_operator.kube import CONCURRENT_CALLS, Kube
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
from augment_operator.sweep import Sweep
from augment_spec.contract import (
    ANNOTATION_JOB,
    GROUP,
    LABEL_JOB,
    LABEL_JOB_ID,
    LABEL_PROJECT,
    PLURAL,
    STATUS_JOB_NAME,
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


class Echoes:
    """The resourceVersions this operator's own writes made, per object, until their
    watch events come back: an event that only brings what a reconcile just wrote (its
    label and status patches on the CR, the Job it created) needs no reconcile of its
    own, since the reconcile that wrote it acted on everything the state before implied.
    Any other change comes with a resourceVersion of someone else's and is reconciled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[tuple[str, str, str], set[str]] = {}

    def made(self, kind: str, namespace: str, name: str, version: str) -> None:
        with self._lock:
            self._made.setdefault((kind, namespace, name), set()).add(version)

    def came_back(self, kind: str, body: Mapping[str, Any], event_type: str | None) -> bool:
        """Whether this watch event is the echo of one of our writes. Any other event of
        the object forgets what was still expected (kopf may merge events, so an echo
        can be skipped over), and so does its deletion."""
        meta = body.get("metadata") or {}
        key = (kind, str(meta.get("namespace")), str(meta.get("name")))
        with self._lock:
            versions = self._made.get(key)
            if versions is None:
                return False
            if event_type in ("ADDED", "MODIFIED") and \
                    meta.get("resourceVersion") in versions:
                versions.discard(meta["resourceVersion"])
                if not versions:
                    del self._made[key]
                return True
            del self._made[key]
            return False


class Bodies:
    """The last AugmentationJob seen on the watch, per namespace and name: a Job's or
    pod's event is reconciled from it instead of a GET of the CR (a GET when none)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._crs: dict[tuple[str, str], dict[str, Any]] = {}

    def seen(self, body: Mapping[str, Any], event_type: str | None) -> None:
        """Keep `body` unless an older version than the one kept (an echo of our first
        write arriving after the CR our second write returned)."""
        cr = dict(body)
        key = (cr["metadata"]["namespace"], cr["metadata"]["name"])
        with self._lock:
            if event_type == "DELETED":
                self._crs.pop(key, None)
            elif not _older(cr, self._crs.get(key)):
                self._crs[key] = cr

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._crs.get((namespace, name))

    def unfinished(self) -> list[tuple[str, str]]:
        """(namespace, name) of every CR kept whose phase is not terminal."""
        with self._lock:
            return [key for key, cr in self._crs.items()
                    if (cr.get("status") or {}).get(STATUS_PHASE) not in TERMINAL_PHASES]


def _older(cr: dict[str, Any], than: dict[str, Any] | None) -> bool:
    """Whether `cr` is an earlier version of `than`. resourceVersions are opaque to
    clients, but etcd's are increasing integers; any other kind counts as newer."""
    if than is None:
        return False
    ours, theirs = cr["metadata"].get("resourceVersion"), than["metadata"].get("resourceVersion")
    if not (isinstance(ours, str) and isinstance(theirs, str)
            and ours.isdigit() and theirs.isdigit()):
        return False
    return int(ours) < int(theirs)


class Reconciler:
    def __init__(self, config: OperatorConfig, kube: Kube | None = None,
                 policy: PolicySource | None = None) -> None:
        self.config = config
        self.kube = kube or Kube()
        self.policy = policy  # None: no Hub policy is enforced
        self.phase_book = metrics.PhaseBook()
        self.echoes = Echoes()
        self.bodies = Bodies()
        self.digests = Digests()
        self.reads = Reads()
        # When each CR is next due for a look without an event (time.monotonic()).
        self._looks: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(CONCURRENT_CALLS, thread_name_prefix="kube-call")
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock_of(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def reconcile(self, namespace: str, name: str, trigger: str = "cr") -> Decision | None:
        """Reconcile one CR. kopf runs handlers in a thread pool and a CR's own event,
        its Job's and its pods' can arrive together: one at a time per CR, so that each
        reads the status the one before wrote (and a phase change is announced once).
        It reads the newest body seen, on the watch or returned by our own writes (one
        from the apiserver when there is none)."""
        key = f"{namespace}/{name}"
        with self._lock_of(key):
            return self._reconcile_now(namespace, name, key, trigger)

    def unfinished(self) -> list[tuple[str, str]]:
        return self.bodies.unfinished()

    def due(self, namespace: str, name: str) -> bool:
        """Whether a CR is due for a look without an event (`_next_look`)."""
        at = self._looks.get(f"{namespace}/{name}")
        return at is not None and time.monotonic() >= at

    def _next_look(self, key: str, decision: Decision | None) -> None:
        """When to look at the CR again if no event comes first: what can change with
        no event is a start limit expiring (at its expiry), a Kueue Workload's reason
        (Workloads are not watched: every resync interval), and the outcome of a
        reconcile that failed (`decision` None: tried again an interval later). Anything
        else changes with an event of the CR, its Job or its pods, and kopf lists them
        all again whenever it has to restart a watch."""
        interval = self.config.resync_seconds
        if decision is None or decision.phase is Phase.Queued:
            wait: float | None = interval
        elif decision.phase in TERMINAL_PHASES:
            wait = None
        else:
            wait = decision.expires_in
        if wait is None:
            self._looks.pop(key, None)
        else:
            self._looks[key] = time.monotonic() + wait

    def concurrently(self, *calls: Callable[[], Any]) -> list[Any]:
        """Run independent calls at once (the first on this thread); their results in
        order, or the first call's error once every call has ended. The calls must not
        themselves wait for calls of the pool."""
        others = [self._pool.submit(call) for call in calls[1:]]
        results: list[Any] = []
        error: BaseException | None = None
        try:
            results.append(calls[0]())
        except Exception as exc:
            error = exc
        for future in others:
            try:
                results.append(future.result())
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
        return results

    def _reconcile_now(self, namespace: str, name: str, key: str,
                       trigger: str) -> Decision | None:
        started = time.monotonic()
        metrics.RECONCILES.labels(trigger=trigger).inc()
        try:
            cr = self.bodies.get(namespace, name) or self.kube.get_cr(namespace, name)
            if cr is None:  # deleted: the garbage collector removes its Job and pods
                self.forget(key)
                return None
            decision = self._reconcile(cr)
            self.phase_book.record(key, decision.phase.value)
            self._next_look(key, decision)
            return decision
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            self._next_look(key, None)
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    def forget(self, key: str) -> None:
        """A deleted CR: nothing of it is kept."""
        self.phase_book.record(key, None)
        self._looks.pop(key, None)
        with self._locks_guard:
            self._locks.pop(key, None)

    def _reconcile(self, cr: dict[str, Any]) -> Decision:
        namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
        spec, spec_error = self._parse(cr)
        policy_error = self._policy_error(spec, namespace)
        spec = self._with_project_token(spec)
        profile = self.config.profile_for(spec.augmentation_type) if spec else None
        profile_error = self._profile_error(spec, profile)
        jname = job_name(name)
        runner = self._child(cr, jname)
        if spec is not None and profile is not None and policy_error is None \
                and profile_error is None:  # a refused job is not sized (no Hub read)
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
        # Independent writes go out together; the label patch is the only one of its kind.
        self.concurrently(lambda: self._create(cr, decision, spec, profile),
                          lambda: self._label(cr, spec))
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

    def _wrote(self, cr: dict[str, Any]) -> None:
        """A CR as our write left it: its watch event will be an echo, and until then a
        Job's or pod's event is reconciled from it."""
        meta = cr["metadata"]
        if meta.get("resourceVersion"):
            self.echoes.made("cr", meta["namespace"], meta["name"], meta["resourceVersion"])
        self.bodies.seen(cr, "MODIFIED")

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
        behind is deleted, not adopted. A CR the operator never wrote a status to has
        none to read: its Job is created without a GET first (`_create` deals with one
        that a stopped operator made before it could write the status)."""
        namespace = cr["metadata"]["namespace"]
        status = cr.get("status") or {}
        if not status.get(STATUS_PHASE) and not status.get(STATUS_JOB_NAME):
            return Child(None)
        job = self.kube.get_job(namespace, name)
        if job is not None and not self._owns(cr, job):
            self.kube.delete_job(namespace, name)
            job = None
        if job is None:
            return Child(None)
        # Only a suspended Job waits for Kueue: only then is its Workload worth a read.
        workload = self.kube.job_workload(namespace, job) if suspended(job) else None
        pods = self.kube.job_pods(namespace, name)
        self.reads.read("job", job)
        for pod in pods:
            self.reads.read("pod", pod)
        return Child(job, pods, workload)

    def _create(self, cr: dict[str, Any], decision: Decision, spec: AugmentationSpec | None,
                profile: GpuProfile | None) -> None:
        builders = {Action.create_job: build_job, Action.create_finalize_job: build_finalize_job}
        build = builders.get(decision.action)
        if build is None or spec is None or profile is None:
            return
        # The runner's account, Role and RoleBinding at once (a binding may name a Role
        # not made yet); all before the Job, whose pods need their account to exist.
        self.concurrently(*(partial(self.kube.create_access_object, obj)
                            for obj in runner_access(cr)))
        job = self.kube.create_job(build(cr, spec, profile, self.config))
        meta = job["metadata"]
        if not self._owns(cr, job):
            # An earlier CR of the same name left it (its status named no Job): its
            # deletion's event brings this CR back, and then its own Job is made.
            log.info("%s/%s: deleting Job %s of an earlier AugmentationJob of this name",
                     meta["namespace"], cr["metadata"]["name"], meta["name"])
            self.kube.delete_job(meta["namespace"], meta["name"])
            return
        if meta.get("resourceVersion"):
            self.echoes.made("job", meta["namespace"], meta["name"], meta["resourceVersion"])

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
            self._wrote(self.kube.patch_cr_labels(cr["metadata"]["namespace"],
                                                  cr["metadata"]["name"], wanted))

    def _write_status(self, cr: dict[str, Any], decision: Decision, jname: str,
                      spec: AugmentationSpec | None) -> None:
        if decision.recorded:
            return
        patch = status_patch(cr, decision, jname, spec.target_dataset_id if spec else None)
        if not differs(cr, patch):
            return
        before = (cr.get("status") or {}).get(STATUS_PHASE)
        namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
        self._wrote(self.kube.patch_cr_status(namespace, name, patch))
        if before != decision.phase.value:
            metrics.TRANSITIONS.labels(phase=decision.phase.value).inc()
            self.announce(cr, decision.phase.value, decision.message,
                          warning=decision.phase is Phase.Failed)
            log.info("%s/%s: %s -> %s (%s)", namespace, name, before or "-",
                     decision.phase.value, decision.message)


def register(reconciler: Reconciler, registry: kopf.OperatorRegistry) -> None:
    """Wire the handlers into a kopf registry (kept explicit for tests and the CLI)."""
    sweep = Sweep(reconciler, reconciler.config.resync_seconds)

    def start_sweep(settings: kopf.OperatorSettings, **_: Any) -> None:
        sweep.start(settings.execution.executor)

    # kopf passes every handler kwarg; namespace is None only for cluster-scoped
    # objects, and every object these handlers watch is namespaced.
    def on_cr(namespace: str | None, name: str, type: str | None, **_: Any) -> None:
        assert namespace is not None
        sweep.remember(contextvars.copy_context())
        if type == "DELETED":  # the garbage collector removes its Job and pods
            reconciler.forget(f"{namespace}/{name}")
            return
        reconciler.reconcile(namespace, name)  # from the body cr_changed kept

    def on_child(labels: Mapping[str, str], annotations: Mapping[str, str],
                 namespace: str | None, **_: Any) -> None:
        assert namespace is not None
        sweep.remember(contextvars.copy_context())
        # The label holds only a digest of a long name; Jobs made before the annotation
        # existed carry the full name in the label.
        reconciler.reconcile(namespace, annotations.get(ANNOTATION_JOB) or labels[LABEL_JOB],
                             trigger="child")

    def cr_changed(body: kopf.Body, type: str | None, **_: Any) -> bool:
        """Every CR event updates the last body seen; only those not our own echo
        (Echoes) are reconciled."""
        reconciler.bodies.seen(body, type)
        return not reconciler.echoes.came_back("cr", body, type)

    def job_changed(body: kopf.Body, type: str | None, **_: Any) -> bool:
        """A Job event is reconciled unless it is our own echo, changes nothing a
        decision reads, or brings a version a reconcile has already read (digests.py);
        each is told of every event."""
        echo = reconciler.echoes.came_back("job", body, type)
        return child_changed("job", body, type) and not echo

    def pod_changed(body: kopf.Body, type: str | None, **_: Any) -> bool:
        return child_changed("pod", body, type)

    def child_changed(kind: str, body: kopf.Body, type: str | None) -> bool:
        changed = reconciler.digests.changed(kind, body, type)
        return changed and not reconciler.reads.covered(kind, body, type)

    cr = (GROUP, VERSION, PLURAL)
    # Every change of a CR, its status included: a runner that writes the operator's
    # fields of its own status is overwritten at once, not at the next resync. The first
    # listing after a start comes as events too, so this also resumes every job.
    kopf.on.event(*cr, registry=registry, id="reconcile", when=cr_changed)(on_cr)
    # Missed events converge, and time limits expire: every unfinished job is looked at
    # again once nothing reconciled it for an interval (sweep.py).
    kopf.on.startup(registry=registry)(start_sweep)
    kopf.on.cleanup(registry=registry)(lambda **_: sweep.stop())
    kopf.on.event("batch", "v1", "jobs", labels={LABEL_JOB: kopf.PRESENT},
                  registry=registry, when=job_changed)(on_child)
    kopf.on.event("", "v1", "pods", labels={LABEL_JOB: kopf.PRESENT},
                  registry=registry, when=pod_changed)(on_child)
