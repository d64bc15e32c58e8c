"""Config parsing: valid files become typed objects; every fault names its key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import DEFAULT_STORE, RouterConfig, StickyKey, load_config, parse_config
from router.errors import ConfigError

FULL = """\
experiment: iris-rf-vs-gb      # name; also salts user assignment
mode: ab
champion:  {name: iris-rf, path: models/iris-rf/1}
challenger: {name: iris-gb, path: models/iris-gb/1}
traffic:
  challenger_percent: 12.5
  sticky_key: header:X-User-Id
shadow:
  sample_percent: 50
  queue_size: 100
  timeout_ms: 250
  drain_s: 3
analysis:
  metric: log_loss
  alpha: 0.01
  min_effect: 0.02
  min_samples: 300
  guardrails: {p99_latency_ms: 50, error_rate: 0.01}
rollout:
  steps: [5, 25, 50, 100]
  interval_s: 60
  auto_promote: false
  auto_rollback: true
store: sqlite:///var/outcomes.db
limits: {max_body_bytes: 2048, max_batch: 10}
batching: {max_batch: 32, max_wait_ms: 2}
"""


def parse(text: str) -> RouterConfig:
    return parse_config(text, source="test.yaml", base_dir=Path("/srv"))


def problems_of(text: str) -> list[tuple[str, int | None]]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return [(p.path, p.line) for p in info.value.problems]


def test_full_file_parses_into_typed_values() -> None:
    """Every key of SPEC.md's example is read, typed, and relative paths resolve to base_dir."""
    config = parse(FULL)
    assert config.experiment == "iris-rf-vs-gb"
    assert config.mode == "ab"
    assert config.champion.path == Path("/srv/models/iris-rf/1")
    assert config.challenger is not None and config.challenger.name == "iris-gb"
    assert config.traffic.challenger_percent == 12.5
    assert config.traffic.sticky_key == StickyKey("header", "x-user-id")
    assert (config.shadow.sample_percent, config.shadow.queue_size) == (50, 100)
    assert (config.shadow.timeout_ms, config.shadow.drain_s) == (250, 3)
    assert config.analysis.metric == "log_loss" and config.analysis.min_samples == 300
    assert config.analysis.guardrails.p99_latency_ms == 50
    assert config.rollout is not None and config.rollout.steps == (5, 25, 50, 100)
    assert config.limits.max_body_bytes == 2048 and config.batching.max_batch == 32
    assert config.lines["traffic.challenger_percent"] == 6


def test_minimal_single_mode_gets_defaults() -> None:
    """Only experiment, mode and champion are required; the rest has documented defaults."""
    config = parse("experiment: e\nmode: single\nchampion: {name: a, path: /m/a}\n")
    assert config.challenger is None and config.rollout is None
    assert config.store == DEFAULT_STORE
    assert config.limits.max_body_bytes == 1_048_576 and config.limits.max_batch == 1000
    assert config.shadow.timeout_ms == 1000 and config.shadow.drain_s == 10
    assert config.to_dict()["traffic"] == {"challenger_percent": 0.0, "sticky_key": None,
                                           "override_header": None,
                                           "override_requires_token": False}


def test_override_header_is_read_in_lower_case() -> None:
    """traffic.override_header (off by default) names a header; its token guard is a bool."""
    config = parse(BASE + "traffic:\n  override_header: X-Router-Variant\n"
                          "  override_requires_token: true\n")
    assert config.traffic.override_header == "x-router-variant"
    assert config.traffic.override_requires_token is True


BASE = "experiment: e\nmode: ab\nchampion: {name: a, path: /m/a}\n" \
       "challenger: {name: b, path: /m/b}\n"


