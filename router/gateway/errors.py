"""The one renderer of errors: every failure leaves as ``{"error", "message", "detail"}``."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from router.errors import (
    AdminDisabledError,
    BackpressureError,
    BadJSONError,
    ClientClosedError,
    DuplicateRequestIdError,
    InputValidationError,
    InvalidHeaderError,
    ModelFailedError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    RequestError,
    RequestTimeoutError,
    RouterError,
    StoreError,
    SwitchConflictError,
    UnauthorizedError,
    UnsupportedMediaError,
)
from router.strings import printable

log = logging.getLogger("router.gateway")

# The one table from the router's errors to HTTP statuses; an error answers with the status of
# the nearest class listed here in its ancestry, and any other exception with a 500.
STATUS: dict[type[Exception], int] = {
    BadJSONError: 400,
    InvalidHeaderError: 400,
    RequestError: 400,
    UnauthorizedError: 401,
    AdminDisabledError: 403,
    NotFoundError: 404,
    RequestTimeoutError: 408,
    SwitchConflictError: 409,
    DuplicateRequestIdError: 409,
    PayloadTooLargeError: 413,
    UnsupportedMediaError: 415,
    InputValidationError: 422,
    # Nobody reads it: the client left before its body came; logged like any answer.
    ClientClosedError: 499,
    ModelFailedError: 500,
    # The service is unavailable for now, not broken: 503 tells the client to retry.
    NotReadyError: 503,
    BackpressureError: 503,
    StoreError: 503,
    RouterError: 500,
}


def status_of(exc: BaseException) -> int:
    """The HTTP status ``exc`` is answered with."""
    if isinstance(exc, HTTPException):
        return exc.status_code
    for kind in type(exc).__mro__:
        status = STATUS.get(kind)
        if status is not None:
            return status
    return 500


MAX_DETAIL = 100  # faults an error lists


def error_response(status: int, code: str, message: str, detail: list[Any] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """The JSON error; it cannot fail itself, whatever text the message and detail carry."""
    if detail and len(detail) > MAX_DETAIL:
        # A few kilobytes of bad rows (a thousand empty ones) would otherwise be answered
        # with megabytes of detail.
        message = f"{message} (detail lists the first {MAX_DETAIL} of {len(detail)} faults)"
        detail = detail[:MAX_DETAIL]
    payload = {"error": code, "message": message, "detail": detail or []}
    try:
        body = orjson.dumps(payload)
    except TypeError:
        # Text UTF-8 cannot encode (a lone surrogate echoed from a request) or a value JSON
        # has no form for: the same answer, with such text escaped and such values as text.
        try:
            body = orjson.dumps(_encodable(payload))
        except TypeError:
            body = orjson.dumps({"error": code, "message": printable(str(message)),
                                 "detail": []})
    try:
        return Response(body, status_code=status, media_type="application/json",
                        headers=headers)
    except UnicodeEncodeError:  # a header value latin-1 cannot carry
        return Response(body, status_code=status, media_type="application/json")


def _encodable(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return printable(value)
    if depth > 8:  # error details are shallow; anything deeper is shown as text
        return printable(repr(value))
    if isinstance(value, dict):
        return {printable(str(k)): _encodable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v, depth + 1) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return printable(repr(value))


async def router_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RouterError)
    status = status_of(exc)
    headers = {"Retry-After": "1"} if isinstance(exc, BackpressureError | StoreError) else None
    if isinstance(exc, RequestTimeoutError):
        # The rest of the body may still come: the connection cannot serve another request.
        headers = {"Connection": "close"}
    request_id = request.scope.get("router.request_id")
    if request_id:
        # As the answer's own header carries it: its UTF-8 bytes, which Starlette writes as
        # latin-1 text.
        headers = {**(headers or {}), "X-Request-Id": request_id.encode().decode("latin-1")}
    return error_response(status, exc.code, exc.message, exc.detail, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = {404: f"no route {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"),
                          message.get(exc.status_code, str(exc.detail)),
                          headers=getattr(exc, "headers", None))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # Reached only by a bug: say so in JSON, with the request id, and log the traceback.
    request_id = request.scope.get("router.request_id", "")
    log.exception("unexpected error on %s %s (request %s)", request.method, request.url.path,
                  request_id)
    return error_response(500, "internal_error",
                          f"unexpected error: {type(exc).__name__} (request {request_id})",
                          [{"request_id": request_id}])


EXCEPTION_HANDLERS = {RouterError: router_error, HTTPException: http_error,
                      Exception: unexpected_error}


async def render_error(request: Request, exc: Exception) -> Response:
    """The answer the handlers above give ``exc``, for a route served outside Starlette's
    exception middleware (the first handler whose class matches, as Starlette picks it)."""
    for kind, handler in EXCEPTION_HANDLERS.items():
        if isinstance(exc, kind):
            return await handler(request, exc)
    raise exc  # not an Exception: cancellation and the like pass through
