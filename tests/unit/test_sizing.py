"""The number of shards a spec without `shards` gets (augment_operator/sizing.py)."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from augment_dev.datasets import make_lerobot_v3
from augment_dev.hub import LocalHub
from augment_operator.config import OperatorConfig
from augment_operator.handlers import Reconciler
from augment_operator.sizing import (
    DatasetSize,
    auto_shards,
    hub_endpoint,
    planned_shards,
    read_size,
    size_from_info,
)
from augment_spec.contract import ENV_SPEC
from augment_spec.model import AugmentationType, parse_spec

PROJECT = str(uuid.uuid4())
PROFILE = OperatorConfig().profile_for(AugmentationType.deterministic)


def spec(**fields: object) -> object:
    return parse_spec({"project_id": PROJECT, "dataset_id": "lab/pick", **fields})


def test_the_rule_divides_the_camera_frames_written_and_caps_by_episodes_and_profile() -> None:
    per_shard = PROFILE.shard_camera_frames
    copies = spec().copies_per_episode()
    # Exactly one shard's worth, then one frame more.
    frames = per_shard // (2 * copies)
    assert auto_shards(DatasetSize(100, frames, 2), spec(), PROFILE) == 1
    assert auto_shards(DatasetSize(100, frames + 1, 2), spec(), PROFILE) == 2
    # In place writes one copy per episode: a third of the work of three copies.
    assert copies == 3 and auto_shards(DatasetSize(100, 3 * frames, 2), spec(), PROFILE) == 3
    inplace = spec(augment_dataset_mode="inplace")
    assert auto_shards(DatasetSize(100, 3 * frames, 2), inplace, PROFILE) == 1
    # Never more shards than episodes (a shard holds whole episodes) ...
    assert auto_shards(DatasetSize(3, 100 * per_shard, 3), spec(), PROFILE) == 3
    # ... nor than the profile runs at once.
    huge = DatasetSize(1000, 1000 * per_shard, 3)
    assert auto_shards(huge, spec(), PROFILE) == PROFILE.max_parallel_shards
    wide = PROFILE.model_copy(update={"max_parallel_shards": 64})
    assert auto_shards(huge, spec(), wide) == 64
    assert auto_shards(None, spec(), PROFILE) == 1  # size unknown: one pod
    assert auto_shards(DatasetSize(0, 0, 1), spec(), PROFILE) == 1


def test_the_size_is_what_info_json_says() -> None:
    info = {"codebase_version": "v3.0", "total_episodes": 50, "total_frames": 9000,
            "features": {
        "observation.images.top": {"dtype": "video"}, "observation.images.side": {"dtype": "image"},
        "observation.state": {"dtype": "float32"}}}
    assert size_from_info(info) == DatasetSize(50, 9000, 2)
    # Only v3.0 can be split: a v2.1 dataset always runs as one pod.
    assert size_from_info({**info, "codebase_version": "v2.1"}) is None
    assert size_from_info({"features": {}}) is None
    assert size_from_info(["not", "a", "dict"]) is None


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LocalHub]:
    with LocalHub(tmp_path / "hub", tokens={"tok-alice": "alice"}) as server:
        yield server


def test_the_size_is_read_from_the_hub_at_the_specs_revision(
    hub: LocalHub, tmp_path: Path
) -> None:
    folder = make_lerobot_v3(tmp_path / "src", episodes=3, frames=[4, 5, 6],
                             cameras=("observation.images.top",))
    hub.seed("lab/pick", folder)
    assert read_size("lab/pick", None, hub.endpoint) == DatasetSize(3, 15, 1)
    assert read_size("lab/pick", "no-such-branch", hub.endpoint) is None
    assert read_size("lab/missing", None, hub.endpoint) is None
    assert read_size("lab/pick", None, "http://127.0.0.1:9", timeout=1) is None  # unreachable
    assert read_size("lab/pick", None, "file:///etc") is None


def test_the_hub_is_the_runners_and_the_choice_is_read_back_from_the_resources() -> None:
    profile = PROFILE.model_copy(update={"env": {"HF_ENDPOINT": "http://hub.profile"}})
    assert hub_endpoint({"HF_ENDPOINT": "http://hub.runner"}, PROFILE) == "http://hub.runner"
    assert hub_endpoint({"HF_ENDPOINT": "http://hub.runner"}, profile) == "http://hub.profile"
    indexed = {"spec": {"completionMode": "Indexed", "completions": 6}}
    assert planned_shards({}, indexed) == 6
    assert planned_shards({"shards": {"total": 6}}, {"spec": {}}) == 1  # one pod's Job
    assert planned_shards({"shards": {"total": 6}}, None) == 6  # the Job gone (TTL)
    assert planned_shards({}, None) is None  # not chosen yet


class MemoryKube:
    """An in-memory stand-in for the operator's Kube: one CR and the Jobs made for it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.cr: dict[str, Any] = {
            "apiVersion": "augment.dev/v1alpha1", "kind": "AugmentationJob",
            "metadata": {"name": "pick", "namespace": "ns", "uid": "u-1", "generation": 1,
                         "labels": {}, "annotations": {}},
            "spec": spec, "status": {}}
        self.jobs: dict[str, dict[str, Any]] = {}

    def get_cr(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.cr)

    def patch_cr_status(self, namespace: str, name: str,
                        status: dict[str, Any]) -> dict[str, Any]:
        self.cr["status"].update(copy.deepcopy(status))
        return copy.deepcopy(self.cr)

    def patch_cr_labels(self, namespace: str, name: str,
                        labels: dict[str, str]) -> dict[str, Any]:
        self.cr["metadata"]["labels"].update(labels)
        return copy.deepcopy(self.cr)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.jobs.get(name))

    def create_job(self, job: dict[str, Any]) -> dict[str, Any]:
        self.jobs.setdefault(job["metadata"]["name"], job)
        return job

    def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        return []

    def access_granted(self, namespace: str, name: str) -> bool:
        return False

    def create_access_object(self, obj: dict[str, Any]) -> None:
        pass

    def delete_access(self, namespace: str, name: str) -> None:
        pass

    def delete_job(self, namespace: str, name: str) -> None:
        self.jobs.pop(name, None)


