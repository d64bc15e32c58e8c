"""End to end: drift, rolling quality and output monitoring of a real `router serve`."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from router.artifacts import save_model
from router.stats.drift import bin_counts, expected_psi, psi
from tests.configs import write_config
from tests.e2e.server import Server, serve
from tests.e2e.test_stats import send_feedback, stats_when
from tests.polling import eventually

pytestmark = pytest.mark.e2e

FEATURES = ("f0", "f1", "f2", "f3", "f4")


def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Five standard normal features; the label is "yes" when f0 + f1 + noise is positive."""
    X = rng.normal(size=(n, len(FEATURES)))
    y = np.where(X[:, 0] + X[:, 1] + rng.normal(0.0, 0.5, n) > 0, "yes", "no")
    return X, y


@pytest.fixture(scope="module")
def model_300(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """StandardScaler + LogisticRegression trained on 300 rows: the reference is 300 rows."""
    X, y = draw(np.random.default_rng(0), 300)
    model = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]).fit(X, y)
    return save_model(model, tmp_path_factory.mktemp("models") / "lr" / "1", name="lr",
                      version="1", X_train=X, y_train=y, feature_names=FEATURES,
                      metrics={"accuracy": float(model.score(X, y))})


def send(server: Server, X: np.ndarray, threads: int = 8) -> list[dict[str, Any]]:
    """One request per row, from ``threads`` threads at once; the answers in row order."""
    with httpx.Client(base_url=server.url, timeout=30,
                      limits=httpx.Limits(max_connections=threads)) as client:
        def one(row: np.ndarray) -> dict[str, Any]:
            response = client.post("/predict", json={"features": row.round(4).tolist()})
            assert response.status_code == 200, response.text
            return dict(response.json())

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, X))


def drift_after(tmp_path: Path, model: Path, X: np.ndarray, store: str) -> dict[str, Any]:
    config = write_config(tmp_path, champion=model, mode="single", store=store,
                          name=f"{store.rsplit('/', 1)[-1]}.yaml")
    with serve(config, tmp_path) as server:
        send(server, X)
        body = stats_when(server, lambda b: b["drift"]["rows"] == len(X))
    assert body["drift"]["rows"] == len(X)
    return dict(body["drift"])


def test_drift_through_the_gateway_flags_a_half_sd_shift_and_nothing_else(
        tmp_path: Path, model_300: Path) -> None:
    """1,000 requests like the 300 training rows: every feature stable; the same with f2
    shifted by half a standard deviation: f2 flagged, the others stable."""
    rng = np.random.default_rng(1)
    same, _ = draw(rng, 1000)
    shifted = same.copy()
    shifted[:, 2] += 0.5

    drift = drift_after(tmp_path, model_300, same, "sqlite:///same.db")
    reference = json.loads((model_300 / "metadata.json").read_text())["reference"]["features"]
    for j, name in enumerate(FEATURES):
        feature = drift["features"][name]
        live = bin_counts(same[:, j].round(4), reference[name]["edges"])
        assert feature["psi"] == pytest.approx(psi(reference[name]["counts"], live))
        assert feature["expected_psi"] == pytest.approx(
            expected_psi(int(np.count_nonzero(np.add(reference[name]["counts"], live))),
                         300, 1000))
        assert feature["status"] == "stable", (name, feature)
    assert drift["predictions"]["champion"]["status"] == "stable"

    drift = drift_after(tmp_path, model_300, shifted, "sqlite:///shifted.db")
    statuses = {name: drift["features"][name]["status"] for name in FEATURES}
    assert statuses.pop("f2") in ("moderate", "major"), drift["features"]["f2"]
    assert set(statuses.values()) == {"stable"}, drift["features"]
    assert drift["features"]["f2"]["adjusted_p_value"] < 0.01


@pytest.fixture(scope="module")
def challenger_300(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weaker challenger: the same pipeline on f0 alone's signal (f1 scaled away)."""
    X, y = draw(np.random.default_rng(10), 300)
    X_fit = X.copy()
    X_fit[:, 1] = 0.0
    model = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]).fit(X_fit, y)
    return save_model(model, tmp_path_factory.mktemp("models") / "lr-f0" / "1", name="lr-f0",
                      version="1", X_train=X, y_train=y, feature_names=FEATURES,
                      metrics={"accuracy": float(model.score(X, y))})


