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

While the store is down, memory alone decides, and the store is not asked for each request:
an unreachable PostgreSQL answers a lookup only when the pool gives up (3 s), on a thread of
the event loop's small default executor, so asking per request made every client-chosen id
wait seconds (200 such requests took 152 s in the outage test). After a failed lookup the
store is asked again only once ``retry_after_s`` has passed and the writer no longer says it
is failing, by one request at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from router.errors import DuplicateRequestIdError, StoreError
from router.outcomes import AnalysisReads

log = logging.getLogger("router.gateway")

# Ids remembered in memory; older ones are in the log by then (the writer flushes within about
# a second), unless the store has been down for longer than this many ids took to arrive.
RECENT_IDS = 100_000
# After a lookup failed, how long memory alone decides before the store is asked again.
RETRY_AFTER_S = 5.0


class RequestIdLedger:
    """The ids clients chose that this gateway has used, and the log's memory of the rest.

    ``store_failing`` says whether the writer finds the store failing (it then goes
    unasked); ``clock`` is ``time.monotonic``, given for tests.
    """

    def __init__(self, store: AnalysisReads, capacity: int = RECENT_IDS, *,
                 store_failing: Callable[[], bool] = lambda: False,
                 retry_after_s: float = RETRY_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.capacity = capacity
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._store_failing = store_failing
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._failed_at: float | None = None  # when the last lookup failed, until one answers

    async def claim(self, request_id: str, row_ids: Sequence[str], *,
                    in_body: bool = False) -> None:
        """Take ``request_id`` and its rows' ids, or raise ``DuplicateRequestIdError`` naming
        where the client sent it: the X-Request-Id header, or (``in_body``) the body's ``id``
        field of an Open Inference Protocol request."""
        ids = list(dict.fromkeys([request_id, *row_ids]))
        used = [i for i in ids if i in self._recent]
        if used:
            raise _duplicate(request_id, in_body, used[0])
        # Taken before the store is asked, so that a concurrent repeat is refused too.
        for i in ids:
            self._recent[i] = None
        while len(self._recent) > self.capacity:
            self._recent.popitem(last=False)
        failed_at = self._failed_at
        if failed_at is not None:
            now = self._clock()
            if self._store_failing() or now - failed_at < self._retry_after_s:
                return  # what this process remembers is all there is to go on
            # This request asks again; those that come while it waits do not.
            self._failed_at = now
        try:
            logged = await asyncio.to_thread(self.store.logged_request_ids, ids)
        except StoreError as exc:
            # The store is unreachable (the writer keeps records for it meanwhile): the
            # request is not refused for it, and the next ones do not wait for it.
            if self._failed_at is None:
                log.warning("request ids clients choose are checked against this process's "
                            "memory alone until the store answers: %s", exc.message)
            self._failed_at = self._clock()
            return
        if self._failed_at is not None:
            self._failed_at = None
            log.warning("request ids clients choose are checked against the log again")
        if logged:
            raise _duplicate(request_id, in_body, next(i for i in ids if i in logged))

    def release(self, request_id: str, row_ids: Sequence[str]) -> None:
        """Give back ids of a request that was refused before anything was logged."""
        for i in (request_id, *row_ids):
            self._recent.pop(i, None)


def _duplicate(request_id: str, in_body: bool, used: str) -> DuplicateRequestIdError:
    """The refusal, naming where the client sent the id and, when that is what clashed, the
    row id (``<id>:<i>``) already used."""
    named, where = ("the request's id", {"field": "id"}) if in_body \
        else ("X-Request-Id", {"header": "x-request-id"})
    what, detail = f"{named} {request_id!r}", {**where, "request_id": request_id}
    if used != request_id:
        what, detail = f"{what} names a row {used!r} that", {**detail, "used": used}
    return DuplicateRequestIdError(
        f"{what} was already used for a prediction; each id names one prediction for "
        "feedback, so send a new one (or none, and use the id the answer gives)", [detail])
