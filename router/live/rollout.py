"""Automated progressive delivery: step the challenger's share up, or roll back, by the numbers.

With a ``rollout:`` section and ``mode: ab``, one process (the holder of a lease) looks every
``interval_s``: it moves ``challenger_percent`` to the next of ``steps`` once the current phase
has ``analysis.min_samples`` labelled per variant and the decision is not ``rollback``; it
rolls back by itself on a rollback decision (a guardrail breach or a significantly worse
challenger) when ``auto_rollback`` is set; at the last step it promotes only with
``auto_promote`` and a ``promote`` decision. Each move is a rewrite of the YAML plus a history
entry carrying the figures behind it.

With ``steps`` opening on ``shadow`` (``[shadow, 5, 25, 50]``) and ``mode: shadow``, the
challenger is first judged on mirrored traffic that no user sees: once the paired comparison
has ``min_samples`` labelled pairs, its guardrails judged and held, and the decision is not
``rollback``, the file moves to ``mode: ab`` at the first percentage; a worse challenger is
rolled back (stopped) in shadow, before any user was served by it.

With several challengers each one is stepped, stopped and promoted on its own decision
(``router.live.rollout_arms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from router.config import RouterConfig
from router.errors import RouterError
from router.live.switch import move_traffic, switch
from router.outcomes import ExperimentState

if TYPE_CHECKING:
    from router.stats.model import Report

log = logging.getLogger("router.live.rollout")


@dataclass(frozen=True)
class RolloutView:
    """What the controller needs to know of the experiment's current phase."""

    action: str  # the decision: promote | continue | rollback
    reasons: tuple[str, ...]
    labelled: dict[str, int]  # per variant, in the current phase
    figures: dict[str, Any] = field(default_factory=dict)  # recorded with each move
    guardrails_judged: bool = True  # every configured guardrail is held or breached
    # Several challengers: each one's view by variant, and the challenger the summary names.
    arms: dict[str, RolloutView] = field(default_factory=dict)
    challenger: str | None = None


@dataclass(frozen=True)
class Move:
    kind: str  # step | rollback | promote
    reason: str
    percent: float | None = None
    challenger: str | None = None  # several challengers: which one (None: every one)


def view_of_report(report: Report) -> RolloutView:
    """What the controller reads of a report of the current phase: the typed decision and the
    labelled counts it rests on, and the figures to record with a move."""
    if report.arms:
        from router.live.rollout_arms import arms_view

        return arms_view(report)
    variants = report.json.get("variants", {})
    comparison = report.json.get("comparison") or {}
    figures = {key: comparison.get(key) for key in (
        "metric", "difference", "difference_ci95", "difference_cs", "p_value",
        "sequential_p_value")}
    for role, numbers in variants.items():
        figures[f"{role}_metric"] = numbers.get("metric")
        figures[f"{role}_requests"] = numbers.get("requests")
        figures[f"{role}_error_rate"] = numbers.get("error_rate")
    inputs = report.inputs
    labelled = ({"champion": inputs.labelled_champion,
                 "challenger": inputs.labelled_challenger} if inputs is not None
                else {role: int(numbers.get("labelled") or 0)
                      for role, numbers in variants.items()})
    judged = inputs is None or all(check.state != "not enough data"
                                   for check in inputs.guardrails or ())
    return RolloutView(action=report.decision.action, reasons=report.decision.reasons,
                       labelled=labelled, figures=figures, guardrails_judged=judged)


def plan(config: RouterConfig, view: RolloutView) -> Move | None:
    """The next move, or None to hold; pure, so every rule is tested without a server."""
    rollout = config.rollout
    if rollout is None or not config.arms:
        return None
    if config.multi_challenger:
        from router.live.rollout_arms import plan_arms

        return plan_arms(config, view)
    if config.mode == "shadow" and rollout.from_shadow:
        return _plan_shadow(config, view)
    if config.mode != "ab":
        return None
    why = "; ".join(view.reasons)
    if view.action == "rollback":
        return Move("rollback", f"automatic rollback: {why}") if rollout.auto_rollback else None
    percent = config.traffic.challenger_percent
    if percent < rollout.steps[0]:
        return Move("step", f"rollout starts at {rollout.steps[0]:g}%", rollout.steps[0])
    needed = config.analysis.min_samples
    short = {v: n for v, n in view.labelled.items() if n < needed}
    if short or len(view.labelled) < 2:
        return None
    if percent >= rollout.steps[-1]:
        if rollout.auto_promote and view.action == "promote":
            return Move("promote", f"automatic promotion at {percent:g}%: {why}")
        return None
    following = next(step for step in rollout.steps if step > percent)
    return Move("step", f"{percent:g}% healthy with {min(view.labelled.values())} labelled per "
                        f"variant (decision {view.action}); moving to {following:g}%", following)


