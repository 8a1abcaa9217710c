"""Progress from the runner pod to its AugmentationJob's status.

The operator puts the job's name and namespace in the pod's environment, and every
patch has the shape the operator and the API read (both: augment_spec.contract); the
pod's ServiceAccount may patch only the status subresource of AugmentationJobs in its
namespace. Outside a cluster there is nothing to report to, and reporting never fails
the augmentation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from augment_spec.contract import (
    GROUP,
    PLURAL,
    VERSION,
    output_status,
    progress_status,
    shard_progress_status,
    started_status,
    video_plan_status,
)

from .pod import PodEnv

log = logging.getLogger("augment.runner")
MIN_INTERVAL_SECONDS = 2.0


class StatusReporter:
    def __init__(self, name: str, namespace: str, shard_index: int | None = None) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.api = client.CustomObjectsApi()
        self.name, self.namespace = name, namespace
        self.shard_index = shard_index  # a sharded job's shard reports under its index
        self.last_sent = 0.0

    def patch(self, status: dict[str, Any]) -> None:
        try:
            self.api.patch_namespaced_custom_object_status(
                GROUP, VERSION, self.namespace, PLURAL, self.name, {"status": status})
        except Exception as exc:  # progress is best effort; the Job's outcome is what counts
            log.warning("could not report status to %s/%s: %s", self.namespace, self.name, exc)

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last_sent < MIN_INTERVAL_SECONDS:
            return
        self.last_sent = now
        if self.shard_index is None:
            self.patch(progress_status(done, total))
        else:
            self.patch(shard_progress_status(self.shard_index, done, total))


def cluster_reporter(shard_index: int | None = None) -> StatusReporter | None:
    pod = PodEnv.read()
    if not (pod.job_name and pod.job_namespace):
        return None
    return StatusReporter(pod.job_name, pod.job_namespace, shard_index)


def cluster_progress_reporter(
    shard_index: int | None = None,
) -> Callable[[int, int], None] | None:
    """A (episodes_done, episodes_total) callback when running in a cluster, else None;
    with `shard_index`, the progress of that shard of a sharded job."""
    reporter = cluster_reporter(shard_index)
    return reporter.progress if reporter else None


def report_shard_progress(shard_index: int, done: int, total: int) -> None:
    reporter = cluster_reporter(shard_index)
    if reporter:
        reporter.patch(shard_progress_status(shard_index, done, total))


def report_started(source_revision: str, output_dataset_id: str) -> None:
    reporter = cluster_reporter()
    if reporter:
        reporter.patch(started_status(source_revision, output_dataset_id))


def report_output(output_revision: str) -> None:
    reporter = cluster_reporter()
    if reporter:
        reporter.patch(output_status(output_revision))


def report_video_plan(lines: list[str]) -> None:
    """How each video camera is decoded and encoded (codec_plan.py), for `kubectl get`
    -o wide and the API's job status."""
    reporter = cluster_reporter()
    if reporter:
        reporter.patch(video_plan_status(lines))
