"""What an AugmentationJob becomes: batch/v1 Jobs (one runner pod on the profile's GPU
nodes, or for a sharded spec an Indexed Job of one runner pod per shard, then a finalize
Job that merges and publishes them, or a cleanup Job that deletes their staging branches
when the job failed or was cancelled: docs/design.md, Scale out) and the runners' own
credentials, a ServiceAccount bound to a Role that may read and patch this CR's status
and nothing else. All of it is owned by the CR, so deleting the CR removes it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from augment_operator.config import GpuProfile, OperatorConfig, Queue
from augment_spec.contract import (
    ANNOTATION_JOB,
    ANNOTATION_KUEUE_MIN_PARALLELISM,
    API_VERSION,
    ENV_CPU_LIMIT,
    ENV_HF_TOKEN,
    ENV_JOB_NAME,
    ENV_JOB_NAMESPACE,
    ENV_JOB_UID,
    ENV_SPEC,
    ENV_TERMINATION_LOG,
    ENV_THREADS,
    ENV_VIDEO_DECODE,
    ENV_VIDEO_ENCODE,
    ENV_WORKDIR,
    EXIT_BAD_INPUT,
    GROUP,
    KIND,
    LABEL_JOB,
    LABEL_KUEUE_PRIORITY,
    LABEL_KUEUE_QUEUE,
    LABEL_MANAGED_BY,
    LABEL_PROJECT,
    MANAGED_BY_OPERATOR,
    PLURAL,
    TERMINATION_LOG_PATH,
    job_label_value,
    video_codecs_value,
)
from augment_spec.model import AugmentationSpec

RUNNER_CONTAINER = "runner"
RUNNER_NAME = "augment-runner"  # app.kubernetes.io/name of runner pods (the chart's policy)
SCRATCH = "/scratch"
RBAC_GROUP = "rbac.authorization.k8s.io"


def job_name(cr_name: str) -> str:
    """Deterministic, and short enough for the `job-name` label the Job controller adds."""
    return _child_name(cr_name, "run")


def finalize_job_name(cr_name: str) -> str:
    """The finalize Job of a sharded job (same rules as job_name)."""
    return _child_name(cr_name, "merge")


def cleanup_job_name(cr_name: str) -> str:
    """The cleanup Job of a sharded job that failed or was cancelled (same rules)."""
    return _child_name(cr_name, "clean")


def _child_name(cr_name: str, suffix: str) -> str:
    """At most 60 characters (a label value holds 63)."""
    if len(cr_name) <= 59 - len(suffix):
        return f"{cr_name}-{suffix}"
    digest = hashlib.sha256(cr_name.encode()).hexdigest()[:8]
    return f"{cr_name[:50 - len(suffix)]}-{digest}-{suffix}"


def runner_account_name(cr: dict[str, Any]) -> str:
    """The ServiceAccount, Role and RoleBinding of one CR's runner. Named after the CR's
    uid, not its name: a CR deleted and made again under the same name never adopts the
    credentials of its predecessor, which the garbage collector is about to remove."""
    return f"{RUNNER_NAME}-{cr['metadata']['uid']}"


def job_labels(cr: dict[str, Any], spec: AugmentationSpec | None = None) -> dict[str, str]:
    labels = {
        LABEL_JOB: job_label_value(cr["metadata"]["name"]),
        LABEL_MANAGED_BY: MANAGED_BY_OPERATOR,
        "app.kubernetes.io/name": RUNNER_NAME,
    }
    if spec is not None:
        labels[LABEL_PROJECT] = str(spec.project_id)
    return labels


def queue_labels(queue: Queue | None) -> dict[str, str]:
    """The labels that hand a Job to Kueue: its LocalQueue, and its WorkloadPriorityClass
    when one is named. None: no labels, Kueue (installed or not) leaves the Job alone."""
    if queue is None:
        return {}
    labels = {LABEL_KUEUE_QUEUE: queue.name}
    if queue.priority_class:
        labels[LABEL_KUEUE_PRIORITY] = queue.priority_class
    return labels


def job_annotations(cr: dict[str, Any]) -> dict[str, str]:
    """The full CR name, which the operator reads back from a Job's or a pod's events."""
    return {ANNOTATION_JOB: cr["metadata"]["name"]}


def owner_reference(cr: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": KIND, "name": cr["metadata"]["name"],
        "uid": cr["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
    }


def runner_access(cr: dict[str, Any]) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding (in creation order) that let this CR's runner
    read and patch this CR's status and nothing else: not another job's status, not its
    spec. The operator may grant this because it holds the same permissions namespace-wide."""
    name, namespace = runner_account_name(cr), cr["metadata"]["namespace"]
    meta = {"name": name, "namespace": namespace, "labels": job_labels(cr),
            "annotations": job_annotations(cr), "ownerReferences": [owner_reference(cr)]}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "Role", "metadata": meta,
         "rules": [{"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"],
                    "resourceNames": [cr["metadata"]["name"]], "verbs": ["get", "patch"]}]},
        {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ]


