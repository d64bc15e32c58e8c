"""GET /metrics in one process: Prometheus text the official parser reads, moving with traffic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from router.errors import ConfigError
from router.gateway.state import GatewayState
from router.serving.registry import ModelRegistry
from tests.polling import eventually

ROW = [5.1, 3.5, 1.4, 0.2]
DEADLINE_S = 20.0  # only guards against a hang

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]




def state(client: TestClient) -> GatewayState:
    return client.app.state.gateway  # type: ignore[attr-defined, no-any-return]


def scrape(client: TestClient, accept: str | None = None) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, labels), and every family's type, as the official parser reads."""
    response = client.get("/metrics", headers={"accept": accept} if accept else None)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def predict(client: TestClient, n: int, user: str = "u") -> None:
    for i in range(n):
        response = client.post("/predict", json={"features": ROW},
                               headers={"x-user-id": f"{user}-{i}"})
        assert response.status_code == 200, response.text


def test_request_counters_and_latency_move_with_traffic(make_client: Any, champion_dir: Path,
                                                       challenger_dir: Path) -> None:
    """Each answer adds one to router_requests_total and the latency histogram of its variant."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id"})
    before, types = scrape(client)
    variants = [client.post("/predict", json={"features": ROW},
                            headers={"x-user-id": f"user-{i}"}).headers["x-variant"]
                for i in range(40)]
    kserve = client.post("/v1/models/exp:predict", json={"instances": [ROW, ROW]})
    variants.append(kserve.headers["x-variant"])  # the KServe route is counted alike
    client.post("/predict", json={"features": [1.0]})  # 422: refused before any variant
    after, _ = scrape(client)
    assert types["router_requests"] == "counter"
    assert types["router_request_duration_seconds"] == "histogram"
    assert 0 < variants.count("champion") < len(variants)
    for variant in ("champion", "challenger"):
        count = variants.count(variant)
        assert (value(after, "router_requests_total", variant=variant, code="200")
                - value(before, "router_requests_total", variant=variant, code="200")) == count
        observed = (value(after, "router_request_duration_seconds_count", variant=variant)
                    - value(before, "router_request_duration_seconds_count", variant=variant))
        assert observed == count
        assert (value(after, "router_request_duration_seconds_bucket", variant=variant,
                      le="+Inf")
                - value(before, "router_request_duration_seconds_bucket", variant=variant,
                        le="+Inf")) == count
    assert (value(after, "router_requests_total", variant="none", code="422")
            - value(before, "router_requests_total", variant="none", code="422")) == 1


def test_model_errors_and_fallbacks_are_counted(make_client: Any, champion_dir: Path,
                                                failing_dir: Path) -> None:
    """A failing challenger: model errors and fallbacks count it, the request is a champion 200."""
    client = make_client(champion=champion_dir, challenger=failing_dir,
                         traffic={"challenger_percent": 100})
    before, _ = scrape(client)
    predict(client, 3)
    after, _ = scrape(client)
    assert value(after, "router_model_errors_total", variant="challenger") \
        - value(before, "router_model_errors_total", variant="challenger") == 3
    assert value(after, "router_challenger_fallbacks_total") \
        - value(before, "router_challenger_fallbacks_total") == 3
    assert value(after, "router_requests_total", variant="champion", code="200") \
        - value(before, "router_requests_total", variant="champion", code="200") == 3


def test_failing_champion_is_a_champion_500(make_client: Any, failing_dir: Path) -> None:
    """The champion failing counts as its model error and as a champion request with code 500."""
    client = make_client(champion=failing_dir, mode="single")
    before, _ = scrape(client)
    assert client.post("/predict", json={"features": ROW}).status_code == 500
    after, _ = scrape(client)
    assert value(after, "router_requests_total", variant="champion", code="500") \
        - value(before, "router_requests_total", variant="champion", code="500") == 1
    assert value(after, "router_model_errors_total", variant="champion") \
        - value(before, "router_model_errors_total", variant="champion") == 1


def test_outcome_log_and_config_figures_are_read_at_scrape(make_client: Any, champion_dir: Path,
                                                          challenger_dir: Path,
                                                          tmp_path: Path) -> None:
    """Written records, backlog, lag, revision, reload errors and model info come from state."""
    client = make_client(champion=champion_dir, challenger=challenger_dir,
                         store="sqlite:///outcomes.db")
    before, types = scrape(client)
    predict(client, 5)
    assert state(client).writer.flush()
    (tmp_path / "router.yaml").write_text("experiment: [unclosed")
    with pytest.raises(ConfigError):
        state(client).reloader.reload()
    for model in state(client).snapshots.current.models.values():
        assert model.engine_chosen.wait(600)  # the parity check runs beside serving
    kept_before = state(client).columns.kept_bytes()
    after, _ = scrape(client)
    kept_after = state(client).columns.kept_bytes()
    assert types["router_outcome_log_backlog"] == "gauge"
    assert types["router_outcome_log_lag_seconds"] == "gauge"
    assert value(after, "router_outcome_log_written_total") \
        - value(before, "router_outcome_log_written_total") == 5
    assert value(after, "router_outcome_log_backlog") == 0
    assert value(after, "router_outcome_log_lag_seconds") == 0
    assert types["router_stats_kept_bytes"] == "gauge"
    # What /stats keeps, as of the scrape (a monitoring refresh may read again around it).
    assert value(after, "router_stats_kept_bytes") in (kept_before, kept_after)
    assert value(after, "router_config_reload_errors_total") \
        - value(before, "router_config_reload_errors_total") == 1
    assert value(after, "router_config_revision") == state(client).snapshots.current.revision
    for role, directory, name in (("champion", champion_dir, "champ"),
                                  ("challenger", challenger_dir, "chall")):
        model = ModelRegistry().load(directory)
        assert value(after, "router_model_info", role=role, model=name, version=model.version,
                     sha256=model.sha256, engine=model.engine) == 1


def test_engine_label_appears_when_the_model_has_one(make_client: Any,
                                                     champion_dir: Path) -> None:
    """router_model_info carries the engine each model is served with."""
    client = make_client(champion=champion_dir, mode="single")
    champion = state(client).snapshots.current.champion
    engine = champion.engine
    champion.engine = "onnxruntime"
    try:
        after, _ = scrape(client)
    finally:
        champion.engine = engine
    assert value(after, "router_model_info", role="champion", model="champ",
                 version=champion.version, sha256=champion.sha256, engine="onnxruntime") == 1


def test_shadow_counts_move_with_mirrored_traffic(make_client: Any, champion_dir: Path,
                                                  challenger_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Mirrored rows show in router_shadow_offered_total and, once scored, in done."""
    monkeypatch.setenv("ROUTER_SHADOW_RUNNER", "thread")  # no worker process to start
    client = make_client(champion=champion_dir, challenger=challenger_dir, mode="shadow")
    before, types = scrape(client)
    predict(client, 4)
    mirror = state(client).shadow
    assert mirror is not None
    eventually(lambda: mirror.counts()["done"], lambda done: done >= 4, timeout=DEADLINE_S,
               interval=0.01, what="four mirrored rows scored")
    after, _ = scrape(client)
    assert types["router_shadow_queue_depth"] == "gauge"
    for name in ("router_shadow_offered_total", "router_shadow_done_total"):
        assert value(after, name) - value(before, name) == 4
    for name in ("router_shadow_dropped_total", "router_shadow_failed_total",
                 "router_shadow_timed_out_total"):
        assert value(after, name) == value(before, name)
    assert value(after, "router_shadow_queue_depth") == 0


