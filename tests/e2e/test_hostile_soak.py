"""The hostile soak's fast case: a few seconds of ``bench/hostile.py``'s hostile run against
``router serve``; every hostile request gets its own 4xx, no answer is a 5xx, and every valid
request beside them is answered. Latency is the benchmark's business, never asserted here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.hostile import HOSTILE, LIMITS, soak, valid_bodies
from tests.configs import write_config
from tests.e2e.server import serve

pytestmark = pytest.mark.e2e


def test_hostile_clients_get_their_4xx_and_valid_ones_their_answers(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> None:
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          experiment="soak", store="sqlite:///outcomes.db",
                          traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id"},
                          limits=LIMITS)
    with serve(config, tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        tally = asyncio.run(soak(port, connections=8, seconds=3, hostile_connections=3,
                                 bodies=valid_bodies()))
    assert set(tally.hostile) == {h.name for h in HOSTILE}, "a hostile request was not sent"
    assert tally.unexpected() == {}
    assert tally.server_errors() == 0
    assert tally.hostile["repeated request id"][409] > 0
    assert set(tally.valid) == {200} and tally.valid[200] > 0
