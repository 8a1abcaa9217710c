"""Response models, and the one function that turns a custom resource into a job view."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from augment_api.store import project_of
from augment_spec.contract import (
    PROGRESS_DONE,
    PROGRESS_PERCENT,
    PROGRESS_TOTAL,
    SHARDS_DONE,
    SHARDS_FAILED,
    SHARDS_FAILED_PODS,
    SHARDS_RUNNING,
    SHARDS_TOTAL,
    STATUS_COMPLETION_TIME,
    STATUS_JOB_NAME,
    STATUS_MESSAGE,
    STATUS_OUTPUT_DATASET_ID,
    STATUS_OUTPUT_REVISION,
    STATUS_PROGRESS,
    STATUS_SHARDS,
    STATUS_START_TIME,
    STATUS_VIDEO_PLAN,
    Phase,
    cancel_requested,
    phase_of,
)
from augment_spec.crd import spec_from_cr
from augment_spec.model import AugmentationSpec, SpecError

log = logging.getLogger(__name__)


class AugmentationResponse(BaseModel):
    """Response after creating an augmentation job."""

    job_id: UUID = Field(description="Unique job identifier")
    status: str = Field(description="Current job status")
    message: str | None = Field(default=None)


class Progress(BaseModel):
    episodes_done: int = Field(default=0, description="Source episodes processed")
    episodes_total: int = Field(default=0, description="Source episodes to process (0: not known)")
    percent: int = Field(default=0, ge=0, le=100)


class Shards(BaseModel):
    """A sharded job's runner pods (spec.shards > 1), as the operator counts them."""

    total: int = Field(default=0, description="Shards the episodes are spread over")
    done: int = Field(default=0, description="Shards augmented and staged")
    running: int = Field(default=0, description="Shard pods running (or waiting to)")
    failed: int = Field(default=0, description="Shards that kept failing (the job fails)")
    failed_pods: int = Field(default=0, description="Shard pods that failed, each retried")


class AugmentationJobStatus(BaseModel):
    """A job as stored in its AugmentationJob custom resource."""

    job_id: UUID = Field(description="Unique job identifier (the resource's metadata.uid)")
    name: str = Field(description="Name of the AugmentationJob resource (for kubectl)")
    namespace: str
    project_id: UUID | None = Field(description="Project the job belongs to")
    status: Phase = Field(description="Phase: Pending until the operator picks the job up; "
                          "Queued while it waits in a Kueue queue (the message says why)")
    message: str | None = Field(default=None, description="Latest message from the operator")
    cancel_requested: bool = Field(
        default=False, description="A cancel was requested (the operator stops the job)")
    progress: Progress = Field(default_factory=Progress)
    shards: Shards | None = Field(default=None, description="A sharded job's shards")
    output_dataset_id: str | None = Field(
        default=None, description="Hub dataset the output is (or will be) uploaded to")
    output_revision: str | None = Field(
        default=None, description="Hub commit holding the published output; from then on "
        "the job's preview is served (GET /v1/augmentation/{job_id}/preview)")
    video_plan: str | None = Field(
        default=None, description="How the runner decodes and encodes each camera's video "
        "(NVDEC, NVENC or the CPU) and why, once it has planned them")
    job_name: str | None = Field(default=None, description="Kubernetes Job running the work")
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    spec: AugmentationSpec | None = Field(
        default=None, description="The request, every default explicit (None if unreadable)")


class AugmentationJobList(BaseModel):
    items: list[AugmentationJobStatus]
    total: int = Field(description="Jobs matching the filters, over all pages")
    limit: int
    offset: int


class JobEvent(BaseModel):
    """A Kubernetes Event about the job, as `kubectl describe augjob` shows it."""

    type: str = Field(description="Normal or Warning", examples=["Normal"])
    reason: str = Field(description="Short, machine-readable: the phase reached, or "
                                    "ShardFailed", examples=["Succeeded"])
    message: str = Field(default="")
    count: int = Field(default=1, description="Times it happened")
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class JobEventList(BaseModel):
    items: list[JobEvent] = Field(description="Oldest first")


class Health(BaseModel):
    status: str = Field(examples=["ok"])


def _spec_of(cr: dict[str, Any]) -> AugmentationSpec | None:
    try:
        return spec_from_cr(cr.get("spec") or {})
    except SpecError as exc:
        # A resource written by hand can disagree with the model; show the rest of it.
        log.warning("spec of %s does not parse: %s", cr["metadata"]["name"], exc)
        return None


def _shards(status: dict[str, Any]) -> Shards | None:
    shards = status.get(STATUS_SHARDS)
    if not shards:
        return None
    return Shards(total=shards.get(SHARDS_TOTAL, 0), done=shards.get(SHARDS_DONE, 0),
                  running=shards.get(SHARDS_RUNNING, 0), failed=shards.get(SHARDS_FAILED, 0),
                  failed_pods=shards.get(SHARDS_FAILED_PODS, 0))


def job_from_cr(cr: dict[str, Any]) -> AugmentationJobStatus:
    meta, status = cr["metadata"], cr.get("status") or {}
    spec = _spec_of(cr)
    progress = status.get(STATUS_PROGRESS) or {}
    return AugmentationJobStatus(
        job_id=meta["uid"],
        name=meta["name"],
        namespace=meta.get("namespace", ""),
        project_id=project_of(cr),
        status=phase_of(cr),
        message=status.get(STATUS_MESSAGE),
        cancel_requested=cancel_requested(cr),
        progress=Progress(episodes_done=progress.get(PROGRESS_DONE, 0),
                          episodes_total=progress.get(PROGRESS_TOTAL, 0),
                          percent=progress.get(PROGRESS_PERCENT, 0)),
        shards=_shards(status),
        output_dataset_id=status.get(STATUS_OUTPUT_DATASET_ID) or (spec.target_dataset_id
                                                                   if spec else None),
        output_revision=status.get(STATUS_OUTPUT_REVISION),
        video_plan=status.get(STATUS_VIDEO_PLAN),
        job_name=status.get(STATUS_JOB_NAME),
        created_at=meta.get("creationTimestamp"),
        started_at=status.get(STATUS_START_TIME),
        completed_at=status.get(STATUS_COMPLETION_TIME),
        spec=spec,
    )


def _event(event: dict[str, Any]) -> JobEvent:
    first = event.get("firstTimestamp") or event.get("eventTime")
    return JobEvent(type=event.get("type") or "Normal", reason=event.get("reason") or "",
                    message=event.get("message") or "", count=event.get("count") or 1,
                    first_seen=first, last_seen=event.get("lastTimestamp") or first)


def _instant(value: Any) -> float:
    """Seconds since the epoch of an apiserver timestamp (RFC 3339); 0 when absent."""
    return datetime.fromisoformat(str(value)).timestamp() if value else 0.0


def _order(event: dict[str, Any]) -> tuple[float, float]:
    # lastTimestamp has a resolution of one second: eventTime (microseconds), which the
    # operator sets too, orders the events of the same second.
    last = event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
    return _instant(last), _instant(event.get("eventTime"))


def events_from_k8s(events: list[dict[str, Any]]) -> JobEventList:
    """The job's Events, oldest first (the apiserver returns them in no useful order)."""
    return JobEventList(items=[_event(e) for e in sorted(events, key=_order)])
