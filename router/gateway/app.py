"""The app factory and its lifespan: the gateway is a function of its config file."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from router.gateway import (
    admin,
    dashboard,
    endpoints,
    kserve,
    metrics,
    openapi,
    stats_route,
    v2,
)
from router.gateway.body_deadline import BODY_ARRIVED, receive_within
from router.gateway.direct_predict import DirectAnswer
from router.gateway.errors import EXCEPTION_HANDLERS, render_error
from router.gateway.state import GatewayState
from router.serving.registry import ModelRegistry
from router.thread_names import name_native_thread

CONFIG_ENV = "ROUTER_CONFIG"
BASE_DIR_ENV = "ROUTER_BASE_DIR"


def settle_heap() -> None:
    """Put what start-up allocated (libraries, models) out of the cyclic collector's reach.

    Measured on the prediction path (docs/performance.md): with scikit-learn, ONNX and the
    models loaded, each full collection walked the whole heap for about 120 ms, a third of the
    gateway's time under load and its p99; frozen, it takes a few milliseconds. A larger first
    threshold also makes collections rarer on a path that allocates per request.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


PREDICT = metrics.counted(endpoints.predict)


class Gateway(Starlette):
    """The Starlette app, with ``POST /predict`` answered before its routing while no
    middleware is added.

    The prediction route is the one every client calls many times a second; Starlette's
    middleware stack, route matching and send wrappers took about a fifth of the gateway's
    time per prediction (docs/performance.md). The same endpoint, the same error renderer
    and the same metrics serve it here. Once a middleware is added (``add_middleware``: CORS,
    authentication, tracing), ``/predict`` goes through Starlette like every other request,
    so that middleware sees it too.
    """

    # The started gateway's state, also at ``app.state.gateway`` for code that embeds the app.
    # A plain attribute: Starlette's ``State`` answers through a Python ``__getattr__``, about
    # 0.7 µs a lookup, and a prediction looked it up three times.
    gateway: GatewayState | None = None

    def attach(self, state: GatewayState) -> None:
        self.gateway = state
        self.state.gateway = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        if scope["type"] == "http" and gateway is not None and BODY_ARRIVED not in scope:
            receive = receive_within(receive, gateway.config.limits.body_timeout_s)
        if scope["type"] == "http" and scope["path"] == "/predict" \
                and scope["method"] == "POST" and not self.user_middleware:
            scope["app"] = self
            response = await _predict_response(Request(scope, receive))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def direct_predict_open(self) -> bool:
        """Whether the connection protocol may answer ``/predict`` itself
        (``router.gateway.direct_predict``): started, and no middleware added."""
        return not self.user_middleware and self.gateway is not None

    async def answer_predict(self, scope: Scope, body: bytes) -> DirectAnswer:
        """The answer to a ``POST /predict`` whose whole body is ``body``: status, headers
        and body, from the same endpoint and error renderer as through ASGI."""
        scope["app"] = self
        scope[endpoints.WHOLE_BODY] = body
        request = Request(scope, _whole_body(body))
        # PREDICT and _predict_response, written out: two coroutines fewer for every request
        # to create and step through.
        started = time.perf_counter()
        try:
            response = await endpoints.predict(request)
        except Exception as exc:
            metrics.count_failure(exc, started)
            response = await render_error(request, exc)
        else:
            metrics.count_answer(response, started)
        return response.status_code, response.raw_headers, bytes(response.body)


async def _predict_response(request: Request) -> Response:
    try:
        return await PREDICT(request)
    except Exception as exc:
        return await render_error(request, exc)


def _whole_body(body: bytes) -> Receive:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def create_app(config_path: str | Path, *, base_dir: str | Path | None = None,
               tune_gc: bool = False, registry: ModelRegistry | None = None) -> Starlette:
    """A gateway for one YAML file; relative paths in it resolve against ``base_dir`` (cwd).

    ``tune_gc`` (what ``router serve`` does) calls :func:`settle_heap` once the first snapshot
    is loaded, and gives the event loop a default executor whose threads carry their names to
    the OS (``router-io_N``); it changes process-wide settings, so an embedding application
    decides.
    ``registry`` may hold the models already loaded, which the first snapshot then reuses.
    """
    path = Path(config_path)
    base = Path(base_dir) if base_dir is not None else Path.cwd()

    @contextlib.asynccontextmanager
    async def lifespan(app: Gateway) -> AsyncIterator[None]:
        if tune_gc:
            # Before its first use: threads named where the OS shows them (the monitoring
            # gauges refresh there).
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(
                thread_name_prefix="router-io", initializer=name_native_thread))
        state = await asyncio.to_thread(GatewayState.start, path, base, registry)
        app.attach(state)
        if tune_gc:
            settle_heap()
        state.background.append(asyncio.create_task(state.reloader.watch()))
        state.background.append(asyncio.create_task(state.rollout.run()))
        metrics.start(app, state)
        try:
            yield
        finally:
            for task in state.background:
                task.cancel()
            # Awaited before the store closes: a task may still use it while it unwinds.
            await asyncio.gather(*state.background, return_exceptions=True)
            await asyncio.to_thread(state.stop)

    routes = [
        Route("/predict", PREDICT, methods=["POST"]),
        Route("/feedback", endpoints.feedback, methods=["POST"]),
        Route("/config", endpoints.config, methods=["GET"]),
        Route("/stats", stats_route.stats, methods=["GET"]),
        Route("/stats/timeline", stats_route.timeline, methods=["GET"]),
        Route("/history", stats_route.history, methods=["GET"]),
        Route("/dashboard", dashboard.page, methods=["GET"]),
        Route("/dashboard/", dashboard.to_page, methods=["GET"]),
        Route("/dashboard/static/{name}", dashboard.static, methods=["GET"]),
        Route("/health", endpoints.health, methods=["GET"]),
        Route("/ready", endpoints.ready, methods=["GET"]),
        Route("/metrics", metrics.metrics, methods=["GET"]),
        Route("/admin/promote", admin.promote, methods=["POST"]),
        Route("/admin/rollback", admin.rollback, methods=["POST"]),
        Route("/v1/models/{name}:predict", metrics.counted(kserve.predict), methods=["POST"]),
        Route("/v1/models/{name}", kserve.model_status, methods=["GET"]),
        *v2_routes(),
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
    ]
    app = Gateway(routes=routes, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    # Starlette would answer /stats/ with a redirect to an absolute URL built from the Host
    # header, which a client chooses: a 404 names the route instead.
    app.router.redirect_slashes = False
    return app


def v2_routes() -> list[Route]:
    """The Open Inference Protocol's REST routes, each with and without a version."""
    infer = v2.protocol_errors(metrics.counted(v2.infer))
    routes = [Route("/v2", v2.protocol_errors(v2.server_metadata), methods=["GET"]),
              Route("/v2/health/live", v2.protocol_errors(v2.server_live), methods=["GET"]),
              Route("/v2/health/ready", v2.protocol_errors(v2.server_ready), methods=["GET"])]
    for model in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(f"{model}/infer", infer, methods=["POST"]),
                   Route(f"{model}/ready", v2.protocol_errors(v2.model_ready), methods=["GET"]),
                   Route(model, v2.protocol_errors(v2.model_metadata_route), methods=["GET"])]
    return routes


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` and ``router serve --workers N``: reads two variables."""
    config = os.environ.get(CONFIG_ENV)
    if not config:
        raise RuntimeError(f"{CONFIG_ENV} is not set")
    return create_app(config, base_dir=os.environ.get(BASE_DIR_ENV) or None, tune_gc=True)
