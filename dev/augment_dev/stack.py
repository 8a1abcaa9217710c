"""The whole product on the embedded control plane: chart, operator, API, local Hub.

Used by the end-to-end tests and by `augment-dev demo`. The operator and the API run from
the Helm chart's own manifests (Deployments, ServiceAccounts, RBAC), as pods the local
executor runs; the runner Jobs they create run the same way. With `from_images`, those
pods run from the built images (`make test-images`) instead of this environment, unless
the machine lacks a kernel feature for it: `image_fallback` then names it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from augment_dev import REPO_ROOT
from augment_dev.cluster import EmbeddedCluster, free_port
from augment_dev.hub import LocalHub
from augment_dev.images import ImageRoot, pod_images
from augment_dev.kube import get_json, wait_for
from augment_dev.lifecycle import Started
from augment_spec.contract import LABEL_JOB, job_label_value

CHART = REPO_ROOT / "charts" / "augment-operator"
HUB_USER = "robotics-lab"
PREVIEW_TOKEN_SECRET = "augment-preview-token"  # the API's own Hub token (chart: api.hubToken)


@dataclass
class StackOptions:
    namespace: str = "augment"
    release: str = "augment"
    operator_replicas: int = 1
    api: bool = True
    project_ids: tuple[str, ...] = ()
    # Secrets jobs may name as their Hub token, besides the operator's default one.
    hub_token_secrets: tuple[str, ...] = ()
    extra_values: dict[str, Any] = field(default_factory=dict)
    from_images: bool = False


def helm(cluster: EmbeddedCluster, *args: str) -> subprocess.CompletedProcess[str]:
    assert cluster.bin is not None
    result = subprocess.run(
        [str(cluster.bin / "helm"), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args[:2])}: {result.stderr.strip()}")
    return result


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class Stack(Started):
    """Start with `with Stack(cluster, options) as stack:`; uninstalls on exit."""

    def __init__(self, cluster: EmbeddedCluster, options: StackOptions | None = None,
                 hub_root: Path | None = None) -> None:
        self.cluster = cluster
        self.options = options or StackOptions()
        self.hub_token = f"hf_{secrets.token_hex(12)}"
        self.api_key = f"ak_{secrets.token_hex(16)}"
        self.hub_root = hub_root or Path(tempfile.mkdtemp(prefix="augment-hub-"))
        self.hub = LocalHub(self.hub_root, tokens={self.hub_token: HUB_USER})
        self.api_port = free_port()
        self.installed = False
        self.images: dict[str, ImageRoot] = {}
        self.image_fallback: str | None = None

    @property
    def namespace(self) -> str:
        return self.options.namespace

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def values(self) -> dict[str, Any]:
        keys = [{"name": "e2e", "sha256": hashlib.sha256(self.api_key.encode()).hexdigest(),
                 "projects": list(self.options.project_ids) or ["*"]}]
        runner_env = self.hub.client_env()
        base = {
            # Every pod shares the host network here: fixed probe ports would collide.
            "operator": {"replicas": self.options.operator_replicas, "livenessPort": 0,
                         "metricsPort": 0, "resyncSeconds": 3},
            # The API reads previews from the local Hub with a token Secret of its own
            # (the local Hub's one user; a read-only token in production).
            "api": {"enabled": self.options.api, "replicas": 1, "port": self.api_port,
                    "apiKeys": keys, "env": runner_env,
                    "hubToken": {"secretName": PREVIEW_TOKEN_SECRET}},
            "runner": {"env": runner_env},
            # The chart's Hub policy is on, as in production: every project may use the
            # local Hub's one user, which owns every dataset of the demo and the tests.
            "hubPolicy": {"projects": [{
                "id": "*", "hubNamespaces": [HUB_USER],
                "hubTokenSecrets": list(self.options.hub_token_secrets),
                "kueueQueues": "*", "workloadPriorityClasses": "*"}]},
            "podDisruptionBudget": {"enabled": True},
        }
        return deep_merge(base, self.options.extra_values)

    def start(self) -> None:
        if self.options.from_images:
            self.use_images()
        self.hub.start()
        self.cluster.kubectl("create", "namespace", self.namespace, check=False)
        self.cluster.kubectl("label", "namespace", self.namespace, "--overwrite",
                             "pod-security.kubernetes.io/enforce=restricted")
        for secret in ("augment-hub-token", PREVIEW_TOKEN_SECRET):
            self.cluster.kubectl("create", "secret", "generic", secret, "-n",
                                 self.namespace, f"--from-literal=token={self.hub_token}")
        values_file = self.hub_root / "values.yaml"
        values_file.write_text(yaml.safe_dump(self.values()))
        helm(self.cluster, "install", self.options.release, str(CHART),
             "--namespace", self.namespace, "-f", str(values_file), "--wait=false")
        self.installed = True
        self.wait_ready()

    def use_images(self) -> None:
        """Pods of this namespace run from the built images, where the machine can."""
        executor = self.cluster.executor
        if executor is None:
            raise RuntimeError("from_images needs the cluster's pod executor (run_pods)")
        self.images = pod_images()
        self.image_fallback = executor.run_from_images(self.namespace, self.images)

    def wait_ready(self, timeout: float = 120) -> None:
        components = ["operator"] + (["api"] if self.options.api else [])
        for component in components:
            wait_for(lambda c=component: self.running_pods(c), timeout=timeout,
                     what=f"the {component} pod to run")
        if self.options.api:
            wait_for(self._api_ready, timeout=timeout, what="the API's /readyz")

    def running_pods(self, component: str) -> list[dict[str, Any]]:
        pods = get_json(self.cluster, "pods", "-n", self.namespace, "-l",
                        f"app.kubernetes.io/component={component}")["items"]
        return [p for p in pods if p.get("status", {}).get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")]

    def _api_ready(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.installed:
            subprocess.run(  # best effort: the cluster is torn down right after anyway
                [str(self.cluster.bin / "helm"), f"--kubeconfig={self.cluster.kubeconfig}",
                 "uninstall", self.options.release, "-n", self.namespace, "--wait=false"],
                capture_output=True, timeout=120, check=False)
            self.installed = False
        if self.cluster.executor is not None:
            self.cluster.executor.stop_images(self.namespace)
        self.hub.stop()

    # ---- helpers for tests and the demo ----
    def apply(self, manifest: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-",
                             input=json.dumps(manifest))

    def cr(self, name: str) -> dict[str, Any]:
        return get_json(self.cluster, "augmentationjob", name, "-n", self.namespace)

    def wait_phase(self, name: str, phases: set[str], timeout: float = 180) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            cr = self.cr(name)
            return cr if (cr.get("status") or {}).get("phase") in phases else None

        return wait_for(reached, timeout=timeout, interval=1,
                        what=f"{name} to reach {sorted(phases)}")

    def jobs_of(self, name: str) -> list[dict[str, Any]]:
        return get_json(self.cluster, "jobs", "-n", self.namespace, "-l",
                        f"{LABEL_JOB}={job_label_value(name)}")["items"]

    def pods_of(self, name: str) -> list[dict[str, Any]]:
        """The runner pods of the CR `name`."""
        return get_json(self.cluster, "pods", "-n", self.namespace, "-l",
                        f"{LABEL_JOB}={job_label_value(name)}")["items"]
