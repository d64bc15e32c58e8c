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
(``router.live.rollout_plan``).
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
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from router.config import RouterConfig
from router.errors import RouterError
from router.live.rollout_plan import Move, RolloutView, plan, switch_details
from router.live.switch import move_traffic, switch
from router.outcomes import ExperimentState

if TYPE_CHECKING:
    pass

log = logging.getLogger("router.live.rollout")


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
        details = switch_details(view, move.challenger)
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
