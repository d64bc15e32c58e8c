"""End to end: the dashboard's segment table in headless Chromium, against /stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.configs import write_config
from tests.e2e.browser import chromium, console_errors, fixed, require_chromium, wait_rendered
from tests.e2e.server import Server, serve
from tests.e2e.test_segment_stats import labelled_segments, segmented_config
from tests.e2e.test_stats import send_users, traffic

pytestmark = pytest.mark.e2e


def segment_tables(server: Server, profile: Path) -> tuple[bool, list[dict[str, Any]]]:
    """Whether the segment card is hidden, and its tables (key, challenger, the rows' cells)
    as a fresh browser draws them; no console error allowed."""
    with chromium(profile) as driver:
        driver.get(f"{server.url}/dashboard")
        wait_rendered(driver)
        hidden, tables = driver.execute_script("""
            const card = document.getElementById('segments-card');
            return [card.hidden, [...card.querySelectorAll('table')].map(t => ({
                key: t.dataset.key, challenger: t.dataset.challenger,
                rows: [...t.tBodies[0].rows].map(tr => [...tr.cells].map(
                    td => td.textContent))}))];
        """)
        assert console_errors(driver) == []
    return hidden, tables


def test_the_segment_table_shows_each_keys_values_as_stats_has_them(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> None:
    """A table per segment key, a row per value in /stats's order, with each variant's
    labelled outcomes and accuracy, the difference and the Holm-adjusted p-value."""
    require_chromium()
    config = segmented_config(tmp_path, champion_dir, challenger_dir)
    with serve(config, tmp_path) as server:
        _, stats = labelled_segments(server, 600, seed=12)
        hidden, tables = segment_tables(server, tmp_path / "profile")
    assert not hidden
    assert [(t["key"], t["challenger"]) for t in tables] == [("x-country", "challenger"),
                                                             ("plan", "challenger")]
    for table in tables:
        shown = stats["segments"][table["key"]]
        assert [row[0] for row in table["rows"]] == list(shown)
        for row in table["rows"]:
            segment = shown[row[0]]
            champion, challenger = (segment["variants"][r] for r in ("champion", "challenger"))
            assert row[1] == f"{champion['labelled']:,}"
            assert row[2] == fixed(champion['metric'] * 100, 1) + " %"
            assert row[3] == f"{challenger['labelled']:,}"
            assert row[4] == fixed(challenger['metric'] * 100, 1) + " %"
            difference = segment["comparison"]["difference"] * 100
            assert row[5] == ("+" if difference > 0 else "") + fixed(difference, 2) + " pp"


def test_without_segment_keys_the_card_is_hidden(tmp_path: Path, champion_dir: Path,
                                                 challenger_dir: Path) -> None:
    """No analysis.segments: no segment card, and the page draws without a console error."""
    require_chromium()
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db", traffic={"challenger_percent": 50})
    with serve(config, tmp_path) as server:
        send_users(server, traffic(20, seed=14))
        hidden, tables = segment_tables(server, tmp_path / "profile")
    assert hidden is True and tables == []


def test_with_several_challengers_each_has_its_tables(tmp_path: Path, champion_dir: Path,
                                                      challenger_dir: Path,
                                                      no_proba_dir: Path) -> None:
    """Two challengers: a table per key and challenger, each row with that challenger's
    difference as /stats's comparisons have it."""
    require_chromium()
    config = write_config(tmp_path, champion=champion_dir, store="sqlite:///outcomes.db",
                          challengers=[{"name": "gb", "path": str(challenger_dir), "percent": 30},
                                       {"name": "plain", "path": str(no_proba_dir),
                                        "percent": 30}],
                          analysis={"segments": ["header:x-country", "body:plan"]})
    with serve(config, tmp_path) as server:
        _, stats = labelled_segments(server, 600, seed=16)
        _, tables = segment_tables(server, tmp_path / "profile")
    assert [(t["key"], t["challenger"]) for t in tables] == [
        ("x-country", "gb"), ("x-country", "plain"), ("plan", "gb"), ("plan", "plain")]
    for table in tables:
        shown = stats["segments"][table["key"]]
        for row in table["rows"]:
            comparison = shown[row[0]]["comparisons"][table["challenger"]]
            difference = comparison["difference"] * 100
            assert row[5] == ("+" if difference > 0 else "") + fixed(difference, 2) + " pp"
