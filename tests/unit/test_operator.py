"""The operator's decisions and the Job it builds, without a cluster."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

import pytest

from augment_operator.config import ConfigError, OperatorConfig, load_config
from augment_operator.jobs import (
    build_cleanup_job,
    build_finalize_job,
    build_job,
    cleanup_job_name,
    finalize_job_name,
    job_name,
    runner_access,
)
from augment_operator.status import (
    Action,
    Child,
    StartLimits,
    decide,
    decide_sharded,
    differs,
    needs_cleanup,
    shard_failure,
    shard_status,
    status_patch,
)
from augment_spec.contract import (
    ANNOTATION_CANCEL,
    ANNOTATION_JOB,
    EXIT_BAD_INPUT,
    EXIT_HUB_UNAVAILABLE,
    LABEL_JOB,
    TERMINAL_PHASES,
    Phase,
    cancel_annotations,
    job_label_value,
)
from augment_spec.model import AugmentationType, parse_spec

PROJECT = str(uuid.uuid4())


def cr(name: str = "pick", status: dict | None = None, annotations: dict | None = None) -> dict:
    return {"apiVersion": "augment.dev/v1alpha1", "kind": "AugmentationJob",
            "metadata": {"name": name, "namespace": "ns", "uid": "u-1", "generation": 1,
                         "annotations": annotations or {}},
            "spec": {"projectId": PROJECT, "datasetId": "lab/pick"}, "status": status or {}}


def job(condition: str | None = None, message: str = "") -> dict:
    conds = [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded",
              "message": message}] if condition else []
    return {"metadata": {"name": "pick-run"}, "status": {"conditions": conds}}


def pod(phase: str = "Pending", scheduled: str | None = None, exit_code: int | None = None,
        message: str = "") -> dict:
    status: dict = {"phase": phase, "conditions": []}
    if scheduled:
        status["conditions"].append({"type": "PodScheduled", "status": "False",
                                     "reason": "Unschedulable", "message": scheduled})
    if exit_code is not None:
        status["containerStatuses"] = [{"state": {"terminated": {
            "exitCode": exit_code, "message": message}}}]
    return {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}, "status": status}


def test_new_job_is_created_and_pending() -> None:
    decision = decide(cr(), None, [], None, None)
    assert (decision.phase, decision.action) == (Phase.Pending, Action.create_job)


def test_unschedulable_pod_reports_the_scheduler() -> None:
    decision = decide(cr(), job(), [pod(scheduled="0/3 nodes are available: Insufficient "
                                            "nvidia.com/gpu")], None, None)
    assert decision.phase is Phase.Pending
    assert decision.message == ("waiting for a GPU node: 0/3 nodes are available: "
                                "Insufficient nvidia.com/gpu")


def test_a_finished_pod_never_sends_the_job_back_to_pending() -> None:
    decision = decide(cr(status={"phase": "Running"}), job(), [pod("Succeeded")], None, None)
    assert (decision.phase, decision.reason) == (Phase.Running, "Finishing")


def test_failed_job_carries_the_runners_last_line() -> None:
    pods = [pod("Failed", exit_code=2, message="warming up\ncannot read meta/info.json: "
                                                  "not JSON")]
    decision = decide(cr(), job("Failed", "Job has reached the specified backoff limit"), pods,
                      None, None)
    assert decision.phase is Phase.Failed
    assert decision.message == "cannot read meta/info.json: not JSON"


@pytest.mark.parametrize("final", sorted(TERMINAL_PHASES))
def test_terminal_phases_are_sticky(final: str) -> None:
    decision = decide(cr(status={"phase": final, "message": "done"}), None, [], None, None)
    assert decision.phase.value == final and decision.action is Action.none


@pytest.mark.parametrize("annotations", [cancel_annotations(), {ANNOTATION_CANCEL: "True"}])
def test_cancel_annotation_deletes_the_job(annotations: dict[str, str]) -> None:
    decision = decide(cr(annotations=annotations), job(), [pod("Running")], None, None)
    assert (decision.phase, decision.action) == (Phase.Cancelled, Action.delete_job)


def test_a_cancel_annotation_other_than_true_is_ignored() -> None:
    decision = decide(cr(annotations={ANNOTATION_CANCEL: "false"}), job(), [pod("Running")],
                      None, None)
    assert (decision.phase, decision.action) == (Phase.Running, Action.none)


def test_invalid_spec_and_disabled_profile_fail_without_a_job() -> None:
    assert decide(cr(), None, [], "invalid spec: x", None).action is Action.none
    decision = decide(cr(), None, [], None, "generative is disabled")
    assert (decision.phase, decision.reason) == (Phase.Failed, "ProfileDisabled")
    assert "jobName" not in status_patch(cr(), decision, "pick-run", None)


def test_success_sets_full_progress_and_completion_time() -> None:
    current = cr(status={"phase": "Running", "progress": {"episodesDone": 2,
                                                          "episodesTotal": 5}})
    patch = status_patch(current, decide(current, job("Complete"), [], None, None), "pick-run",
                         "lab/pick-augmented")
    assert patch["progress"] == {"episodesDone": 5, "episodesTotal": 5, "percent": 100,
                                 "text": "100% (5/5)"}
    assert patch["phase"] == "Succeeded" and "completionTime" in patch
    assert patch["outputDatasetId"] == "lab/pick-augmented"


def test_unchanged_status_is_not_rewritten() -> None:
    current = cr()
    patch = status_patch(current, decide(current, job(), [], None, None), "pick-run", None)
    current["status"] = json.loads(json.dumps(patch))
    again = status_patch(current, decide(current, job(), [], None, None), "pick-run", None)
    assert not differs(current, again)


def test_job_is_restricted_owned_and_fails_fast_on_bad_input() -> None:
    config = OperatorConfig()
    spec = parse_spec({"project_id": PROJECT, "dataset_id": "lab/pick"})
    built = build_job(cr(), spec, config.profile_for(AugmentationType.deterministic), config)
    assert built["metadata"]["name"] == "pick-run"
    assert built["metadata"]["ownerReferences"][0] | {"uid": "u-1", "controller": True} == \
        built["metadata"]["ownerReferences"][0]
    pod_spec = built["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in container["env"]}
    assert json.loads(env["AUGMENT_SPEC"]["value"])["dataset_id"] == "lab/pick"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "augment-hub-token"
    disruption, bad_input = built["spec"]["podFailurePolicy"]["rules"]
    assert bad_input["action"] == "FailJob"
    assert bad_input["onExitCodes"]["values"] == [EXIT_BAD_INPUT]
    assert EXIT_HUB_UNAVAILABLE not in bad_input["onExitCodes"]["values"]  # a Hub outage is retried
    # First: a pod stopped by a drain, node loss or preemption never uses up a retry,
    # whatever its exit code.
    assert disruption == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}


def test_long_names_give_short_stable_job_names() -> None:
    long = "a" * 250
    assert job_name(long) == job_name(long) and len(job_name(long)) <= 63
    assert job_name("x" * 56) == "x" * 56 + "-run"


def test_config_file_overrides_one_profile_and_rejects_typos(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("profiles:\n  deterministic:\n    nodeSelector: {pool: gpu}\n")
    config = load_config(good)
    assert config.profile_for(AugmentationType.deterministic).node_selector == {"pool": "gpu"}
    assert config.profile_for(AugmentationType.generative).enabled is False
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles:\n  deterministic:\n    nodeSelektor: {pool: gpu}\n")
    with pytest.raises(ConfigError, match="nodeSelektor"):
        load_config(bad)


# ---- the runner's own credentials ----

def built(name: str = "pick") -> dict:
    config = OperatorConfig()
    spec = parse_spec({"project_id": PROJECT, "dataset_id": "lab/pick"})
    return build_job(cr(name), spec, config.profile_for(AugmentationType.deterministic), config)


def test_each_runner_may_patch_only_its_own_jobs_status() -> None:
    account, role, binding = runner_access(cr("pick"))
    name = account["metadata"]["name"]
    assert name == "augment-runner-u-1"  # the CR's uid: a CR made again gets new ones
    assert (account["kind"], role["kind"], binding["kind"]) == (
        "ServiceAccount", "Role", "RoleBinding")
    assert role["rules"] == [{"apiGroups": ["augment.dev"],
                              "resources": ["augmentationjobs/status"],
                              "resourceNames": ["pick"], "verbs": ["get", "patch"]}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "ns"}]
    for obj in (account, role, binding):  # garbage collected with the CR
        assert obj["metadata"]["namespace"] == "ns"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert built("pick")["spec"]["template"]["spec"]["serviceAccountName"] == name


# ---- names: any name the apiserver accepts ----

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.mark.parametrize("name", ["pick", "a" * 63, "a" * 64, "b." * 126 + "c", "x-" * 126 + "y"])
def test_any_cr_name_gives_valid_labels_and_names(name: str) -> None:
    job = built(name)
    labels = job["metadata"]["labels"] | job["spec"]["template"]["metadata"]["labels"]
    for value in labels.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert labels[LABEL_JOB] == job_label_value(name) == job_label_value(name)
    assert len(job["metadata"]["name"]) <= 63
    # The full name travels in an annotation, for the operator to find the CR again.
    assert job["metadata"]["annotations"][ANNOTATION_JOB] == name
    assert job["spec"]["template"]["metadata"]["annotations"][ANNOTATION_JOB] == name
    for obj in runner_access(cr(name)):
        assert obj["metadata"]["labels"][LABEL_JOB] == job_label_value(name)


def test_short_names_are_their_own_label_and_long_ones_differ() -> None:
    assert job_label_value("pick") == "pick"
    assert job_label_value("a" * 63) == "a" * 63
    assert job_label_value("a" * 100 + "1") != job_label_value("a" * 100 + "2")


# ---- status a runner wrote is not the operator's ----

FORGED = {"phase": "Succeeded", "message": "augmented dataset uploaded",
          "completionTime": "2026-01-01T00:00:00Z"}


def test_a_terminal_phase_the_runner_could_have_written_is_ignored() -> None:
    forged = cr(status=FORGED)
    decision = decide(forged, job(), [pod("Running")], None, None, runner_can_write=True)
    assert (decision.phase, decision.final) == (Phase.Running, False)
    patch = status_patch(forged, decision, "pick-run", None)
    assert patch["phase"] == "Running" and patch["completionTime"] is None
    assert differs(forged, patch)


def test_a_forged_success_never_outlives_a_failed_job() -> None:
    pods = [pod("Failed", exit_code=1, message="boom")]
    decision = decide(cr(status=FORGED), job("Failed"), pods, None, None, runner_can_write=True)
    assert (decision.phase, decision.message, decision.final) == (Phase.Failed, "boom", True)


def test_a_result_is_kept_once_the_runner_cannot_write() -> None:
    done = cr(status={"phase": "Failed", "message": "boom"})
    decision = decide(done, None, [], None, None, runner_can_write=False)
    assert (decision.phase, decision.message, decision.recorded) == (Phase.Failed, "boom", True)
    # A Job still going for a finished CR (stopped between the two writes) is deleted.
    again = decide(done, job(), [pod("Pending")], None, None, runner_can_write=False)
    assert again.action is Action.delete_job


def test_start_time_is_when_the_runner_container_started() -> None:
    started = pod("Running")
    started["status"]["containerStatuses"] = [
        {"name": "runner", "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}}}]
    forged = cr(status={"phase": "Running", "startTime": "1999-01-01T00:00:00Z"})
    decision = decide(forged, job(), [started], None, None)
    assert status_patch(forged, decision, "pick-run", None)["startTime"] == \
        "2026-01-01T00:00:05Z"


# ---- cancel racing completion ----

def test_a_completed_job_is_never_reported_cancelled() -> None:
    cancelled = cr(annotations=cancel_annotations())
    decision = decide(cancelled, job("Complete"), [pod("Succeeded")], None, None)
    assert (decision.phase, decision.action) == (Phase.Succeeded, Action.none)


def test_a_cancel_after_the_runner_exited_0_waits_for_the_job() -> None:
    decision = decide(cr(annotations=cancel_annotations()), job(), [pod("Succeeded")],
                      None, None)
    assert (decision.phase, decision.action) == (Phase.Running, Action.none)


def test_a_cancel_after_the_upload_lets_the_runner_exit() -> None:
    uploaded = cr(annotations=cancel_annotations(), status={"outputRevision": "a" * 40})
    decision = decide(uploaded, job(), [pod("Running")], None, None)
    assert (decision.phase, decision.action) == (Phase.Running, Action.none)
    assert "after the upload" in decision.message
    # The upload's pod failed and another would run it again: the cancel stops that one.
    retrying = decide(uploaded, job(), [pod("Failed", exit_code=1), pod("Pending")], None, None)
    assert (retrying.phase, retrying.action) == (Phase.Cancelled, Action.delete_job)


# ---- what stopped the runner, named ----

def test_out_of_memory_is_named_with_the_limit() -> None:
    oom = pod("Failed")
    oom["spec"] = {"containers": [{"name": "runner",
                                   "resources": {"limits": {"memory": "16Gi"}}}]}
    oom["status"]["containerStatuses"] = [{"name": "runner", "state": {"terminated": {
        "exitCode": 137, "reason": "OOMKilled", "message": "a log line"}}}]
    decision = decide(cr(), job("Failed"), [oom], None, None)
    assert decision.reason == "OOMKilled"
    assert decision.message == ("the runner ran out of memory (OOMKilled at its 16Gi limit): "
                                "raise the memory limit of the job's GPU profile")


def test_eviction_and_disruption_are_named() -> None:
    evicted = pod("Failed")
    evicted["status"] |= {"reason": "Evicted", "message": "The node was low on memory."}
    decision = decide(cr(), job("Failed"), [evicted], None, None)
    assert decision.message == "the runner pod was evicted: The node was low on memory."
    preempted = pod("Failed", exit_code=143, message="interrupted")
    preempted["status"]["conditions"].append({
        "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
        "message": "Preempted in order to admit critical pod"})
    decision = decide(cr(), job("Failed"), [preempted], None, None)
    assert decision.message == "the runner pod was stopped: Preempted in order to admit " \
        "critical pod"


# ---- a pod that does not start ----

AT = dt.datetime(2026, 1, 1, 0, 10, tzinfo=dt.UTC)  # ten minutes after pod()'s creation
LIMITS = StartLimits(schedule_seconds=3600, start_seconds=300)


def waiting_pod(reason: str, message: str) -> dict:
    waiting = pod("Pending")
    waiting["status"]["conditions"].append({"type": "PodScheduled", "status": "True",
                                            "lastTransitionTime": "2026-01-01T00:00:00Z"})
    waiting["status"]["containerStatuses"] = [
        {"name": "runner", "state": {"waiting": {"reason": reason, "message": message}}}]
    return waiting


@pytest.mark.parametrize(("reason", "message"), [
    ("ImagePullBackOff", 'Back-off pulling image "registry.invalid/runner:1"'),
    ("ErrImagePull", "failed to resolve reference"),
    ("CreateContainerConfigError", 'secret "hub" not found'),
    ("CreateContainerError", "context deadline exceeded"),
])
def test_a_pod_that_cannot_start_says_why_then_fails_the_job(reason: str, message: str) -> None:
    pods = [waiting_pod(reason, message)]
    early = decide(cr(), job(), pods, None, None, at=AT - dt.timedelta(minutes=8),
                   limits=LIMITS)
    assert (early.phase, early.action) == (Phase.Pending, Action.none)
    assert early.message == f"the runner pod cannot start: {reason}: {message}"
    late = decide(cr(), job(), pods, None, None, at=AT, limits=LIMITS)
    assert (late.phase, late.reason, late.action) == (Phase.Failed, "StartTimeout",
                                                      Action.delete_job)
    assert late.message == f"the runner pod did not start within 300s: {reason}: {message}"


def test_a_pull_in_progress_is_not_a_problem() -> None:
    pulling = waiting_pod("ContainerCreating", "")
    decision = decide(cr(), job(), [pulling], None, None, at=AT, limits=LIMITS)
    assert (decision.phase, decision.reason) == (Phase.Pending, "Starting")


def test_an_unschedulable_pod_fails_the_job_after_the_schedule_timeout() -> None:
    pods = [pod(scheduled="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")]
    limits = StartLimits(schedule_seconds=300, start_seconds=3600)
    decision = decide(cr(), job(), pods, None, None, at=AT, limits=limits)
    assert (decision.phase, decision.reason, decision.action) == (
        Phase.Failed, "ScheduleTimeout", Action.delete_job)
    assert decision.message == ("no GPU node took the runner pod within 300s: 0/3 nodes are "
                                "available: 3 Insufficient nvidia.com/gpu.")


def test_profiles_carry_the_start_limits(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("profiles:\n  deterministic:\n    startTimeoutSeconds: 30\n")
    profile = load_config(path).profile_for(AugmentationType.deterministic)
    assert (profile.start_timeout_seconds, profile.schedule_timeout_seconds) == (30, 3600)
    path.write_text("profiles:\n  deterministic:\n    startTimeoutSeconds: 0\n")
    with pytest.raises(ConfigError, match="startTimeoutSeconds"):
        load_config(path)


# ---- sharded jobs (docs/design.md, Scale out) ----

def sharded_spec(shards: int = 12) -> object:
    return parse_spec({"project_id": PROJECT, "dataset_id": "lab/pick", "shards": shards})


def test_a_sharded_spec_gets_an_indexed_job_and_a_gpu_free_finalize_job() -> None:
    config = OperatorConfig()
    profile = config.profile_for(AugmentationType.deterministic)
    runner = build_job(cr(), sharded_spec(12), profile, config)["spec"]
    assert (runner["completionMode"], runner["completions"], runner["parallelism"]) == (
        "Indexed", 12, profile.max_parallel_shards)
    assert runner["backoffLimitPerIndex"] == profile.backoff_limit
    assert runner["maxFailedIndexes"] == 0 and "backoffLimit" not in runner
    assert build_job(cr(), sharded_spec(3), profile, config)["spec"]["parallelism"] == 3
    single = build_job(cr(), parse_spec({"project_id": PROJECT, "dataset_id": "lab/pick"}),
                       profile, config)["spec"]
    assert "completionMode" not in single and single["backoffLimit"] == profile.backoff_limit
    merge = build_finalize_job(cr(), sharded_spec(12), profile, config)
    assert merge["metadata"]["name"] == finalize_job_name("pick") == "pick-merge"
    (container,) = merge["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["augment", "merge"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert len(finalize_job_name("b" * 250)) <= 60


def indexed(done: str = "", failed: str = "", active: int = 0, failed_pods: int = 0,
            condition: str | None = None) -> dict:
    built = job(condition)
    built["status"].update({"completedIndexes": done, "failedIndexes": failed,
                            "active": active, "failed": failed_pods})
    return built


def test_shards_run_then_the_finalize_job_decides() -> None:
    running = decide_sharded(cr(), Child(indexed("0-1", active=2), [pod("Running")]),
                             Child(None), None, None)
    assert (running.phase, running.action) == (Phase.Running, Action.none)
    done = decide_sharded(cr(), Child(indexed("0-3", condition="Complete")), Child(None),
                          None, None)
    assert (done.phase, done.action) == (Phase.Running, Action.create_finalize_job)
    merging = decide_sharded(cr(), Child(indexed("0-3", condition="Complete")),
                             Child(job(), [pod("Running")]), None, None)
    assert (merging.phase, merging.reason) == (Phase.Running, "Merging")
    published = decide_sharded(cr(), Child(None), Child(job("Complete")), None, None)
    assert published.phase is Phase.Succeeded  # the shards' Job may be gone (TTL)
    failed = decide_sharded(cr(), Child(indexed("0-3", condition="Complete")),
                            Child(job("Failed"), [pod("Failed", exit_code=3, message="hub down")]),
                            None, None)
    assert (failed.phase, failed.message) == (Phase.Failed, "hub down")
    shard_failed = decide_sharded(
        cr(), Child(indexed("0", "2", condition="Failed"), [pod("Failed", exit_code=2,
                                                                 message="bad episode")]),
        Child(None), None, None)
    assert (shard_failed.phase, shard_failed.message) == (Phase.Failed, "bad episode")


def test_cancelling_a_sharded_job_deletes_both_jobs() -> None:
    cancelled = decide_sharded(cr(annotations=cancel_annotations()), Child(None),
                               Child(job()), None, None)
    assert (cancelled.phase, cancelled.action) == (Phase.Cancelled, Action.delete_job)


def test_shards_are_counted_and_their_progress_summed() -> None:
    status = {"shardProgress": {"0": {"episodesDone": 4, "episodesTotal": 4},
                                "2": {"episodesDone": 1, "episodesTotal": 3}}}
    counted = shard_status(cr(status=status), Child(indexed("0-1,3", "", 2, 1)), 5)
    assert counted["shards"] == {"total": 5, "done": 3, "running": 2, "failed": 0,
                                 "failedPods": 1, "text": "3/5"}
    assert counted["progress"]["text"] == "71% (5/7)"
    decision = decide_sharded(cr(status=status), Child(indexed("0-1,3", "", 2, 1)),
                              Child(None), None, None)
    decision.extra.update(counted)
    patch = status_patch(cr(status=status), decision, "pick-run", "lab/pick-augmented")
    assert patch["shards"]["text"] == "3/5" and patch["progress"]["episodesDone"] == 5


def test_each_new_shard_pod_failure_is_announced_once() -> None:
    failed = pod("Failed", exit_code=3, message="the Hub kept failing")
    failed["metadata"]["annotations"] = {"batch.kubernetes.io/job-completion-index": "2"}
    runner = Child(indexed("0", active=1, failed_pods=1), [failed, pod("Running")])
    decision = decide_sharded(cr(), runner, Child(None), None, None)
    decision.extra.update(shard_status(cr(), runner, 3))
    message = shard_failure(cr(), decision, runner)
    assert message is not None and message.startswith("shard 2: the Hub kept failing")
    seen = cr(status={"shards": {"failedPods": 1}})
    assert shard_failure(seen, decision, runner) is None


def test_a_cancel_stops_a_sharded_job_until_its_finalize_job_publishes() -> None:
    cancelled = cr(annotations=cancel_annotations())
    shards_done = Child(indexed("0-3", condition="Complete"))
    # Finished shards only staged their output: the merge is not started, the job stops.
    before_merge = decide_sharded(cancelled, shards_done, Child(None), None, None)
    assert (before_merge.phase, before_merge.action) == (Phase.Cancelled, Action.delete_job)
    merged = decide_sharded(cancelled, shards_done, Child(job(), [pod("Succeeded")]),
                            None, None)
    assert (merged.phase, merged.action) == (Phase.Running, Action.none)
    published = decide_sharded(cancelled, shards_done, Child(job("Complete")), None, None)
    assert published.phase is Phase.Succeeded


def test_a_sharded_jobs_forged_result_is_ignored_and_a_recorded_one_kept() -> None:
    shards = Child(indexed("0", active=1), [pod("Running")])
    forged = decide_sharded(cr(status=FORGED), shards, Child(None), None, None,
                            runner_can_write=True)
    assert (forged.phase, forged.recorded) == (Phase.Running, False)
    kept = decide_sharded(cr(status=FORGED), shards, Child(None), None, None)
    assert (kept.recorded, kept.action) == (True, Action.delete_job)


def test_a_failed_or_cancelled_sharded_job_gets_one_cleanup_job_once_its_pods_are_gone() -> None:
    ran = {"jobName": "pick-run"}
    failed = decide_sharded(cr(status=ran), Child(indexed("0", "2", condition="Failed"),
                                                  [pod("Failed", exit_code=2)]),
                            Child(None), None, None)
    assert needs_cleanup(cr(status=ran), failed, Child(indexed(condition="Failed"),
                                                       [pod("Failed")]), Child(None), Child(None))
    # A cleanup Job already there (running or done) is not made again.
    assert not needs_cleanup(cr(status=ran), failed, Child(None), Child(None), Child(job()))
    cancelled = decide_sharded(cr(status=ran, annotations=cancel_annotations()),
                               Child(indexed(active=2), [pod("Running")]), Child(None),
                               None, None)
    assert cancelled.phase is Phase.Cancelled
    # A shard pod still terminating could push after the cleanup: wait for it to go.
    assert not needs_cleanup(cr(status=ran), cancelled, Child(indexed(), [pod("Running")]),
                             Child(None), Child(None))
    assert needs_cleanup(cr(status=ran), cancelled, Child(None), Child(None), Child(None))
    # Nothing to clean: a success (the finalize step deleted the branches), or a job
    # refused before any Job was made.
    published = decide_sharded(cr(status=ran), Child(None), Child(job("Complete")), None, None)
    assert not needs_cleanup(cr(status=ran), published, Child(None), Child(None), Child(None))
    invalid = decide_sharded(cr(), Child(None), Child(None), "invalid spec: x", None)
    assert not needs_cleanup(cr(), invalid, Child(None), Child(None), Child(None))


def test_the_cleanup_job_discards_the_staging_branches_without_credentials_or_gpu() -> None:
    config = OperatorConfig()
    profile = config.profile_for(AugmentationType.deterministic)
    cleanup = build_cleanup_job(cr(), sharded_spec(4), profile, config)
    assert cleanup["metadata"]["name"] == cleanup_job_name("pick") == "pick-clean"
    assert "ttlSecondsAfterFinished" not in cleanup["spec"]  # never made twice
    pod_spec = cleanup["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod_spec  # the runners' account is gone by then
    assert pod_spec["automountServiceAccountToken"] is False
    (container,) = pod_spec["containers"]
    assert container["command"] == ["augment", "merge", "--discard"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert len(cleanup_job_name("b" * 250)) <= 60
