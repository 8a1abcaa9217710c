"""The Hub policy: the model and its checks, the API's 403s, the operator's refusal."""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from api_doubles import (
    BODY,
    EXAMPLE_KEYS,
    HEADERS,
    OPS,
    PROJECT,
    ExplodingStore,
    RecordingStore,
    make_client,
)

from augment_api import cli as api_cli
from augment_operator import cli as operator_cli
from augment_operator.config import OperatorConfig, default_profiles
from augment_operator.handlers import Reconciler
from augment_operator.jobs import build_job
from augment_operator.kube import Kube
from augment_operator.status import Action, decide, status_patch
from augment_spec.contract import Phase
from augment_spec.model import AugmentationSpec, AugmentationType
from augment_spec.policy import DENIED, HubPolicy, PolicyError, PolicyFile, load_policy

OTHER = str(uuid.UUID(int=7))
POLICY = {"projects": [
    {"id": PROJECT, "hubNamespaces": ["robotics-lab"], "readHubNamespaces": ["lerobot"],
     "hubTokenSecrets": ["team-a-hub"], "defaultHubTokenSecret": "team-a-default",
     "kubernetesNamespaces": ["default", "team-a"], "kueueQueues": ["team-a"],
     "workloadPriorityClasses": ["batch-low"]},
    {"id": "*", "hubNamespaces": ["shared-org"], "readHubNamespaces": "*"},
]}


def spec(**fields: Any) -> AugmentationSpec:
    return AugmentationSpec.model_validate({"project_id": PROJECT,
                                            "dataset_id": "robotics-lab/pick", **fields})


def denial(policy: dict[str, Any] = POLICY, namespace: str = "default",
           **fields: Any) -> str | None:
    return HubPolicy.model_validate(policy).denial(spec(**fields), namespace)


# ---------- the model ----------
def test_a_job_inside_its_projects_namespaces_and_secrets_is_allowed() -> None:
    assert denial() is None
    assert denial(output_dataset_id="Robotics-Lab/pick-v2") is None  # the Hub ignores case
    assert denial(dataset_id="lerobot/pusht", output_dataset_id="robotics-lab/pusht") is None
    assert denial(hf_token_secret_name="team-a-hub") is None
    assert denial(hf_token_secret_name="team-a-default") is None  # the default may be named
    assert denial(namespace="team-a") is None
    assert denial(queue_name="team-a", workload_priority_class="batch-low") is None


@pytest.mark.parametrize(("fields", "namespace", "said"), [
    ({"output_dataset_id": "someone-else/pick"}, "default",
     f"project {PROJECT} may not write to the Hub namespace 'someone-else' (output dataset "
     "someone-else/pick; allowed: robotics-lab)"),
    ({"dataset_id": "lerobot/pusht"}, "default",  # the default output: lerobot/pusht-augmented
     f"project {PROJECT} may not write to the Hub namespace 'lerobot'"),
    ({"output_dataset_id": "pick-out"}, "default",
     "the output dataset 'pick-out' names no Hub namespace: name it '<namespace>/pick-out'"),
    ({"dataset_id": "other-team/private", "output_dataset_id": "robotics-lab/copy"}, "default",
     f"project {PROJECT} may not read from the Hub namespace 'other-team' (source dataset "
     "other-team/private; allowed: lerobot, robotics-lab)"),
    ({"dataset_id": "pick", "output_dataset_id": "robotics-lab/pick"}, "default",
     "the source dataset 'pick' names no Hub namespace"),
    ({"hf_token_secret_name": "tls-key"}, "default",
     f"project {PROJECT} may not use the Hub token Secret 'tls-key' (allowed: team-a-default, "
     "team-a-hub)"),
    ({}, "team-b",
     f"project {PROJECT} may not run jobs in the Kubernetes namespace team-b (allowed: "
     "default, team-a)"),
    ({"queue_name": "team-b"}, "default",
     f"project {PROJECT} may not name the Kueue queue 'team-b' (allowed: team-a)"),
    ({"queue_name": "team-a", "workload_priority_class": "urgent"}, "default",
     f"project {PROJECT} may not name the WorkloadPriorityClass 'urgent' (allowed: "
     "batch-low)"),
])
def test_each_rule_refuses_with_a_sentence_that_names_it(
        fields: dict[str, Any], namespace: str, said: str) -> None:
    found = denial(namespace=namespace, **fields)
    assert found is not None and found.startswith(f"{DENIED} {said}"), found