def test_openmetrics_when_the_scraper_asks(make_client: Any, champion_dir: Path) -> None:
    """An OpenMetrics Accept header gets that format, ending in # EOF."""
    client = make_client(champion=champion_dir, mode="single")
    response = client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    plain = client.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_an_unexpected_failure_on_predict_is_a_counted_json_500(
        make_client: Any, champion_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A bug reached on /predict (served ahead of Starlette's middleware) still answers the
    error shape with the request id, is logged with its traceback and is counted."""
    client = make_client(champion=champion_dir, mode="single")
    before, _ = scrape(client)

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(state(client).service, "predict", broken)
    response = client.post("/predict", json={"features": ROW},
                           headers={"x-request-id": "req-bug"})
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "ZeroDivisionError" in response.json()["message"]
    assert response.headers["content-type"] == "application/json"
    assert any("req-bug" in r.getMessage() and r.exc_info for r in caplog.records)
    after, _ = scrape(client)
    assert (value(after, "router_requests_total", variant="none", code="500")
            - value(before, "router_requests_total", variant="none", code="500")) == 1


def test_the_request_tally_reads_as_one_observe_per_request() -> None:
    """What the request path counts in plain numbers, drained, is what Prometheus's own
    counter and histogram give for the same requests (bucket edges included)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from router.gateway.metrics import LATENCY_BUCKETS, RequestTally

    def pair(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
        return (Counter("r", "r", ["variant", "code"], registry=registry),
                Histogram("d", "d", ["variant"], buckets=LATENCY_BUCKETS, registry=registry))

    answers = [("champion", 200, s) for s in (0.0001, 0.0005, 0.0007, 0.001, 0.003, 0.2, 20.0)]
    answers += [("challenger", 200, 0.0025), ("none", 422, 0.0004), ("champion", 200, 0.0)]
    observed, tallied = CollectorRegistry(), CollectorRegistry()
    requests, latency = pair(observed)
    for variant, code, seconds in answers:
        requests.labels(variant, str(code)).inc()
        latency.labels(variant).observe(seconds)
    tally, into = RequestTally(), pair(tallied)
    for i, (variant, code, seconds) in enumerate(answers):
        tally.add(variant, code, seconds)
        if i == 4:
            tally.drain(*into)  # two drains add up
    tally.drain(*into)

    def read(registry: CollectorRegistry) -> Samples:
        text = generate_latest(registry).decode()
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    # Equal but for the sums' last bits: the tally adds a drain's latencies before the metric.
    assert read(tallied) == pytest.approx(read(observed), rel=1e-12)
