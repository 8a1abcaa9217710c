"""The Helm chart: lint, rendered manifests, its values schema, and a real install.

The static checks render the chart with the project's helm; the install runs on the
embedded control plane through `Stack` (operator and API as pods of the chart's own
Deployments), with two operator replicas to prove kopf peering lets only one act. Its
pods run from the built images (the API image, the runner's CPU variant), unless this
machine lacks a kernel feature for it: the tests then say which, and run them here.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import re
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from augment_dev import chart, images
from augment_dev.cluster import EmbeddedCluster
from augment_dev.datasets import make_lerobot_v3
from augment_dev.kube import get_json, wait_for
from augment_dev.readme import USER_FILES, console_commands, program, simple_commands
from augment_dev.stack import Stack, StackOptions
from augment_operator.config import GpuProfile, OperatorConfig
from augment_operator.jobs import build_job
from augment_runner.hub import download_dataset
from augment_runner.validate import validate_dataset
from augment_spec.contract import TERMINAL_PHASES
from augment_spec.model import AugmentationType, parse_spec
from augment_spec.policy import ProjectPolicy

ROOT = chart.REPO_ROOT
CRD = "augmentationjobs.augment.dev.yaml"
PROJECT = str(uuid.UUID(int=11))
# Generative jobs are enabled but pinned to a GPU no node has: such a job stays Pending
# with its Job created, while deterministic jobs still run on the L4 node.
UNPLACEABLE_GENERATIVE = {"profiles": {"generative": {
    "enabled": True, "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-B200"},
    "affinity": {}}}}
# Every volume type the restricted Pod Security Standard allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def rendered(**values: Any) -> list[dict[str, Any]]:
    everything = {"api": {"enabled": True, "ingress": {"enabled": True}},
                  "networkPolicy": {"enabled": True},
                  "watchNamespaces": ["team-a", "team-b"], **values}
    return chart.template(everything)


# ---- static: lint, CRD, Pod Security, RBAC, schema ----

def test_helm_lint_passes() -> None:
    result = chart.helm("lint", "--strict", str(chart.CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_crd_is_byte_identical_to_the_generated_one() -> None:
    assert filecmp.cmp(ROOT / "crds" / CRD, chart.CHART / "crds" / CRD, shallow=False), \
        "run `make crd` to regenerate both copies"
    crds = chart.of_kind(chart.template({}, "--include-crds"), "CustomResourceDefinition")
    assert "augmentationjobs.augment.dev" in {c["metadata"]["name"] for c in crds}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What in a pod spec the `restricted` Pod Security Standard would refuse."""
    problems = [f"{key} is set" for key in ("hostNetwork", "hostPID", "hostIPC") if pod.get(key)]
    pod_sc = pod.get("securityContext") or {}
    problems += [f"volume {v['name']} is not an allowed type" for v in pod.get("volumes", [])
                 if not set(v) - {"name"} <= RESTRICTED_VOLUMES]
    for container in pod.get("initContainers", []) + pod["containers"]:
        sc, name = container.get("securityContext") or {}, container["name"]

        def effective(key: str, sc: dict[str, Any] = sc) -> Any:
            return sc.get(key, pod_sc.get(key))

        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if effective("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if effective("runAsUser") == 0:
            problems.append(f"{name}: runAsUser is 0")
        if (effective("seccompProfile") or {}).get("type") not in ("RuntimeDefault",
                                                                    "Localhost"):
            problems.append(f"{name}: seccompProfile is not RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {caps['add']}")
        if any(p.get("hostPort") for p in container.get("ports", [])):
            problems.append(f"{name}: uses a hostPort")
    return problems


def test_every_deployment_meets_the_restricted_pod_security_standard() -> None:
    deployments = chart.of_kind(rendered(), "Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {"augment-operator", "augment-api"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert restricted_violations(pod) == [], deployment["metadata"]["name"]


def test_rbac_has_no_wildcards_and_no_account_for_every_runner() -> None:
    manifests = rendered()
    roles = chart.of_kind(manifests, "Role") + chart.of_kind(manifests, "ClusterRole")
    for role in roles:
        for rule in role["rules"]:
            for key in ("verbs", "resources", "apiGroups"):
                assert "*" not in rule.get(key, []), (role["metadata"]["name"], rule)
    # Runner pods get an account per job from the operator (tests/e2e/
    # test_operator_scheduling.py checks what it may do), none shared from the chart.
    accounts = {a["metadata"]["name"] for a in chart.of_kind(manifests, "ServiceAccount")}
    assert accounts == {"augment-operator", "augment-api"}
    operator_roles = [r for r in roles if r["metadata"]["name"] == "augment-operator"]
    assert {r["metadata"]["namespace"] for r in operator_roles} == {"team-a", "team-b"}
    for role in operator_roles:
        granted = {(group, resource): sorted(rule["verbs"]) for rule in role["rules"]
                   for group in rule["apiGroups"] for resource in rule["resources"]}
        assert granted[("", "serviceaccounts")] == ["create", "delete"]
        assert granted[("rbac.authorization.k8s.io", "roles")] == ["create", "delete"]
        assert granted[("rbac.authorization.k8s.io", "rolebindings")] == [
            "create", "delete", "get"]
        # What it grants a runner it must hold itself (RBAC's escalation check).
        assert "patch" in granted[("augment.dev", "augmentationjobs/status")]


def runner_policies(manifests: list[dict[str, Any]],
                    release: str = "augment") -> dict[str, dict[str, Any]]:
    """The runner egress policy's spec, per namespace."""
    return {p["metadata"]["namespace"]: p["spec"] for p in chart.of_kind(manifests,
                                                                         "NetworkPolicy")
            if p["metadata"]["name"] == f"{release}-runner"}


def runner_pod_labels() -> dict[str, str]:
    """The labels the operator puts on a runner pod."""
    config = OperatorConfig()
    cr = {"metadata": {"name": "pick", "namespace": "team-a", "uid": "u-1"}}
    spec = parse_spec({"project_id": PROJECT, "dataset_id": "lab/pick"})
    job = build_job(cr, spec, config.profile_for(AugmentationType.deterministic), config)
    return dict(job["spec"]["template"]["metadata"]["labels"])


def test_runner_pods_may_reach_dns_the_hub_and_the_api_server_only() -> None:
    policies = runner_policies(rendered())
    assert set(policies) == {"team-a", "team-b"}
    for policy in policies.values():
        assert policy["podSelector"]["matchLabels"].items() <= runner_pod_labels().items()
        assert policy["policyTypes"] == ["Egress"]  # ingress stays as it was: none needed
        dns, hub, api_server = policy["egress"]
        assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
        assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
        (block,) = hub["to"]
        assert block["ipBlock"]["cidr"] == "0.0.0.0/0"
        assert {"169.254.0.0/16", "10.0.0.0/8"} <= set(block["ipBlock"]["except"])
        assert hub["ports"] == [{"port": 443, "protocol": "TCP"}]
        # Rendered without a cluster, the API server's address is unknown: its ports only.
        assert api_server["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
        assert {p["port"] for p in api_server["ports"]} == {443, 6443}
    pinned = runner_policies(rendered(runner={"networkPolicy": {
        "apiServer": {"cidrs": ["10.0.0.1/32"]},
        "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}],
                         "ports": [{"port": 8443}]}]}}))
    _, _, api_server, extra = pinned["team-a"]["egress"]
    assert api_server["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert extra["ports"] == [{"port": 8443}]
    assert runner_policies(rendered(runner={"networkPolicy": {"enabled": False}})) == {}


def test_the_api_may_only_read_watch_create_and_patch_jobs_and_list_events() -> None:
    manifests = rendered()
    bindings = chart.of_kind(manifests, "RoleBinding") + \
        chart.of_kind(manifests, "ClusterRoleBinding")
    api_roles = {b["roleRef"]["name"] for b in bindings
                 if any(s["name"] == "augment-api" for s in b["subjects"])}
    assert api_roles == {"augment-api"}  # namespaced, and nothing cluster-wide
    api_role_rules = [[(r["apiGroups"], r["resources"], sorted(r["verbs"])) for r in role["rules"]]
                      for role in chart.of_kind(manifests, "Role")
                      if role["metadata"]["name"] == "augment-api"]
    assert api_role_rules == [[(["augment.dev"], ["augmentationjobs"],
                                ["create", "get", "list", "patch", "watch"]),
                               ([""], ["events"], ["list"])]] * 2


@pytest.mark.parametrize(("setting", "where"), [
    ("operator.replicas=zero", "/operator/replicas': got string, want integer"),
    ("operator.replicas=0", "/operator/replicas': minimum"),
    ("api.port=70000", "/api/port': maximum"),
    ("profiles.gpu-large.image=x", "'gpu-large'"),
    ("profiles.deterministic.backoffLimit=eleven", "/profiles/deterministic/backoffLimit"),
    ("runner.runAsUser=0", "/runner/runAsUser': minimum"),
    ("operater.replicas=1", "'operater'"),
    ("hubPolicy.projects[0].id=team-a", "/hubPolicy/projects/0/id"),
    ("hubPolicy.projects[0].hubNamespace=x", "'hubNamespace'"),
])
def test_a_wrong_value_fails_with_a_readable_schema_error(
        setting: str, where: str) -> None:
    result = chart.helm("template", "augment", str(chart.CHART), "--set", setting)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert where in result.stderr, result.stderr


def test_schema_types_each_gpu_profile_field_like_the_operator() -> None:
    """values.schema.json's profile and the operator's GpuProfile list the same fields."""
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    profile = schema["definitions"]["profile"]["properties"]
    model = GpuProfile.model_json_schema(by_alias=True)["properties"]
    assert set(profile) == set(model)
    for name, field in model.items():
        for bound, key in (("minimum", "minimum"), ("maximum", "maximum")):
            assert profile[name].get(key) == field.get(bound), name


def test_schema_types_each_hub_policy_field_like_the_policy_model() -> None:
    """values.schema.json's Hub policy entry and augment_spec.policy list the same fields."""
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    entry = schema["definitions"]["hubProject"]
    model = ProjectPolicy.model_json_schema(by_alias=True)
    assert set(entry["properties"]) == set(model["properties"])
    assert entry["required"] == model["required"]


# ---- a real install: two operator replicas, the API, a job end to end ----

@pytest.fixture(scope="module")
def stack(cluster: EmbeddedCluster) -> Iterator[Stack]:
    cluster.kubectl("apply", "-f", str(ROOT / "crds" / CRD))
    options = StackOptions(namespace="chart", release="chart", operator_replicas=2, api=True,
                           extra_values=UNPLACEABLE_GENERATIVE, from_images=True)
    with Stack(cluster, options) as running:
        yield running


def operator_logs(stack: Stack) -> dict[str, str]:
    """Each operator pod's log, as the executor writes it (pods/<ns>_<pod>_<uid8>/)."""
    logs = {}
    for pod in stack.running_pods("operator"):
        meta = pod["metadata"]
        path = (Path(stack.cluster.workdir) / "pods"
                / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}" / "operator.log")
        logs[meta["name"]] = path.read_text(errors="replace") if path.exists() else ""
    return logs


def peers(stack: Stack) -> dict[str, Any]:
    peering = get_json(stack.cluster, "kopfpeering", "augment-operator", "-n", stack.namespace)
    return peering.get("status") or {}


def active_replicas(stack: Stack) -> list[str]:
    """Replicas whose latest peering decision lets them act. kopf starts paused and logs
    "Resuming operations" when it may act, "Pausing ..." when a peer outranks it; a peer
    registered in the KopfPeering may not have decided yet, so its listing is not enough."""
    return [name for name, text in operator_logs(stack).items()
            if text.rfind("Resuming operations") > text.rfind("Pausing ")]


def one_active_replica(stack: Stack) -> list[str] | None:
    active = active_replicas(stack)
    return active if len(active) == 1 else None


def test_two_operator_replicas_run_and_exactly_one_processes(stack: Stack) -> None:
    wait_for(lambda: len(stack.running_pods("operator")) == 2, timeout=90,
             what="two operator pods")
    wait_for(lambda: len(peers(stack)) == 2, timeout=60, what="both replicas in the peering")
    (active,) = wait_for(lambda: one_active_replica(stack), timeout=60,
                         what="exactly one active replica")
    stack.apply({"apiVersion": "augment.dev/v1alpha1", "kind": "AugmentationJob",
                 "metadata": {"name": "nowhere"},
                 "spec": {"projectId": PROJECT, "datasetId": "robotics-lab/none",
                          "augmentationType": "generative"}})
    wait_for(lambda: stack.jobs_of("nowhere"), timeout=30, what="the Job")
    mention = f"{stack.namespace}/nowhere"

    def handlers() -> list[str]:
        return [name for name, text in operator_logs(stack).items() if mention in text]

    wait_for(handlers, timeout=30, what="a replica to log the job")
    time.sleep(3 * 3)  # three resync periods: a second active replica would have acted
    assert handlers() == [active], operator_logs(stack)
    assert active_replicas(stack) == [active]
    assert len(stack.jobs_of("nowhere")) == 1
    assert stack.cr("nowhere")["status"]["phase"] == "Pending"


def api_get(stack: Stack, path: str) -> dict[str, Any]:
    response = httpx.get(f"{stack.api_url}{path}", headers={"X-Api-Key": stack.api_key},
                         timeout=10)
    response.raise_for_status()
    return response.json()


def test_a_job_submitted_through_the_api_succeeds(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_lerobot_v3(tmp_path / "src", episodes=2, frames=8, codec="libx264")
    stack.hub.seed("robotics-lab/chart-src", source)
    body = {"project_id": PROJECT, "dataset_id": "robotics-lab/chart-src",
            "augment_transforms": "lighting,noise", "augment_copies": 1}
    created = httpx.post(f"{stack.api_url}/v1/augmentation", json=body, timeout=10,
                         headers={"X-Api-Key": stack.api_key})
    assert created.status_code == 201, created.text
    job_id = created.json()["job_id"]

    def finished() -> dict[str, Any] | None:
        job = api_get(stack, f"/v1/augmentation/{job_id}")
        return job if job["status"] in TERMINAL_PHASES else None

    wait_for(lambda: api_get(stack, f"/v1/augmentation/{job_id}")["job_name"], timeout=30,
             what="an operator replica to take the job")
    job = wait_for(finished, timeout=180, interval=1, what="the API job to finish")
    assert job["status"] == "Succeeded", job["message"]
    assert job["progress"]["percent"] == 100
    assert job["output_dataset_id"] == "robotics-lab/chart-src-augmented"
    for key, value in stack.hub.client_env().items():
        monkeypatch.setenv(key, value)
    output = tmp_path / "out"
    download_dataset(job["output_dataset_id"], output, token=stack.hub_token)
    assert validate_dataset(output) == []


def test_the_charts_pods_ran_from_the_built_images(stack: Stack) -> None:
    """Every pod of the release that ran so far (operators, API, the runner of the job
    above; not the generative job's, which no node takes) reports the built image it ran
    from, or, where the kernel lacks what running from an image needs, none: the test
    then says which feature is missing."""
    pods = [pod for pod in get_json(stack.cluster, "pods", "-n", stack.namespace)["items"]
            if pod["status"].get("containerStatuses")]
    ran = {pod["metadata"]["name"]: {s["imageID"] for s in pod["status"].get(
        "containerStatuses") or []} for pod in pods}
    components = {pod["metadata"]["labels"].get("app.kubernetes.io/component", "runner")
                  for pod in pods}
    assert {"operator", "api", "runner"} <= components, components
    if stack.image_fallback is not None:
        warnings.warn(f"the chart's pods ran in this environment, not from the built images: "
                      f"{stack.image_fallback}", stacklevel=1)
        assert set().union(*ran.values()) == {""}, ran
        return
    expected = {pod["metadata"]["name"]: stack.images[container["image"]]
                for pod in pods for container in pod["spec"]["containers"]}
    for name, image_ids in ran.items():
        root = expected[name]
        assert image_ids == {f"{root.ref}@sha256:{root.image_id}"}, name
    assert {root.ref for root in expected.values()} == {
        images.IMAGES[name].ref for name in images.TESTED}


# What the apiserver's endpoint reconciler publishes on a real cluster (the embedded one
# advertises 127.0.0.1 and turns the reconciler off); 192.0.2.0/24 is for documentation.
API_SERVER_SLICE = {
    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
    "metadata": {"name": "kubernetes-test", "namespace": "default",
                 "labels": {"kubernetes.io/service-name": "kubernetes"}},
    "addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.10"]}],
    "ports": [{"name": "https", "port": 16443, "protocol": "TCP"}],
}