def pod_failure_policy() -> dict[str, Any]:
    """A pod stopped by a disruption (node drained or lost, preemption, eviction) is tried
    again without using up a retry; bad input fails the same way on every try, so it fails
    the Job at once instead of burning GPU hours."""
    return {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob",
         "onExitCodes": {"containerName": RUNNER_CONTAINER, "operator": "In",
                         "values": [EXIT_BAD_INPUT]}},
    ]}




def runner_env(cr: dict[str, Any], spec: AugmentationSpec, profile: GpuProfile,
               config: OperatorConfig) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": ENV_SPEC, "value": json.dumps(spec.model_dump(mode="json"), sort_keys=True)},
        {"name": ENV_JOB_NAME, "value": cr["metadata"]["name"]},
        {"name": ENV_JOB_UID, "value": cr["metadata"]["uid"]},
        {"name": ENV_JOB_NAMESPACE,
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": ENV_WORKDIR, "value": f"{SCRATCH}/work"},
        {"name": ENV_TERMINATION_LOG, "value": TERMINATION_LOG_PATH},
        # The pod sees the node's cores; size the transform threads to what it asked for.
        {"name": ENV_THREADS, "valueFrom": {"resourceFieldRef": {
            "containerName": RUNNER_CONTAINER, "resource": "requests.cpu", "divisor": "1"}}},
        # ... and never run more codec threads than its limit (augment_runner/cpu_budget.py).
        {"name": ENV_CPU_LIMIT, "valueFrom": {"resourceFieldRef": {
            "containerName": RUNNER_CONTAINER, "resource": "limits.cpu", "divisor": "1"}}},
        # The video engines of the profile's GPUs: the runner plans each camera's decode
        # and encode from them (augment_runner/codec_plan.py).
        {"name": ENV_VIDEO_DECODE, "value": video_codecs_value(profile.video_engines.decode)},
        {"name": ENV_VIDEO_ENCODE, "value": video_codecs_value(profile.video_engines.encode)},
        {"name": "HOME", "value": SCRATCH},
        {"name": "HF_HOME", "value": f"{SCRATCH}/hf-home"},
    ]
    secret = spec.hf_token_secret_name or config.runner.hub_token_secret_name
    key = spec.hf_token_secret_key if spec.hf_token_secret_name \
        else config.runner.hub_token_secret_key
    if secret:
        # optional: public source datasets need no token; the push then fails with a
        # readable message from the runner instead of a pod that cannot start.
        env.append({"name": ENV_HF_TOKEN, "valueFrom": {"secretKeyRef": {
            "name": secret, "key": key, "optional": spec.hf_token_secret_name is None}}})
    extra = {**config.runner.env, **profile.env}
    env += [{"name": k, "value": v} for k, v in sorted(extra.items())]
    return env


