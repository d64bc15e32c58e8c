"""Fuzzing a live gateway from its own ``/openapi.json``: zero 5xx, every answer described.

schemathesis generates requests for every operation the description holds, valid and invalid
ones (bodies, query strings, path names, headers; its coverage phase adds boundary values,
missing fields and undocumented methods), sends them to ``router serve`` (SQLite store, a real
model pair, admin routes enabled) and checks each answer: no 5xx, a documented status, the
documented content type and headers, a body valid against the schema. The seed is fixed and
generation deterministic, so a run is repeatable. The admin routes may promote and roll back
at any point: nothing here depends on which model serves.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis

from tests.e2e.server import Server

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "fuzz-admin-token"
EXPERIMENT = "fuzz"
# Requests sent by the whole module, at least; each operation is given this many fuzzed
# examples (the coverage phase adds its own cases on top).
MIN_REQUESTS = 2_000
MAX_EXAMPLES = 80

CONFIG = schemathesis.Config.from_dict({
    "seed": 13,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "auth": {"openapi": {"bearerAuth": {"bearer": ADMIN_TOKEN}}},
    "checks": {
        # A request valid by the description may still be refused, and rightly: an X-Request-Id
        # the fuzzer repeats is a 409; a name the admin routes switched away from is a 404.
        "positive_data_acceptance": {"enabled": False},
    },
})
schema = schemathesis.pytest.from_fixture("served_schema")


class CountingSession(requests.Session):
    """A session that counts the answers it receives (the checks' own requests too)."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = 0
        self.statuses: Counter[int] = Counter()
        self.hooks["response"].append(self._count)

    def _count(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.answers += 1
        self.statuses[response.status_code] += 1


SESSION = CountingSession()
PER_OPERATION: Counter[str] = Counter()


@pytest.fixture(scope="module")
def server(ab_server: Server) -> Server:
    """The shared ab gateway (tests/e2e/conftest.py) for this module's experiment."""
    return ab_server


@pytest.fixture(autouse=True)
def node_id_for_the_lazy_loader(request: pytest.FixtureRequest) -> None:
    """schemathesis's loader of a fixture's schema reads and sets the test item's private
    ``_nodeid`` (to name each operation in reports), which pytest 9.2's items lack."""
    request.node._nodeid = request.node.nodeid


@pytest.fixture(scope="module")
def served_schema(server: Server) -> schemathesis.BaseSchema:
    """The gateway's own description, as it serves it (its features, names and headers)."""
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=CONFIG)


@schema.parametrize()
def test_no_5xx_and_every_answer_as_described(case: schemathesis.Case) -> None:
    before = SESSION.answers
    try:
        case.call_and_validate(session=SESSION, timeout=30)
    finally:
        PER_OPERATION[case.operation.label] += SESSION.answers - before


def test_the_fuzzer_sent_enough_requests(server: Server) -> None:
    """Runs after the operations' tests (pytest keeps a module's order)."""
    assert SESSION.answers >= MIN_REQUESTS, (SESSION.answers, PER_OPERATION)
    assert not [status for status in SESSION.statuses if status >= 500], SESSION.statuses
    assert "Traceback" not in server.output()
