"""The framework's ceiling, for comparison: a bare Starlette endpoint that answers a constant.

Served by ``uvicorn bench.ceiling_app:app --no-access-log`` (uvloop and httptools, as the
router is), so the gap between it and the router is what the router itself costs.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# The size of the router's single answer, so both put the same bytes on the wire.
ANSWER = (b'{"request_id":"00000000000000000000000000000000","variant":"champion",'
          b'"model":"iris-rf","version":"1","prediction":"setosa","probability":1.0,'
          b'"probabilities":{"setosa":1.0,"versicolor":0.0,"virginica":0.0}}')


async def predict(request: Request) -> Response:
    return Response(ANSWER, media_type="application/json")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
