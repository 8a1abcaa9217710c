"""HTTP routes: small handlers over the auth, cache, store and model helpers.

Reads (list, get, the probes) are `async`: they answer from the watch cache on the event
loop, so requests waiting on a slow apiserver (create, cancel, a job's events: they run
in the threadpool) never delay them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from augment_api.auth import CurrentPrincipal, Principal
from augment_api.cache import Entry, JobCache
from augment_api.errors import BadRequest, Conflict, Forbidden, NotFound, error_responses
from augment_api.jsonbody import JsonBodyRoute
from augment_api.limits import ProjectQuota, RateLimiter
from augment_api.models import (
    AugmentationJobList,
    AugmentationJobStatus,
    AugmentationResponse,
    Health,
    JobEventList,
    events_from_k8s,
    job_from_cr,
)
from augment_api.preview import PreviewReader
from augment_api.store import JobStore, idempotent_name
from augment_spec.contract import (
    OUTPUT_PREVIEW_MEDIA_TYPE,
    STATUS_OUTPUT_REVISION,
    TERMINAL_PHASES,
    Phase,
    phase_of,
)
from augment_spec.model import GENERATIVE_DISABLED, AugmentationSpec, AugmentationType
from augment_spec.policy import HubPolicy, PolicySource

GENERATIVE_DISABLED_HINT = f"{GENERATIVE_DISABLED}; use augmentation_type=deterministic"
# Visible ASCII: the key is stored as an annotation value and hashed into the CR name.
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]+$"


# async: the app's state is read on the event loop, never in the threadpool.
async def get_store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


async def get_cache(request: Request) -> JobCache:
    cache: JobCache = request.app.state.cache
    return cache


async def get_quota(request: Request) -> ProjectQuota:
    quota: ProjectQuota = request.app.state.quota
    return quota


async def get_policy(request: Request) -> HubPolicy | None:
    """The Hub policy as it is now (re-read when its file changed); None: none applies."""
    source: PolicySource | None = request.app.state.policy
    return source.current() if source is not None else None


async def get_namespace(request: Request) -> str:
    namespace: str = request.app.state.settings.namespace
    return namespace


async def get_previews(request: Request) -> PreviewReader:
    previews: PreviewReader = request.app.state.previews
    return previews


async def rate_limited(principal: CurrentPrincipal, request: Request) -> Principal:
    """The caller, once its key's request rate allows one more request (else 429)."""
    limiter: RateLimiter = request.app.state.limiter
    limiter.check(principal.name)
    return principal


Store = Annotated[JobStore, Depends(get_store)]
Cache = Annotated[JobCache, Depends(get_cache)]
Quota = Annotated[ProjectQuota, Depends(get_quota)]
Previews = Annotated[PreviewReader, Depends(get_previews)]
Caller = Annotated[Principal, Depends(rate_limited)]
Policy = Annotated[HubPolicy | None, Depends(get_policy)]
Namespace = Annotated[str, Depends(get_namespace)]

jobs = APIRouter(prefix="/v1/augmentation", tags=["augmentation"], route_class=JsonBodyRoute)
health = APIRouter(tags=["health"])


def require_project(principal: Principal, project_id: UUID) -> None:
    if not principal.may_use(project_id):
        raise Forbidden(f"this API key may not use project {project_id}")


def visible_entry(cache: JobCache, principal: Principal, job_id: UUID) -> Entry:
    """The job's cache entry; 404 alike for missing jobs and other projects' jobs."""
    entry = cache.entry(job_id)
    if entry is None or not principal.may_use(entry.project):
        raise NotFound(f"augmentation job {job_id} not found")
    return entry


def require_policy(policy: HubPolicy | None, spec: AugmentationSpec, namespace: str) -> None:
    """403 when the Hub policy forbids the job's Hub namespaces or token Secret; the
    operator refuses the same job made any other way (docs/design.md, Hub policy)."""
    denial = policy.denial(spec, namespace) if policy is not None else None
    if denial is not None:
        raise Forbidden(denial)


