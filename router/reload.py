"""Live reload: watch the YAML, build the next Snapshot aside, swap it in only when whole.

The file is polled (a ``stat`` every 0.5 s, so a save takes effect well within 2 s, on every
file system and inside containers where inotify does not see a ConfigMap's symlink swap). A
changed file is parsed and validated, its models are loaded off the event loop (the registry
reuses already loaded ones by path and digest), and only then is the Snapshot swapped. A file
that fails leaves the running Snapshot in place and its error in ``last_error`` until a good
file arrives.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from router.config import load_config
from router.errors import ConfigError, ConfigProblem, RouterError
from router.outcomes import OutcomeStore
from router.registry import ModelRegistry
from router.snapshot import Snapshot, SnapshotHolder, config_digest, load_models

log = logging.getLogger("router.reload")

POLL_SECONDS = 0.5

FileSignature = tuple[int, int, int] | None


def file_signature(path: Path) -> FileSignature:
    """What changes when the file is saved or replaced: inode, size and mtime."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


class Reloader:
    """Applies the config file to a running gateway, from the watcher or on request."""

    def __init__(self, path: Path, base_dir: Path, holder: SnapshotHolder,
                 registry: ModelRegistry, store: OutcomeStore,
                 on_swap: Callable[[Snapshot], None] | None = None) -> None:
        self.path = path
        self.base_dir = base_dir
        self.holder = holder
        self.registry = registry
        self.store = store
        self.on_swap = on_swap
        self.last_error: str | None = None
        self.reloads = 0
        self.failures = 0
        self._signature = file_signature(path)
        self._lock = threading.Lock()  # the watcher and an admin switch may reload at once

    def reload(self) -> Snapshot:
        """Read, validate and load the file now; swap it in, or raise and keep the current one.

        Blocking: run it in a thread. Returns the Snapshot that is current afterwards.
        """
        with self._lock:
            self._signature = file_signature(self.path)
            current = self.holder.current
            try:
                config = load_config(self.path, base_dir=self.base_dir)
                if config.store != current.config.store:
                    raise ConfigError(str(self.path), [ConfigProblem(
                        "store", config.lines.get("store"),
                        f"cannot change while running (serving {current.config.store}); "
                        "restart the gateway to use another store")])
                models = load_models(config, self.registry)
                digest = config_digest(config, models)
                revision = self.store.register_revision(config.experiment, digest,
                                                        config.to_dict(), time.time())
            except RouterError as exc:
                self.failures += 1
                self.last_error = exc.message
                log.warning("config %s not applied: %s", self.path, exc.message)
                raise
            self.last_error = None
            if revision == current.revision and config.experiment == current.config.experiment:
                return current  # same content (a touch, or a save without changes)
            snapshot = Snapshot(config=config, revision=revision, models=models)
            self.holder.swap(snapshot)
            self.reloads += 1
            log.info("config %s applied as revision %d", self.path, revision)
            if self.on_swap is not None:
                self.on_swap(snapshot)
            return snapshot

    def changed(self) -> bool:
        return file_signature(self.path) != self._signature

    async def watch(self, poll_seconds: float = POLL_SECONDS) -> None:
        """Poll the file until cancelled; a failed reload is kept in ``last_error``."""
        while True:
            await asyncio.sleep(poll_seconds)
            if not self.changed():
                continue
            try:
                await asyncio.to_thread(self.reload)
            except RouterError:
                continue  # reported through last_error; the running snapshot stays
            except Exception:
                # A bug must not end the watcher: later saves still need to apply.
                log.exception("unexpected error while reloading %s", self.path)
