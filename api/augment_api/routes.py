"""HTTP routes: small handlers over the auth, store and model helpers."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from augment_api.auth import CurrentPrincipal, Principal
from augment_api.errors import BadRequest, Forbidden, NotFound, error_responses
from augment_api.models import (
    AugmentationJobList,
    AugmentationJobStatus,
    AugmentationResponse,
    Health,
    job_from_cr,
)
from augment_api.store import JobStore, newest_first, project_of
from augment_spec.contract import Phase, phase_of
from augment_spec.model import GENERATIVE_DISABLED, AugmentationSpec, AugmentationType

GENERATIVE_DISABLED_HINT = f"{GENERATIVE_DISABLED}; use augmentation_type=deterministic"
# Visible ASCII: the key is stored as an annotation value and hashed into the CR name.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"


def get_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


Store = Annotated[JobStore, Depends(get_store)]

jobs = APIRouter(prefix="/v1/augmentation", tags=["augmentation"])
health = APIRouter(tags=["health"])


def require_project(principal: Principal, project_id: UUID) -> None:
    if not principal.may_use(project_id):
        raise Forbidden(f"this API key may not use project {project_id}")


def visible_job(store: JobStore, principal: Principal, job_id: UUID) -> dict[str, Any]:
    """The job's CR; 404 alike for missing jobs and other projects' jobs."""
    cr = store.find(job_id)
    if cr is None or not principal.may_use(project_of(cr)):
        raise NotFound(f"augmentation job {job_id} not found")
    return cr


def selected(cr: dict[str, Any], principal: Principal, project_id: UUID | None,
             phase: Phase | None) -> bool:
    project = project_of(cr)
    return (principal.may_use(project)
            and (project_id is None or project == project_id)
            and (phase is None or phase_of(cr) == phase))


@jobs.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=AugmentationResponse,
    summary="Create Augmentation Job",
    response_description="Augmentation job created successfully",
    responses={
        200: {"model": AugmentationResponse,
              "description": "An earlier request with this Idempotency-Key and the same body "
                             "created the job; it is returned again"},
        **error_responses(400, 401, 403, 409, 413, 422, 502, 503),
    },
)
def create_job(
    spec: AugmentationSpec,
    principal: CurrentPrincipal,
    store: Store,
    response: Response,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", max_length=255, pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Retry-safe creation: the same key and body return the same job "
                    "(per project); the same key with another body is a 409",
    )] = None,
) -> AugmentationResponse:
    """Start a new dataset augmentation job.

    Applies deterministic transforms (lighting, noise, blur, occlusion) to a Hugging Face
    dataset and uploads the augmented result. The GPU node is chosen by the operator from
    the augmentation type. Generative augmentation (Cosmos Transfer2.5) is currently
    disabled and returns 400.
    """
    require_project(principal, spec.project_id)
    if spec.augmentation_type is AugmentationType.generative:
        raise BadRequest(GENERATIVE_DISABLED_HINT)
    result = store.create(spec, created_by=principal.name, idempotency_key=idempotency_key)
    if not result.created:
        response.status_code = status.HTTP_200_OK
        message = "an earlier request with this Idempotency-Key created this job"
    else:
        message = "augmentation job created"
    return AugmentationResponse(job_id=result.cr["metadata"]["uid"],
                                status=phase_of(result.cr).value, message=message)


@jobs.get("", response_model=AugmentationJobList, summary="List Augmentation Jobs",
          responses=error_responses(401, 403, 422, 502, 503))
def list_jobs(
    principal: CurrentPrincipal,
    store: Store,
    project_id: Annotated[UUID | None, Query(
        description="Only this project's jobs; default: every project the key may use")] = None,
    status_filter: Annotated[Phase | None, Query(alias="status",
                                                 description="Only jobs in this phase")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> AugmentationJobList:
    """Jobs the API key may see, newest first."""
    if project_id is not None:
        require_project(principal, project_id)
    matching = [cr for cr in store.list_all()
                if selected(cr, principal, project_id, status_filter)]
    page = newest_first(matching)[offset:offset + limit]
    return AugmentationJobList(items=[job_from_cr(cr) for cr in page], total=len(matching),
                               limit=limit, offset=offset)


@jobs.get("/{job_id}", response_model=AugmentationJobStatus, summary="Get Augmentation Job",
          responses=error_responses(401, 404, 422, 502, 503))
def get_job(job_id: UUID, principal: CurrentPrincipal, store: Store) -> AugmentationJobStatus:
    """A job's spec, phase, progress and output, whether made by this API or by kubectl."""
    return job_from_cr(visible_job(store, principal, job_id))


@jobs.delete("/{job_id}", status_code=status.HTTP_202_ACCEPTED,
             response_model=AugmentationJobStatus, summary="Cancel Augmentation Job",
             response_description="Cancel requested; the job's current state",
             responses=error_responses(401, 404, 409, 422, 502, 503))
def cancel_job(job_id: UUID, principal: CurrentPrincipal, store: Store) -> AugmentationJobStatus:
    """Ask the operator to stop the job; it then deletes the Job and sets phase Cancelled.

    The resource itself stays, as the record of the job. Asking again is harmless;
    a job that already finished (Succeeded, Failed, Cancelled) is a 409.
    """
    cr = visible_job(store, principal, job_id)
    return job_from_cr(store.request_cancel(cr))


@health.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    return Health(status="ok")


@health.get("/readyz", response_model=Health, summary="Readiness",
            responses=error_responses(502, 503))
def readyz(store: Store) -> Health:
    """Ready when the Kubernetes API answers and serves AugmentationJobs in our namespace."""
    store.check_ready()
    return Health(status="ok")
