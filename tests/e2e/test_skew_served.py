"""Training-serving skew through a real gateway: requests with known ids (single and batch) are
logged by ``router serve``, the "training pipeline" recomputes their features with one of them
offset, and ``router skew`` run as a command finds that feature and no other."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest

from tests.configs import write_config
from tests.e2e.server import REPO_ROOT, Server, serve
from tests.e2e.test_stats import FEATURES, traffic
from tests.polling import eventually

pytestmark = pytest.mark.e2e

OFFSET = 0.3  # added to petal_length by the offline pipeline


def send(server: Server, rows: list[list[float]]) -> dict[str, list[float]]:
    """120 single requests and two batches of 15, each with a request id the client chose;
    the features sent by the id feedback would name (``<id>:<i>`` for a batch's rows)."""
    sent: dict[str, list[float]] = {}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i, row in enumerate(rows[:120]):
            request_id = f"skew-{i}"
            response = client.post("/predict", headers={"x-request-id": request_id},
                                   json={"features": dict(zip(FEATURES, row, strict=True))})
            assert response.status_code == 200, response.text
            sent[request_id] = row
        for k, start in enumerate((120, 135)):
            batch = rows[start:start + 15]
            response = client.post("/predict", headers={"x-request-id": f"batch-{k}"},
                                   json={"instances": batch})
            assert response.status_code == 200, response.text
            ids = [p["id"] for p in response.json()["predictions"]]
            assert ids == [f"batch-{k}:{i}" for i in range(15)]
            sent.update(zip(ids, batch, strict=True))
    return sent


def logged_ids(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        (count,) = connection.execute(
            "SELECT count(DISTINCT request_id) FROM predictions").fetchone()
    return int(count)


def write_offline(path: Path, sent: dict[str, list[float]], seed: int) -> None:
    """Each sent row as the training pipeline recomputes it, in shuffled order and columns:
    petal_length offset by OFFSET, sepal_width off by float noise within the tolerance, the
    others equal; plus three ids the gateway never saw."""
    rng = np.random.default_rng(seed)
    columns = ["petal_width", "request_id", "sepal_width", "petal_length", "sepal_length"]
    ids = list(sent)
    rng.shuffle(ids)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for request_id in ids:
            values = dict(zip(FEATURES, sent[request_id], strict=True))
            values["petal_length"] += OFFSET
            values["sepal_width"] *= 1 + rng.uniform(-1e-9, 1e-9)
            writer.writerow([request_id if c == "request_id" else repr(values[c])
                             for c in columns])
        for k in range(3):
            writer.writerow([f"never-sent-{k}" if c == "request_id" else "1.0" for c in columns])


def router_skew(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router.cli", "skew", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def test_router_skew_finds_the_offset_feature_and_no_other(tmp_path: Path, champion_dir: Path,
                                                          challenger_dir: Path) -> None:
    """150 logged rows (120 requests, two batches of 15) against an offline file with
    petal_length offset by 0.3: only petal_length is skewed, by exactly the offset."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db")
    rows = [row for row, _ in traffic(150, seed=40)]
    with serve(config, tmp_path) as server:
        sent = send(server, rows)
        eventually(lambda: logged_ids(tmp_path / "outcomes.db"), lambda n: n == len(sent),
                   what=f"the {len(sent)} sent request ids in the log", timeout=60)
        offline = tmp_path / "offline.csv"
        write_offline(offline, sent, seed=41)
        done = router_skew("--config", str(config), "--features", str(offline), "--json",
                           cwd=tmp_path)
        table = router_skew("--config", str(config), "--features", str(offline), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["rows_joined"], report["rows_missing"]) == (150, 3)
    assert [name for name, e in report["features"].items() if e["skewed"]] == ["petal_length"]
    offset = report["features"]["petal_length"]
    assert offset["mismatch_share"] == 1.0
    assert offset["mean_diff"] == pytest.approx(-OFFSET)
    assert offset["max_abs_diff"] == pytest.approx(OFFSET)
    for name in ("sepal_length", "sepal_width", "petal_width"):
        assert report["features"][name]["mismatch_share"] == 0.0, name
    assert report["features"]["sepal_width"]["max_abs_diff"] > 0  # the noise, within tolerance

    assert table.returncode == 0, table.stderr
    marks = {line.split()[0]: line.split()[-1] for line in table.stdout.splitlines()
             if line.split() and line.split()[0] in FEATURES}
    assert marks == {"sepal_length": "no", "sepal_width": "no", "petal_length": "SKEWED",
                     "petal_width": "no"}
