"""``GET /dashboard``: the experiment's web page, shipped inside the package.

The page (``router/dashboard/``) is one HTML file, a stylesheet and four scripts (shared
helpers, the segment table, the traffic cards, the page's loop), read from the installed
package once and then served from memory. The scripts read ``/stats``, ``/stats/timeline``,
``/config`` and ``/history`` from the same gateway every few seconds and draw the charts as SVG
themselves: no CDN, no library, so it works without internet. The Content-Security-Policy
allows nothing but this origin, which keeps it that way.
"""

from __future__ import annotations

import functools
from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

ASSETS = {
    "helpers.js": "text/javascript; charset=utf-8",
    "segments.js": "text/javascript; charset=utf-8",
    "traffic.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# The files change only with the package; revalidating costs a tiny request, and an upgraded
# gateway is never shown with a stale script.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


@functools.cache
def asset(name: str) -> bytes:
    """A file of ``router/dashboard/``, read once."""
    return (resources.files("router") / "dashboard" / name).read_bytes()


async def page(request: Request) -> Response:
    return Response(asset("index.html"), media_type="text/html; charset=utf-8",
                    headers={**HEADERS, "Content-Security-Policy": POLICY})


async def to_page(request: Request) -> Response:
    """``/dashboard/``, as people type it: the page's relative links would miss from there, so
    the browser is sent to ``/dashboard`` by a relative reference, which names no host (a
    Host header cannot send it elsewhere) and keeps a proxy's path prefix. Not cached, as the
    page is not: a browser would otherwise keep a permanent redirect for ever."""
    return Response(status_code=308, headers={**HEADERS, "Location": "../dashboard"})


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise HTTPException(404)
    return Response(asset(name), media_type=ASSETS[name], headers=HEADERS)
