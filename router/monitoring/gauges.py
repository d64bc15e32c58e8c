"""The monitoring gauges of ``/metrics``, refreshed by a background task, never on a scrape.

A scrape only reads values already set: :class:`MonitoringGauges` computes the report's drift,
rolling quality and outputs off the event loop every ``monitoring.interval_s`` seconds, and at
least :data:`COST_FACTOR` times as long as the last computation took, so that over a large log
the gauges cost at most a two-hundredth of the core that serves; then it sets every gauge at once,
on the event loop.
A failed computation (the store unreachable) keeps the last values and leaves
``router_monitoring_refreshed_timestamp_seconds`` where it was, which an alert watches.

Metric labels: ``router_rolling_metric{variant, metric}`` carries ``accuracy``,
``macro_precision``, ``macro_recall``, ``macro_f1`` and per class ``precision:<class>``,
``recall:<class>``, ``f1:<class>`` (a classifier), or ``mae``, ``rmse``, ``mean_error`` (a
regressor). ``router_model_recorded_metric{variant, metric}`` carries the numeric metrics saved
with each model, the level a drop is read against.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import Gauge

from router.errors import StoreError

__all__ = ["COST_FACTOR", "GAUGES", "LONGEST_WAIT_S", "MonitoringGauges", "publish", "wait_after"]

log = logging.getLogger("router.monitoring")

# The computation runs on the serving process and holds its interpreter lock for most of its
# time. It once computed the whole report from every logged row: over 200,000 rows that took
# 0.4 s, every 5 s, 8 % of the core that serves, and a factor of 5 allowed up to a fifth. At
# 50 the refresh still took 2 % of a busy core (1.4 µs a request at 13,600 requests/s): over
# 100,000 rows, a read of 0.1 to 0.3 s now comes every 20 s to a minute under full load, every
# interval_s otherwise.
COST_FACTOR = 200.0
# ...but never longer than this between refreshes (unless interval_s says so): the staleness
# alert (deploy/prometheus/alerts.yaml) fires after 300 s.
LONGEST_WAIT_S = 120.0
_DRIFT_LEVEL = {"stable": 0.0, "moderate": 1.0, "major": 2.0}


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> Gauge:
    # Every worker computes the same figures from the same log: the latest one set is the answer.
    return Gauge(name, documentation, list(labels), registry=None,
                 multiprocess_mode="livemostrecent")


FEATURE_PSI = _gauge("router_feature_psi", "PSI of each feature's latest live values against "
                     "the champion's training histogram.", ["feature"])
FEATURE_DRIFT = _gauge("router_feature_drift", "Drift of each feature: 0 stable, 1 moderate, "
                       "2 major (PSI over its threshold and significant after "
                       "Benjamini-Hochberg).", ["feature"])
PREDICTION_PSI = _gauge("router_prediction_psi", "PSI of each variant's predictions against "
                        "those of its model on the training data.", ["variant"])
PREDICTION_DRIFT = _gauge("router_prediction_drift", "Drift of each variant's predictions: "
                          "0 stable, 1 moderate, 2 major.", ["variant"])
ROLLING_METRIC = _gauge("router_rolling_metric", "Quality over each variant's latest "
                        "monitoring.window labelled outcomes.", ["variant", "metric"])
ROLLING_LABELLED = _gauge("router_rolling_labelled", "Labelled outcomes in each variant's "
                          "rolling window.", ["variant"])
RECORDED_METRIC = _gauge("router_model_recorded_metric", "Metrics recorded with each variant's "
                         "model when it was saved.", ["variant", "metric"])
CONSTANT_OUTPUT = _gauge("router_constant_output", "1 when one class (or value) takes over 99 % "
                         "of a variant's latest predictions against mixed training "
                         "predictions, else 0.", ["variant"])
REFRESHED = _gauge("router_monitoring_refreshed_timestamp_seconds", "Unix time of the last "
                   "successful refresh of the monitoring gauges.")

GAUGES = (FEATURE_PSI, FEATURE_DRIFT, PREDICTION_PSI, PREDICTION_DRIFT, ROLLING_METRIC,
          ROLLING_LABELLED, RECORDED_METRIC, CONSTANT_OUTPUT, REFRESHED)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _rolling_values(entry: Mapping[str, Any]) -> dict[str, float]:
    values = {name: _number(entry.get(name)) for name in (
        "accuracy", "macro_precision", "macro_recall", "macro_f1", "mae", "rmse", "mean_error")}
    for label, scores in (entry.get("classes") or {}).items():
        for name in ("precision", "recall", "f1"):
            values[f"{name}:{label}"] = _number(scores.get(name))
    return {name: value for name, value in values.items() if value is not None}


class _Series:
    """The label sets one refresh set on a gauge; those set before and not now are removed."""

    def __init__(self) -> None:
        self._seen: dict[Gauge, set[tuple[str, ...]]] = {}

    def set(self, gauge: Gauge, values: Mapping[tuple[str, ...], float]) -> None:
        for labels in self._seen.get(gauge, set()) - set(values):
            gauge.remove(*labels)
        for labels, value in values.items():
            gauge.labels(*labels).set(value)
        self._seen[gauge] = set(values)


_series = _Series()


def publish(report: Mapping[str, Any], now: float | None = None) -> None:
    """Set every monitoring gauge from a ``/stats`` report (its drift, rolling and outputs)."""
    drift = report.get("drift") or {}
    features = drift.get("features") or {}
    _series.set(FEATURE_PSI, {(name,): f["psi"] for name, f in features.items()
                              if _number(f.get("psi")) is not None})
    _series.set(FEATURE_DRIFT, {(name,): _DRIFT_LEVEL[f["status"]]
                                for name, f in features.items() if f.get("status")})
    predictions = drift.get("predictions") or {}
    _series.set(PREDICTION_PSI, {(role,): p["psi"] for role, p in predictions.items()
                                 if _number(p.get("psi")) is not None})
    _series.set(PREDICTION_DRIFT, {(role,): _DRIFT_LEVEL[p["status"]]
                                   for role, p in predictions.items() if p.get("status")})
    rolling = (report.get("rolling") or {}).get("variants") or {}
    _series.set(ROLLING_METRIC, {(role, name): value for role, entry in rolling.items()
                                 for name, value in _rolling_values(entry).items()})
    _series.set(ROLLING_LABELLED, {(role,): float(entry.get("labelled") or 0)
                                   for role, entry in rolling.items()})
    _series.set(RECORDED_METRIC, {
        (role, str(name)): float(value) for role, entry in rolling.items()
        for name, value in (entry.get("recorded") or {}).items() if _number(value) is not None})
    outputs = (report.get("outputs") or {}).get("variants") or {}
    _series.set(CONSTANT_OUTPUT, {(role,): 1.0 if entry.get("constant_output") else 0.0
                                  for role, entry in outputs.items()})
    REFRESHED.set(time.time() if now is None else now)


class MonitoringGauges:
    """The background task: compute a report off the event loop, then publish it.

    Args:
        compute: returns the current report's ``drift``, ``rolling`` and ``outputs`` (blocking:
            run in a thread).
        interval_s: returns the configured refresh interval (read each time: it may be
            reloaded).
    """

    def __init__(self, compute: Callable[[], Mapping[str, Any]],
                 interval_s: Callable[[], float]) -> None:
        self._compute = compute
        self._interval_s = interval_s
        self.refreshes = 0
        self.last_error: str | None = None  # the last refresh's fault, logged once

    async def refresh(self) -> float:
        """One refresh; returns how long the computation took (seconds)."""
        started = time.monotonic()
        try:
            report = await asyncio.to_thread(self._compute)
        except Exception as exc:
            # The store at fault: /ready and /metrics say so already, one line is enough; any
            # other fault with its traceback. Either only when it changes, not every refresh.
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self.last_error:
                log.warning("monitoring gauges not refreshed: %s", problem,
                            exc_info=not isinstance(exc, StoreError))
            self.last_error = problem
            return time.monotonic() - started
        took = time.monotonic() - started
        publish(report)
        self.refreshes += 1
        self.last_error = None
        return took

    async def run(self) -> None:
        while True:
            took = await self.refresh()
            await asyncio.sleep(wait_after(took, self._interval_s()))


def wait_after(took: float, interval_s: float) -> float:
    """Seconds between a refresh that took ``took`` seconds and the next one."""
    return max(interval_s, min(COST_FACTOR * took, LONGEST_WAIT_S))
