"""Connection limits: the YAML keys under limits:, and how they reach uvicorn's workers."""

from __future__ import annotations

import pytest

from router.config import Limits, parse_config
from router.errors import ConfigError
from router.gateway.connections import LIMITS_ENV, ConnectionLimits, connection_limits

BASE = "experiment: e\nmode: single\nchampion: {name: c, path: m}\n"


def test_limits_default_to_ten_seconds_and_a_thousand_connections() -> None:
    limits = parse_config(BASE).limits
    assert (limits.header_timeout_s, limits.body_timeout_s, limits.max_connections) == \
        (10.0, 10.0, 1_000)
    assert parse_config(BASE).to_dict()["limits"]["body_timeout_s"] == 10.0


def test_limits_are_read() -> None:
    text = BASE + "limits: {header_timeout_s: 2.5, body_timeout_s: 30, max_connections: 64}\n"
    assert parse_config(text).limits == Limits(header_timeout_s=2.5, body_timeout_s=30.0,
                                               max_connections=64)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("header_timeout_s", "0", "must be between 0.1 and 3600, got 0"),
    ("body_timeout_s", "'ten'", "must be a number"),
    ("max_connections", "0", "must be at least 1, got 0"),
])
def test_bad_limits_name_the_key_and_line(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + f"limits:\n  {key}: {value}\n")
    [problem] = caught.value.problems
    assert (problem.path, problem.line) == (f"limits.{key}", 5)
    assert message in problem.message


def test_workers_read_the_limits_serve_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """`router serve` passes the socket-level limits to its workers through one variable."""
    limits = ConnectionLimits(header_timeout_s=3.0, max_connections=7)
    monkeypatch.setenv(LIMITS_ENV, limits.to_env())
    connection_limits.cache_clear()
    try:
        assert connection_limits() == limits
    finally:
        monkeypatch.delenv(LIMITS_ENV)
        connection_limits.cache_clear()
    assert connection_limits() == ConnectionLimits()
