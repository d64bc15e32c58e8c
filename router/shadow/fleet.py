"""Shadow mode for every challenger: one mirror per challenger, each with its own queue, thread
and worker process.

With several challengers (``challengers:``) each answered request is offered to every
challenger's :class:`~router.shadow.mirror.ShadowMirror`: a slow or failing challenger fills
and drops only its own queue, and its worker competes only with the others at low priority.
With one challenger the fleet holds the one mirror the gateway always had. A mirror is made
for a challenger the first time a snapshot names it (at start, or after a reload), and stays
until shutdown, keeping its counts.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import numpy as np

from router.serving.service import RecordSink
from router.serving.snapshot import Snapshot
from router.shadow.mirror import ShadowMirror
from router.shadow.scorers import Scorer, scorer_from_env

__all__ = ["ShadowFleet"]

COUNTS = ("offered", "done", "dropped", "failed", "timed_out", "queue_depth")


class ShadowFleet:
    """The gateway's shadow mirrors, one per challenger variant, behind the one interface the
    prediction service offers requests to.

    Args:
        sink: where the shadow records go (the outcome writer).
        scorer: makes each mirror's scorer; by default :func:`scorer_from_env` (a worker
            process per challenger).
        rng: draws every mirror's ``shadow.sample_percent`` sample.
    """

    def __init__(self, sink: RecordSink, *, scorer: Callable[[], Scorer] = scorer_from_env,
                 rng: random.Random | None = None) -> None:
        self._sink = sink
        self._scorer = scorer
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._mirrors: dict[str, ShadowMirror] = {}
        self._closed = False

    def start(self, snapshot: Snapshot | None = None) -> None:
        """A mirror for each of ``snapshot``'s challengers; in shadow mode each gets its model
        ready before traffic."""
        for variant in () if snapshot is None else snapshot.arms:
            self._mirror(variant, snapshot)

    def _mirror(self, variant: str, snapshot: Snapshot | None) -> ShadowMirror | None:
        with self._lock:
            mirror = self._mirrors.get(variant)
            if mirror is None and not self._closed:
                mirror = ShadowMirror(self._sink, scorer=self._scorer(), rng=self._rng,
                                      variant=variant)
                mirror.start(snapshot)
                self._mirrors[variant] = mirror
            return mirror

    def mirror(self, variant: str) -> ShadowMirror | None:
        """The mirror of one challenger, if a snapshot has named it."""
        return self._mirrors.get(variant)

    def offer(self, snapshot: Snapshot, rows: np.ndarray, row_ids: list[str],
              unit_id: str | None, segments: dict[str, str] | None = None) -> None:
        """Offer a copy of an answered request to every challenger's mirror (never waits)."""
        for variant in snapshot.arms:
            mirror = self._mirrors.get(variant) or self._mirror(variant, None)
            if mirror is not None:
                mirror.offer(snapshot, rows, row_ids, unit_id, segments)

    def counts_by_variant(self) -> dict[str, dict[str, int]]:
        """Each challenger's mirror counts (see :meth:`ShadowMirror.counts`)."""
        return {variant: mirror.counts() for variant, mirror in list(self._mirrors.items())}

    def counts(self) -> dict[str, int]:
        """The rows of every mirror together."""
        totals = dict.fromkeys(COUNTS, 0)
        for counts in self.counts_by_variant().values():
            for name in COUNTS:
                totals[name] += counts[name]
        return totals

    def close(self, drain_s: float) -> None:
        """Drain every mirror at once for up to ``drain_s`` seconds (see
        :meth:`ShadowMirror.close`): shutdown waits for the slowest, not for their sum."""
        with self._lock:
            self._closed = True
            mirrors = list(self._mirrors.values())
        closers = [threading.Thread(target=mirror.close, args=(drain_s,),
                                    name=f"shadow-close-{mirror.variant}") for mirror in mirrors]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()
