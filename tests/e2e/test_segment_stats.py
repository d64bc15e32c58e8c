"""End to end: /stats's segments of a real `router serve` against statsmodels, per segment."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest

from router.cli import main
from tests.configs import write_config
from tests.e2e.server import Server, serve
from tests.e2e.test_offline_stats import EXPORT, export_csv
from tests.e2e.test_stats import labelled, send_feedback, stats_when, traffic
from tests.stats.test_segments import assert_matches_statsmodels

pytestmark = pytest.mark.e2e

COUNTRIES = ("DE", "FR", "IT", "ES")
PLANS = ("free", "pro", "team")


def send_segmented(server: Server, rows: list[tuple[list[float], str]], seed: int,
                   threads: int = 8) -> list[dict[str, Any]]:
    """Each row with a country header (left out now and then) and a plan in the body."""
    rng = np.random.default_rng(seed)
    countries = rng.choice([*COUNTRIES, ""], len(rows), p=[0.35, 0.3, 0.2, 0.1, 0.05])
    plans = rng.choice(PLANS, len(rows), p=[0.5, 0.3, 0.2])
    with httpx.Client(base_url=server.url, timeout=30,
                      limits=httpx.Limits(max_connections=threads)) as client:
        def send(i: int) -> dict[str, Any]:
            row, label = rows[i]
            headers = {"x-country": str(countries[i])} if countries[i] else {}
            response = client.post("/predict", json={"features": row, "plan": str(plans[i])},
                                   headers=headers)
            assert response.status_code == 200, response.text
            body = response.json()
            return {"request_id": body["request_id"], "variant": body["variant"],
                    "right": body["prediction"] == label, "label": label,
                    "x-country": str(countries[i]) or None, "plan": str(plans[i])}

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(send, range(len(rows))))


def flat(tree: Any, path: str = "") -> dict[str, Any]:
    """A nested JSON value as ``{path: leaf}``, for comparing numbers with a tolerance."""
    items = tree.items() if isinstance(tree, dict) else \
        enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        return {path: tree}
    return {k: v for key, value in items for k, v in flat(value, f"{path}/{key}").items()}


def segmented_config(directory: Path, champion: Path, challenger: Path) -> Path:
    """An ab experiment at 50 % segmented by a country header and a plan in the body."""
    return write_config(directory, champion=champion, challenger=challenger,
                        store="sqlite:///outcomes.db", traffic={"challenger_percent": 50},
                        analysis={"segments": ["header:x-country", "body:plan"]})


def labelled_segments(server: Server, n: int, seed: int
                      ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``n`` segmented requests, each labelled, and /stats once every label is in."""
    sent = send_segmented(server, traffic(n, seed=seed, noise=0.6), seed=seed + 1)
    send_feedback(server, [{"request_id": s["request_id"], "label": s["label"]} for s in sent])
    return sent, stats_when(server, lambda b: labelled(b) == len(sent))


def test_segments_match_statsmodels_per_segment(tmp_path: Path, champion_dir: Path,
                                                challenger_dir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """1,500 requests over two segment keys: each segment's requests, accuracy, Wilson
    interval, z-test, Newcombe interval and Holm-adjusted p-value equal statsmodels' on the
    requests the test sent with that value; the exported log gives the same segments."""
    config = segmented_config(tmp_path, champion_dir, challenger_dir)
    with serve(config, tmp_path) as server:
        sent, body = labelled_segments(server, 1500, seed=40)
    # The log exported as docs/statistics.md shows, with a column per segment key: the
    # offline report has the same segments.
    exported = tmp_path / "outcomes.csv"
    export_csv(tmp_path / "outcomes.db", exported, EXPORT.replace("p.shadow\n", (
        "p.shadow, json_extract(p.segments, '$.\"x-country\"') AS \"segment:x-country\", "
        "json_extract(p.segments, '$.plan') AS \"segment:plan\"\n")))
    assert main(["stats", "--outcomes", str(exported), "--json"]) == 0
    offline = flat(json.loads(capsys.readouterr().out)["segments"])
    live = flat(body["segments"])
    assert list(offline) == list(live)
    assert list(offline.values()) == pytest.approx(list(live.values()))
    segments = body["segments"]
    assert list(segments) == ["x-country", "plan"]
    for key, values in (("x-country", COUNTRIES), ("plan", PLANS)):
        assert set(segments[key]) == set(values)
        assert_matches_statsmodels(segments[key], {value: {variant: [
            s["right"] for s in sent if s[key] == value and s["variant"] == variant]
            for variant in ("champion", "challenger")} for value in values})
