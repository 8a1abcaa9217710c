"""The contract between the API, the operator and the runner (augment_spec.contract).

Its values are pinned here, literally: a change would strand resources already stored and
jobs already running. The rest checks that each side keeps it: the operator's Job sets
exactly the variables the runner reads, every status field either writes is one the CRD
keeps, and no package imports another's code.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from augment_operator.config import OperatorConfig
from augment_operator.jobs import RUNNER_CONTAINER, build_job
from augment_operator.status import decide, status_patch
from augment_runner import cli as runner_cli
from augment_runner.codec_plan import declared_engines
from augment_runner.cpu_budget import pod_cpus
from augment_runner.hub import resolve_token
from augment_runner.pod import PodEnv
from augment_runner.transforms.numpy_engine import _thread_count
from augment_spec import contract
from augment_spec.crd import status_schema
from augment_spec.model import AugmentationType, parse_spec

ROOT = Path(__file__).resolve().parents[2]
PROJECT = str(uuid.UUID(int=3))
WIRE = {
    "GROUP": "augment.dev", "VERSION": "v1alpha1", "KIND": "AugmentationJob",
    "PLURAL": "augmentationjobs", "API_VERSION": "augment.dev/v1alpha1",
    "LABEL_PROJECT": "augment.dev/project-id", "LABEL_JOB": "augment.dev/job",
    "LABEL_JOB_ID": "augment.dev/job-id", "LABEL_MANAGED_BY": "app.kubernetes.io/managed-by",
    "MANAGED_BY_API": "augment-api", "MANAGED_BY_OPERATOR": "augment-operator",
    "ANNOTATION_IDEMPOTENCY": "augment.dev/idempotency-key",
    "ANNOTATION_REQUEST_HASH": "augment.dev/request-hash",
    "ANNOTATION_CREATED_BY": "augment.dev/created-by",
    "ANNOTATION_CANCEL": "augment.dev/cancel-requested", "CANCEL_REQUESTED": "true",
    "ANNOTATION_JOB": "augment.dev/job", "LABEL_VALUE_MAX": 63,
    "ENV_SPEC": "AUGMENT_SPEC", "ENV_JOB_NAME": "AUGMENT_JOB_NAME",
    "ENV_JOB_NAMESPACE": "AUGMENT_JOB_NAMESPACE", "ENV_WORKDIR": "AUGMENT_WORKDIR",
    "ENV_TERMINATION_LOG": "AUGMENT_TERMINATION_LOG", "ENV_THREADS": "AUGMENT_THREADS",
    "ENV_BACKEND": "AUGMENT_BACKEND", "ENV_HF_TOKEN": "HF_TOKEN",
    "TERMINATION_LOG_PATH": "/dev/termination-log",
    "EXIT_OK": 0, "EXIT_BUG": 1, "EXIT_BAD_INPUT": 2, "EXIT_HUB_UNAVAILABLE": 3,
    "STATUS_PHASE": "phase", "STATUS_MESSAGE": "message", "STATUS_JOB_NAME": "jobName",
    "STATUS_START_TIME": "startTime", "STATUS_COMPLETION_TIME": "completionTime",
    "STATUS_PROGRESS": "progress", "STATUS_SOURCE_REVISION": "sourceRevision",
    "STATUS_OUTPUT_DATASET_ID": "outputDatasetId", "STATUS_OUTPUT_REVISION": "outputRevision",
    "PROGRESS_DONE": "episodesDone", "PROGRESS_TOTAL": "episodesTotal",
    "PROGRESS_PERCENT": "percent", "PROGRESS_TEXT": "text",
    "ENV_JOB_UID": "AUGMENT_JOB_UID", "ENV_SHARD_INDEX": "JOB_COMPLETION_INDEX",
    "ENV_CHECKPOINT_EPISODES": "AUGMENT_CHECKPOINT_EPISODES",
    "STATUS_SHARD_PROGRESS": "shardProgress", "STATUS_SHARDS": "shards",
    "SHARDS_TOTAL": "total", "SHARDS_DONE": "done", "SHARDS_RUNNING": "running",
    "SHARDS_FAILED": "failed", "SHARDS_FAILED_PODS": "failedPods", "SHARDS_TEXT": "text",
    # Kueue's own names (kueue.x-k8s.io, v0.17): a change there is a change here.
    "KUEUE_GROUP": "kueue.x-k8s.io", "KUEUE_VERSION": "v1beta2", "KUEUE_WORKLOADS": "workloads",
    "LABEL_KUEUE_QUEUE": "kueue.x-k8s.io/queue-name",
    "LABEL_KUEUE_PRIORITY": "kueue.x-k8s.io/priority-class",
    "LABEL_KUEUE_JOB_UID": "kueue.x-k8s.io/job-uid",
    "ANNOTATION_KUEUE_MIN_PARALLELISM": "kueue.x-k8s.io/job-min-parallelism",
    "ENV_CPU_LIMIT": "AUGMENT_CPU_LIMIT", "ENV_VIDEO_DECODE": "AUGMENT_VIDEO_DECODE",
    "ENV_VIDEO_ENCODE": "AUGMENT_VIDEO_ENCODE", "STATUS_VIDEO_PLAN": "videoPlan",
    "OUTPUT_PREVIEW_PATH": "preview.png", "OUTPUT_PREVIEW_MEDIA_TYPE": "image/png",
}
# What the kubelet gives a resourceFieldRef to a limit the container does not set.
NODE_ALLOCATABLE_CPU = "16"
# Set by the operator for the libraries the runner uses, not read by our code.
LIBRARY_ENV = {"HOME", "HF_HOME"}


def constants() -> dict[str, Any]:
    return {name: value for name, value in vars(contract).items()
            if name.isupper() and isinstance(value, str | int)}


def test_every_value_is_pinned() -> None:
    assert constants() == WIRE


def test_phases_and_which_are_final() -> None:
    assert [p.value for p in contract.Phase] == [
        "Pending", "Queued", "Running", "Succeeded", "Failed", "Cancelled"]
    assert sorted(contract.TERMINAL_PHASES) == ["Cancelled", "Failed", "Succeeded"]
    assert contract.phase_of({}) is contract.Phase.Pending
    assert contract.phase_of({"status": {"phase": "Failed"}}) is contract.Phase.Failed


@pytest.mark.parametrize(("annotations", "requested"), [
    (contract.cancel_annotations(), True),
    ({"augment.dev/cancel-requested": "TRUE"}, True),
    ({"augment.dev/cancel-requested": "yes"}, False),
    ({}, False),
    (None, False),
])
def test_the_cancel_rule(annotations: dict[str, str] | None, requested: bool) -> None:
    assert contract.cancel_requested({"metadata": {"annotations": annotations}}) is requested


# ---- the runner pod: what the operator sets is what the runner reads ----

def built_job(secret: str = "augment-hub-token") -> tuple[dict[str, Any], Any]:
    config = OperatorConfig.model_validate({"runner": {"hubTokenSecretName": secret}})
    spec = parse_spec({"project_id": PROJECT, "dataset_id": "lab/pick", "augment_copies": 2})
    cr = {"apiVersion": contract.API_VERSION, "kind": contract.KIND,
          "metadata": {"name": "pick", "namespace": "lab", "uid": "u-1"}, "spec": {}}
    return build_job(cr, spec, config.profile_for(AugmentationType.deterministic), config), spec


def kubelet_env(job: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The runner container's environment as the kubelet resolves it (valueFrom included)."""
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env: dict[str, str] = {}
    for entry in container["env"]:
        source = entry.get("valueFrom")
        if source is None:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.namespace"
            env[entry["name"]] = job["metadata"]["namespace"]
        elif "resourceFieldRef" in source:
            ref = source["resourceFieldRef"]
            assert ref["containerName"] == container["name"]
            kind, resource = ref["resource"].split(".")
            amount = container["resources"].get(kind, {}).get(resource)
            assert amount is not None or (kind, resource) == ("limits", "cpu"), ref
            env[entry["name"]] = amount or NODE_ALLOCATABLE_CPU
        else:
            ref = source["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def test_the_operator_sets_only_contract_variables() -> None:
    job, _ = built_job()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    names = {e["name"] for e in container["env"]}
    ours = {v for k, v in WIRE.items() if k.startswith("ENV_")}
    assert names - LIBRARY_ENV <= ours
    # Every variable but the backend and the checkpoint size (a profile's `env` may set
    # them) and the shard index (Kubernetes sets it in an Indexed Job's pods) comes from
    # the Job.
    assert ours - names == {contract.ENV_BACKEND, contract.ENV_CHECKPOINT_EPISODES,
                            contract.ENV_SHARD_INDEX}


def test_the_runner_reads_what_the_operators_job_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    job, spec = built_job()
    env = kubelet_env(job, {("augment-hub-token", "token"): "hf_secret"})
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    pod = PodEnv.read()
    assert pod == PodEnv.read(env)
    given = runner_cli.spec_from_pod(None, pod)
    assert given is not None and parse_spec(given) == spec
    assert (pod.job_name, pod.job_namespace) == ("pick", "lab")
    assert pod.workdir == Path("/scratch/work")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["name"] == RUNNER_CONTAINER
    # The runner's one-line failure is the pod's termination message the operator reads.
    assert pod.termination_log == Path(container["terminationMessagePath"])
    assert _thread_count(frames=100) == int(container["resources"]["requests"]["cpu"])
    # Codec threads: the request, below the node's cores, the pod setting no limit.
    requested = int(container["resources"]["requests"]["cpu"])
    assert pod_cpus(os.environ, None, usable_cores=64) == requested
    assert resolve_token() == "hf_secret"
    # The video engines the runner plans with are the profile's.
    profile = OperatorConfig().profile_for(AugmentationType.deterministic)
    assert declared_engines(os.environ, gpu_name="NVIDIA H200") == \
        profile.video_engines.engines()


def test_outside_a_pod_nothing_is_set() -> None:
    assert PodEnv.read({}) == PodEnv()
    assert PodEnv.read({contract.ENV_WORKDIR: "", contract.ENV_SPEC: ""}) == PodEnv()


def test_bad_input_fails_the_job_at_once() -> None:
    job, _ = built_job()
    (rule,) = [r for r in job["spec"]["podFailurePolicy"]["rules"] if "onExitCodes" in r]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"] == {"containerName": RUNNER_CONTAINER, "operator": "In",
                                   "values": [contract.EXIT_BAD_INPUT]}


