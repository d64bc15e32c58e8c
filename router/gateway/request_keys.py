"""Values a request carries under a configured key (``header:NAME`` or ``body:FIELD``): the
sticky unit id (``traffic.sticky_key``) and the segment values (``analysis.segments``).

Both are read the same way and kept under the same rules: a string or an integer, empty meaning
absent, and refused with a 422 naming the key when the log could not store it (a lone surrogate,
a control character, too long), since it is written with every row of the request.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from router.config import StickyKey
from router.errors import InputValidationError
from router.serving.snapshot import Snapshot
from router.strings import MAX_ID_LENGTH, MAX_SEGMENT_LENGTH, header_text, text_problem

__all__ = ["header_map", "segments_of", "unit_id_of"]


def header_map(request: Request) -> dict[bytes, bytes]:
    """The request's headers by lower-case name (the first of repeated ones), built once.

    Starlette's ``Headers`` scans the whole list at each lookup and pays for an exception on a
    missing name; the prediction path looks up four or five names.
    """
    scope = request.scope
    headers: dict[bytes, bytes] | None = scope.get("router.headers")
    if headers is None:
        headers = scope["router.headers"] = dict(reversed(scope["headers"]))
    return headers


def keyed_value(key: StickyKey, request: Request, body: dict[str, Any], *, max_length: int,
                header_fallback: bool = False) -> str | None:
    """The value under ``key``, None when absent or empty; ``header_fallback`` also looks for
    a header key's name in ``body`` when the header is absent (an Open Inference Protocol
    request's parameters)."""
    if key.source == "header":
        raw = header_map(request).get(key.name.encode("ascii"))
        value: Any = None
        if raw:
            value = header_text(raw)
        elif header_fallback:  # absent or empty: the parameters may carry it
            value = body.get(key.name)
    else:
        value = body.get(key.name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputValidationError(
            f"{key} must be a string or an integer",
            [{"field": key.name, "message": "must be a string or an integer"}])
    if isinstance(value, str) and (problem := text_problem(value, max_length=max_length)):
        raise InputValidationError(f"{key} {problem}", [{"field": key.name, "message": problem}])
    return str(value)


def unit_id_of(snapshot: Snapshot, request: Request, body: dict[str, Any], *,
               header_fallback: bool = False) -> str | None:
    """The sticky unit id from the configured header or body field (see :func:`keyed_value`)."""
    key = snapshot.config.traffic.sticky_key
    if key is None:
        return None
    return keyed_value(key, request, body, max_length=MAX_ID_LENGTH,
                       header_fallback=header_fallback)


def segments_of(snapshot: Snapshot, request: Request, body: dict[str, Any], *,
                header_fallback: bool = False) -> dict[str, str] | None:
    """Each configured segment key's value by the key's name, those the request carries; None
    when it carries none (see :func:`keyed_value`)."""
    keys = snapshot.config.analysis.segments
    if not keys:
        return None
    values = {}
    for key in keys:
        value = keyed_value(key, request, body, max_length=MAX_SEGMENT_LENGTH,
                            header_fallback=header_fallback)
        if value is not None:
            values[key.name] = value
    return values or None
