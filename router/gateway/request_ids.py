"""A client-chosen request id labels one prediction: a repeat is refused with a 409.

Feedback names a prediction by its id, and the statistics join every logged row of that id with
its label; so an id sent again (``X-Request-Id: evil`` on 885 requests) would let one label
count for all of them. Ids the gateway issues are unique by construction (UUIDv7); an id the
client chose is checked against what this process answered recently (which covers records the
background writer has not written yet) and then against the outcome log, before any model is
called. A batch's rows are ``<id>:<i>``, so those count as used ids too: a single request named
``b:1`` after a batch ``b`` is a repeat, and so is a batch ``c`` after a single ``c:0``.

Two gateway processes given the same new id within the writer's flush interval (about a
second) may both accept it: neither can know of the other's answer yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence

from router.errors import DuplicateRequestIdError, StoreError
from router.outcomes import AnalysisReads

log = logging.getLogger("router.gateway")

# Ids remembered in memory; older ones are in the log by then (the writer flushes within about
# a second), unless the store has been down for longer than this many ids took to arrive.
RECENT_IDS = 100_000


class RequestIdLedger:
    """The ids clients chose that this gateway has used, and the log's memory of the rest."""

    def __init__(self, store: AnalysisReads, capacity: int = RECENT_IDS) -> None:
        self.store = store
        self.capacity = capacity
        self._recent: OrderedDict[str, None] = OrderedDict()

    async def claim(self, request_id: str, row_ids: Sequence[str]) -> None:
        """Take ``request_id`` and its rows' ids, or raise ``DuplicateRequestIdError``."""
        ids = list(dict.fromkeys([request_id, *row_ids]))
        if any(i in self._recent for i in ids):
            raise _duplicate(request_id)
        # Taken before the store is asked, so that a concurrent repeat is refused too.
        for i in ids:
            self._recent[i] = None
        while len(self._recent) > self.capacity:
            self._recent.popitem(last=False)
        try:
            logged = await asyncio.to_thread(self.store.logged_request_ids, ids)
        except StoreError as exc:
            # The store is unreachable (the writer keeps records for it meanwhile): what this
            # process remembers is all there is to go on, and the request is not refused for it.
            log.warning("request id %r not checked against the log: %s", request_id, exc.message)
            return
        if logged:
            raise _duplicate(request_id)

    def release(self, request_id: str, row_ids: Sequence[str]) -> None:
        """Give back ids of a request that was refused before anything was logged."""
        for i in (request_id, *row_ids):
            self._recent.pop(i, None)


def _duplicate(request_id: str) -> DuplicateRequestIdError:
    return DuplicateRequestIdError(
        f"X-Request-Id {request_id!r} was already used for a prediction; each id names one "
        "prediction for feedback, so send a new one (or none, and use the id the answer gives)",
        [{"header": "x-request-id", "request_id": request_id}])
