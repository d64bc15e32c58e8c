"""End to end: /dashboard of a real `router serve` in headless Chromium, against /stats."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.configs import write_config
from tests.e2e.browser import (
    LAPTOP,
    PHONE,
    chromium,
    console_errors,
    fixed,
    full_page_png,
    require_chromium,
    set_viewport,
    wait_rendered,
)
from tests.e2e.server import REPO_ROOT, Server, serve
from tests.e2e.test_stats import labelled, send_feedback, send_users, stats_when, traffic
from tests.polling import eventually

pytestmark = pytest.mark.e2e

# Screenshots are kept here for a person (or CI's artifacts) to look at.
ARTIFACTS = Path(os.environ.get("ROUTER_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[1] / "artifacts"))
CHARTS = ("metric-chart", "difference-chart", "pvalue-chart", "split-chart", "latency-chart",
          "errors-chart")


def wait_config(server: Server, percent: float, timeout: float = 30.0) -> None:
    """Until the rollout has moved the challenger's share to ``percent``."""
    eventually(lambda: httpx.get(f"{server.url}/config").json()["config"]["traffic"],
               lambda traffic: traffic["challenger_percent"] == percent, timeout=timeout,
               interval=0.2, what=f"challenger_percent reaching {percent}")


def page_state(driver: Any) -> dict[str, Any]:
    """What the page shows that the test checks, read in one script."""
    return driver.execute_script("""
        const text = id => document.getElementById(id).textContent.trim();
        const charts = {};
        for (const id of arguments[0]) {
            const box = document.getElementById(id);
            charts[id] = {svg: box.querySelectorAll('svg').length,
                          marks: box.querySelectorAll('path.line, rect.bar').length,
                          empty: box.querySelectorAll('.empty').length};
        }
        return {action: text('decision-action'),
                decisionAttr: document.getElementById('decision').dataset.action,
                reasons: [...document.querySelectorAll('#decision-reasons li')]
                    .map(li => li.textContent),
                charts: charts,
                alertHidden: document.getElementById('alert').hidden,
                state: document.body.dataset.state,
                updated: text('updated'),
                history: document.querySelectorAll('#history-list li').length,
                drift: document.querySelectorAll('#drift-table tbody tr').length,
                monitoring: [...document.querySelectorAll('#monitoring-table tbody tr')]
                    .map(tr => [...tr.cells].map(td => td.textContent)),
                scrollWidth: document.documentElement.scrollWidth,
                innerWidth: window.innerWidth};
    """, list(CHARTS))


def dashboard_state(server: Server, profile: Path) -> tuple[dict[str, Any], list[str]]:
    """The page as a fresh browser draws it, and the console errors it logged."""
    with chromium(profile) as driver:
        driver.get(f"{server.url}/dashboard")
        wait_rendered(driver)
        return page_state(driver), console_errors(driver)


def test_dashboard_draws_the_experiment_and_agrees_with_stats(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> None:
    """Charts drawn, no console error, the decision of /stats, fits a phone; screenshots."""
    require_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The rollout moves the split from 0 to 50 % at once: a real switch for the history.
    config = write_config(
        tmp_path, champion=champion_dir, challenger=challenger_dir, experiment="iris-rf-vs-gb",
        store="sqlite:///outcomes.db",
        traffic={"challenger_percent": 0, "sticky_key": "header:x-user-id"},
        analysis={"min_samples": 100, "guardrails": {"p99_latency_ms": 250,
                                                     "error_rate": 0.02}},
        rollout={"steps": [50], "interval_s": 1, "auto_rollback": False})
    with serve(config, tmp_path) as server:
        wait_config(server, 50)
        sent = send_users(server, traffic(1200, seed=7))
        send_feedback(server, [{"request_id": s.request_id, "label": s.label} for s in sent])
        stats = stats_when(server, lambda b: labelled(b) == 1200)
        assert labelled(stats) == 1200

        with chromium(tmp_path / "profile") as driver:
            set_viewport(driver, *LAPTOP)
            driver.get(f"{server.url}/dashboard")
            wait_rendered(driver)
            state = page_state(driver)
            (ARTIFACTS / "dashboard.png").write_bytes(full_page_png(driver))
            laptop_errors = console_errors(driver)

            set_viewport(driver, *PHONE, mobile=True)
            driver.refresh()
            wait_rendered(driver)
            phone = page_state(driver)
            (ARTIFACTS / "dashboard-phone.png").write_bytes(full_page_png(driver))
            phone_errors = console_errors(driver)
        after = httpx.get(f"{server.url}/stats").json()

    assert laptop_errors == [] and phone_errors == [], laptop_errors + phone_errors
    assert state["state"] == "ready" and state["alertHidden"], state
    assert state["updated"].startswith("updated")
    # No traffic between the two reads of /stats: the page shows the decision /stats gives.
    assert after["decision"] == stats["decision"]
    assert state["action"].lower() == state["decisionAttr"] == stats["decision"]["action"]
    assert state["reasons"] == stats["decision"]["reasons"]
    for chart, drawn in state["charts"].items():
        assert drawn["svg"] == 1 and drawn["marks"] >= 1 and drawn["empty"] == 0, (chart, drawn)
    assert state["history"] == 1  # the rollout's step from 0 % to 50 %
    assert state["drift"] == 4 + 2  # the iris features, then each model's predictions
    # Rolling quality: a row per variant with its accuracy over the window, as /stats has it.
    assert [row[0] for row in state["monitoring"]] == ["champion", "challenger"]
    for row in state["monitoring"]:
        quality = after["rolling"]["variants"][row[0]]
        assert row[1] == f"{quality['labelled']:,}"
        assert row[2] == fixed(quality['accuracy'] * 100, 1) + " %"
        assert row[-1] == "mixed"
    assert phone["scrollWidth"] <= phone["innerWidth"] == PHONE[0], phone
    assert phone["action"] == state["action"]


def test_dashboard_before_any_label_shows_an_empty_state(tmp_path: Path, champion_dir: Path,
                                                         challenger_dir: Path) -> None:
    """Requests but no feedback yet: a message instead of charts, and still no console error."""
    require_chromium()
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db",
                          traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id"})
    with serve(config, tmp_path) as server:
        send_users(server, traffic(20, seed=8))
        stats = stats_when(server, lambda b: sum(v["requests"]
                                                 for v in b["variants"].values()) == 20)
        state, errors = dashboard_state(server, tmp_path / "profile")
    assert errors == []
    assert state["action"].lower() == stats["decision"]["action"] == "continue"
    for chart in ("metric-chart", "difference-chart", "pvalue-chart"):
        assert state["charts"][chart]["empty"] == 1, state["charts"]
    assert state["charts"]["latency-chart"]["marks"] >= 1
    assert state["history"] == 0


def test_dashboard_in_shadow_mode_shows_the_paired_section(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path) -> None:
    """Shadow mode: agreement drawn from the paired section, the decision of /stats, no error."""
    require_chromium()
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          mode="shadow", store="sqlite:///outcomes.db")
    with serve(config, tmp_path) as server:
        sent = send_users(server, traffic(400, seed=9))
        send_feedback(server, [{"request_id": s.request_id, "label": s.label} for s in sent])
        stats = stats_when(server, lambda b: b["comparison"]["paired"]["n"] == 400)
        with chromium(tmp_path / "profile") as driver:
            driver.get(f"{server.url}/dashboard")
            wait_rendered(driver)
            state = page_state(driver)
            shadow = driver.execute_script("""
                const card = document.getElementById('shadow-card');
                return {hidden: card.hidden,
                        bars: card.querySelectorAll('rect.bar.agree').length,
                        facts: [...card.querySelectorAll('dt')].map(dt => dt.textContent)};
            """)
            errors = console_errors(driver)
    assert errors == []
    assert stats["comparison"]["paired"]["n"] == 400
    assert state["action"].lower() == stats["decision"]["action"]
    assert state["reasons"] == stats["decision"]["reasons"]
    assert not shadow["hidden"] and shadow["bars"] == 1
    assert "McNemar exact p" in shadow["facts"]
    for chart in ("metric-chart", "difference-chart", "pvalue-chart"):
        assert state["charts"][chart]["marks"] >= 1, state["charts"]


