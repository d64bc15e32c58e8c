"""Live reload: watch the YAML and the store, build the next Snapshot aside, swap it when whole.

The file is polled (a ``stat`` every 0.5 s, so a save takes effect well within 2 s, on every
file system and inside containers where inotify does not see a ConfigMap's symlink swap), and
so is the store's switch state (once a second), through which switches made on other gateways
arrive (see ``router.live.sync``). A change is parsed and validated, its models are loaded off the
event loop (the registry reuses already loaded ones by path and digest), and only then is the
Snapshot swapped. A file that fails leaves the running Snapshot in place and its error in
``last_error`` until a good file arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from router.config import RouterConfig, load_config
from router.errors import ConfigError, ConfigProblem, RouterError
from router.live.sync import Resolved, resolve
from router.live.yamledit import edit_file
from router.outcomes import ExperimentState
from router.serving.model import ServedModel
from router.serving.registry import ModelRegistry
from router.serving.snapshot import Snapshot, SnapshotHolder, config_digest, load_models

log = logging.getLogger("router.live.reload")

POLL_SECONDS = 0.5
STORE_POLL_SECONDS = 1.0
MAX_REREADS = 5  # a file saved over and over still starts the gateway

FileSignature = tuple[int, int, int] | None


def file_signature(path: Path) -> FileSignature:
    """What changes when the file is saved or replaced: inode, size and mtime."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


class Reloader:
    """Builds Snapshots from the file and the store, at start, on change, or on request."""

    def __init__(self, path: Path, base_dir: Path, registry: ModelRegistry,
                 store: ExperimentState, on_swap: Callable[[Snapshot], None] | None = None) -> None:
        self.path = path
        self.base_dir = base_dir
        self.registry = registry
        self.store = store
        self.on_swap = on_swap
        self.holder: SnapshotHolder | None = None
        self.last_error: str | None = None
        self.generation = 0  # of the store's switch state last applied
        self.overlay = False  # serving the store's switch state over a read-only file
        self.reloads = 0
        self.failures = 0
        self._signature = file_signature(path)
        self._lock = threading.Lock()  # the watcher and an admin switch may reload at once

    def start(self) -> Snapshot:
        """The first Snapshot; raises on any fault (the gateway must not start half-configured)."""
        with self._lock:
            snapshot = self._build(None)
            self.holder = SnapshotHolder(snapshot)
            return snapshot

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """No reload runs meanwhile: a switch holds this while it writes a file it may yet
        have to put back."""
        with self._lock:
            yield

    def reload(self) -> Snapshot:
        """Build from the file and the store now; swap it in, or raise and keep the current one.

        Blocking: run it in a thread. Returns the Snapshot that is current afterwards.
        """
        assert self.holder is not None, "start() first"
        with self._lock:
            current = self.holder.current
            try:
                snapshot = self._build(current.config)
            except RouterError as exc:
                self.failures += 1
                self.last_error = exc.message
                log.warning("config %s not applied: %s", self.path, exc.message)
                raise
            except Exception as exc:
                # Not a fault the checks know yet (a bug, or a file system surprise): it is
                # still this file that was not applied, and /config must say so.
                self.failures += 1
                self.last_error = f"{self.path}: not applied: {type(exc).__name__}: {exc}"
                log.exception("config %s not applied", self.path)
                raise
            self.last_error = None
            if snapshot.revision == current.revision \
                    and snapshot.config.experiment == current.config.experiment:
                return current  # same content (a touch, or a save without changes)
            self.holder.swap(snapshot)
            self.reloads += 1
            log.info("config %s applied as revision %d", self.path, snapshot.revision)
            if self.on_swap is not None:
                self.on_swap(snapshot)
            return snapshot

    def _build(self, running: RouterConfig | None) -> Snapshot:
        # Loading models takes seconds on a busy machine, and another worker may meanwhile
        # register a file saved after this one was read: registering the older content then
        # would put the old traffic back as a newer revision. Read the newer file instead.
        for _ in range(MAX_REREADS):
            signature = file_signature(self.path)
            config, models, digest = self._prepare(running)
            if file_signature(self.path) == signature:
                break
        revision = self.store.register_revision(config.experiment, digest, config.to_dict(),
                                                time.time())
        return Snapshot(config=config, revision=revision, models=models)

    def _prepare(self, running: RouterConfig | None
                 ) -> tuple[RouterConfig, dict[str, ServedModel], str]:
        self._signature = file_signature(self.path)
        config = load_config(self.path, base_dir=self.base_dir)
        if running is not None and config.store != running.store:
            raise ConfigError(str(self.path), [ConfigProblem(
                "store", config.lines.get("store"),
                f"cannot change while running (serving {running.store}); "
                "restart the gateway to use another store")])
        resolved = resolve(config, self.path.stat().st_mtime, self.store)
        if resolved.from_store:
            self._catch_up(resolved)
        self.generation = resolved.state.generation
        models = load_models(resolved.config, self.registry)
        return resolved.config, models, config_digest(resolved.config, models)

    def _catch_up(self, resolved: Resolved) -> None:
        """Write a switch made elsewhere into this gateway's file, when the file can be written."""
        try:
            edit_file(self.path, lambda state: None, base_dir=self.base_dir,
                      start=resolved.state.state)
        except OSError as exc:
            self.overlay = True
            log.info("%s cannot be written (%s); serving the store's switch state over it",
                     self.path, exc)
            return
        self.overlay = False
        self._signature = file_signature(self.path)

    def file_changed(self) -> bool:
        return file_signature(self.path) != self._signature

    def store_changed(self) -> bool:
        assert self.holder is not None
        state = self.store.switch_state(self.holder.current.config.experiment)
        return state is not None and state.generation != self.generation

    async def watch(self, poll_seconds: float = POLL_SECONDS,
                    store_poll_seconds: float = STORE_POLL_SECONDS) -> None:
        """Poll the file and the store until cancelled; failures are kept in ``last_error``."""
        next_store_look = 0.0
        while True:
            await asyncio.sleep(poll_seconds)
            changed = self.file_changed()
            if not changed and time.monotonic() >= next_store_look:
                next_store_look = time.monotonic() + store_poll_seconds
                try:
                    changed = await asyncio.to_thread(self.store_changed)
                except RouterError as exc:
                    log.warning("switch state unreadable: %s", exc.message)
            if not changed:
                continue
            try:
                await asyncio.to_thread(self.reload)
            except Exception:
                # Reported through last_error (and logged); the running snapshot stays, and
                # the watcher goes on: later saves still need to apply.
                continue
