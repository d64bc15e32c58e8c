"""The dashboard's routes in-process: the page and its files, /stats/timeline and /history."""

from __future__ import annotations

import fnmatch
import re
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from router.outcomes import HistoryEntry
from tests.gateway.test_stats_route import ROW, gateway

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "router" / "dashboard"
# The one absolute URL the page may hold: SVG's namespace name, which is never fetched.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def labelled_traffic(client: TestClient, n: int) -> None:
    """n users' requests, every other one labelled with a class the model did not answer."""
    answers = [client.post("/predict", json={"features": ROW},
                           headers={"x-user-id": f"user-{i}"}).json() for i in range(n)]
    labels = [{"request_id": a["request_id"], "label": a["prediction"] if i % 2 else "virginica"}
              for i, a in enumerate(answers)]
    assert client.post("/feedback", json={"feedback": labels}).status_code == 202
    gateway(client).writer.flush()


@pytest.fixture
def client(make_client: Any, champion_dir: Path, challenger_dir: Path) -> TestClient:
    return make_client(champion=champion_dir, challenger=challenger_dir,  # type: ignore[no-any-return]
                       traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id"})


def test_the_page_is_served_with_its_files_and_a_strict_policy(client: TestClient) -> None:
    """HTML with a viewport, its script and stylesheet from the package, nothing from elsewhere."""
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    html = page.text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    for name, kind in (("helpers.js", "text/javascript"), ("segments.js", "text/javascript"),
                       ("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        assert f'"dashboard/static/{name}"' in html
        asset = client.get(f"/dashboard/static/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
        assert asset.content == (ASSETS / name).read_bytes()
    for path in ASSETS.iterdir():
        urls = set(re.findall(r"[a-z]+://[^\s\"')]+", path.read_text()))
        assert urls <= {SVG_NAMESPACE}, (path.name, urls)


def test_unknown_files_are_404(client: TestClient) -> None:
    """Only the dashboard's own files are served: no other name, no way out of the folder."""
    for name in ("index.html", "nope.js", "..%2F..%2Fgateway%2Fapp.py", "%2Fetc%2Fpasswd"):
        response = client.get(f"/dashboard/static/{name}")
        assert response.status_code == 404, name
        assert response.json()["error"] == "not_found"


def test_package_data_ships_every_dashboard_file() -> None:
    """pyproject's package-data covers each file of router/dashboard (a wheel then holds it)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["router"]
    files = [p.relative_to(ROOT / "router").as_posix() for p in ASSETS.iterdir()]
    assert {"dashboard/index.html", "dashboard/helpers.js", "dashboard/segments.js",
            "dashboard/dashboard.js", "dashboard/dashboard.css"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_timeline_ends_at_the_figures_of_stats(client: TestClient) -> None:
    """/stats/timeline's last checkpoint holds /stats's current figures; overrides apply."""
    labelled_traffic(client, 40)
    stats = client.get("/stats").json()
    timeline = client.get("/stats/timeline").json()
    assert timeline["labelled"][-1] == 40 and len(timeline["labelled"]) <= 50
    for role in ("champion", "challenger"):
        series, variant = timeline["variants"][role], stats["variants"][role]
        assert series["labelled"][-1] == variant["labelled"]
        assert series["metric"][-1] == pytest.approx(variant["metric"])
        assert series["ci95"][-1] == pytest.approx(variant["metric_ci95"])
    c, comparison = timeline["comparison"], stats["comparison"]
    assert c["difference"][-1] == pytest.approx(comparison["difference"])
    assert c["difference_ci95"][-1] == pytest.approx(comparison["difference_ci95"])
    assert c["sequential_p_value"][-1] == pytest.approx(comparison["sequential_p_value"])
    assert timeline["alpha"] == stats["comparison"]["alpha"] and timeline["mode"] == "ab"
    other = client.get("/stats/timeline?metric=log_loss&alpha=0.2").json()
    assert other["metric"] == "log_loss" and other["alpha"] == 0.2
    assert other["higher_is_better"] is False
    for query in ("metric=mae", "alpha=2"):
        assert client.get(f"/stats/timeline?{query}").status_code == 422


def test_history_lists_the_switches(client: TestClient) -> None:
    """/history: the store's switches oldest first, as `router history --json` shows them."""
    assert client.get("/history").json() == {"history": []}
    store = gateway(client).store
    for i, action in enumerate(("step", "promote")):
        store.append_history(HistoryEntry(ts=time.time() + i, action=action, from_model="a",
                                          to_model="b", reason=f"because {i}", actor="test",
                                          details={"n": i}))
    entries = client.get("/history").json()["history"]
    assert [e["action"] for e in entries] == ["step", "promote"]
    assert entries[1] == {"ts": pytest.approx(entries[0]["ts"] + 1), "action": "promote",
                          "from": "a", "to": "b", "reason": "because 1", "actor": "test",
                          "details": {"n": 1}, "experiment": ""}
    # Another experiment's switch in the same store is not this gateway's.
    store.append_history(HistoryEntry(ts=time.time() + 5, action="promote", from_model="c",
                                      to_model="d", reason="theirs", actor="test",
                                      experiment="another"))
    assert len(client.get("/history").json()["history"]) == 2
    assert [e["action"] for e in client.get("/history?limit=1").json()["history"]] == \
        ["promote"]
    for bad in ("0", "-1", "x"):
        assert client.get(f"/history?limit={bad}").status_code == 422


def test_the_page_with_a_trailing_slash_redirects_within_the_host_asked(
        client: TestClient) -> None:
    """``/dashboard/`` sends the browser to the page by a relative reference, which names no
    host (whatever the Host header says) and keeps a proxy's path prefix."""
    moved = client.get("/dashboard/", headers={"host": "evil.example"}, follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"] == "../dashboard"
    assert moved.headers["cache-control"] == "no-cache"
    assert client.get("/dashboard/").text == client.get("/dashboard").text