def test_a_missing_browser_fails_in_ci_and_skips_locally(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Without chromium the browser tests skip on a developer's machine, and fail in CI."""
    from tests.e2e import browser

    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium"):
        browser.require_chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium"):
        browser.require_chromium()


def run_screenshot(url: str, out: Path, path: tuple[Path, ...] = ()
                   ) -> subprocess.CompletedProcess[str]:
    """The README's screenshot command, as a person runs it from the repository root."""
    pythonpath = os.pathsep.join(map(str, (*path, REPO_ROOT)))
    return subprocess.run([sys.executable, "-m", "tests.e2e.browser", url, str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": pythonpath})


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_the_screenshot_command_saves_the_drawn_page(tmp_path: Path, champion_dir: Path,
                                                     challenger_dir: Path) -> None:
    """`python -m tests.e2e.browser URL OUT.png` waits for the figures, then saves laptop and
    phone pictures."""
    require_chromium()
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db",
                          traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id"})
    out = tmp_path / "shots" / "dashboard.png"
    out.parent.mkdir()
    with serve(config, tmp_path) as server:
        sent = send_users(server, traffic(300, seed=3))
        send_feedback(server, [{"request_id": s.request_id, "label": s.label} for s in sent])
        stats_when(server, lambda b: labelled(b) == 300)
        result = run_screenshot(server.url, out)
    assert result.returncode == 0, result.stderr
    phone = out.with_name("dashboard-phone.png")
    assert result.stdout.strip() == f"saved {out} and {phone}"
    assert png_size(out)[0] == LAPTOP[0]
    assert png_size(phone)[0] == 2 * PHONE[0]  # drawn at a phone's pixel ratio of 2


def test_the_screenshot_command_says_what_is_missing(tmp_path: Path) -> None:
    """Without Selenium (a venv from `make demo`) the command says what to install, in one line
    on stderr, and exits 1."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import sys\nsys.modules['selenium'] = None\n")
    result = run_screenshot("http://127.0.0.1:9", tmp_path / "out.png", path=(hook,))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "selenium" in result.stderr and "make install" in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_after_a_promotion_the_banner_says_what_serves(tmp_path: Path, champion_dir: Path,
                                                     challenger_dir: Path) -> None:
    """Mode single after a promotion: the banner names the model serving, the switch and the
    model kept for rollback, and no "continue" recommendation."""
    require_chromium()
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db")
    with serve(config, tmp_path, extra_env={"ROUTER_ADMIN_TOKEN": "t0ken"}) as server:
        promoted = httpx.post(f"{server.url}/admin/promote", json={"reason": "it wins"},
                              headers={"Authorization": "Bearer t0ken"})
        assert promoted.status_code == 200
        state, errors = dashboard_state(server, tmp_path / "profile")
    assert errors == []
    assert state["decisionAttr"] == "single" and state["action"] == "chall"
    assert state["reasons"][0].startswith("No experiment running: chall")
    assert state["reasons"][1].startswith("Promoted champ → chall on ")
    assert state["reasons"][1].endswith(": it wins")
    assert state["reasons"][2].startswith("champ stays loaded as previous")
    assert not any("continue" in reason.lower() for reason in state["reasons"])