def test_the_runner_egress_policy_is_installed_and_finds_the_api_server(
        stack: Stack) -> None:
    installed = get_json(stack.cluster, "networkpolicy", "chart-runner", "-n", stack.namespace)
    assert installed["spec"]["policyTypes"] == ["Egress"]  # the apiserver accepted it
    stack.cluster.kubectl("apply", "-f", "-", input=json.dumps(API_SERVER_SLICE))
    try:
        result = chart.helm("template", "chart", str(chart.CHART), "--namespace",
                            stack.namespace, "--dry-run=server",
                            f"--kubeconfig={stack.cluster.kubeconfig}")
    finally:
        stack.cluster.kubectl("delete", "endpointslice", "kubernetes-test", "-n", "default")
    assert result.returncode == 0, result.stderr
    policy = runner_policies([d for d in yaml.safe_load_all(result.stdout) if d], "chart")
    api_server = policy[stack.namespace]["egress"][2]
    assert api_server["to"] == [{"ipBlock": {"cidr": "192.0.2.10/32"}}]
    assert {p["port"] for p in api_server["ports"]} == {443, 6443, 16443}


def test_example_job_manifests_are_accepted_by_the_apiserver(stack: Stack) -> None:
    result = stack.cluster.kubectl("apply", "--dry-run=server", "-n", stack.namespace,
                                   "-f", str(ROOT / "examples" / "jobs"))
    assert result.stdout.count("created (server dry run)") == 2, result.stdout


