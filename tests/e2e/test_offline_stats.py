"""A run logged through a live gateway, exported as a CSV the way a warehouse would, and
judged again by ``router stats --outcomes``: the same comparison and decision as ``/stats``."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from router.cli import main
from tests.configs import write_config
from tests.e2e.server import serve
from tests.e2e.test_stats import send_feedback, send_users, stats_when, traffic

pytestmark = pytest.mark.e2e

# One row per answered request, in the order its label arrived (unlabelled rows last): the
# columns router.stats.analyze reads. Forced requests and the champion's fallback answers are
# not part of the experiment's groups, so an export leaves them out.
EXPORT = """
SELECT p.variant, p.label AS prediction, f.label, p.unit_id, p.request_id, p.latency_ms,
       p.error IS NOT NULL AS error, p.shadow
FROM predictions p
LEFT JOIN feedback f ON f.id = (SELECT MAX(id) FROM feedback WHERE request_id = p.request_id)
WHERE p.forced = 0 AND p.fallback = 0
ORDER BY f.id IS NULL, f.id, p.id
"""


def export_csv(database: Path, out: Path, query: str = EXPORT) -> None:
    with sqlite3.connect(database) as connection:
        cursor = connection.execute(query)
        names = [d[0] for d in cursor.description]
        with out.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(names)
            writer.writerows(cursor)


def test_an_exported_log_gives_the_same_verdict(tmp_path: Path, champion_dir: Path,
                                                challenger_dir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """1,200 users (several requests for some) at 40 %: the exported CSV's report has
    /stats's comparison, analysis unit and decision."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db",
                          traffic={"challenger_percent": 40, "sticky_key": "header:x-user-id"},
                          analysis={"min_samples": 100})
    rows = traffic(1200, seed=30)
    with serve(config, tmp_path) as server:
        sent = send_users(server, rows) + send_users(server, rows[:400])  # 400 come back
        order = np.random.default_rng(31).permutation(len(sent))
        send_feedback(server, [{"request_id": sent[i].request_id, "label": sent[i].label}
                               for i in order[:1500]])
        live = stats_when(server, lambda b: sum(v["labelled"] for v in b["variants"].values())
                          == 1500)
    assert live["analysis_unit"] == "user"
    assert live["comparison"]["test"] == "z-test on per-user ratios (delta method)"

    exported = tmp_path / "outcomes.csv"
    export_csv(tmp_path / "outcomes.db", exported)
    assert main(["stats", "--outcomes", str(exported), "--challenger-percent", "40",
                 "--json"]) == 0
    offline = json.loads(capsys.readouterr().out)
    assert offline["analysis_unit"] == "user"
    for key in ("test", "difference", "difference_ci95", "p_value", "difference_cs",
                "sequential_p_value", "significant", "samples_needed_per_variant"):
        assert offline["comparison"][key] == pytest.approx(live["comparison"][key]), key
    assert offline["comparison"]["srm"]["p_value"] == pytest.approx(
        live["comparison"]["srm"]["p_value"])
    for role in ("champion", "challenger"):
        for key in ("requests", "units", "labelled", "metric"):
            assert offline["variants"][role][key] == pytest.approx(live["variants"][role][key])
    assert offline["decision"] == live["decision"]

    assert main(["stats", "--outcomes", str(exported)]) == 0  # the table, as for a gateway
    assert "DECISION" in capsys.readouterr().out
    assert main(["stats", "--outcomes", str(tmp_path / "missing.csv")]) == 1
    assert "cannot read" in capsys.readouterr().err
