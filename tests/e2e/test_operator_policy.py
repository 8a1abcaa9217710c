"""The Hub policy on the real control plane: jobs made with kubectl (which never pass the
API) that the chart's policy forbids fail before any Job exists, saying why in their
status and an Event; an allowed job runs to the end with its project's own token."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from augment_dev.cluster import EmbeddedCluster
from augment_dev.datasets import make_lerobot_v3
from augment_dev.kube import get_json, wait_for
from augment_dev.stack import HUB_USER, Stack, StackOptions
from augment_spec.policy import DENIED

PROJECT = str(uuid.UUID(int=31))
UNLISTED = str(uuid.UUID(int=32))
SOURCE = f"{HUB_USER}/policy-src"
NAMESPACE = "policy"
POLICY = {"hubPolicy": {"projects": [{
    "id": PROJECT, "hubNamespaces": [HUB_USER], "hubTokenSecrets": ["team-token"],
    "kubernetesNamespaces": [NAMESPACE]}]}}


@pytest.fixture(scope="module")
def stack(cluster: EmbeddedCluster) -> Iterator[Stack]:
    cluster.kubectl("apply", "-f", "crds/augmentationjobs.augment.dev.yaml")
    options = StackOptions(namespace=NAMESPACE, release="policy", api=False,
                           extra_values=POLICY)
    with Stack(cluster, options) as running:
        for secret in ("team-token", "other-token"):  # both hold a working token
            cluster.kubectl("create", "secret", "generic", secret, "-n", NAMESPACE,
                            f"--from-literal=token={running.hub_token}")
        source = Path(tempfile.mkdtemp(prefix="src-")) / "policy"
        make_lerobot_v3(source, episodes=2, frames=8, codec="libx264")
        running.hub.seed(SOURCE, source)
        yield running


def job_cr(name: str, project: str = PROJECT, **spec: object) -> dict:
    return {"apiVersion": "augment.dev/v1alpha1", "kind": "AugmentationJob",
            "metadata": {"name": name},
            "spec": {"projectId": project, "datasetId": SOURCE, "augmentCopies": 1,
                     "augmentTransforms": "lighting", **spec}}


def events_of(stack: Stack, name: str) -> list[dict]:
    events = get_json(stack.cluster, "events", "-n", stack.namespace)["items"]
    return [e for e in events if e.get("involvedObject", {}).get("name") == name]


@pytest.mark.parametrize(("name", "spec", "said"), [
    ("other-hub-namespace", {"outputDatasetId": "someone-else/out"},
     f"project {PROJECT} may not write to the Hub namespace 'someone-else' (output dataset "
     f"someone-else/out; allowed: {HUB_USER})"),
    ("unbound-secret", {"hfTokenSecretName": "other-token"},
     f"project {PROJECT} may not use the Hub token Secret 'other-token' (allowed: "
     "team-token)"),
    ("unlisted-project", {"projectId": UNLISTED},
     f"project {UNLISTED} has no entry in the Hub policy"),
])
def test_a_forbidden_job_fails_with_the_reason_and_no_job(
        stack: Stack, name: str, spec: dict, said: str) -> None:
    stack.apply(job_cr(name, **spec))
    cr = stack.wait_phase(name, {"Failed", "Succeeded", "Running"}, timeout=60)
    status = cr["status"]
    assert (status["phase"], status["message"]) == ("Failed", f"{DENIED} {said}")
    assert {c["reason"] for c in status["conditions"]} == {"PolicyDenied"}
    assert "jobName" not in status
    assert stack.jobs_of(name) == [] and stack.pods_of(name) == []
    account = f"augment-runner-{cr['metadata']['uid']}"
    found = stack.cluster.kubectl("get", "serviceaccount", account, "-n", stack.namespace,
                                  check=False)
    assert "NotFound" in found.stderr, found.stdout  # no runner credentials were made
    warnings = wait_for(lambda: [(e["reason"], e["message"]) for e in events_of(stack, name)
                                 if e.get("type") == "Warning"], timeout=30,
                        what=f"the Warning event of {name}")
    assert warnings == [("Failed", status["message"])]


def test_an_allowed_job_runs_with_its_projects_token(stack: Stack) -> None:
    name = "allowed"
    stack.apply(job_cr(name, hfTokenSecretName="team-token",
                       outputDatasetId=f"{HUB_USER}/policy-out"))
    cr = stack.wait_phase(name, {"Failed", "Succeeded"}, timeout=240)
    assert cr["status"]["phase"] == "Succeeded", cr["status"]
    assert cr["status"]["outputRevision"] == stack.hub.head(f"{HUB_USER}/policy-out")
