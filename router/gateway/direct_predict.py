"""``POST /predict`` answered by the connection protocol itself when the request came whole.

Every prediction goes through the same endpoint, metrics and error renderer; what this path
leaves out is the ASGI exchange around them: uvicorn's request cycle task wrapper, its
``receive`` and ``send`` with their message dicts and per-header checks, the proxy-headers
middleware (``/predict`` does not read the client's address), and Starlette's response
machinery. On the prediction route that was 5 µs of the gateway's 51 of CPU per request
(docs/performance.md).

The protocol (``router.gateway.connections``) takes this path only when all of these hold:
the request is ``POST /predict``; its whole body arrived with its headers (otherwise the app
reads the rest under its body deadline); no ``Expect: 100-continue``; no access log; and the
app is the router's gateway with no middleware added (an added middleware must see every
request, so then every request goes through ASGI). Anything else is served as before.
"""

from __future__ import annotations

from typing import Any, Protocol

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

__all__ = ["DirectAnswer", "Predicting", "direct_gateway", "response_bytes"]

# What uvicorn refuses in a header value (response splitting): control characters but tab.
_CONTROL = bytes([*range(0x09), *range(0x0a, 0x20), 0x7f])
DirectAnswer = tuple[int, list[tuple[bytes, bytes]], bytes]


class Predicting(Protocol):
    """The gateway's side (``router.gateway.app.Gateway``)."""

    def direct_predict_open(self) -> bool: ...

    async def answer_predict(self, scope: Any, body: bytes) -> DirectAnswer: ...


def direct_gateway(app: Any) -> Predicting | None:
    """The router's gateway behind uvicorn's wrappers (proxy headers, message logger), or None
    when the app is something else."""
    for _ in range(8):  # uvicorn wraps an app at most twice; this bounds a cycle of wrappers
        if hasattr(app, "answer_predict") and hasattr(app, "direct_predict_open"):
            found: Predicting = app
            return found
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def response_bytes(status: int, headers: list[tuple[bytes, bytes]],
                   default_headers: list[tuple[bytes, bytes]], body: bytes, *,
                   keep_alive: bool) -> bytes:
    """The whole HTTP/1.1 answer, head and body, as uvicorn would have written it."""
    every = (*default_headers, *headers)
    # Every value looked at at once, by deleting what is refused (a C loop with a table):
    # a search a value cost about 1 % of the serving core, and a regex over all of them 1 %
    # of the event loop's instructions.
    values = b"\t".join([value for _, value in every])
    if len(values.translate(None, _CONTROL)) != len(values):
        name = next(name for name, value in every
                    if len(value.translate(None, _CONTROL)) != len(value))
        raise ValueError(f"invalid value in response header {name!r}")
    content = [STATUS_LINE[status]]
    for name, value in every:
        content += (name, b": ", value, b"\r\n")
    if not keep_alive:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", body)
    return b"".join(content)
