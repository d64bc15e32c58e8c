"""Simulated traffic for a gateway: held-out rows as requests, their true labels as late feedback.

Each request is one held-out row (named features), sent as a user drawn from a large pool with
the gateway's sticky key, so a user keeps its variant. The true label of a request is held back
until ``feedback_delay`` more requests have been answered, then sent with others in one
``POST /feedback`` of ``feedback_batch`` items: ground truth that arrives later, in bulk, as a
labelling job would send it. Only the standard library speaks HTTP here (``http.client``, one
keep-alive connection per thread of a small pool), so the simulator adds no dependency.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from router.demo.client import (
    Connection,
    GatewayInfo,
    SimulationError,
    gateway_info,
    get_json,
)
from router.demo.progress import ProgressBar

__all__ = [
    "GatewayInfo",
    "ProgressBar",
    "SimulationError",
    "SimulationResult",
    "Simulator",
    "gateway_info",
    "get_json",
    "holdout_rows",
    "shifted",
]

# Large against the requests of a demo, so that few users repeat: the gateway's sample-ratio
# check counts requests, and many requests per user would cluster them and widen its spread.
DEFAULT_USERS = 100_000
DEFAULT_CONCURRENCY = 8
DEFAULT_FEEDBACK_DELAY = 200
DEFAULT_FEEDBACK_BATCH = 100


@dataclass
class SimulationResult:
    """Running totals of a simulation; ``failed`` maps an HTTP status or error name to a count."""

    sent: int = 0
    answered: int = 0
    variants: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    labels_sent: int = 0
    feedback_batches: int = 0
    feedback_failed: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Answered requests per second."""
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: what was sent, answered per variant, failed, and labelled."""
        variants = ", ".join(f"{name} {count}" for name, count in sorted(self.variants.items()))
        failed = sum(self.failed.values())
        failures = ""
        if failed:
            failures = " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.failed.items())) + ")"
        return (f"{self.answered}/{self.sent} requests answered ({variants or 'none'}) in "
                f"{self.seconds:.1f} s, {self.rate:.0f}/s; {failed} failed{failures}; "
                f"{self.labels_sent} labels sent as feedback in {self.feedback_batches} batches"
                + (f", {self.feedback_failed} not accepted" if self.feedback_failed else ""))


def holdout_rows(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(X, y, feature_names)`` from a held-out file written by ``router train-demo``."""
    path = Path(path)
    if not path.is_file():
        raise SimulationError(f"no held-out rows at {path}; run `router train-demo` first, "
                              "or pass --holdout")
    with np.load(path, allow_pickle=False) as data:
        return data["X"], data["y"], data["feature_names"].tolist()


def shifted(X: np.ndarray, feature_names: list[str], drift: Mapping[str, float]
            ) -> np.ndarray:
    """``X`` with each feature of ``drift`` moved by that many of its standard deviations.

    Raises :class:`SimulationError` naming a feature the rows do not have.
    """
    unknown = sorted(set(drift) - set(feature_names))
    if unknown:
        raise SimulationError(f"--drift names features the rows do not have: "
                              f"{', '.join(unknown)} (they have {', '.join(feature_names)})")
    out = X.copy()
    for name, shift in drift.items():
        j = feature_names.index(name)
        out[:, j] += shift * float(np.std(X[:, j]))
    return out


@dataclass(frozen=True, slots=True)
class _Label:
    answered_at: int  # the simulation's answered count when this request was answered
    request_id: str
    label: str


