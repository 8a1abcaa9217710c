"""The embedded control plane is a real Kubernetes: scheduling, Jobs, GC, auth, admission."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from augment_dev.cluster import EmbeddedCluster
from augment_dev.kube import get_json, job_condition, wait_for
from augment_spec.crd import crd_yaml

AUGMENT_DEV = Path(sys.executable).parent / "augment-dev"

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def job_manifest(name: str, command: str, *, backoff: int = 0, gpus: int = 0,
                 node_selector: dict | None = None, tolerate_gpu: bool = False,
                 env: list | None = None) -> str:
    container = {"name": "main", "image": "busybox", "command": ["sh", "-c", command],
                 "env": env or []}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    pod_spec = {"restartPolicy": "Never", "containers": [container],
                "nodeSelector": node_selector or {},
                "tolerations": [GPU_TOLERATION] if tolerate_gpu else []}
    return json.dumps({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
                       "spec": {"backoffLimit": backoff, "template": {"spec": pod_spec}}})


def pods_of(cluster: EmbeddedCluster, namespace: str, job: str) -> list[dict]:
    return get_json(cluster, "pods", "-n", namespace, "-l", f"job-name={job}")["items"]


def test_kubectl_sees_ready_gpu_and_cpu_nodes(cluster: EmbeddedCluster) -> None:
    nodes = get_json(cluster, "nodes")["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(by_name) == {"gpu-l4-0", "gpu-h100-0", "cpu-0"}
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
    l4 = by_name["gpu-l4-0"]
    assert l4["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-L4"
    assert l4["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert l4["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert by_name["gpu-h100-0"]["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert l4["spec"]["taints"][0]["key"] == "nvidia.com/gpu"
    assert "nvidia.com/gpu" not in by_name["cpu-0"]["status"]["capacity"]


def test_gpu_job_lands_on_l4_node_and_completes(cluster: EmbeddedCluster, namespace: str) -> None:
    cluster.kubectl("create", "secret", "generic", "creds", "-n", namespace,
                    "--from-literal=token=s3cret")
    cluster.kubectl("create", "configmap", "settings", "-n", namespace,
                    "--from-literal=mode=fast")
    env = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]
    script = ('test "$TOKEN" = s3cret && test "$MODE" = fast && '
              'echo "ran on $NODE" > /dev/termination-log && '
              'test -s /var/run/secrets/kubernetes.io/serviceaccount/token')
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=job_manifest(
        "l4", script, gpus=1, node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"},
        tolerate_gpu=True, env=env))
    assert wait_for(lambda: job_condition(cluster, namespace, "l4"), what="job l4") == "Complete"
    (pod,) = pods_of(cluster, namespace, "l4")
    assert pod["spec"]["nodeName"] == "gpu-l4-0"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["message"] == "ran on gpu-l4-0"


def test_too_many_gpus_stays_pending_with_scheduler_reason(
        cluster: EmbeddedCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=job_manifest(
        "greedy", "true", gpus=16, tolerate_gpu=True))

    def unschedulable() -> dict | None:
        pods = pods_of(cluster, namespace, "greedy")
        conds = pods[0].get("status", {}).get("conditions") or [] if pods else []
        return next((c for c in conds if c["type"] == "PodScheduled"
                     and c["status"] == "False"), None)

    cond = wait_for(unschedulable, what="PodScheduled=False")
    assert cond["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    assert pods_of(cluster, namespace, "greedy")[0]["status"]["phase"] == "Pending"


def test_pods_without_gpu_toleration_never_land_on_gpu_nodes(
        cluster: EmbeddedCluster, namespace: str) -> None:
    for i in range(4):
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input=job_manifest(f"plain-{i}", "true"))
    for i in range(4):
        assert wait_for(lambda i=i: job_condition(cluster, namespace, f"plain-{i}")) == "Complete"
        (pod,) = pods_of(cluster, namespace, f"plain-{i}")
        assert pod["spec"]["nodeName"] == "cpu-0"


def test_failing_job_is_retried_to_its_backoff_limit(
        cluster: EmbeddedCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=job_manifest("broken", "echo nope >&2; exit 3", backoff=2))
    assert wait_for(lambda: job_condition(cluster, namespace, "broken"), timeout=120,
                    what="job broken to fail") == "Failed"
    pods = pods_of(cluster, namespace, "broken")
    assert len(pods) == 3  # the first try and two retries
    codes = {p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
             for p in pods}
    assert codes == {3}
    job = get_json(cluster, "job", "broken", "-n", namespace)
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"


def test_deleting_a_job_garbage_collects_its_pods(
        cluster: EmbeddedCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=job_manifest("sleepy", "sleep 300"))
    wait_for(lambda: any(p.get("status", {}).get("phase") == "Running"
                         for p in pods_of(cluster, namespace, "sleepy")), what="pod running")
    cluster.kubectl("delete", "job", "sleepy", "-n", namespace, "--wait=false")
    wait_for(lambda: not pods_of(cluster, namespace, "sleepy"), timeout=60,
             what="the garbage collector to remove the pods")


def test_token_request_and_rbac(cluster: EmbeddedCluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    token = cluster.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    assert token.count(".") == 2  # a signed JWT
    denied = cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace,
                             f"--as=system:serviceaccount:{namespace}:reader", check=False)
    assert denied.stdout.strip() == "no"
    cluster.kubectl("create", "role", "pod-reader", "--verb=list", "--resource=pods",
                    "-n", namespace)
    cluster.kubectl("create", "rolebinding", "r", "--role=pod-reader",
                    f"--serviceaccount={namespace}:reader", "-n", namespace)
    allowed = cluster.kubectl("auth", "can-i", "list", "pods", "-n", namespace,
                              f"--as=system:serviceaccount:{namespace}:reader", check=False)
    assert allowed.stdout.strip() == "yes"


@pytest.mark.parametrize("hardened", [False, True])
def test_pod_security_admission_enforces_restricted(
        cluster: EmbeddedCluster, namespace: str, hardened: bool) -> None:
    cluster.kubectl("label", "namespace", namespace,
                    "pod-security.kubernetes.io/enforce=restricted")
    security = {} if not hardened else {
        "allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 65532,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"],
                                    "securityContext": security}]}}
    result = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                             input=json.dumps(pod), check=False)
    if not hardened:
        assert result.returncode != 0
        assert 'violates PodSecurity "restricted' in result.stderr
    else:
        assert result.returncode == 0, result.stderr


def test_augment_dev_cluster_installs_the_crd_outside_the_checkout(tmp_path: Path) -> None:
    """`make cluster`'s command, run from a folder without crds/: the CRD still gets installed."""
    kubeconfig, log = tmp_path / "admin.kubeconfig", tmp_path / "cluster.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(AUGMENT_DEV), "cluster", "--kubeconfig-out", str(kubeconfig)],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "control plane up" in log.read_text() or proc.poll() is not None,
                 timeout=180, what="`augment-dev cluster` to start")
        assert proc.poll() is None, log.read_text()
        shown = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", "get", "crd",
             "augmentationjobs.augment.dev", "-o", "json"],
            capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        installed = json.loads(shown.stdout)["spec"]
        assert installed["versions"] == yaml.safe_load(crd_yaml())["spec"]["versions"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    assert code == 0, log.read_text()