def test_rolling_quality_and_outputs_through_the_gateway(
        tmp_path: Path, model_300: Path, challenger_300: Path) -> None:
    """1,600 requests split 50/50, labels sent in a shuffled order: each variant's rolling
    window (the latest 400 labels) matches sklearn.metrics on what was sent and answered, and
    its output shares match the predictions it made."""
    config = write_config(tmp_path, champion=model_300, challenger=challenger_300,
                          store="sqlite:///rolling.db",
                          monitoring={"window": 400, "interval_s": 0.5},
                          traffic={"challenger_percent": 50})
    X, y = draw(np.random.default_rng(11), 1600)
    with serve(config, tmp_path) as server:
        answers = send(server, X, threads=1)  # one at a time: the log keeps the sending order
        order = np.random.default_rng(12).permutation(len(X))
        send_feedback(server, [{"request_id": answers[i]["request_id"], "label": str(y[i])}
                               for i in order])
        body = stats_when(server, lambda b: sum(v["labelled"] for v in b["variants"].values())
                          == len(X))
        gauges = gauges_when(server, lambda g: all(
            g.get(("router_rolling_labelled", (("variant", role),))) == 400
            for role in ("champion", "challenger")))
    rolling, outputs = body["rolling"], body["outputs"]
    assert rolling["window"] == outputs["window"] == 400
    for role in ("champion", "challenger"):
        arrived = [i for i in order if answers[i]["variant"] == role][-400:]
        truth = [str(y[i]) for i in arrived]
        predicted = [answers[i]["prediction"] for i in arrived]
        got = rolling["variants"][role]
        assert got["labelled"] == 400
        assert got["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
        precision, recall, f1, _ = precision_recall_fscore_support(
            truth, predicted, labels=["no", "yes"], zero_division=0)
        for k, name in enumerate(("no", "yes")):
            assert got["classes"][name]["precision"] == pytest.approx(precision[k])
            assert got["classes"][name]["recall"] == pytest.approx(recall[k])
            assert got["classes"][name]["f1"] == pytest.approx(f1[k])
        made = [a["prediction"] for a in answers if a["variant"] == role]
        shares = outputs["variants"][role]["shares"]
        latest = made[-400:]
        assert outputs["variants"][role]["predictions"] == 400
        assert shares == pytest.approx({c: latest.count(c) / 400 for c in ("no", "yes")})
        assert outputs["variants"][role]["constant_output"] is False
    assert rolling["variants"]["challenger"]["accuracy"] < rolling["variants"]["champion"][
        "accuracy"]
    # /metrics: the background task's gauges, equal to the report's figures.
    for role in ("champion", "challenger"):
        entry = rolling["variants"][role]
        assert gauges[("router_rolling_metric", (("metric", "accuracy"), ("variant", role)))] \
            == pytest.approx(entry["accuracy"])
        assert gauges[("router_rolling_metric", (("metric", "f1:yes"), ("variant", role)))] \
            == pytest.approx(entry["classes"]["yes"]["f1"])
        assert gauges[("router_constant_output", (("variant", role),))] == 0
    for name, feature in body["drift"]["features"].items():
        assert gauges[("router_feature_psi", (("feature", name),))] == pytest.approx(
            feature["psi"])
        assert gauges[("router_feature_drift", (("feature", name),))] == 0
    assert ("router_prediction_psi", (("variant", "challenger"),)) in gauges


def gauges_when(server: Server, ready: Callable[[dict[Any, float]], bool],
                timeout: float = 30.0) -> dict[Any, float]:
    """Every sample of /metrics by (name, sorted labels), once ``ready`` holds."""
    def scrape() -> dict[Any, float]:
        text = httpx.get(f"{server.url}/metrics", timeout=30).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    return eventually(scrape, ready, timeout=timeout, interval=0.2,
                      what="/metrics's gauges ready")