class Simulator:
    """Sends held-out rows to a gateway from a small thread pool, and their labels later.

    Feedback not yet due at the end of :meth:`run` stays pending into the next call (the
    demo runs in rounds); :meth:`flush_feedback` sends all of it.

    Args:
        url: the gateway's base URL.
        X, y: held-out rows (in ``feature_names`` order) and their true labels.
        feature_names: the names of ``X``'s columns; must be the gateway's features.
        info: the gateway's settings (:func:`gateway_info`); read from ``url`` when omitted.
        users: size of the pool user ids are drawn from.
        concurrency: threads, each with its own keep-alive connection.
        feedback_delay: answered requests to wait before a label is due.
        feedback_batch: labels per ``POST /feedback``.
        seed: for the choice of rows and users.
        drift: feature name -> shift in standard deviations (of that feature in ``X``), added
            to every row sent, so that a demo can show input drift on purpose.
    """

    def __init__(self, url: str, X: np.ndarray, y: np.ndarray, feature_names: list[str], *,
                 info: GatewayInfo | None = None, users: int = DEFAULT_USERS,
                 concurrency: int = DEFAULT_CONCURRENCY,
                 feedback_delay: int = DEFAULT_FEEDBACK_DELAY,
                 feedback_batch: int = DEFAULT_FEEDBACK_BATCH, seed: int | None = None,
                 drift: Mapping[str, float] | None = None) -> None:
        if users < 1 or concurrency < 1 or feedback_delay < 0 or feedback_batch < 1:
            raise ValueError("users, concurrency and feedback_batch must be >= 1, "
                             "feedback_delay >= 0")
        self.url = url.rstrip("/")
        self.info = info if info is not None else gateway_info(self.url)
        missing = sorted(set(self.info.features) - set(feature_names))
        if missing:
            raise SimulationError(
                f"the gateway's model takes features the held-out rows lack: "
                f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        columns = [feature_names.index(name) for name in self.info.features]
        X = shifted(np.asarray(X, dtype=np.float64), feature_names, drift or {})
        # Encoded once: a row's features never change, only its user does.
        self._rows = [orjson.dumps(dict(zip(self.info.features, row, strict=True)))
                      for row in X[:, columns].tolist()]
        self._labels = [str(label) for label in np.asarray(y).tolist()]
        self._users = users
        self._concurrency = concurrency
        self._delay = feedback_delay
        self._batch = feedback_batch
        self._rng = random.Random(seed)
        key = self.info.sticky_key
        source, _, name = (key or "").partition(":")
        self._header = name if source == "header" else None
        self._body_field = name if source == "body" else None
        self.result = SimulationResult()
        self._lock = threading.Lock()
        self._pending: deque[_Label] = deque()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._quota = 0  # requests of the current run not yet drawn

    # -- sending --------------------------------------------------------------------------

    def _draw(self) -> tuple[int, str] | None:
        """The next request's row and user, or None when the quota is used up or stopping."""
        with self._lock:
            if self._stop.is_set() or self._quota <= 0:
                return None
            self._quota -= 1
            self.result.sent += 1
            return self._rng.randrange(len(self._rows)), f"user-{self._rng.randrange(self._users)}"

    def _predict(self, connection: Connection, row: int, user: str) -> None:
        headers = {self._header: user} if self._header else None
        body = self._rows[row]
        if self._body_field is not None:
            body = b'{"features":' + body + b',' + orjson.dumps(self._body_field) + b':' \
                + orjson.dumps(user) + b'}'
        else:
            body = b'{"features":' + body + b'}'
        try:
            status, payload = connection.request("POST", "/predict", body, headers)
        except ConnectionRefusedError:
            # The gateway is gone: stop everyone rather than count thousands of failures.
            with self._lock:
                self.result.failed["connection refused"] += 1
            self._stop.set()
            return
        except OSError as exc:
            with self._lock:
                self.result.failed[type(exc).__name__] += 1
            return
        if status != 200:
            with self._lock:
                self.result.failed[str(status)] += 1
            return
        answer = orjson.loads(payload)
        with self._lock:
            self.result.answered += 1
            self.result.variants[answer["variant"]] += 1
            self._pending.append(_Label(self.result.answered, answer["request_id"],
                                        self._labels[row]))

    def _due(self, everything: bool) -> list[_Label]:
        """Pop a batch of labels that are due (all pending ones with ``everything``)."""
        with self._lock:
            if everything:
                ready = len(self._pending)
            else:
                horizon = self.result.answered - self._delay
                ready = 0
                for item in self._pending:
                    if item.answered_at > horizon or ready == self._batch:
                        break
                    ready += 1
                if ready < self._batch:
                    return []
            return [self._pending.popleft() for _ in range(min(ready, self._batch))]

    def _send_feedback(self, connection: Connection, batch: list[_Label]) -> None:
        body = orjson.dumps({"feedback": [{"request_id": item.request_id, "label": item.label}
                                          for item in batch]})
        status = 0
        # A keep-alive connection the server just closed, or a busy gateway, is worth another
        # try: a label sent twice is harmless (the latest per request id counts).
        for attempt in range(3):
            try:
                status, _ = connection.request("POST", "/feedback", body)
            except OSError:
                status = 0
            if status == 202:
                break
            time.sleep(0.1 * (attempt + 1))
        with self._lock:
            if status == 202:
                self.result.labels_sent += len(batch)
                self.result.feedback_batches += 1
            else:
                self.result.feedback_failed += len(batch)

    def _work(self) -> None:
        connection = Connection(self.url)
        try:
            while (draw := self._draw()) is not None:
                self._predict(connection, *draw)
                batch = self._due(everything=False)
                if batch:
                    self._send_feedback(connection, batch)
        finally:
            connection.close()

    # -- running --------------------------------------------------------------------------

    def run(self, requests: int, progress: Callable[[SimulationResult], None] | None = None,
            ) -> SimulationResult:
        """Send ``requests`` requests and every label that falls due meanwhile.

        Blocks until they are answered; ``progress`` is called about ten times a second with
        the running totals. Ctrl-C (``KeyboardInterrupt``) stops sending, waits for the
        requests in flight to be answered, and propagates.
        """
        self._quota = requests
        self._stop.clear()
        started = time.perf_counter()
        elapsed_before = self.result.seconds
        self._threads = [threading.Thread(target=self._work, name=f"simulate-{i}", daemon=True)
                         for i in range(min(self._concurrency, max(1, requests)))]
        try:
            for thread in self._threads:
                thread.start()
            while alive := [thread for thread in self._threads if thread.is_alive()]:
                alive[0].join(0.1)
                self.result.seconds = elapsed_before + time.perf_counter() - started
                if progress is not None:
                    progress(self.result)
        except KeyboardInterrupt:
            self.stop()
            raise
        finally:
            self.result.seconds = elapsed_before + time.perf_counter() - started
        if self.result.failed["connection refused"]:
            raise SimulationError(f"the gateway at {self.url} refused connections")
        return self.result

    def stop(self) -> None:
        """Send nothing more, and wait for the requests in flight (their labels are kept).

        Waiting matters: an answer that arrived after a flush of the labels would lose its own.
        """
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    @property
    def pending_labels(self) -> int:
        """Labels held back, not yet sent."""
        with self._lock:
            return len(self._pending)

    def flush_feedback(self) -> None:
        """Send every label still held back, in batches."""
        connection = Connection(self.url)
        try:
            while batch := self._due(everything=True):
                self._send_feedback(connection, batch)
        finally:
            connection.close()


