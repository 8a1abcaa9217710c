"""Request bodies: any body that is not JSON is a 422, the status of every invalid body.

FastAPI answers a JSON syntax error with 422, but any other failure to parse (bytes that
are not UTF-8, an integer beyond Python's digit limit, nesting deeper than the recursion
limit) with 400, which this API keeps for "generative augmentation is disabled". Routes
of the `JsonBodyRoute` class parse with `parse_json_body`, which turns each of those into
a `json.JSONDecodeError`: FastAPI then reports it as the 422 `json_invalid` it gives a
syntax error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class _NotJsonNumber(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (RFC 8259) has no such numbers.
    raise _NotJsonNumber(f"{name} is not a JSON number")


def parse_json_body(body: bytes) -> Any:
    """The body's JSON value; json.JSONDecodeError with a readable message otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not UTF-8 text",
                                   body.decode("utf-8", "replace"), exc.start) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects are nested too deeply", text, 0) from None
    except _NotJsonNumber as exc:
        raise json.JSONDecodeError(str(exc), text, 0) from None
    except ValueError:  # the only other: an integer over sys.get_int_max_str_digits()
        raise json.JSONDecodeError("a number has too many digits", text, 0) from None


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body())
        return self._json


class JsonBodyRoute(APIRoute):
    """An APIRoute whose handler reads the body with StrictJsonRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_json_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_json_handler
