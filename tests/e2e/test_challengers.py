"""End to end: two challengers at 20 % each behind a real `router serve`.

The shares served over 5,000 users, every challenger's user kept when one share rises to 30 %
by a hot reload of the YAML, and /stats against scipy and statsmodels on what was sent, with
Holm's correction computed here.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from tests.e2e.server import Server, serve
from tests.e2e.test_live_changes import wait_config
from tests.e2e.test_stats import labelled, send_feedback, stats_when, traffic

pytestmark = pytest.mark.e2e

USERS = 5_000
ARMS = ("champion", "gb", "svc")


def write(path: Path, champion: Path, gb: Path, svc: Path, gb_percent: float) -> None:
    """The YAML (as JSON) of the experiment, replaced in one rename as an editor saves it."""
    config = {
        "experiment": "two-challengers", "mode": "ab",
        "champion": {"name": "rf", "path": str(champion)},
        "challengers": [{"name": "gb", "path": str(gb), "percent": gb_percent},
                        {"name": "svc", "path": str(svc), "percent": 20}],
        "traffic": {"sticky_key": "header:x-user-id"},
        "store": "sqlite:///outcomes.db",
    }
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(config, indent=2))
    temporary.replace(path)


def send(server: Server, rows: list[tuple[list[float], str]]) -> list[dict[str, Any]]:
    """One request per user (x-user-id user-<i>); each answer's variant, id and prediction."""
    with httpx.Client(base_url=server.url, timeout=60,
                      limits=httpx.Limits(max_connections=8)) as client:
        def one(item: tuple[int, tuple[list[float], str]]) -> dict[str, Any]:
            i, (row, _) = item
            response = client.post("/predict", json={"features": row},
                                   headers={"x-user-id": f"user-{i}"})
            assert response.status_code == 200, response.text
            body = response.json()
            assert response.headers["x-variant"] == body["variant"]
            return body

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, enumerate(rows)))


def test_two_challengers_shares_reload_and_stats(tmp_path: Path, champion_dir: Path,
                                                 challenger_dir: Path,
                                                 no_proba_dir: Path) -> None:
    """5,000 users: each challenger serves 20 % within 2 points; gb raised to 30 % by a hot
    reload keeps every user of gb and svc where they were (only champion users move, to gb);
    /stats's figures are scipy's and statsmodels' on the answers sent, Holm's correction
    included; /metrics counts every arm."""
    config = tmp_path / "router.yaml"
    write(config, champion_dir, challenger_dir, no_proba_dir, 20)
    rows = traffic(USERS, seed=31)
    with serve(config, tmp_path) as server:
        before = send(server, rows)
        shares = Counter(answer["variant"] for answer in before)
        for arm, expected in zip(ARMS, (0.60, 0.20, 0.20), strict=True):
            assert abs(shares[arm] / USERS - expected) <= 0.02, shares

        order = np.random.default_rng(32).permutation(USERS)  # labels out of order
        send_feedback(server, [{"request_id": before[i]["request_id"], "label": rows[i][1]}
                               for i in order])
        body = stats_when(server, lambda b: labelled(b) == USERS, timeout=120)
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text

        write(config, champion_dir, challenger_dir, no_proba_dir, 30)
        wait_config(server.url, lambda c: c["config"]["challengers"][0]["percent"] == 30,
                    timeout=60)
        after = send(server, rows)

    # Every user of a challenger keeps it; the users who moved went from the champion to gb.
    moved = [(b["variant"], a["variant"]) for b, a in zip(before, after, strict=True)
             if b["variant"] != a["variant"]]
    assert set(moved) == {("champion", "gb")}
    assert all(a["variant"] == b["variant"] for b, a in zip(before, after, strict=True)
               if b["variant"] != "champion")
    raised = Counter(answer["variant"] for answer in after)
    assert abs(raised["gb"] / USERS - 0.30) <= 0.02 and raised["svc"] == shares["svc"]

    # /stats against scipy and statsmodels on the same answers and labels.
    right = {arm: [b["prediction"] == rows[i][1] for i, b in enumerate(before)
                   if b["variant"] == arm] for arm in ARMS}
    n = {arm: len(oks) for arm, oks in right.items()}
    x = {arm: sum(oks) for arm, oks in right.items()}
    assert body["challengers"] == ["gb", "svc"]
    for arm in ARMS:
        variant = body["variants"][arm]
        assert (variant["requests"], variant["labelled"], variant["units"]) == (n[arm],) * 3
        assert variant["metric"] == pytest.approx(x[arm] / n[arm])
    p_values = []
    for arm in ("gb", "svc"):
        c = body["comparisons"][arm]
        p = proportions_ztest([x[arm], x["champion"]], [n[arm], n["champion"]])[1]
        assert c["p_value"] == pytest.approx(p)
        assert c["difference"] == pytest.approx(x[arm] / n[arm] - x["champion"] / n["champion"])
        assert c["difference_ci95"] == pytest.approx(list(confint_proportions_2indep(
            x[arm], n[arm], x["champion"], n["champion"], method="newcomb", compare="diff")))
        assert c["alpha"] == pytest.approx(0.025)
        p_values.append(p)
    holm = multipletests(p_values, alpha=0.05, method="holm")[1]
    assert [body["comparisons"][arm]["adjusted_p_value"] for arm in ("gb", "svc")] == \
        pytest.approx(list(holm))
    observed = [n[arm] for arm in ARMS]
    srm = body["srm"]
    assert srm["p_value"] == pytest.approx(
        sps.chisquare(observed, np.array([0.6, 0.2, 0.2]) * USERS).pvalue)
    assert srm["unit"] == "users" and srm["mismatch"] == (srm["p_value"] < 0.001)
    decision = body["decision"]
    assert decision["action"] in ("promote", "continue", "rollback")
    assert set(body["decisions"]) == {"gb", "svc"}
    if decision["action"] != "continue":
        assert decision["challenger"] in ("gb", "svc")

    for arm in ARMS:
        assert f'router_requests_total{{code="200",variant="{arm}"}} {shares[arm]}.0' in metrics
