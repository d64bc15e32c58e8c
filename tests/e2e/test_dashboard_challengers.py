"""End to end: /dashboard with two challengers, in headless Chromium, against /stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.configs import write_config
from tests.e2e.browser import chromium, console_errors, require_chromium, wait_rendered
from tests.e2e.server import serve
from tests.e2e.test_dashboard import CHARTS, page_state
from tests.e2e.test_stats import labelled, send_feedback, send_users, stats_when, traffic

pytestmark = pytest.mark.e2e

ARMS_STATE = """
    const picker = document.getElementById('timeline-arm');
    return {kpis: [...document.querySelectorAll('#kpis .kpi-label')].map(k => k.textContent),
            kpiClasses: [...document.querySelectorAll('#kpis .kpi')].map(k => k.className),
            split: [...document.querySelectorAll('#split-chart rect.bar')]
                .filter(r => !r.classList.contains('track')).map(r => r.getAttribute('class')),
            legend: [...document.querySelectorAll('#metric-legend .key')].map(k => k.textContent),
            latencyBars: document.querySelectorAll('#latency-chart rect.bar').length,
            pickerHidden: picker.hidden,
            options: [...picker.options].map(o => o.value), chosen: picker.value,
            shadowBars: document.querySelectorAll('#shadow-chart rect.bar.agree').length,
            shadowFacts: [...document.querySelectorAll('#shadow-facts dt')]
                .map(d => d.textContent)};
"""


def choose(driver: Any, name: str) -> None:
    """Pick the challenger whose comparison the charts draw, as a person does."""
    driver.execute_script("""
        const picker = document.getElementById('timeline-arm');
        picker.value = arguments[0];
        picker.dispatchEvent(new Event('change'));
    """, name)


def two_challengers(tmp_path: Path, champion: Path, gb: Path, svc: Path, mode: str) -> Path:
    return write_config(tmp_path, champion=champion, mode=mode, store="sqlite:///outcomes.db",
                        challengers=[{"name": "gb", "path": str(gb), "percent": 30},
                                     {"name": "svc", "path": str(svc), "percent": 30}],
                        traffic={"sticky_key": "header:x-user-id"})


def test_every_arm_is_drawn_with_its_own_comparison(tmp_path: Path, champion_dir: Path,
                                                     challenger_dir: Path,
                                                     no_proba_dir: Path) -> None:
    """ab with gb and svc: a figure and a colour per variant, each challenger's difference and
    p-values, a split of three parts, every variant's latency, monitoring and prediction
    drift; the charts draw the chosen challenger's comparison; no console error."""
    require_chromium()
    config = two_challengers(tmp_path, champion_dir, challenger_dir, no_proba_dir, "ab")
    with serve(config, tmp_path) as server:
        sent = send_users(server, traffic(900, seed=41))
        send_feedback(server, [{"request_id": s.request_id, "label": s.label} for s in sent])
        stats = stats_when(server, lambda b: labelled(b) == 900)
        with chromium(tmp_path / "profile") as driver:
            driver.get(f"{server.url}/dashboard")
            wait_rendered(driver)
            state, arms = page_state(driver), driver.execute_script(ARMS_STATE)
            choose(driver, "svc")
            chosen = driver.execute_script(ARMS_STATE)
            errors = console_errors(driver)
    assert errors == [] and state["state"] == "ready" and state["alertHidden"], state
    assert state["reasons"] == stats["decision"]["reasons"]
    assert state["action"].lower() == stats["decision"]["action"]
    for chart in CHARTS:
        assert state["charts"][chart]["marks"] >= 1, (chart, state["charts"])
    assert [label.split(" · ")[0] for label in arms["kpis"][:3]] == ["champion", "gb", "svc"]
    assert arms["kpiClasses"][:3] == ["kpi champion", "kpi arm1", "kpi arm2"]
    minus = "\N{MINUS SIGN}"
    assert f"difference · gb {minus} champion" in arms["kpis"]
    assert f"difference · svc {minus} champion" in arms["kpis"]
    assert sorted(arms["split"]) == sorted(["bar champion", "bar arm1", "bar arm2"] * 2)
    assert arms["latencyBars"] == 3 * 3
    assert [row[0] for row in state["monitoring"]] == ["champion", "gb", "svc"]
    assert state["drift"] == 4 + len(stats["drift"]["predictions"])
    assert not arms["pickerHidden"] and arms["options"] == ["gb", "svc"]
    assert arms["chosen"] == (stats["decision"]["challenger"] or "gb")
    assert [key.split(" · ")[0] for key in chosen["legend"][:2]] == ["champion", "svc"]
    assert chosen["chosen"] == "svc"


def test_shadow_mode_shows_each_challengers_agreement(tmp_path: Path, champion_dir: Path,
                                                      challenger_dir: Path,
                                                      no_proba_dir: Path) -> None:
    """shadow with gb and svc: a scored row and an agreement row per challenger."""
    require_chromium()
    config = two_challengers(tmp_path, champion_dir, challenger_dir, no_proba_dir, "shadow")
    with serve(config, tmp_path) as server:
        sent = send_users(server, traffic(300, seed=42))
        send_feedback(server, [{"request_id": s.request_id, "label": s.label} for s in sent])
        stats = stats_when(server, lambda b: all(c["paired"]["n"] == 300
                                                 for c in b["comparisons"].values()),
                           timeout=300)
        with chromium(tmp_path / "profile") as driver:
            driver.get(f"{server.url}/dashboard")
            wait_rendered(driver)
            state, arms = page_state(driver), driver.execute_script(ARMS_STATE)
            errors = console_errors(driver)
    assert errors == [] and state["state"] == "ready", state
    assert state["reasons"] == stats["decision"]["reasons"]
    assert arms["shadowBars"] == 2
    assert "McNemar exact p · gb" in arms["shadowFacts"]
    assert "McNemar exact p · svc" in arms["shadowFacts"]
    assert "bar arm1" in arms["split"] and "bar arm2" in arms["split"]
