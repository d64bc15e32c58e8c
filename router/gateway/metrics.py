"""``GET /metrics``: the gateway's Prometheus metrics, summed over worker processes if several.

Two kinds of figures, kept apart so that the request path stays cheap:

* Counted on the request path: requests by variant and status code, and their latency. The
  :func:`counted` wrapper around the prediction endpoints adds each answer to a
  :class:`RequestTally` of plain numbers (a dict lookup, a bisect and three adds, about a
  third of what a Prometheus counter and histogram take with their locks), which
  :meth:`Telemetry.refresh` moves into the metrics at scrape time.
* Already counted elsewhere: model errors and fallbacks (``PredictionService.counts``), shadow
  work (``ShadowMirror.counts()``), the outcome log (``OutcomeWriter``), reloads (``Reloader``).
  :meth:`Telemetry.refresh` copies them into metrics at scrape time, never per request:
  counters move by the difference since the last copy, gauges are set.
* Computed in the background: drift, rolling quality and output monitoring
  (``router.monitoring.gauges``), refreshed every ``monitoring.interval_s`` by a task of their
  own and never on a scrape, since computing them reads the outcome log.

With ``--workers N`` (N > 1), ``router serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory and ``prometheus_client`` keeps every value in a memory-mapped file per process; a
scrape, answered by any one worker, merges all the files. A worker's gauges are read from its
file, so each worker also refreshes its own every :data:`REFRESH_SECONDS`, and removes its live
gauges when it stops. What every worker serves alike (the config revision, the models) is read
from the scraped worker's snapshot by a collector.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from router.errors import ModelFailedError
from router.gateway import metrics_dir
from router.gateway.errors import status_of
from router.gateway.state import GatewayState
from router.monitoring import gauges as monitoring_gauges
from router.serving.assignment import CHALLENGER, CHAMPION
from router.stats.loader import monitoring_sections

__all__ = ["REFRESH_SECONDS", "TALLY", "RequestTally", "Telemetry", "counted", "metrics", "start"]

# How stale another worker's gauges may be in a scrape (multiprocess mode only).
REFRESH_SECONDS = 1.0
# The variant label of a request refused before a variant was chosen (bad input, overload).
NO_VARIANT = "none"
# Predictions take from well under a millisecond to a slow model's seconds; the client's
# default buckets start at 5 ms and would put every fast answer in the first one.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)

# No ``*_created`` series: multiprocess mode has none, and both modes should read the same.
disable_created_metrics()

# Created once per process, registered nowhere: the exposition registry of each app picks
# them up (in-process), or reads their files (multiprocess).
REQUESTS = Counter("router_requests", "Prediction requests answered, by variant and HTTP "
                   "status code (variant none: refused before one was chosen).",
                   ["variant", "code"], registry=None)
LATENCY = Histogram("router_request_duration_seconds", "Time from the prediction request's "
                    "arrival in the handler to its answer, by variant.", ["variant"],
                    buckets=LATENCY_BUCKETS, registry=None)
MODEL_ERRORS = Counter("router_model_errors", "Model calls that raised, by variant.",
                       ["variant"], registry=None)
FALLBACKS = Counter("router_challenger_fallbacks", "Requests a challenger failed that the "
                    "champion then answered (ab mode; every challenger together).",
                    registry=None)
SHADOW_OFFERED = Counter("router_shadow_offered", "Rows offered to the shadow challenger "
                         "(after sampling).", registry=None)
SHADOW_DONE = Counter("router_shadow_done", "Shadow rows the challenger scored.", registry=None)
SHADOW_DROPPED = Counter("router_shadow_dropped", "Shadow rows dropped: queue full, or not "
                         "scored within shadow.drain_s at shutdown.", registry=None)
SHADOW_FAILED = Counter("router_shadow_failed", "Shadow rows whose challenger call raised.",
                        registry=None)
SHADOW_TIMED_OUT = Counter("router_shadow_timed_out", "Shadow rows whose challenger call took "
                           "longer than shadow.timeout_ms.", registry=None)
SHADOW_QUEUE = Gauge("router_shadow_queue_depth", "Shadow rows queued or being scored.",
                     registry=None, multiprocess_mode="livesum")
LOG_BACKLOG = Gauge("router_outcome_log_backlog", "Outcome records (predictions and feedback) "
                    "accepted and not yet written to the store.", registry=None,
                    multiprocess_mode="livesum")
LOG_LAG = Gauge("router_outcome_log_lag_seconds", "Age of the oldest outcome record not yet "
                "written to the store (0 when none waits).", registry=None,
                multiprocess_mode="livemax")
LOG_SPILLED = Gauge("router_outcome_log_spilled", "Outcome records kept on local disk while the "
                    "store is unreachable, written back when it answers.", registry=None,
                    multiprocess_mode="livesum")
STORE_FAILING = Gauge("router_outcome_store_failing", "1 while the outcome store refuses writes "
                      "(records wait in memory, then on local disk), or the writer process has "
                      "read nothing for 5 s (records wait in memory), else 0.", registry=None,
                      multiprocess_mode="livemax")
STATS_KEPT = Gauge("router_stats_kept_bytes", "Bytes of analysis columns this gateway keeps "
                   "so that /stats and the monitoring gauges read only what was logged since "
                   "(about 110 a logged row of the current phase, at most 5 million rows).",
                   registry=None, multiprocess_mode="livesum")
LOG_WRITTEN = Counter("router_outcome_log_written", "Outcome records written to the store.",
                      registry=None)
LOG_WRITE_ERRORS = Counter("router_outcome_log_write_errors", "Store writes that failed (each "
                           "is retried until it succeeds).", registry=None)
LOG_DEAD_LETTERS = Counter("router_outcome_log_dead_letters", "Outcome records the store "
                           "refused one by one, set aside in the dead-letter file beside the "
                           "spill so that the others are written.", registry=None)
STORE_REOPENED = Counter("router_outcome_store_reopened", "Store files opened again after "
                         "they were removed or replaced while in use.", registry=None)
LOG_ORPHANED = Counter("router_outcome_log_orphaned", "Outcome records written to a store file "
                       "that was then removed or replaced: gone from the log unless that file "
                       "is restored.", registry=None)
LOG_LOST = Counter("router_outcome_log_lost", "Outcome records a writer process that was killed, "
                   "or that a shutdown gave up on, may have held unwritten (at most); records a "
                   "shutdown could neither hand over nor spill.", registry=None)
RELOADS = Counter("router_config_reloads", "Config changes applied while running (per worker "
                  "process: each one applies the file).", registry=None)
RELOAD_ERRORS = Counter("router_config_reload_errors", "Config files that failed to apply, the "
                        "running configuration kept (per worker process).", registry=None)

_PROCESS_METRICS: tuple[Collector, ...] = (
    REQUESTS, LATENCY, MODEL_ERRORS, FALLBACKS, SHADOW_OFFERED, SHADOW_DONE, SHADOW_DROPPED,
    SHADOW_FAILED, SHADOW_TIMED_OUT, SHADOW_QUEUE, LOG_BACKLOG, LOG_LAG, LOG_SPILLED,
    STORE_FAILING, STATS_KEPT, LOG_WRITTEN, LOG_WRITE_ERRORS, LOG_DEAD_LETTERS, STORE_REOPENED,
    LOG_ORPHANED, LOG_LOST, RELOADS, RELOAD_ERRORS, *monitoring_gauges.GAUGES)


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, or None in a single process."""
    return metrics_dir.current()


