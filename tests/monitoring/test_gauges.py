"""The monitoring gauges of /metrics: set by the background task from the report, never on a
scrape."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from router.monitoring.gauges import MonitoringGauges, wait_after
from router.outcomes import SQLiteStore
from tests.polling import eventually

ROW = [5.1, 3.5, 1.4, 0.2]
SHIFTED = [7.5, 2.0, 6.5, 2.4]  # a virginica-like flower, far from the training average
DEADLINE_S = 120.0  # only guards against a hang (a loaded machine is slow, not stuck)


def scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def named(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str
          ) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def traffic(client: TestClient, n: int) -> None:
    """n predictions, the second half on one shifted row, each labelled "virginica"."""
    ids = []
    for i in range(n):
        response = client.post("/predict", json={"features": ROW if i < n // 2 else SHIFTED})
        assert response.status_code == 200, response.text
        ids.append(response.json()["request_id"])
    response = client.post("/feedback", json={"feedback": [
        {"request_id": r, "label": "virginica"} for r in ids]})
    assert response.status_code == 202, response.text


def test_gauges_carry_the_reports_drift_rolling_and_outputs(
        make_client: Any, champion_dir: Path, challenger_dir: Path) -> None:
    """Refreshed every 0.2 s: the gauges equal /stats's figures on the same log."""
    client = make_client(champion=champion_dir, challenger=challenger_dir, mode="shadow",
                         monitoring={"window": 100, "interval_s": 0.2})
    traffic(client, 200)
    def both_labelled(samples: Any) -> bool:
        labelled = named(samples, "router_rolling_labelled")
        return all(labelled.get(frozenset({("variant", role)})) == 100
                   for role in ("champion", "challenger"))

    samples = eventually(lambda: scrape(client), both_labelled, timeout=DEADLINE_S,
                         what="100 labelled outcomes per variant in the gauges")
    stats = client.get("/stats").json()
    psi = named(samples, "router_feature_psi")
    drift = named(samples, "router_feature_drift")
    for name, feature in stats["drift"]["features"].items():
        assert psi[frozenset({("feature", name)})] == feature["psi"]
        level = {"stable": 0, "moderate": 1, "major": 2}[feature["status"]]
        assert drift[frozenset({("feature", name)})] == level
    assert max(drift.values()) == 2  # half the rows far from training: a major shift
    rolling = named(samples, "router_rolling_metric")
    for role, entry in stats["rolling"]["variants"].items():
        key = frozenset({("variant", role), ("metric", "accuracy")})
        assert rolling[key] == entry["accuracy"]
        key = frozenset({("variant", role), ("metric", "recall:virginica")})
        assert rolling[key] == entry["classes"]["virginica"]["recall"]
        recorded = named(samples, "router_model_recorded_metric")
        assert recorded[frozenset({("variant", role), ("metric", "accuracy")})] \
            == entry["recorded"]["accuracy"]
    constant = named(samples, "router_constant_output")
    for role, entry in stats["outputs"]["variants"].items():
        assert constant[frozenset({("variant", role)})] == float(entry["constant_output"])
    prediction = named(samples, "router_prediction_psi")
    assert prediction[frozenset({("variant", "champion")})] == \
        stats["drift"]["predictions"]["champion"]["psi"]


def test_a_scrape_computes_nothing(make_client: Any, champion_dir: Path) -> None:
    """With an hour between refreshes, traffic after the first refresh shows in no gauge, however
    often /metrics is scraped."""
    client = make_client(champion=champion_dir, mode="single",
                         monitoring={"interval_s": 3600})
    monitor = client.app.state.monitoring  # type: ignore[attr-defined]
    eventually(lambda: monitor.refreshes, lambda n: n >= 1, timeout=DEADLINE_S,
               interval=0.05, what="the first refresh of the gauges")
    traffic(client, 50)
    for _ in range(3):
        samples = scrape(client)
    assert monitor.refreshes == 1
    assert named(samples, "router_rolling_labelled") == {
        frozenset({("variant", "champion")}): 0.0}
    assert named(samples, "router_monitoring_refreshed_timestamp_seconds")


def test_a_failing_refresh_keeps_the_gauges_and_logs_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A store that cannot be read: no refresh counts, one warning for three failed tries."""
    store = SQLiteStore(tmp_path / "outcomes.db")
    store.close()
    monitor = MonitoringGauges(lambda: {"revisions": store.revisions("exp")}, lambda: 1.0)
    with caplog.at_level(logging.WARNING, logger="router.monitoring"):
        for _ in range(3):
            asyncio.run(monitor.refresh())
    assert monitor.refreshes == 0 and monitor.last_error
    warnings = [r for r in caplog.records if "monitoring gauges not refreshed" in r.getMessage()]
    assert len(warnings) == 1



def test_the_refresh_waits_two_hundred_times_what_it_took() -> None:
    """Over a large log the gauges take at most a two-hundredth of the core that serves: a
    refresh that took 0.2 s waits 40 s, whatever the configured 1 s; a quick one waits the
    interval."""
    assert wait_after(0.2, 1.0) == pytest.approx(40.0)
    # A read so slow that two hundred times it would outlast the staleness alert (300 s)
    # still refreshes every two minutes; a longer configured interval is kept.
    assert wait_after(1.5, 5.0) == 120.0
    assert wait_after(1.5, 600.0) == 600.0
    assert wait_after(0.001, 5.0) == 5.0