@pytest.mark.parametrize(("text", "expected"), [
    (BASE + "traffic:\n  challenger_percent: 130\n", [("traffic.challenger_percent", 6)]),
    (BASE + "traffic:\n  challenger_percent: -1\n", [("traffic.challenger_percent", 6)]),
    (BASE + "traffic:\n  challenger_percent: ten\n", [("traffic.challenger_percent", 6)]),
    (BASE + "traffic:\n  sticky_key: cookie:id\n", [("traffic.sticky_key", 6)]),
    (BASE + "trafic:\n  challenger_percent: 10\n", [("trafic", 5)]),
    (BASE + "traffic:\n  percent: 10\n", [("traffic.percent", 6)]),
    (BASE + "traffic:\n  override_header: x variant\n", [("traffic.override_header", 6)]),
    (BASE + "traffic:\n  override_header: x\n  override_requires_token: 1\n",
     [("traffic.override_requires_token", 7)]),
    (BASE + "traffic:\n  override_requires_token: true\n",
     [("traffic.override_requires_token", 6)]),
    (BASE + "mode2: x\n", [("mode2", 5)]),
    ("experiment: e\nmode: ab\nchampion: {name: a, path: /m/a}\n", [("challenger", 1)]),
    ("experiment: e\nmode: canary\nchampion: {name: a, path: /m/a}\n", [("mode", 2)]),
    ("mode: single\nchampion: {name: a, path: /m/a}\n", [("experiment", 1)]),
    ("experiment: e\nmode: single\nchampion: {name: a}\n", [("champion.path", 3)]),
    ("experiment: e\nmode: single\nchampion: models/a\n", [("champion", 3)]),
    (BASE + "shadow:\n  queue_size: 0\n", [("shadow.queue_size", 6)]),
    (BASE + "shadow:\n  queue_size: 1.5\n", [("shadow.queue_size", 6)]),
    (BASE + "analysis:\n  metric: f1\n", [("analysis.metric", 6)]),
    (BASE + "analysis:\n  alpha: 1.5\n", [("analysis.alpha", 6)]),
    (BASE + "analysis:\n  guardrails: {error_rate: 2}\n", [("analysis.guardrails.error_rate", 6)]),
    (BASE + "rollout:\n  steps: [50, 25]\n", [("rollout.steps", 6)]),
    (BASE + "rollout:\n  interval_s: 5\n", [("rollout.steps", 6)]),
    (BASE + "rollout:\n  steps: [5]\n  auto_promote: yes please\n", [("rollout.auto_promote", 7)]),
    (BASE + "rollout:\n  steps: [5, shadow]\n", [("rollout.steps", 6)]),
    (BASE + "rollout:\n  steps: [shadow]\n", [("rollout.steps", 6)]),
    (BASE + "rollout:\n  steps: [5]\n  from_shadow: true\n", [("rollout.from_shadow", 7)]),
    (BASE.replace("mode: ab", "mode: shadow") + "rollout:\n  steps: [5, 25]\n",
     [("rollout.steps", 6)]),
    (BASE + "store: mysql://x\n", [("store", 5)]),
    (BASE + "limits: {max_batch: true}\n", [("limits.max_batch", 5)]),
    (BASE + "monitoring:\n  window: 0\n", [("monitoring.window", 6)]),
    (BASE + "monitoring:\n  windows: 10\n", [("monitoring.windows", 6)]),
    (BASE + "traffic:\n  challenger_percent: 130\nstore: 5\n",
     [("traffic.challenger_percent", 6), ("store", 7)]),
])
def test_each_error_names_key_and_line(text: str, expected: list[tuple[str, int]]) -> None:
    """A wrong type, range, key or missing key is reported with its key path and line."""
    assert problems_of(text) == expected


@pytest.mark.parametrize(("text", "line"), [
    ("experiment: e\nmode: [ab\nchampion: x\n", 3),
    ("experiment: e\nexperiment: f\n", 2),
    ("- a\n- b\n", 1),
])
def test_unreadable_yaml_names_the_line(text: str, line: int) -> None:
    """Bad YAML, a duplicate key or a non-mapping file is one problem with its line."""
    [(path, got_line)] = problems_of(text)
    assert path == "" and got_line == line  # no key is at fault


def test_error_message_is_one_line_naming_the_file() -> None:
    """The exception's message carries file, line, key and reason, for the CLI's one line."""
    with pytest.raises(ConfigError) as info:
        parse(BASE + "traffic:\n  challenger_percent: 130\n")
    message = info.value.message
    assert "\n" not in message
    assert "test.yaml" in message and "line 6" in message
    assert "traffic.challenger_percent" in message and "between 0 and 100" in message