class QuietReconciler(Reconciler):
    def announce(self, cr: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        pass


def test_a_spec_without_shards_gets_an_indexed_job_sized_once_from_the_hub(
    hub: LocalHub, tmp_path: Path
) -> None:
    folder = make_lerobot_v3(tmp_path / "src", episodes=4, frames=[5, 5, 5, 5],
                             cameras=("observation.images.top",))
    hub.seed("lab/pick", folder)
    config = OperatorConfig.model_validate({
        "runner": {"env": {"HF_ENDPOINT": hub.endpoint}},
        # 20 frames x 1 camera x 2 copies = 40 camera frames: 3 shards of at most 15.
        "profiles": {"deterministic": {"shardCameraFrames": 15}}})
    kube = MemoryKube({"projectId": PROJECT, "datasetId": "lab/pick", "augmentCopies": 2})
    reconciler = QuietReconciler(config, kube)  # type: ignore[arg-type]
    reconciler.reconcile("ns", "pick")
    job = kube.jobs["pick-run"]
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 3)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    given = json.loads(next(e["value"] for e in container["env"] if e["name"] == ENV_SPEC))
    assert given["shards"] == 3  # the pods never see `shards` unset
    assert kube.cr["status"]["shards"]["total"] == 3
    # Later reconciles read the choice back: the Hub is not asked again, even with the
    # dataset changed or the Job gone.
    reads = len([c for c in hub.calls if c.path.endswith("meta/info.json")])
    assert reads >= 1
    reconciler.reconcile("ns", "pick")
    del kube.jobs["pick-run"]
    kube.cr["status"]["phase"] = "Running"
    reconciler.reconcile("ns", "pick")
    assert kube.jobs["pick-run"]["spec"]["completions"] == 3
    assert len([c for c in hub.calls if c.path.endswith("meta/info.json")]) == reads