def _plan_shadow(config: RouterConfig, view: RolloutView) -> Move | None:
    """The shadow stage: the challenger answers no user yet. A worse challenger (or a breached
    guardrail) is stopped here; one not found worse, with ``min_samples`` labelled pairs and
    its guardrails judged, gets the first percentage of users."""
    rollout = config.rollout
    assert rollout is not None
    why = "; ".join(view.reasons)
    if view.action == "rollback":
        return (Move("rollback", f"automatic rollback in shadow, before any user was served by "
                                 f"the challenger: {why}") if rollout.auto_rollback else None)
    pairs = min(view.labelled.values(), default=0)
    if pairs < config.analysis.min_samples or not view.guardrails_judged:
        return None
    first = rollout.steps[0]
    return Move("step", f"shadow healthy with {pairs} labelled pairs (decision {view.action}); "
                        f"serving {first:g}% of users", first)


class FileLease:
    """Leadership among processes sharing a config file: an exclusive ``flock``.

    The kernel drops the lock when its holder dies, so another process takes over at its next
    try. Works across the workers of one machine (several machines share a PostgreSQL store
    and need a lease there).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def try_acquire(self) -> bool:
        if self._handle is not None:
            return True
        handle = self.path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class PostgresLease:
    """Leadership among gateways on several machines: a PostgreSQL session advisory lock.

    Held on a connection of its own; when the holder dies its connection closes and the
    server frees the lock, so another gateway takes over at its next try.
    """

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self._connection: Any = None

    @property
    def held(self) -> bool:
        return self._connection is not None

    def try_acquire(self) -> bool:
        import psycopg

        if self._connection is not None:
            try:
                self._connection.execute("SELECT 1")
                return True
            except psycopg.Error:
                self.release()  # connection lost: the server freed the lock; try again
        try:
            connection = psycopg.connect(self.url, autocommit=True, connect_timeout=3)
        except psycopg.Error:
            return False
        row = connection.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                                 (f"router-rollout:{self.name}",)).fetchone()
        if not row or not row[0]:
            connection.close()
            return False
        self._connection = connection
        return True

    def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


def lease_for(store_url: str, config_path: Path, experiment: str) -> FileLease | PostgresLease:
    """The lease that reaches every gateway of the experiment: the database when it is shared
    across machines, else a file beside the YAML (workers of one machine)."""
    if store_url.startswith(("postgresql://", "postgres://")):
        return PostgresLease(store_url, experiment)
    return FileLease(config_path.parent / f".{config_path.name}.rollout")


class RolloutController:
    """Runs ``plan`` every interval while holding the lease, and carries out its moves."""

    def __init__(self, config_path: Path, base_dir: Path, store: ExperimentState,
                 current_config: Callable[[], RouterConfig],
                 evaluate: Callable[[], RolloutView], apply: Callable[[], object],
                 lease: FileLease | PostgresLease | None = None) -> None:
        self.config_path = config_path
        self.base_dir = base_dir
        self.store = store
        self.current_config = current_config
        self.evaluate = evaluate
        self.apply = apply  # makes the rewritten file current in this process at once
        self.lease = lease or FileLease(config_path.parent / f".{config_path.name}.rollout")
        self.moves = 0
        self._last_look = 0.0
        # Which gateway moved it: the history then shows when leadership changed hands.
        self.actor = f"rollout@{socket.gethostname()}:{os.getpid()}"

    def tick(self) -> Move | None:
        """One look: plan and carry out a move if due (blocking; run in a thread)."""
        config = self.current_config()
        if config.rollout is None or config.mode not in ("ab", "shadow") \
                or not self.lease.try_acquire():
            return None
        now = time.monotonic()
        if not self._last_look:
            self._last_look = now  # a new leader waits one interval, as after any move
            return None
        if now - self._last_look < config.rollout.interval_s:
            return None
        self._last_look = now
        view = self.evaluate()
        move = plan(config, view)
        if move is None:
            return None
        # With several challengers, the figures of the one moved (the summary's otherwise).
        judged = view.arms.get(move.challenger or "", view)
        details = {**judged.figures, "decision": judged.action,
                   "reasons": list(judged.reasons)}
        if move.kind == "step":
            assert move.percent is not None
            move_traffic(move.percent, self.config_path, self.base_dir, self.store,
                         reason=move.reason, actor=self.actor, details=details,
                         challenger=move.challenger)
        else:
            switch(move.kind, self.config_path, self.base_dir, self.store, reason=move.reason,
                   actor=self.actor, details=details, challenger=move.challenger)
        self.moves += 1
        log.info("rollout: %s (%s)", move.kind, move.reason)
        self.apply()
        return move

    async def run(self, poll_seconds: float = 0.5) -> None:
        """Look again and again until cancelled; errors are logged and the loop goes on."""
        try:
            while True:
                await asyncio.sleep(poll_seconds)
                try:
                    await asyncio.to_thread(self.tick)
                except RouterError as exc:
                    log.warning("rollout: no move: %s", exc.message)
                except Exception:
                    log.exception("rollout: unexpected error")
        finally:
            self.lease.release()
