"""Everything one gateway process holds while it runs, started and stopped in a fixed order."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from router.config import RouterConfig, load_config
from router.gateway.request_ids import RequestIdLedger
from router.live.reload import Reloader
from router.live.rollout import RolloutController, lease_for
from router.live.rollout_plan import RolloutView, view_of_report
from router.outcomes import OutcomeStore, open_store
from router.outcomes.log_writer import LogWriter, start_writer
from router.serving.batching import Predictor
from router.serving.registry import ENGINES_IN_BACKGROUND, ModelRegistry
from router.serving.service import PredictionService
from router.serving.snapshot import Snapshot, SnapshotHolder
from router.shadow.fleet import ShadowFleet
from router.stats.loader import assemble_report
from router.stats.reader import SharedColumns
from router.thread_names import name_native_thread

log = logging.getLogger("router.gateway")

SPILL_DIR_ENV = "ROUTER_SPILL_DIR"
STOP_WRITE_TIMEOUT_S = 10.0


@dataclass
class GatewayState:
    config_path: Path
    base_dir: Path
    store: OutcomeStore
    writer: LogWriter
    registry: ModelRegistry
    executor: ThreadPoolExecutor
    snapshots: SnapshotHolder
    service: PredictionService
    reloader: Reloader
    rollout: RolloutController
    columns: SharedColumns  # what /stats, /stats/timeline and the rollout read, shared
    background: list[asyncio.Task[None]] = field(default_factory=list)
    shadow: ShadowFleet | None = None
    # Client-chosen request ids already used (router.gateway.request_ids).
    request_ids: RequestIdLedger = field(init=False)

    def __post_init__(self) -> None:
        self.request_ids = RequestIdLedger(self.store,
                                           store_failing=lambda: self.writer.failing)

    @classmethod
    def start(cls, config_path: Path, base_dir: Path,
              registry: ModelRegistry | None = None) -> GatewayState:
        """Open the store, start the writer, load the first snapshot: fail fast on any fault.

        Blocking (file and model I/O); the lifespan runs it in a thread. ``registry`` may hold
        models already loaded (``router serve`` checks them before it starts the server).
        """
        store_url = load_config(config_path, base_dir=base_dir).store
        store = open_store(store_url, base_dir)
        # Each model serves with scikit-learn at once; ONNX Runtime takes over when its parity
        # check passes, so the check never delays readiness.
        registry = registry or ModelRegistry(engines=ENGINES_IN_BACKGROUND)

        def on_swap(snapshot: Snapshot) -> None:
            predictor.configure(max_batch=snapshot.config.batching.max_batch,
                                max_wait_ms=snapshot.config.batching.max_wait_ms)
            predictor.forget_except(list(snapshot.models.values()))

        # The first snapshot is built like every later one: the file, the store's switch
        # state, the models, and a revision number the store gives (so workers agree).
        reloader = Reloader(config_path, base_dir, registry, store, on_swap)
        try:
            config = reloader.start().config
        except BaseException:
            store.close()
            raise
        assert reloader.holder is not None
        snapshots = reloader.holder
        # While the store is unreachable, records past a bound wait on local disk, and are
        # written (also after a restart) once it answers again. A process of its own writes
        # them, so that encoding and SQL never take the serving core (docs/performance.md).
        spill_dir = Path(os.environ.get(SPILL_DIR_ENV) or base_dir / "var" / "spill")
        try:
            writer = start_writer(store, store_url, base_dir, spill_dir)
        except BaseException:
            store.close()
            raise
        # Model calls get their own small pool: on 2 cores more threads only add contention,
        # and the batcher keeps one call per model in flight anyway.
        executor = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2),
                                      thread_name_prefix="router-model",
                                      initializer=name_native_thread)
        predictor = Predictor(executor, max_batch=config.batching.max_batch,
                              max_wait_ms=config.batching.max_wait_ms)
        # Always there, idle until offered work: a reload may switch the mode to shadow.
        shadow = ShadowFleet(writer)
        shadow.start(snapshots.current)
        service = PredictionService(predictor, writer, mirror=shadow)
        columns = SharedColumns(store)

        def evaluate() -> RolloutView:
            snapshot = snapshots.current
            return view_of_report(assemble_report(columns, snapshot.config, snapshot.models,
                                                  config_revision=snapshot.revision))

        # Idle unless the file has a rollout section; one process of all holds the lease.
        rollout = RolloutController(
            config_path, base_dir, store, current_config=lambda: snapshots.current.config,
            evaluate=evaluate, apply=reloader.reload,
            lease=lease_for(config.store, config_path, config.experiment))
        return cls(config_path=config_path, base_dir=base_dir, store=store, writer=writer,
                   registry=registry, executor=executor, snapshots=snapshots, service=service,
                   reloader=reloader, shadow=shadow, rollout=rollout, columns=columns)

    @property
    def config(self) -> RouterConfig:
        return self.snapshots.current.config

    @property
    def last_reload_error(self) -> str | None:
        return self.reloader.last_error

    async def readiness_problems(self) -> list[str]:
        problems = []
        stall = self.writer.stall  # the writer reads nothing: the store itself may be fine
        if stall is not None:
            problems.append(stall)
        health = await asyncio.to_thread(self.store.health)
        if health.problem is not None:
            problems.append(health.problem)  # names the file, the directory or the disk
        elif not await asyncio.to_thread(self.store.ping):
            problems.append("outcome store unreachable")
        elif self.writer.failing and stall is None:
            problems.append(f"outcome store refuses writes ({self.writer.last_error})")
        if not self.writer.accepting:
            problems.append(f"outcome log backlog full ({self.writer.backlog} records)")
        return problems

    def stop(self) -> None:
        """Stop in reverse order of start: the writer drains into the store before it closes."""
        if self.shadow is not None:
            # Drained before the writer closes, so the shadow records reach the store.
            self.shadow.close(self.config.shadow.drain_s)
        self.executor.shutdown(wait=True)
        # Bounded: with the store down, what is left goes to the spill directory instead.
        try:
            self.writer.close(timeout=STOP_WRITE_TIMEOUT_S)
        finally:
            self.store.close()  # opened by start(), so closed here, after its last user
        log.info("outcome log drained: %d records written, %d kept on disk for the store",
                 self.writer.written, self.writer.spilled)