@pytest.mark.parametrize(("text", "message"), [
    (BASE + "shadow:\n  queue_size: 1.5\n", "must be a whole number, got float 1.5"),
    (BASE + "analysis:\n  min_samples: 0.5\n", "must be a whole number, got float 0.5"),
    (BASE + "traffic:\n  challenger_percent: ten\n", "must be a number, got str 'ten'"),
])
def test_messages_name_plain_types(text: str, message: str) -> None:
    """A wrong value is described by its YAML type, not by the parser's own class."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert info.value.problems[0].message == message


@pytest.mark.parametrize(("text", "key"), [
    ("experiment: e\nmode: ab\nchampion: {name: a, path: /m/a}\n"
     "challenger: {name: champion, path: /m/b}\n", "challenger.name"),
    ("experiment: e\nmode: ab\nchampion: {name: Challenger, path: /m/a}\n"
     "challenger: {name: b, path: /m/b}\n", "champion.name"),
    ("experiment: e\nmode: single\nchampion: {name: a, path: /m/a}\n"
     "previous: {name: champion, path: /m/b}\n", "previous.name"),
])
def test_a_model_may_not_be_named_after_another_role(text: str, key: str) -> None:
    """A challenger named ``champion`` would make the override header and the V2 routes reach
    the other model than the one asked for."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    [problem] = info.value.problems
    assert problem.path == key and problem.line == (4 if key != "champion.name" else 3)
    assert "is the name of another role" in problem.message
    assert parse(text.replace("{name: champion,", "{name: b,")
                 .replace("{name: Challenger,", "{name: a,")).champion is not None
    # Naming a model after its own role, or the challenger after the champion (a new version
    # of the same model), stays allowed.
    assert parse("experiment: e\nmode: ab\nchampion: {name: champion, path: /m/a}\n"
                 "challenger: {name: challenger, path: /m/b}\n").challenger is not None
    assert parse("experiment: e\nmode: ab\nchampion: {name: a, path: /m/a}\n"
                 "challenger: {name: a, path: /m/b}\n").challenger is not None


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError naming the path, and no key."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.message == f"{tmp_path / 'nope.yaml'}: file not found"
    assert info.value.detail == [{"key": None, "line": None, "message": "file not found"}]


def test_monitoring_window_defaults_to_1000_and_is_read() -> None:
    """monitoring.window (latest labelled outcomes and predictions) and interval_s."""
    assert parse(BASE).monitoring.window == 1000
    config = parse(BASE + "monitoring: {window: 250, interval_s: 2}\n")
    assert (config.monitoring.window, config.monitoring.interval_s) == (250, 2.0)
    assert config.to_dict()["monitoring"] == {"window": 250, "interval_s": 2.0}


def test_a_rollout_may_start_in_shadow() -> None:
    """steps: [shadow, 5, 25, 50] in shadow mode: the shares after shadow, and the file's own
    list in the running configuration's dict."""
    text = BASE.replace("mode: ab", "mode: shadow") + "rollout:\n  steps: [shadow, 5, 25, 50]\n"
    config = parse(text)
    assert config.rollout is not None and config.rollout.from_shadow
    assert config.rollout.steps == (5, 25, 50)
    assert config.to_dict()["rollout"]["steps"] == ["shadow", 5, 25, 50]


def test_a_promoted_file_keeps_its_shadow_rollout_section() -> None:
    """After the promotion that ends a rollout from shadow (mode single, no challenger), the
    file still validates: the section is inert, and refusing it would block the promotion."""
    text = "experiment: e\nmode: single\nchampion: {name: b, path: /m/b}\n" \
           "previous: {name: a, path: /m/a}\nrollout:\n  steps: [shadow, 5, 25, 50]\n"
    assert parse(text).rollout is not None


def test_segments_are_read_as_request_keys() -> None:
    """analysis.segments lists header:NAME and body:FIELD keys; header names in lower case,
    and ``/config`` shows them as written."""
    config = parse(BASE + "analysis:\n  segments: [header:X-Country, body:plan]\n")
    assert config.analysis.segments == (StickyKey("header", "x-country"),
                                        StickyKey("body", "plan"))
    assert config.to_dict()["analysis"]["segments"] == ["header:x-country", "body:plan"]
    assert parse(BASE).analysis.segments == ()


@pytest.mark.parametrize(("segments", "message"), [
    ("header:x-country", "must be a list"),
    ("[cookie:x]", "must be header:<name> or body:<field>"),
    ("[header:x country]", "is not an HTTP token"),
    ('[body:"a b"]', "is not an HTTP token"),
    ("[header:x-country, header:X-Country]", "x-country is listed twice"),
    ("[header:plan, body:plan]", "plan is listed twice"),
    ("[body:a, body:b, body:c, body:d, body:e, body:f]", "at most 5 keys, got 6"),
    ("[5]", "must be a non-empty string"),
])
def test_bad_segments_are_refused_with_key_and_line(segments: str, message: str) -> None:
    """A segment key that no request could carry, a repeated name or more than five keys is
    one problem naming analysis.segments and its line."""
    with pytest.raises(ConfigError) as info:
        parse(BASE + f"analysis:\n  metric: accuracy\n  segments: {segments}\n")
    [problem] = info.value.problems
    assert (problem.path, problem.line) == ("analysis.segments", 7)
    assert message in problem.message
