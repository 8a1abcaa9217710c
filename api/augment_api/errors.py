"""Errors the API returns, each a JSON body `{"detail": "..."}` with a fitting status.

The store and the routes raise `ServiceError` subclasses; one exception handler turns
them into responses, so no layer below the routes needs to know about HTTP objects.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Standard error response."""

    detail: str = Field(description="Error message describing what went wrong")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where, e.g. ['body', 'augment_copies']")
    msg: str = Field(description="What is wrong")
    type: str = Field(description="Machine-readable error type")


class ValidationErrorResponse(ErrorResponse):
    """A rejected request: `detail` is readable, `errors` lists each problem."""

    errors: list[FieldError] = Field(default_factory=list)


class ServiceError(Exception):
    status_code: ClassVar[int] = 500
    default_headers: ClassVar[dict[str, str]] = {}

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(self.default_headers)
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)


class BadRequest(ServiceError):
    status_code = 400


class Unauthorized(ServiceError):
    status_code = 401
    # No registered scheme exists for API keys; this names the header to send.
    default_headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'APIKey header="X-Api-Key"'}


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class TooManyRequests(ServiceError):
    """A key over its request rate, or a project at its quota of unfinished jobs."""

    status_code = 429


class Invalid(ServiceError):
    """The cluster rejected a spec the model accepted (the two should agree)."""

    status_code = 422


class BadGateway(ServiceError):
    """The Kubernetes API answered, but not in a way we can serve (RBAC, bugs)."""

    status_code = 502


class Unavailable(ServiceError):
    """The Kubernetes API cannot be reached or did not answer in time, the CRD is not
    installed, or the watch cache has not loaded the jobs yet."""

    status_code = 503
    default_headers: ClassVar[dict[str, str]] = {"Retry-After": "5"}


# OpenAPI entries for the error statuses, so clients see the `{"detail": ...}` shape.
# `describe` replaces the shared description of a status where a route means more or else.
def error_responses(*statuses: int,
                    describe: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Invalid request parameters",
        401: "Invalid or missing API key",
        403: "The API key may not use this project",
        404: "No such job (or not visible to this API key)",
        409: "Conflict with the job's current state or an earlier request",
        413: "Request body too large",
        422: "Validation error",
        429: "Too many requests for this API key, or too many unfinished jobs in the "
             "project; see Retry-After",
        502: "The Kubernetes API returned an error",
        503: "The Kubernetes API is unreachable or slow, the CRD is not installed, or the "
             "jobs are not loaded yet; see Retry-After",
    }
    return {
        status: {
            "model": ValidationErrorResponse if status == 422 else ErrorResponse,
            "description": (describe or {}).get(status, descriptions[status]),
        }
        for status in statuses
    }