def readme_kubectl_commands() -> list[list[str]]:
    """The README's kubectl lines, but Argo CD's (no Argo CD here: test_argocd_health.py)."""
    return [argv[1:] for command in console_commands() for argv in simple_commands(command)
            if program(argv) == "kubectl" and "argocd" not in argv]


def user_file(name: str, folder: Path) -> Path:
    """A file the README has its reader write: an API key, a Hub policy of this test's own."""
    digest = hashlib.sha256(uuid.uuid4().hex.encode()).hexdigest()
    written = {
        "api-keys.yaml": {"keys": [{"name": "team-a", "sha256": digest,
                                    "projects": [PROJECT]}]},
        "hub-policy.yaml": {"projects": [{"id": PROJECT, "hubNamespaces": ["robotics-lab"],
                                          "readHubNamespaces": ["lerobot"]}]},
    }
    assert name in written, f"no test writes {name} ({USER_FILES[name]})"
    path = folder / name
    path.write_text(yaml.safe_dump(written[name]))
    return path


def test_readme_kubectl_commands_run_on_the_cluster(stack: Stack, tmp_path: Path) -> None:
    """As written, but in throwaway namespaces: one stands for the default namespace, the
    other for `augment`, which the README's own `kubectl create namespace` makes; files
    the README has its reader write are written here."""
    suffix = uuid.uuid4().hex[:6]
    default, augment = f"readme-default-{suffix}", f"readme-augment-{suffix}"
    stack.cluster.kubectl("create", "namespace", default)
    written = {f"={name}": f"={user_file(name, tmp_path)}" for name in USER_FILES}
    outputs = []
    try:
        for argv in readme_kubectl_commands():
            argv = [augment if word == "augment" else word for word in argv]
            argv = [next((word.replace(k, v) for k, v in written.items()
                          if word.endswith(k)), word) for word in argv]
            if argv[0] in ("get", "apply") and "nodes" not in argv:
                argv += ["-n", default]
            result = stack.cluster.kubectl(*argv, check=False)
            assert result.returncode == 0, f"kubectl {' '.join(argv)}: {result.stderr}"
            outputs.append(result.stdout)
    finally:
        for namespace in (default, augment):
            stack.cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    shown = "\n".join(outputs)
    assert re.search(
        r"NAME\s+TYPE\s+DATASET\s+PHASE\s+PROGRESS\s+SHARDS\s+OUTPUT\s+MESSAGE\s+VIDEO"
        r"\s+AGE", shown)
    assert "pick-place-lighting" in shown and "NVIDIA-L4" in shown
