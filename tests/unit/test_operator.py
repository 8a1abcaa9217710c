"""The operator's decisions and the Job it builds, without a cluster."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from augment_operator.config import ConfigError, OperatorConfig, load_config
from augment_operator.jobs import build_job, job_name
from augment_operator.status import Action, decide, differs, status_patch
from augment_spec.contract import (
    ANNOTATION_CANCEL,
    EXIT_BAD_INPUT,
    EXIT_HUB_UNAVAILABLE,
    TERMINAL_PHASES,
    Phase,
    cancel_annotations,
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
    rule = built["spec"]["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["values"] == [EXIT_BAD_INPUT]
    assert EXIT_HUB_UNAVAILABLE not in rule["onExitCodes"]["values"]  # a Hub outage is retried


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
