"""kubectl apply -> operator -> GPU Job on the L4 node -> runner -> local Hub -> Succeeded."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from same_dataset import assert_same_dataset

from augment_dev.cluster import EmbeddedCluster
from augment_dev.datasets import make_lerobot_v3
from augment_dev.kube import get_json, wait_for
from augment_dev.stack import Stack, StackOptions
from augment_runner.hub import download_dataset
from augment_runner.validate import validate_dataset

EXAMPLE = Path("examples/augmentationjob.yaml")


@pytest.fixture(scope="module")
def stack(cluster: EmbeddedCluster) -> Iterator[Stack]:
    cluster.kubectl("apply", "-f", "crds/augmentationjobs.augment.dev.yaml")
    options = StackOptions(namespace="e2e", release="e2e", api=False,
                           hub_token_secrets=("not-a-token",))
    with Stack(cluster, options) as running:
        source = Path(tempfile.mkdtemp(prefix="src-")) / "pick-place"
        make_lerobot_v3(source, episodes=3, frames=16, codec="libx264")
        running.hub.seed("robotics-lab/pick-place", source)
        running.hub.seed("robotics-lab/broken", {"meta/info.json": b"{not json"})
        yield running


def example_manifest(**spec_overrides: object) -> dict:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["spec"].update(spec_overrides)
    return manifest


def runner_pods(stack: Stack, name: str) -> list[dict]:
    return stack.pods_of(name)


def test_example_manifest_runs_on_the_l4_node_and_succeeds(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.cluster.kubectl("apply", "-n", stack.namespace, "-f", str(EXAMPLE))
    name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]
    cr = stack.wait_phase(name, {"Succeeded", "Failed"}, timeout=240)
    assert cr["status"]["phase"] == "Succeeded", cr["status"].get("message")
    status = cr["status"]
    assert status["progress"]["percent"] == 100
    assert status["progress"]["episodesTotal"] == 3  # source episodes, each with 2 copies
    assert status["outputDatasetId"] == "robotics-lab/pick-place-augmented"
    assert status["startTime"] <= status["completionTime"]
    assert len(status["sourceRevision"]) == 40 and len(status["outputRevision"]) == 40
    (pod,) = runner_pods(stack, name)
    assert pod["spec"]["nodeName"] == "gpu-l4-0"
    output = tmp_path / "out"
    for key, value in stack.hub.client_env().items():
        monkeypatch.setenv(key, value)
    download_dataset("robotics-lab/pick-place-augmented", output, token=stack.hub_token)
    assert validate_dataset(output) == []
    source_writes = [c for c in stack.hub.calls if c.is_write
                     and c.repo == "robotics-lab/pick-place"]
    assert source_writes == []
    columns = stack.cluster.kubectl("get", "augjob", name, "-n", stack.namespace).stdout
    assert "Succeeded" in columns and "100% (3/3)" in columns


def test_corrupt_dataset_fails_with_the_runners_message(stack: Stack) -> None:
    stack.apply(example_manifest(datasetId="robotics-lab/broken") | {
        "metadata": {"name": "broken-source"}})
    cr = stack.wait_phase("broken-source", {"Succeeded", "Failed"}, timeout=180)
    assert cr["status"]["phase"] == "Failed"
    assert "info.json" in cr["status"]["message"]
    # Exit code 2 means bad input: the pod failure policy stops retries at once.
    assert len(runner_pods(stack, "broken-source")) == 1


def test_operator_restart_mid_job_adopts_the_job(stack: Stack) -> None:
    stack.apply(example_manifest(augmentCopies=6) | {"metadata": {"name": "restarted"}})
    wait_for(lambda: stack.jobs_of("restarted"), timeout=60, what="the Job")
    (old,) = stack.running_pods("operator")
    stack.cluster.kubectl("delete", "pod", old["metadata"]["name"], "-n", stack.namespace,
                          "--wait=false")
    wait_for(lambda: [p for p in stack.running_pods("operator")
                      if p["metadata"]["uid"] != old["metadata"]["uid"]],
             timeout=90, what="a new operator pod")
    cr = stack.wait_phase("restarted", {"Succeeded", "Failed"}, timeout=240)
    assert cr["status"]["phase"] == "Succeeded", cr["status"].get("message")
    assert len(stack.jobs_of("restarted")) == 1
    time.sleep(1)


def test_hub_hiccups_do_not_fail_the_job(stack: Stack) -> None:
    hub = stack.hub
    start = len(hub.calls)
    # One failure each on the source download, an LFS upload and the commit.
    hub.fail_next(r"^(GET|HEAD) /datasets/robotics-lab/pick-place/resolve/.*/meta/info\.json$",
                  503, retry_after="1")
    hub.fail_next(r"^PUT /_storage/upload/", 503, retry_after="1")
    hub.fail_next(r"^POST /api/datasets/robotics-lab/hiccups/commit/", 429, retry_after="1")
    # A seed of its own: new video content, so LFS uploads happen whatever ran before.
    stack.apply(example_manifest(outputDatasetId="robotics-lab/hiccups", augmentSeed=4242)
                | {"metadata": {"name": "hiccups"}})
    cr = stack.wait_phase("hiccups", {"Succeeded", "Failed"}, timeout=240)
    assert cr["status"]["phase"] == "Succeeded", cr["status"].get("message")
    assert cr["status"]["outputRevision"] == hub.head("robotics-lab/hiccups")
    failed = [c for c in hub.calls[start:] if c.status in (429, 503)]
    assert len(failed) == 3, failed  # every injected failure was met, and got over
    assert len(runner_pods(stack, "hiccups")) == 1  # in the pod: no GPU work thrown away


# A Secret that holds something else than a Hub token, as a wrong hfTokenSecretName gives.
PEM = ("-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq7BFUpkGp3+L\n"
       "-----END PRIVATE KEY-----\n")


def test_a_secret_that_is_not_a_token_never_reaches_status_or_events(
        stack: Stack, tmp_path: Path) -> None:
    key_file = tmp_path / "tls.key"
    key_file.write_text(PEM)
    stack.cluster.kubectl("create", "secret", "generic", "not-a-token", "-n", stack.namespace,
                          f"--from-file=token={key_file}")
    stack.apply(example_manifest(hfTokenSecretName="not-a-token")
                | {"metadata": {"name": "wrong-secret"}})
    cr = stack.wait_phase("wrong-secret", {"Succeeded", "Failed"}, timeout=180)
    assert cr["status"]["phase"] == "Failed"
    assert "the Hub token is malformed" in cr["status"]["message"]
    (pod,) = runner_pods(stack, "wrong-secret")  # bad input: not retried
    events = get_json(stack.cluster, "events", "-n", stack.namespace)["items"]
    seen = yaml.safe_dump([cr, pod, [e for e in events if "wrong-secret" in str(e)]])
    for piece in [p for p in PEM.split() if len(p) >= 6]:
        assert piece not in seen


def test_four_shards_publish_what_one_pod_publishes(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same spec and seed run by one pod, then as 4 shards of one episode each (an
    Indexed Job and its finalize Job) into the same output: the two published datasets
    are the same, file for file."""
    for key, value in stack.hub.client_env().items():
        monkeypatch.setenv(key, value)
    source = tmp_path / "source"
    make_lerobot_v3(source, episodes=4, frames=8, codec="libx264")
    stack.hub.seed("robotics-lab/pick-place-4", source)
    output = "robotics-lab/pick-place-sharded"
    published = {}
    for name, shards in (("one-pod", 1), ("four-shards", 4)):
        stack.apply(example_manifest(datasetId="robotics-lab/pick-place-4",
                                     outputDatasetId=output, shards=shards)
                    | {"metadata": {"name": name}})
        cr = stack.wait_phase(name, {"Succeeded", "Failed"}, timeout=420)
        assert cr["status"]["phase"] == "Succeeded", cr["status"].get("message")
        published[name] = tmp_path / name
        download_dataset(output, published[name], token=stack.hub_token)
    status = cr["status"]
    assert status["shards"] | {"total": 4, "done": 4, "failed": 0} == status["shards"]
    assert status["progress"]["text"] == "100% (4/4)"
    assert status["outputRevision"] == stack.hub.head(output)
    merge, runner = sorted(stack.jobs_of("four-shards"), key=lambda j: j["metadata"]["name"])
    assert (merge["metadata"]["name"], runner["metadata"]["name"]) == (
        "four-shards-merge", "four-shards-run")
    assert runner["spec"]["completionMode"] == "Indexed"
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                     for p in runner_pods(stack, "four-shards")
                     if p["metadata"]["labels"].get("job-name") == runner["metadata"]["name"])
    assert indexes == ["0", "1", "2", "3"]
    assert not [b for b in stack.hub.store.refs("dataset", output)["branches"] if b != "main"]
    assert_same_dataset(published["one-pod"], published["four-shards"], source)
    columns = stack.cluster.kubectl("get", "augjob", "four-shards", "-n", stack.namespace,
                                    "-o", "wide").stdout
    assert "4/4" in columns and "100% (4/4)" in columns


