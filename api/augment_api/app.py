"""The FastAPI application: `create_app(settings)` wires settings, keys and the store.

Everything a handler needs arrives by dependency injection from `app.state`, so tests
build the app with the real store against a real apiserver, or with a stand-in store
and a cache they fill themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import Scope

from augment_api.auth import KeyRing, KeyRingFile, KeySource
from augment_api.cache import Informer, JobCache
from augment_api.dashboard import mount_dashboard
from augment_api.errors import FieldError, ServiceError, ValidationErrorResponse
from augment_api.limits import ProjectQuota, RateLimiter
from augment_api.middleware import BodyLimitMiddleware, CatchAllMiddleware
from augment_api.preview import PreviewReader
from augment_api.routes import health, jobs
from augment_api.settings import Settings
from augment_api.store import JobStore
from augment_spec.model import validation_messages
from augment_spec.policy import PolicyFile, PolicySource

DESCRIPTION = """\
Augment robot-learning datasets on GPUs. Each job is an `AugmentationJob` custom
resource: jobs created here, with `kubectl apply` or by Argo CD are the same thing.

Authenticate with the `X-Api-Key` header. Every error is JSON: `{"detail": "..."}`.
A dashboard for people is served at `/ui/`.
"""


def _version() -> str:
    try:
        return version("augment-operator")
    except PackageNotFoundError:
        return "0.0.0"


def _readable(error: dict[str, Any]) -> str:
    """One line per problem, with the spec model's own messages."""
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        return f"request body is not valid JSON: {(error.get('ctx') or {}).get('error', '')}"
    if loc == ("body",) and error.get("type") == "missing":
        return "a JSON request body is required"
    return validation_messages(_OneError(error))[0]


class _OneError:
    """Adapter: validation_messages() wants an object with errors()."""

    def __init__(self, error: dict[str, Any]) -> None:
        self._error = error

    def errors(self) -> list[dict[str, Any]]:
        return [self._error]


# Starlette types every exception handler as taking Exception; each is registered for
# one class only, which the assert states.
async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    body = ValidationErrorResponse(
        detail="; ".join(_readable(e) for e in errors) or "invalid request",
        errors=[FieldError(loc=list(e.get("loc", ())), msg=str(e.get("msg", "")),
                           type=str(e.get("type", ""))) for e in errors],
    )
    return JSONResponse(body.model_dump(), status_code=422)


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                        headers=exc.headers)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at the request's path: Starlette's 405 names only
    the first route whose path matched. Each method is tried against the routes as
    they match requests, so included routers are covered."""
    def served(method: str) -> bool:
        trial = {**scope, "method": method}
        return any(route.matches(trial)[0] is Match.FULL for route in app.router.routes)

    return [method for method in HTTP_METHODS if served(method)]


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def _lifespan(informer: Informer | None) -> Any:
    """Runs the informer while the app serves (none: the caller fills the cache)."""
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if informer is not None:
            informer.start()
        try:
            yield
        finally:
            if informer is not None:
                informer.stop()

    return lifespan


def create_app(settings: Settings, *, store: JobStore | None = None,
               keys: KeySource | None = None, cache: JobCache | None = None,
               policy: PolicySource | None = None) -> FastAPI:
    """The API over `store`; reads come from `cache`, which an informer fed by the store
    keeps current while the app runs, unless the caller passes a cache it fills itself.
    `policy` (default: settings.policy_file's, if any) is the Hub policy creates meet."""
    store = store or JobStore.from_settings(settings)
    informer = None
    if cache is None:
        cache = JobCache()
        informer = Informer(store, cache)
    app = FastAPI(title="augment-operator API", version=_version(), description=DESCRIPTION,
                  lifespan=_lifespan(informer))
    app.state.settings = settings
    app.state.store = store
    app.state.cache = cache
    app.state.limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.quota = ProjectQuota(settings.project_job_quota, cache.active_jobs)
    app.state.previews = PreviewReader(settings.hub_token_file)
    if keys is None:
        # No keys file: every request is refused (fail closed) rather than open.
        keys = KeyRingFile(settings.api_keys_file) if settings.api_keys_file else KeyRing([])
    app.state.keys = keys
    if policy is None and settings.policy_file is not None:
        policy = PolicyFile(settings.policy_file)
    app.state.policy = policy
    app.include_router(jobs)
    app.include_router(health)
    mount_dashboard(app)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(HTTPException, _http_error)
    # Added last = outermost: the catch-all sees errors of everything inside it.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)
    return app
