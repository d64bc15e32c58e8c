"""Everything one gateway process holds while it runs, started and stopped in a fixed order."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from router.batching import Predictor
from router.config import RouterConfig, load_config
from router.outcomes import OutcomeStore, OutcomeWriter, open_store
from router.registry import ModelRegistry
from router.reload import Reloader
from router.service import PredictionService
from router.snapshot import Snapshot, SnapshotHolder, config_digest, load_models

log = logging.getLogger("router.gateway")


@dataclass
class GatewayState:
    config_path: Path
    base_dir: Path
    store: OutcomeStore
    writer: OutcomeWriter
    registry: ModelRegistry
    executor: ThreadPoolExecutor
    snapshots: SnapshotHolder
    service: PredictionService
    reloader: Reloader
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def start(cls, config_path: Path, base_dir: Path) -> GatewayState:
        """Open the store, start the writer, load the first snapshot: fail fast on any fault.

        Blocking (file and model I/O); the lifespan runs it in a thread.
        """
        config = load_config(config_path, base_dir=base_dir)
        registry = ModelRegistry()
        models = load_models(config, registry)
        store = open_store(config.store, base_dir)
        writer = OutcomeWriter(store)
        writer.start()
        # Model calls get their own small pool: on 2 cores more threads only add contention,
        # and the batcher keeps one call per model in flight anyway.
        executor = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2),
                                      thread_name_prefix="router-model")
        predictor = Predictor(executor, max_batch=config.batching.max_batch,
                              max_wait_ms=config.batching.max_wait_ms)
        # The store numbers revisions, so every worker and replica serving this content agrees.
        revision = store.register_revision(config.experiment, config_digest(config, models),
                                           config.to_dict(), time.time())
        snapshots = SnapshotHolder(Snapshot(config=config, revision=revision, models=models))
        service = PredictionService(predictor, writer)

        def on_swap(snapshot: Snapshot) -> None:
            predictor.configure(max_batch=snapshot.config.batching.max_batch,
                                max_wait_ms=snapshot.config.batching.max_wait_ms)
            predictor.forget_except(list(snapshot.models.values()))

        reloader = Reloader(config_path, base_dir, snapshots, registry, store, on_swap)
        return cls(config_path=config_path, base_dir=base_dir, store=store, writer=writer,
                   registry=registry, executor=executor, snapshots=snapshots, service=service,
                   reloader=reloader)

    @property
    def config(self) -> RouterConfig:
        return self.snapshots.current.config

    @property
    def last_reload_error(self) -> str | None:
        return self.reloader.last_error

    async def readiness_problems(self) -> list[str]:
        problems = []
        if not await asyncio.to_thread(self.store.ping):
            problems.append("outcome store unreachable")
        if not self.writer.accepting:
            problems.append(f"outcome log backlog full ({self.writer.backlog} records)")
        return problems

    def stop(self) -> None:
        """Stop in reverse order of start: the writer drains into the store before it closes."""
        self.executor.shutdown(wait=True)
        self.writer.close()
        log.info("outcome log drained: %d records written", self.writer.written)