def test_a_failed_sharded_job_leaves_no_staging_branch(stack: Stack) -> None:
    """Both shards stage, then the finalize step's commit to main is refused (403: bad
    input, no retry): the job fails, and its cleanup Job deletes the staging branches."""
    output = "robotics-lab/pick-place-refused"
    stack.hub.fail_next(rf"^POST /api/datasets/{output}/commit/main$", 403)
    stack.apply(example_manifest(outputDatasetId=output, shards=2, augmentSeed=99)
                | {"metadata": {"name": "refused-merge"}})
    cr = stack.wait_phase("refused-merge", {"Succeeded", "Failed"}, timeout=300)
    assert cr["status"]["phase"] == "Failed" and "403" in cr["status"]["message"]

    def cleaned() -> dict | None:
        jobs = {j["metadata"]["name"]: j for j in stack.jobs_of("refused-merge")}
        clean = jobs.get("refused-merge-clean")
        done = clean and (clean.get("status") or {}).get("succeeded")
        return clean if done else None

    clean = wait_for(cleaned, timeout=180, what="the cleanup Job to succeed")
    assert clean["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "augment", "merge", "--discard"]
    assert list(stack.hub.store.refs("dataset", output)["branches"]) == ["main"]
    assert stack.hub.pending_failures() == 0  # the refused commit was the finalize's
    # A terminal job is not cleaned twice: the Job stays (no TTL) and is not made again.
    time.sleep(4)
    assert [j["metadata"]["name"] for j in stack.jobs_of("refused-merge")].count(
        "refused-merge-clean") == 1