def test_a_bad_spec_in_the_pod_exits_with_bad_input(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination-log"
    monkeypatch.setenv(contract.ENV_SPEC, json.dumps({"dataset_id": "lab/pick",
                                                     "augment_copies": 99}))
    monkeypatch.setenv(contract.ENV_TERMINATION_LOG, str(log))
    parser = argparse.ArgumentParser()
    runner_cli.add_arguments(parser)
    assert runner_cli.main(parser.parse_args([])) == contract.EXIT_BAD_INPUT
    assert log.read_text().strip() == capsys.readouterr().err.strip()
    assert "augment_copies" in log.read_text()


# ---- .status: every field written is one the CRD keeps (else the apiserver drops it) ----

def status_writes() -> list[dict[str, Any]]:
    cr = {"metadata": {"name": "pick", "generation": 1}, "status": {}}
    running = decide({**cr, "status": {"phase": "Running"}}, {"status": {}},
                     [{"metadata": {}, "status": {"phase": "Running"}}], None, None)
    done = decide(cr, {"status": {"conditions": [{"type": "Complete", "status": "True"}]}},
                  [], None, None)
    return [
        contract.progress_status(2, 5), contract.started_status("a" * 40, "lab/pick-aug"),
        contract.output_status("b" * 40), contract.shard_progress_status(3, 2, 5),
        contract.shards_status(4, 1, 2, 1, 3),
        contract.video_plan_status(["top: cpu (av1), no NVDEC for av1"]),
        status_patch(cr, running, "pick-run", "lab/pick-aug"),
        status_patch(cr, done, "pick-run", "lab/pick-aug"),
    ]


def test_every_status_field_written_is_in_the_crd() -> None:
    schema = status_schema()["properties"]
    progress_fields = set(schema[contract.STATUS_PROGRESS]["properties"])
    for patch in status_writes():
        assert set(patch) <= set(schema), patch
        assert set(patch.get(contract.STATUS_PROGRESS, {})) <= progress_fields, patch
    status_keys = {v for k, v in WIRE.items() if k.startswith("STATUS_")}
    progress_keys = {v for k, v in WIRE.items() if k.startswith("PROGRESS_")}
    assert status_keys <= set(schema) and progress_keys == progress_fields
    assert schema[contract.STATUS_PHASE]["enum"] == [p.value for p in contract.Phase]


def test_shards_report_progress_apart_and_it_is_summed() -> None:
    status: dict[str, Any] = {}
    for patch in (contract.shard_progress_status(0, 2, 4), contract.shard_progress_status(1, 1, 3),
                  contract.shard_progress_status(0, 4, 4)):  # a merge patch per shard
        status.setdefault("shardProgress", {}).update(patch["shardProgress"])
    assert contract.summed_progress(status) == (5, 7)
    assert contract.summed_progress({}) == (0, 0)
    assert contract.shards_status(4, 1, 2, 1, 3)["shards"] == {
        "total": 4, "done": 1, "running": 2, "failed": 1, "failedPods": 3, "text": "1/4"}
    schema = status_schema()["properties"]
    entry = schema[contract.STATUS_SHARD_PROGRESS]["additionalProperties"]["properties"]
    assert set(entry) == {contract.PROGRESS_DONE, contract.PROGRESS_TOTAL}
    shard_keys = {v for k, v in WIRE.items() if k.startswith("SHARDS_")}
    assert set(schema[contract.STATUS_SHARDS]["properties"]) == shard_keys


def test_progress_as_kubectl_shows_it() -> None:
    assert contract.progress_status(2, 5) == {"progress": {
        "episodesDone": 2, "episodesTotal": 5, "percent": 40, "text": "40% (2/5)"}}
    assert contract.progress_status(0, 0)["progress"]["percent"] == 0
    assert contract.progress_status(0, 0, finished=True)["progress"] == {
        "episodesDone": 0, "episodesTotal": 0, "percent": 100, "text": "100% (0/0)"}


# ---- layering: spec imports only itself; api, operator and runner only spec ----

PACKAGES = {"spec": "augment_spec", "api": "augment_api", "operator": "augment_operator",
            "runner": "augment_runner"}
OURS = set(PACKAGES.values()) | {"augment_cli", "augment_dev", "bench"}


def imported(path: Path) -> set[str]:
    """Top-level packages of ours that `path` imports (relative imports are its own)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("folder", list(PACKAGES))
def test_packages_import_only_the_spec(folder: str) -> None:
    package = PACKAGES[folder]
    allowed = {package, "augment_spec"}
    for path in sorted((ROOT / folder / package).rglob("*.py")):
        assert imported(path) <= allowed, f"{path.relative_to(ROOT)}: {imported(path)}"
