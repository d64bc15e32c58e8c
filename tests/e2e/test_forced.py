"""End to end: requests forced to a variant with traffic.override_header stay out of /stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from router.cli import main
from router.outcomes import SQLiteStore
from tests.configs import write_config
from tests.e2e.server import serve
from tests.e2e.test_stats import labelled, send_feedback, send_users, stats_when, traffic

pytestmark = pytest.mark.e2e

WRONG = {"setosa": "virginica", "versicolor": "setosa", "virginica": "versicolor"}


def without_forced(variants: dict[str, Any]) -> dict[str, Any]:
    return {role: {k: v for k, v in figures.items() if k != "forced"}
            for role, figures in variants.items()}


def test_500_forced_requests_are_served_by_the_challenger_and_counted_apart(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """500 requests naming the challenger in the override header are answered by it, logged
    as forced, and change no count, SRM figure, comparison, drift or decision of /stats."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db",
                          traffic={"challenger_percent": 30, "sticky_key": "header:x-user-id",
                                   "override_header": "X-Router-Variant"})
    with serve(config, tmp_path) as server:
        sent = send_users(server, traffic(400, seed=3))
        send_feedback(server, [{"request_id": s.request_id, "label": s.label} for s in sent])
        before = stats_when(server, lambda b: labelled(b) == 400)
        assert labelled(before) == 400

        forced: list[dict[str, Any]] = []
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i, (row, _) in enumerate(traffic(500, seed=4)):
                response = client.post("/predict", json={"features": row}, headers={
                    "x-user-id": f"tester-{i}", "x-router-variant": "challenger"})
                assert response.status_code == 200, response.text
                assert response.headers["x-variant"] == "challenger"
                forced.append(response.json())
        assert {f["variant"] for f in forced} == {"challenger"}
        assert {f["model"] for f in forced} == {"chall"}
        # Every forced answer labelled wrong: counted in, it would sink the challenger's metric.
        send_feedback(server, [{"request_id": f["request_id"], "label": WRONG[f["prediction"]]}
                               for f in forced] + [{"request_id": "last", "label": "setosa"}])
        after = stats_when(server, lambda b: b["unknown_feedback_ids"] == 1)
        assert main(["stats", "--url", server.url]) == 0
        table = capsys.readouterr().out
    assert "forced (not analysed)" in table and "500" in table

    assert after["unknown_feedback_ids"] == 1  # the feedback for the forced rows is in
    assert after["variants"]["challenger"]["forced"] == 500
    assert after["variants"]["champion"]["forced"] == 0
    assert without_forced(after["variants"]) == without_forced(before["variants"])
    assert after["comparison"] == before["comparison"]
    assert after["comparison"]["srm"]["revisions"] == before["comparison"]["srm"]["revisions"]
    for section in ("drift", "rolling", "outputs"):
        assert after[section] == before[section], section
    assert after["decision"] == before["decision"]

    store = SQLiteStore(tmp_path / "outcomes.db")
    try:
        records = store.prediction_records()
    finally:
        store.close()
    forced_rows = [r for r in records if r.forced]
    assert len(forced_rows) == 500 and len(records) == 900
    assert {r.variant for r in forced_rows} == {"challenger"}
    assert {r.request_id for r in forced_rows} == {f["request_id"] for f in forced}