def test_a_spec_names_a_queue_only_where_the_policy_lists_it_or_says_any() -> None:
    star = {"projects": [{"id": "*", "hubNamespaces": ["robotics-lab"]}]}
    assert "may not name the Kueue queue 'q' (allowed: none)" in str(
        denial(star, queue_name="q"))
    star["projects"][0]["kueueQueues"] = "*"
    assert denial(star, queue_name="q") is None
    assert denial(star) is None  # the operator's default queue needs no entry


def test_projects_without_an_entry_take_the_star_entry_or_nothing() -> None:
    other = {"project_id": OTHER, "dataset_id": "anyone/data",
             "output_dataset_id": "shared-org/out"}
    assert denial(**other) is None  # "*" reads anywhere, writes to shared-org
    assert denial(**other, hf_token_secret_name="team-a-hub") == (
        f"{DENIED} project {OTHER} may not use the Hub token Secret 'team-a-hub' "
        "(allowed: none)")
    only_a = {"projects": POLICY["projects"][:1]}
    assert denial(only_a, **other) == f"{DENIED} project {OTHER} has no entry in the Hub policy"
    assert denial({}) == f"{DENIED} project {PROJECT} has no entry in the Hub policy"


def test_the_default_secret_is_the_projects_own() -> None:
    policy = HubPolicy.model_validate(POLICY)
    assert policy.default_secret(uuid.UUID(PROJECT)) == "team-a-default"
    assert policy.default_secret(uuid.UUID(OTHER)) is None


@pytest.mark.parametrize(("text", "said"), [
    ("projects: [{id: not-a-uuid}]", "projects.0.id"),
    ("projects: [{id: '*', hubNamespaces: ['bad/ns']}]", "hubNamespaces"),
    ("projects: [{id: '*', hubTokenSecrets: [Bad_Name]}]", "hubTokenSecrets"),
    ("projects: [{id: '*', kueueQueues: [Team_A]}]", "kueueQueues"),  # never a spec's
    (f"projects: [{{id: '*', workloadPriorityClasses: [{'p' * 64}]}}]", "workloadPriority"),
    ("projects: [{id: '*'}, {id: '*'}]", "two projects share the same id"),
    ("projects: [{id: '*', hubNamespace: [x]}]", "hubNamespace"),  # a typo is not ignored
    ("projects: [", "not valid YAML"),
])
def test_a_broken_policy_file_is_refused_with_its_problem(
        tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match="Hub policy file") as refused:
        load_policy(path)
    assert said in str(refused.value)