def pod_security(config: OperatorConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pod and container security contexts that meet the `restricted` Pod Security Standard."""
    uid = config.runner.run_as_user
    pod = {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
           "seccompProfile": {"type": "RuntimeDefault"}}
    container = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                 "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    return pod, container


def build_job(cr: dict[str, Any], spec: AugmentationSpec, profile: GpuProfile,
              config: OperatorConfig) -> dict[str, Any]:
    """The runner Job: one pod, or with more than one shard an Indexed Job of one pod per
    shard (Kubernetes gives each pod its index, JOB_COMPLETION_INDEX), each shard retried
    on its own (backoffLimitPerIndex); a shard that keeps failing fails the Job at once.
    With a queue, Kueue admits the shards together: `parallelism` pods at once, or as
    few as one where the quota is short."""
    job = _job(cr, spec, profile, config, job_name(cr["metadata"]["name"]),
               ["augment", "run"], profile.resources)
    if spec.shard_count > 1:
        job_spec = job["spec"]
        del job_spec["backoffLimit"]  # counted per index instead
        job_spec.update({
            "completionMode": "Indexed",
            "completions": spec.shard_count,
            "parallelism": min(spec.shard_count, profile.max_parallel_shards),
            "backoffLimitPerIndex": profile.backoff_limit,
            "maxFailedIndexes": 0,
        })
        if job_spec.get("suspend"):
            # A queue whose quota is short of `parallelism` GPUs would hold the job
            # forever; Kueue may instead admit fewer shards at once (the rest wait their
            # turn inside the Job, as beyond maxParallelShards).
            job["metadata"]["annotations"][ANNOTATION_KUEUE_MIN_PARALLELISM] = "1"
    return job


def build_finalize_job(cr: dict[str, Any], spec: AugmentationSpec, profile: GpuProfile,
                       config: OperatorConfig) -> dict[str, Any]:
    """The finalize Job of a sharded job: `augment merge` in the runner image, once every
    shard is done. It merges files and needs no GPU, so it asks for none. It waits in the
    shards' queue too (their Workload is finished by then, its quota free again): where
    Kueue manages every Job, one without a queue would never be admitted."""
    return _job(cr, spec, profile, config, finalize_job_name(cr["metadata"]["name"]),
                ["augment", "merge"], _without_gpus(profile.resources))


def build_cleanup_job(cr: dict[str, Any], spec: AugmentationSpec, profile: GpuProfile,
                      config: OperatorConfig) -> dict[str, Any]:
    """The cleanup Job of a sharded job that failed or was cancelled: `augment merge
    --discard` deletes its staging branches on the Hub. It runs after the job's phase is
    written, when the runners' credentials are gone, and needs none: it runs as the
    namespace's default account without a token. It is kept until the CR is deleted (no
    TTL), so that a finished cleanup is never started again."""
    job = _job(cr, spec, profile, config, cleanup_job_name(cr["metadata"]["name"]),
               ["augment", "merge", "--discard"], _without_gpus(profile.resources))
    job["spec"].pop("ttlSecondsAfterFinished", None)
    pod_spec = job["spec"]["template"]["spec"]
    del pod_spec["serviceAccountName"]
    pod_spec["automountServiceAccountToken"] = False
    return job


def _without_gpus(resources: dict[str, Any]) -> dict[str, Any]:
    return {kind: {name: value for name, value in amounts.items() if not name.endswith("/gpu")}
            for kind, amounts in resources.items()}


def _job(cr: dict[str, Any], spec: AugmentationSpec, profile: GpuProfile,
         config: OperatorConfig, name: str, command: list[str],
         resources: dict[str, Any]) -> dict[str, Any]:
    labels = job_labels(cr, spec)
    pod_sc, container_sc = pod_security(config)
    container = {
        "name": RUNNER_CONTAINER,
        "image": profile.image,
        "imagePullPolicy": profile.image_pull_policy,
        "command": command,
        "env": runner_env(cr, spec, profile, config),
        "resources": resources,
        "securityContext": container_sc,
        "terminationMessagePath": TERMINATION_LOG_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": runner_account_name(cr),
        "securityContext": pod_sc,
        "nodeSelector": profile.node_selector,
        "affinity": profile.affinity,
        "tolerations": profile.tolerations,
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": profile.scratch_size_limit}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    if profile.runtime_class_name:
        pod_spec["runtimeClassName"] = profile.runtime_class_name
    if profile.priority_class_name:
        pod_spec["priorityClassName"] = profile.priority_class_name
    queue = config.queue_for(cr["metadata"]["namespace"], spec)
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cr["metadata"]["namespace"],
            "labels": {**labels, **queue_labels(queue)},
            "annotations": job_annotations(cr),
            "ownerReferences": [owner_reference(cr)],
        },
        "spec": {
            "backoffLimit": profile.backoff_limit,
            "activeDeadlineSeconds": profile.active_deadline_seconds,
            "ttlSecondsAfterFinished": profile.ttl_seconds_after_finished,
            "podFailurePolicy": pod_failure_policy(),
            "template": {"metadata": {"labels": labels, "annotations": job_annotations(cr)},
                         "spec": pod_spec},
        },
    }
    if queue is not None:
        # Kueue unsuspends a queued Job when it admits it; created running, its pods
        # would start before Kueue could account for them.
        job["spec"]["suspend"] = True
    return job