CREATE_FORBIDDEN = ("The API key may not use this project, or the Hub policy forbids the "
                    "job: its output or source Hub namespace, or its hf_token_secret_name, "
                    "is not allowed for the project")


def visible_job(cache: JobCache, principal: Principal, job_id: UUID) -> dict[str, Any]:
    """The job's CR; 404 alike for missing jobs and other projects' jobs."""
    return visible_entry(cache, principal, job_id).cr


def view(entry: Entry) -> bytes:
    """The job's JSON answer (AugmentationJobStatus), rendered once per version: reads
    of a job that has not changed cost a lookup, not a parse of its spec."""
    if entry.view is None:
        # Two requests may render the same entry at once: both write the same bytes.
        entry.view = job_from_cr(entry.cr).model_dump_json().encode()
    return entry.view


def json_response(body: bytes) -> Response:
    """JSON already rendered from the route's response model: FastAPI sends a Response
    as it is, without validating and serialising it again."""
    return Response(body, media_type="application/json")


def admission(quota: ProjectQuota, cache: JobCache, project_id: UUID,
              idempotency_key: str | None) -> AbstractContextManager[None]:
    """The quota's hold on one more job; none for a retry whose job exists already
    (it returns that job, it adds none)."""
    if quota.limit <= 0:
        return nullcontext()
    if idempotency_key is not None and \
            cache.named(idempotent_name(project_id, idempotency_key)) is not None:
        return nullcontext()
    return quota.admit(project_id)


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
        **error_responses(400, 401, 403, 409, 413, 422, 429, 502, 503,
                          describe={403: CREATE_FORBIDDEN}),
    },
)
def create_job(
    spec: AugmentationSpec,
    caller: Caller,
    store: Store,
    cache: Cache,
    quota: Quota,
    policy: Policy,
    namespace: Namespace,
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

    The Hub policy names, per project, the Hub namespaces a job may write its output to
    and read its source from, and the Secrets `hf_token_secret_name` may name: a job
    outside it is a 403, and nothing is created.

    A project may have a limited number of unfinished jobs (429 beyond it). A 503 means
    the job may or may not have been created: retry with the same Idempotency-Key.
    """
    require_project(caller, spec.project_id)
    require_policy(policy, spec, namespace)
    if spec.augmentation_type is AugmentationType.generative:
        raise BadRequest(GENERATIVE_DISABLED_HINT)
    with admission(quota, cache, spec.project_id, idempotency_key):
        result = store.create(spec, created_by=caller.name, idempotency_key=idempotency_key)
        cache.remember(result.cr)  # counted by the quota, and readable at once
    if not result.created:
        response.status_code = status.HTTP_200_OK
        message = "an earlier request with this Idempotency-Key created this job"
    else:
        message = "augmentation job created"
    return AugmentationResponse(job_id=result.cr["metadata"]["uid"],
                                status=phase_of(result.cr).value, message=message)


@jobs.get("", response_model=AugmentationJobList, summary="List Augmentation Jobs",
          responses=error_responses(401, 403, 422, 429, 503))
async def list_jobs(
    caller: Caller,
    cache: Cache,
    project_id: Annotated[UUID | None, Query(
        description="Only this project's jobs; default: every project the key may use")] = None,
    status_filter: Annotated[Phase | None, Query(alias="status",
                                                 description="Only jobs in this phase")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """Jobs the API key may see, newest first."""
    if project_id is not None:
        require_project(caller, project_id)
    projects = caller.projects if project_id is None else frozenset({project_id})
    total, page = cache.entries(projects, status_filter, slice(offset, offset + limit))
    items = b",".join(view(e) for e in page)
    tail = AugmentationJobList(items=[], total=total, limit=limit, offset=offset)
    # The page's items are spliced into the rest of the answer, rendered by the model.
    rest = tail.model_dump_json().encode().removeprefix(b'{"items":[]')
    return json_response(b'{"items":[' + items + b"]" + rest)


@jobs.get("/{job_id}", response_model=AugmentationJobStatus, summary="Get Augmentation Job",
          responses=error_responses(401, 404, 422, 429, 503))
async def get_job(job_id: UUID, caller: Caller, cache: Cache) -> Response:
    """A job's spec, phase, progress and output, whether made by this API or by kubectl."""
    return json_response(view(visible_entry(cache, caller, job_id)))


@jobs.get("/{job_id}/events", response_model=JobEventList, summary="List Job Events",
          responses=error_responses(401, 404, 422, 429, 502, 503))
def job_events(job_id: UUID, caller: Caller, cache: Cache, store: Store) -> JobEventList:
    """The job's Kubernetes Events, oldest first: each phase it reached, and each failed
    shard pod, with the operator's message (what `kubectl describe augjob` lists).

    Read from the Kubernetes API on each request, not from the watch cache.
    """
    cr = visible_job(cache, caller, job_id)
    return events_from_k8s(store.events_of(cr))


def published_output(cr: dict[str, Any], job_id: UUID) -> tuple[str, str]:
    """(output dataset, commit) of a job whose output is on the Hub; else 409."""
    revision = (cr.get("status") or {}).get(STATUS_OUTPUT_REVISION)
    dataset = job_from_cr(cr).output_dataset_id
    if revision and dataset:
        return dataset, revision
    phase = phase_of(cr)
    if phase in TERMINAL_PHASES:
        raise Conflict(f"augmentation job {job_id} has no preview: it ended {phase} "
                       "without publishing its output")
    raise Conflict(f"augmentation job {job_id} has no preview yet: its output is not "
                   f"published ({phase}); try again when it is")


@jobs.get(
    "/{job_id}/preview",
    response_class=Response,
    summary="Get Augmentation Job Preview",
    responses={
        200: {"content": {OUTPUT_PREVIEW_MEDIA_TYPE: {"schema": {"type": "string",
                                                                 "format": "binary"}}},
              "description": "The contact sheet: a source episode's frames (top row) above "
                             "the same frames of each augmented copy (one row each)"},
        304: {"description": "The preview named by If-None-Match is still the job's"},
        **error_responses(401, 404, 409, 422, 429, 502, 503, describe={
            404: "No such job (or not visible to this API key), or its output dataset "
                 "has no preview or cannot be read with the API's Hub token",
            409: "The job has no preview yet: its output is not published",
            502: "The Hub failed to serve the preview, or could not be reached",
        }),
    },
)
def get_preview(job_id: UUID, caller: Caller, cache: Cache, previews: Previews,
                if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """The job's preview contact sheet, a PNG image, read from its output dataset on the
    Hub at the commit the job published.

    The ETag is that commit: a client sending it back in If-None-Match gets 304 while the
    job's output stays the same.
    """
    dataset, revision = published_output(visible_job(cache, caller, job_id), job_id)
    etag = f'"{revision}"'
    if if_none_match is not None and etag in if_none_match:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return Response(previews.read(dataset, revision), media_type=OUTPUT_PREVIEW_MEDIA_TYPE,
                    headers={"ETag": etag, "Cache-Control": "private, no-cache"})


@jobs.delete("/{job_id}", status_code=status.HTTP_202_ACCEPTED,
             response_model=AugmentationJobStatus, summary="Cancel Augmentation Job",
             response_description="Cancel requested; the job's current state",
             responses=error_responses(401, 404, 409, 422, 429, 502, 503))
def cancel_job(job_id: UUID, caller: Caller, cache: Cache,
               store: Store) -> AugmentationJobStatus:
    """Ask the operator to stop the job; it then deletes the Job and sets phase Cancelled.

    The resource itself stays, as the record of the job. Asking again is harmless;
    a job that already finished (Succeeded, Failed, Cancelled) is a 409.
    """
    cr = visible_job(cache, caller, job_id)
    return job_from_cr(store.request_cancel(cr))


@health.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The process serves requests; it asks nothing of Kubernetes."""
    return Health(status="ok")


@health.get("/readyz", response_model=Health, summary="Readiness",
            responses=error_responses(503))
async def readyz(cache: Cache) -> Health:
    """Ready once the jobs are loaded from Kubernetes into the watch cache; it asks
    nothing of Kubernetes itself."""
    cache.require_synced()
    return Health(status="ok")
