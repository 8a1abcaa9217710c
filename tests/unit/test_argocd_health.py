"""The Argo CD side: the AugmentationJob health check, the argocd-cm patch, the Applications.

The health check runs in Lua 5.1 (lupa.lua51), the dialect of Argo CD's gopher-lua, on
one sample resource per phase, exactly as Argo CD calls it: the resource as the global
`obj`, the script's returned table as the health.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaRuntime

from augment_dev import chart
from augment_spec.contract import (
    API_VERSION,
    KIND,
    STATUS_PROGRESS,
    TERMINAL_PHASES,
    Phase,
    progress_status,
)
from augment_spec.crd import spec_from_cr
from augment_spec.policy import HubPolicy

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "deploy" / "argocd"
HEALTH_LUA = ARGOCD / "health" / "augmentationjob.lua"
HEALTH_KEY = "resource.customizations.health.augment.dev_AugmentationJob"
APP_HEALTH_KEY = "resource.customizations.health.argoproj.io_Application"


def run_health(script: str, obj: dict[str, Any]) -> dict[str, str]:
    """Argo CD's contract: `obj` is the live resource, the script returns {status, message}."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return {key: result[key] for key in ("status", "message") if result[key] is not None}


def job(status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {"name": "pick-place-lighting-v1", "namespace": "augment",
                     "generation": generation},
        "spec": {"projectId": "3f2b8c1e-6a4d-4e8b-9c2a-1d5e7f9a0b3c",
                 "datasetId": "robotics-lab/pick-place"},
    }
    if status is not None:
        resource["status"] = {"observedGeneration": 1, **status}
    return resource


def progress(done: int, total: int) -> dict[str, Any]:
    """As the runner reports it."""
    return progress_status(done, total)[STATUS_PROGRESS]


CASES = {
    "no status": (job(), "Progressing", "waiting for the operator"),
    "empty status": (job({}), "Progressing", "waiting for the operator"),
    "Pending": (job({"phase": "Pending", "message": "waiting for a GPU node: 0/3 nodes are "
                     "available"}),
                "Progressing", "Pending: waiting for a GPU node: 0/3 nodes are available"),
    "Queued": (job({"phase": "Queued", "message": "queued in Kueue LocalQueue gpu: Pending: "
                    "insufficient unused quota for nvidia.com/gpu in flavor gpu, 1 more needed"}),
               "Progressing", "Queued: queued in Kueue LocalQueue gpu: Pending: insufficient "
               "unused quota for nvidia.com/gpu in flavor gpu, 1 more needed"),
    "Running": (job({"phase": "Running", "progress": progress(2, 5),
                     "message": "the runner is augmenting the dataset"}),
                "Progressing", "Running 40% (2/5): the runner is augmenting the dataset"),
    "Succeeded": (job({"phase": "Succeeded", "progress": progress(5, 5),
                       "outputDatasetId": "robotics-lab/pick-place-lighting-v1",
                       "message": "augmented dataset uploaded"}),
                  "Healthy", "Succeeded: robotics-lab/pick-place-lighting-v1"),
    "Failed": (job({"phase": "Failed", "message": "augment run: meta/info.json is not JSON"}),
               "Degraded", "Failed: augment run: meta/info.json is not JSON"),
    "Cancelled": (job({"phase": "Cancelled", "message": "cancelled on request"}),
                  "Degraded", "Cancelled: cancelled on request"),
    "stale generation": (job({"phase": "Succeeded"}, generation=2),
                         "Progressing", "waiting for the operator to observe generation 2"),
    "unknown phase": (job({"phase": "Paused"}), "Unknown", "unknown phase Paused"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_health_of_each_phase(case: str) -> None:
    resource, status, message = CASES[case]
    assert run_health(HEALTH_LUA.read_text(), resource) == {"status": status,
                                                           "message": message}


def test_every_phase_of_the_contract_has_a_known_health_final_only_when_terminal() -> None:
    for phase in Phase:
        health = run_health(HEALTH_LUA.read_text(), job({"phase": phase.value}))
        assert health["status"] in {"Healthy", "Progressing", "Degraded"}, phase
        assert (health["status"] != "Progressing") == (phase in TERMINAL_PHASES), phase


def argocd_cm_patch() -> dict[str, Any]:
    return yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())


def test_argocd_cm_patch_embeds_exactly_the_lua_file() -> None:
    patch = argocd_cm_patch()
    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"] == {"name": "argocd-cm", "namespace": "argocd"}
    assert patch["data"][HEALTH_KEY] == HEALTH_LUA.read_text()


def test_application_health_restores_waves_between_applications() -> None:
    script = argocd_cm_patch()["data"][APP_HEALTH_KEY]
    healthy = {"status": {"health": {"status": "Healthy"}}}
    assert run_health(script, healthy)["status"] == "Healthy"
    assert run_health(script, {})["status"] == "Progressing"


def application(name: str) -> dict[str, Any]:
    return yaml.safe_load((ARGOCD / f"application-{name}.yaml").read_text())


def wave(manifest: dict[str, Any]) -> int:
    return int(manifest["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])


def test_chart_application_installs_the_chart_with_its_crds_first() -> None:
    app = application("chart")
    source = app["spec"]["source"]
    assert (ROOT / source["path"] / "Chart.yaml").exists()
    assert source["helm"]["skipCrds"] is False
    assert (ROOT / source["path"] / "crds" / "augmentationjobs.augment.dev.yaml").exists()
    options = app["spec"]["syncPolicy"]["syncOptions"]
    assert {"CreateNamespace=true", "ServerSideApply=true"} <= set(options)


def test_chart_application_values_pass_the_chart_schema() -> None:
    values = application("chart")["spec"]["source"]["helm"]["valuesObject"]
    assert chart.of_kind(chart.template(values), "Deployment")


def test_jobs_application_syncs_the_job_folder_after_the_chart() -> None:
    chart_app, jobs_app = application("chart"), application("jobs")
    assert wave(chart_app) < wave(jobs_app)
    assert jobs_app["spec"]["destination"] == chart_app["spec"]["destination"]
    assert jobs_app["spec"]["source"]["repoURL"] == chart_app["spec"]["source"]["repoURL"]
    folder = ROOT / jobs_app["spec"]["source"]["path"]
    manifests = sorted(folder.glob("*.yaml"))
    assert len(manifests) == 2
    for path in manifests:
        manifest = yaml.safe_load(path.read_text())
        assert (manifest["apiVersion"], manifest["kind"]) == (API_VERSION, KIND)
        assert wave(manifest) > wave(chart_app)
        spec = spec_from_cr(manifest["spec"])  # the model the API and CRD come from
        assert spec.target_dataset_id != spec.dataset_id


def test_the_chart_applications_hub_policy_allows_the_synced_jobs() -> None:
    chart_app, jobs_app = application("chart"), application("jobs")
    values = chart_app["spec"]["source"]["helm"]["valuesObject"]
    policy = HubPolicy.model_validate(values["hubPolicy"])
    namespace = jobs_app["spec"]["destination"]["namespace"]
    for path in sorted((ROOT / jobs_app["spec"]["source"]["path"]).glob("*.yaml")):
        spec = spec_from_cr(yaml.safe_load(path.read_text())["spec"])
        assert policy.denial(spec, namespace) is None, path.name
        assert policy.denial(spec, "elsewhere") is not None