# -- the request path -------------------------------------------------------------------------

class RequestTally:
    """Answered predictions by variant and status code, with their latencies' histogram, as
    plain numbers until :meth:`drain` moves them into ``REQUESTS`` and ``LATENCY``.

    ``drain`` adds to the histogram's buckets and sum directly (``prometheus_client`` has no
    public call that adds a count to a bucket); ``tests/gateway/test_metrics.py`` checks that
    the exposition then reads as it would after one ``observe`` per request.
    """

    def __init__(self) -> None:
        # (variant, code) -> [requests, seconds, count per LATENCY_BUCKETS bound and +Inf]
        self._entries: dict[tuple[str, int], list[Any]] = {}

    def add(self, variant: str, code: int, seconds: float) -> None:
        entry = self._entries.get((variant, code))
        if entry is None:
            entry = self._entries[(variant, code)] = [0, 0.0, [0] * (len(LATENCY_BUCKETS) + 1)]
        entry[0] += 1
        entry[1] += seconds
        entry[2][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def drain(self, requests_metric: Counter = REQUESTS, latency_metric: Histogram = LATENCY
              ) -> None:
        """Move what was counted since the last drain into the Prometheus metrics (on the
        event loop, like every ``add``)."""
        entries, self._entries = self._entries, {}
        for (variant, code), (requests, seconds, buckets) in entries.items():
            requests_metric.labels(variant, str(code)).inc(requests)
            histogram = latency_metric.labels(variant)
            histogram._sum.inc(seconds)
            for value, count in zip(histogram._buckets, buckets, strict=True):
                if count:
                    value.inc(count)


TALLY = RequestTally()

for _variant in (CHAMPION, CHALLENGER):
    # Series that exist from the start read 0 instead of missing, so rate() sees the first one.
    REQUESTS.labels(_variant, "200")
    LATENCY.labels(_variant)
    MODEL_ERRORS.labels(_variant)


def counted(endpoint: Callable[[Request], Awaitable[Response]]
            ) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a prediction endpoint to count its requests and time them, by variant and status."""

    @functools.wraps(endpoint)
    async def wrapper(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await endpoint(request)
        except Exception as exc:
            count_failure(exc, started)
            raise
        count_answer(response, started)
        return response

    return wrapper


def count_answer(response: Response, started: float) -> None:
    """Count an answered prediction request that began at ``started`` (``perf_counter``)."""
    variant = getattr(response, "variant", None) or response.headers.get("x-variant", NO_VARIANT)
    TALLY.add(variant, response.status_code, time.perf_counter() - started)


def count_failure(exc: Exception, started: float) -> None:
    """Count a prediction request that failed with ``exc``, before its error is rendered."""
    # A failed model call is the champion's answer (the challenger falls back to it).
    variant = CHAMPION if isinstance(exc, ModelFailedError) else NO_VARIANT
    TALLY.add(variant, status_of(exc), time.perf_counter() - started)


# -- values that live elsewhere -----------------------------------------------------------------


class _SnapshotCollector(Collector):
    """The scraped process's config revision and loaded models, read when scraped."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        snapshot = self._state.snapshots.current
        revision = GaugeMetricFamily("router_config_revision",
                                     "Revision of the configuration being served.")
        revision.add_metric([], snapshot.revision)
        yield revision
        models = sorted(snapshot.models.items())
        # ServedModel.engine ("scikit-learn", "onnxruntime"); read with getattr so that a model
        # object without one (a test double, an older registry) still gets its info series.
        engines = {role: getattr(model, "engine", None) for role, model in models}
        with_engine = any(engine is not None for engine in engines.values())
        info = GaugeMetricFamily(
            "router_model_info", "Each loaded model (value 1), by role (champion, challenger, "
            "previous).", labels=["role", "model", "version", "sha256",
                                  *(["engine"] if with_engine else [])])
        for role, model in models:
            values = [role, snapshot.names[role], model.version, model.sha256]
            if with_engine:
                engine = engines[role]
                values.append("" if engine is None else str(getattr(engine, "name", engine)))
            info.add_metric(values, 1.0)
        yield info


class Telemetry:
    """One gateway's metrics: copies its counts into the process metrics, and renders them."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._seen: dict[Any, float] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        directory = multiprocess_dir()
        if directory is not None:
            multiprocess.MultiProcessCollector(self.registry, path=directory)
        else:
            for collector in _PROCESS_METRICS:
                self.registry.register(collector)
        self.registry.register(_SnapshotCollector(state))

    def _advance(self, counter: Any, total: float) -> None:
        """Move ``counter`` up to ``total``, a count kept elsewhere that only grows."""
        delta = total - self._seen.get(counter, 0)
        if delta > 0:
            counter.inc(delta)
            self._seen[counter] = total

    def refresh(self) -> None:
        """Copy the counts kept by the service, shadow mirror, writer and reloader.

        Runs on the event loop only (scrape and the periodic task), so two runs never race.
        """
        TALLY.drain()
        state = self.state
        counts = state.service.counts
        # Every variant served since start (several challengers are named), the two roles
        # always, so that their series exist from the first scrape.
        variants = {CHAMPION, CHALLENGER, *(variant for variant, _ in list(counts))}
        for variant in sorted(variants):
            self._advance(MODEL_ERRORS.labels(variant), counts[(variant, "errors")])
        self._advance(FALLBACKS, sum(counts[(variant, "fallbacks")] for variant in variants))
        writer = state.writer
        LOG_BACKLOG.set(writer.backlog)
        LOG_LAG.set(writer.lag_seconds)
        LOG_SPILLED.set(writer.spilled)
        STORE_FAILING.set(1 if writer.failing else 0)
        self._advance(LOG_WRITTEN, writer.written)
        self._advance(LOG_WRITE_ERRORS, writer.write_errors)
        self._advance(LOG_DEAD_LETTERS, writer.dead_letters)
        self._advance(STORE_REOPENED, writer.store_reopened)
        self._advance(LOG_ORPHANED, writer.orphaned)
        self._advance(LOG_LOST, writer.lost)
        STATS_KEPT.set(state.columns.kept_bytes())
        self._advance(RELOADS, state.reloader.reloads)
        self._advance(RELOAD_ERRORS, state.reloader.failures)
        if state.shadow is not None:
            shadow = state.shadow.counts()
            self._advance(SHADOW_OFFERED, shadow["offered"])
            self._advance(SHADOW_DONE, shadow["done"])
            self._advance(SHADOW_DROPPED, shadow["dropped"])
            self._advance(SHADOW_FAILED, shadow["failed"])
            self._advance(SHADOW_TIMED_OUT, shadow["timed_out"])
            SHADOW_QUEUE.set(shadow["queue_depth"])

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (OpenMetrics when the scraper asks for it) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    async def publish(self) -> None:
        """Multiprocess mode: keep this worker's gauges fresh for scrapes other workers answer;
        on cancellation (shutdown), remove them so a stopped worker stops counting."""
        try:
            while True:
                self.refresh()
                await asyncio.sleep(REFRESH_SECONDS)
        finally:
            TALLY.drain()  # the last second's answers, into this worker's file
            directory = multiprocess_dir()
            if directory is not None:
                with contextlib.suppress(OSError):
                    multiprocess.mark_process_dead(os.getpid(), directory)


def start(app: Starlette, state: GatewayState) -> None:
    """Give ``app`` its telemetry; with several workers, start this one's publishing task."""
    telemetry = Telemetry(state)
    app.state.telemetry = telemetry
    if multiprocess_dir() is not None:
        state.background.append(asyncio.create_task(telemetry.publish()))

    def report() -> dict[str, Any]:
        snapshot = state.snapshots.current
        return monitoring_sections(state.columns, snapshot.config, snapshot.models)

    monitor = monitoring_gauges.MonitoringGauges(
        report, lambda: state.snapshots.current.config.monitoring.interval_s)
    app.state.monitoring = monitor
    state.background.append(asyncio.create_task(monitor.run()))


async def metrics(request: Request) -> Response:
    telemetry: Telemetry = request.app.state.telemetry
    telemetry.refresh()
    # Merging the workers' files is file I/O: off the event loop.
    body, content_type = await asyncio.to_thread(telemetry.render, request.headers.get("accept"))
    return Response(body, media_type=content_type)