def test_the_policy_file_is_read_again_when_it_changes_and_a_bad_edit_is_ignored(
        tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    source = PolicyFile(path)
    assert source.current().denial(spec(), "default") is None
    write_new(path, yaml.safe_dump({"projects": []}))
    assert source.current().denial(spec(), "default") is not None
    write_new(path, "projects: [")
    assert source.current().projects == []  # the last good one


def write_new(path: Path, text: str) -> None:
    """Replace the file as a ConfigMap volume does: a new inode, swapped in."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, path)


# ---------- the API ----------
@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    return path


@pytest.mark.parametrize("fields", [
    {"output_dataset_id": "someone-else/out"},
    {"hf_token_secret_name": "tls-key", "output_dataset_id": "robotics-lab/out"},
    {"dataset_id": "other-team/private", "output_dataset_id": "robotics-lab/out"},
])
def test_the_api_refuses_a_job_outside_the_policy_with_403_and_creates_nothing(
        policy_file: Path, fields: dict[str, Any]) -> None:
    # The exploding store fails the test if the API tries to create anything.
    with make_client(ExplodingStore(), policy_file=policy_file) as client:
        r = client.post("/v1/augmentation", headers=HEADERS, json={**BODY, **fields})
    assert r.status_code == 403, r.text
    assert r.json()["detail"].startswith(DENIED)


def test_the_api_creates_a_job_inside_the_policy(policy_file: Path) -> None:
    store = RecordingStore()
    body = {**BODY, "output_dataset_id": "robotics-lab/pusht",
            "hf_token_secret_name": "team-a-hub"}
    with make_client(store, policy_file=policy_file) as client:
        r = client.post("/v1/augmentation", headers=HEADERS, json=body)
    assert r.status_code == 201, r.text
    assert len(store.created) == 1


def test_the_api_checks_the_kubernetes_namespace_it_creates_in(policy_file: Path) -> None:
    body = {**BODY, "output_dataset_id": "robotics-lab/pusht"}
    with make_client(ExplodingStore(), policy_file=policy_file, namespace="team-b") as client:
        r = client.post("/v1/augmentation", headers=HEADERS, json=body)
    assert r.status_code == 403
    assert "may not run jobs in the Kubernetes namespace team-b" in r.json()["detail"]


def test_the_key_check_comes_before_the_policy(policy_file: Path) -> None:
    body = {**BODY, "project_id": OTHER, "output_dataset_id": "someone-else/out"}
    with make_client(ExplodingStore(), policy_file=policy_file) as client:
        r = client.post("/v1/augmentation", headers=HEADERS, json=body)
        assert r.json()["detail"] == f"this API key may not use project {OTHER}"
        r = client.post("/v1/augmentation", headers=OPS, json=body)  # may use every project
        assert r.status_code == 403 and r.json()["detail"].startswith(DENIED)


def test_without_a_policy_the_api_checks_no_hub_namespace() -> None:
    store = RecordingStore()
    with make_client(store) as client:
        r = client.post("/v1/augmentation", headers=HEADERS,
                        json={**BODY, "output_dataset_id": "anyone/out"})
    assert r.status_code == 201


def test_the_openapi_document_says_what_a_403_on_create_means() -> None:
    with make_client(ExplodingStore()) as client:
        document = client.get("/openapi.json").json()
    create = document["paths"]["/v1/augmentation"]["post"]["responses"]["403"]["description"]
    assert "Hub policy" in create and "hf_token_secret_name" in create
    listing = document["paths"]["/v1/augmentation"]["get"]["responses"]["403"]["description"]
    assert "Hub policy" not in listing
    assert "Hub policy" in document["paths"]["/v1/augmentation"]["post"]["description"]


# ---------- the operator ----------
def cr(**spec_fields: Any) -> dict[str, Any]:
    return {"metadata": {"name": "pick", "namespace": "default", "uid": str(uuid.uuid4()),
                         "generation": 1},
            "spec": {"projectId": PROJECT, "datasetId": "robotics-lab/pick", **spec_fields}}


def test_a_forbidden_job_fails_without_a_job_and_says_why() -> None:
    said = f"{DENIED} project {PROJECT} may not write to the Hub namespace 'x'"
    decision = decide(cr(), None, [], None, None, policy_error=said)
    assert (decision.phase, decision.reason, decision.action) == (
        Phase.Failed, "PolicyDenied", Action.none)
    patch = status_patch(cr(), decision, "pick-run", "x/out")
    assert patch["message"] == said and "jobName" not in patch


def test_a_job_already_running_is_left_to_finish_when_the_policy_changes() -> None:
    job = {"metadata": {"name": "pick-run"}, "status": {}}
    running = {"status": {"phase": "Running"}}
    decision = decide(cr(), job, [running], None, None, policy_error="forbidden now")
    assert decision.phase is Phase.Running


class StaticPolicy:
    def __init__(self, policy: dict[str, Any]) -> None:
        self.policy = HubPolicy.model_validate(policy)

    def current(self) -> HubPolicy:
        return self.policy


def reconciler(policy: dict[str, Any] | None) -> Reconciler:
    # No call reaches Kubernetes: only the pure helpers of the reconciler are used.
    source = StaticPolicy(policy) if policy is not None else None
    return Reconciler(OperatorConfig(), kube=cast(Kube, object()), policy=source)


def test_the_operator_uses_the_projects_default_token_secret() -> None:
    reconcile = reconciler(POLICY)
    effective = reconcile._with_project_token(spec())
    assert effective is not None and effective.hf_token_secret_name == "team-a-default"
    job = build_job(cr(), effective, default_profiles()[AugmentationType.deterministic],
                    reconcile.config)
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "team-a-default", "key": "token", "optional": False}
    named = reconcile._with_project_token(spec(hf_token_secret_name="team-a-hub"))
    assert named is not None and named.hf_token_secret_name == "team-a-hub"
    assert reconciler(None)._with_project_token(spec()) == spec()


def test_the_operator_checks_the_namespace_of_the_resource() -> None:
    reconcile = reconciler(POLICY)
    assert reconcile._policy_error(spec(), "team-a") is None
    assert "Kubernetes namespace team-b" in str(reconcile._policy_error(spec(), "team-b"))
    assert reconciler(None)._policy_error(spec(output_dataset_id="x/y"), "team-b") is None


# ---------- both commands refuse a broken policy at start ----------
@pytest.mark.parametrize("command", ["api", "operator"])
def test_a_broken_policy_stops_the_command_at_start(
        tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("projects: [{id: '*', hubNamespaces: ['no/slash']}]")
    module = {"api": api_cli, "operator": operator_cli}[command]
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    argv = ["--policy", str(policy), "--api-keys", str(EXAMPLE_KEYS)] if command == "api" \
        else ["--policy", str(policy)]
    # Returns before any Kubernetes client is made: no cluster is needed.
    assert module.main(parser.parse_args(argv)) == 2
    assert f"Hub policy file {policy} is invalid" in "".join(capsys.readouterr())
