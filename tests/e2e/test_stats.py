"""End to end: /stats of a real `router serve` against scipy/statsmodels on the same traffic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
from scipy import stats as sps
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from router.artifacts import save_model
from router.cli import main
from router.serving.registry import ModelRegistry
from router.stats.confidence import running_paired
from router.stats.drift import bin_counts, psi
from tests.configs import write_config
from tests.e2e.server import Server, serve
from tests.polling import eventually
from tests.stats.test_confidence import by_hand

pytestmark = pytest.mark.e2e

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


@dataclass
class Sent:
    """One answered request and the label the test knows for it."""

    row: list[float]
    label: str
    user: str
    request_id: str
    variant: str
    prediction: str
    probabilities: dict[str, float]


def traffic(n: int, seed: int, noise: float = 0.4) -> list[tuple[list[float], str]]:
    """n iris rows with Gaussian noise (so the two models disagree now and then), and labels."""
    data = load_iris()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(data.data), n)
    rows = data.data[picks] + rng.normal(0.0, noise, (n, 4))
    labels = np.asarray(data.target_names)[data.target[picks]]
    return [(row.round(3).tolist(), str(label)) for row, label in zip(rows, labels, strict=True)]


def send_users(server: Server, rows: list[tuple[list[float], str]], threads: int = 8
               ) -> list[Sent]:
    """One request per user (x-user-id user-<i>), from ``threads`` threads at once."""
    with httpx.Client(base_url=server.url, timeout=30,
                      limits=httpx.Limits(max_connections=threads)) as client:
        def send(item: tuple[int, tuple[list[float], str]]) -> Sent:
            i, (row, label) = item
            response = client.post("/predict", json={"features": row},
                                   headers={"x-user-id": f"user-{i}"})
            assert response.status_code == 200, response.text
            body = response.json()
            return Sent(row, label, f"user-{i}", body["request_id"], body["variant"],
                        body["prediction"], body["probabilities"])

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(send, enumerate(rows)))


def send_feedback(server: Server, items: list[dict[str, Any]], batch: int = 500) -> None:
    """Labels in batches, one after the other: the store keeps this order of arrival."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for start in range(0, len(items), batch):
            response = client.post("/feedback", json={"feedback": items[start:start + batch]})
            assert response.status_code == 202, response.text


def stats_when(server: Server, ready: Callable[[dict[str, Any]], bool],
               query: str = "", timeout: float = 30.0) -> dict[str, Any]:
    """/stats once ``ready`` holds (the outcome log trails the answers by up to a second)."""
    return eventually(lambda: httpx.get(f"{server.url}/stats{query}", timeout=30).json(),
                      ready, timeout=timeout, interval=0.2, what=f"/stats{query} ready")


def labelled(body: dict[str, Any]) -> int:
    return sum(v["labelled"] for v in body["variants"].values())


def test_ab_stats_match_scipy_on_2000_users(tmp_path: Path, champion_dir: Path,
                                            challenger_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """2,000 users at 30 %: every figure of /stats equals scipy/statsmodels on what was sent."""
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          store="sqlite:///outcomes.db",
                          traffic={"challenger_percent": 30, "sticky_key": "header:x-user-id"})
    with serve(config, tmp_path) as server:
        sent = send_users(server, traffic(2000, seed=20))
        order = np.random.default_rng(21).permutation(len(sent))  # labels arrive out of order
        send_feedback(server, [{"request_id": sent[i].request_id, "label": sent[i].label}
                               for i in order]
                      + [{"request_id": f"unknown-{k}", "label": "setosa"} for k in range(3)])
        body = stats_when(server, lambda b: labelled(b) == 2000 and b["unknown_feedback_ids"])
        assert main(["stats", "--url", server.url]) == 0
        table = capsys.readouterr().out
    assert "DECISION" in table and "two-proportion z-test" in table

    is_b = np.array([s.variant == "challenger" for s in sent])
    right = np.array([s.prediction == s.label for s in sent])
    n_a, n_b = int((~is_b).sum()), int(is_b.sum())
    x_a, x_b = int(right[~is_b].sum()), int(right[is_b].sum())
    champion, challenger = body["variants"]["champion"], body["variants"]["challenger"]
    assert (champion["requests"], challenger["requests"]) == (n_a, n_b)
    assert (champion["labelled"], challenger["labelled"]) == (n_a, n_b)
    assert champion["errors"] == challenger["errors"] == 0
    assert champion["metric"] == pytest.approx(x_a / n_a)
    assert challenger["metric_ci95"] == pytest.approx(
        list(proportion_confint(x_b, n_b, method="wilson")))
    shares = Counter(s.prediction for s in sent if s.variant == "champion")
    for label, count in shares.items():
        assert champion["prediction_distribution"][label] == pytest.approx(count / n_a)

    c = body["comparison"]
    assert c["difference"] == pytest.approx(x_b / n_b - x_a / n_a)
    assert c["p_value"] == pytest.approx(proportions_ztest([x_b, x_a], [n_b, n_a])[1])
    assert c["difference_ci95"] == pytest.approx(list(confint_proportions_2indep(
        x_b, n_b, x_a, n_a, method="newcomb", compare="diff")))
    arrival_b, arrival_right = is_b[order], right[order]
    sequential, low, high = by_hand(arrival_right.astype(float).tolist(), arrival_b.tolist(),
                                    0.01**2)
    assert c["sequential_p_value"] == pytest.approx(sequential[-1])
    assert c["difference_cs"] == pytest.approx([low[-1], high[-1]])
    assert c["significant"] == (sequential[-1] < 0.05)
    assert c["samples_needed_per_variant"] > 0
    srm = c["srm"]
    assert srm["expected_percent"] == 30.0 and srm["unit"] == "users"
    assert srm["p_value"] == pytest.approx(
        sps.chisquare([n_a, n_b], [0.7 * (n_a + n_b), 0.3 * (n_a + n_b)]).pvalue)
    assert srm["mismatch"] == (srm["p_value"] < 0.001)
    assert body["unknown_feedback_ids"] == 3

    # Drift: every row sent is within the latest 10,000, against the champion's reference.
    served = ModelRegistry().load(champion_dir)
    reference = served.metadata["reference"]
    rows = np.array([s.row for s in sent])
    for j, name in enumerate(FEATURES):
        histogram = reference["features"][name]
        feature = body["drift"]["features"][name]
        assert feature["psi"] == pytest.approx(
            psi(histogram["counts"], bin_counts(rows[:, j], histogram["edges"])))
        assert feature["ks_p_value"] == pytest.approx(
            sps.ks_2samp(served.reference_sample[:, j], rows[:, j]).pvalue)
    predicted = reference["predictions"]
    live = [shares.get(str(label), 0) for label in predicted["classes"]]
    assert body["drift"]["prediction_psi"] == pytest.approx(psi(predicted["counts"], live))


@pytest.fixture(scope="module")
def dummy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris-dummy: StandardScaler + DummyClassifier (always the most frequent class)."""
    data = load_iris()
    X, y = data.data, np.asarray(data.target_names)[data.target]
    model = Pipeline([("scale", StandardScaler()),
                      ("model", DummyClassifier(strategy="prior"))]).fit(X, y)
    return save_model(model, tmp_path_factory.mktemp("models") / "iris-dummy" / "1",
                      name="iris-dummy", version="1", X_train=X, y_train=y,
                      feature_names=FEATURES)


@pytest.fixture(scope="module")
def forest_twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same fitted 50-tree forest saved twice, under two names."""
    data = load_iris()
    X, y = data.data, np.asarray(data.target_names)[data.target]
    model = Pipeline([("scale", StandardScaler()),
                      ("model", RandomForestClassifier(n_estimators=50, random_state=0))]
                     ).fit(X, y)
    root = tmp_path_factory.mktemp("models")
    return tuple(save_model(model, root / name / "1", name=name, version="1", X_train=X,  # type: ignore[return-value]
                            y_train=y, feature_names=FEATURES)
                 for name in ("iris-forest", "iris-forest-copy"))


def run_ab(tmp_path: Path, champion: Path, challenger: Path, users: int) -> dict[str, Any]:
    """users at 50 %, each labelled; /stats once every label is counted."""
    config = write_config(tmp_path, champion=champion, challenger=challenger,
                          store="sqlite:///outcomes.db",
                          traffic={"challenger_percent": 50, "sticky_key": "header:x-user-id"})
    with serve(config, tmp_path) as server:
        sent = send_users(server, traffic(users, seed=30, noise=0.2))
        send_feedback(server, [{"request_id": s.request_id, "label": s.label} for s in sent])
        return stats_when(server, lambda b: labelled(b) == users)


def test_a_clearly_better_challenger_is_promoted(tmp_path: Path, dummy_dir: Path,
                                                 forest_twins: tuple[Path, Path]) -> None:
    """A forest against a dummy champion, about 600 users per arm: promote."""
    body = run_ab(tmp_path, dummy_dir, forest_twins[0], 1200)
    assert body["decision"]["action"] == "promote", body["decision"]
    assert body["comparison"]["significant"] and body["comparison"]["difference"] > 0.3
    assert min(v["labelled"] for v in body["variants"].values()) > 500


def test_an_identical_challenger_gets_continue(tmp_path: Path,
                                               forest_twins: tuple[Path, Path]) -> None:
    """The champion's own model as challenger, about 600 users per arm: continue."""
    body = run_ab(tmp_path, *forest_twins, 1200)
    assert body["decision"]["action"] == "continue", body["decision"]
    assert not body["comparison"]["significant"]


def test_shadow_stats_match_scipy_on_1500_requests(tmp_path: Path, champion_dir: Path,
                                                   challenger_dir: Path) -> None:
    """1,500 shadowed requests: the paired figures equal statsmodels/scipy on the challenger's
    answers, which the test computes itself."""
    # A generous timeout: on a busy test machine no shadow call may be lost to it.
    config = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                          mode="shadow", store="sqlite:///outcomes.db",
                          shadow={"timeout_ms": 30_000})
    with serve(config, tmp_path) as server:
        sent = send_users(server, traffic(1500, seed=40))
        order = np.random.default_rng(41).permutation(len(sent))
        send_feedback(server, [{"request_id": sent[i].request_id, "label": sent[i].label}
                               for i in order])

        def complete(b: dict[str, Any]) -> bool:
            return b["comparison"]["paired"]["n"] == 1500

        body = stats_when(server, complete)
        log_loss_body = stats_when(server, complete, query="?metric=log_loss")

    challenger = ModelRegistry().load(challenger_dir)
    theirs = challenger.predict(np.array([s.row for s in sent]))
    classes = [str(c) for c in challenger.classes or ()]
    ours = np.array([s.prediction for s in sent])
    labels = np.array([s.label for s in sent])
    b_pred = np.array([str(x) for x in theirs.labels])
    a_right, b_right = ours == labels, b_pred == labels
    assert all(s.variant == "champion" for s in sent)

    paired = body["comparison"]["paired"]
    only_a, only_b = int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())
    table = [[int((a_right & b_right).sum()), only_a], [only_b, int((~a_right & ~b_right).sum())]]
    assert (paired["champion_only_correct"], paired["challenger_only_correct"]) == (only_a,
                                                                                     only_b)
    assert paired["mcnemar_p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue)
    same = int((ours == b_pred).sum())
    assert paired["agreement"] == pytest.approx(same / 1500)
    assert paired["agreement_ci95"] == pytest.approx(
        list(proportion_confint(same, 1500, method="wilson")))
    c = body["comparison"]
    assert c["test"] == "McNemar exact test" and c["srm"] is None
    d = (b_right[order].astype(float) - a_right[order].astype(float))
    assert c["difference"] == pytest.approx(d.mean())
    assert c["sequential_p_value"] == pytest.approx(
        running_paired(d, 1e-4, 0.05, bounded=True).p_value[-1])
    variants = body["variants"]
    assert variants["challenger"]["shadow"] and variants["challenger"]["requests"] == 1500
    assert variants["challenger"]["metric"] == pytest.approx(b_right.mean())
    assert variants["challenger"]["shadow_calls"]["done"] == 1500

    # Log loss: the paired t-test on the per-request losses, the challenger's from its own
    # probabilities; Wilcoxon's p-value beside it.
    assert theirs.probabilities is not None
    truth = np.array([classes.index(label) for label in labels])
    p_b = theirs.probabilities[np.arange(1500), truth]
    p_a = np.array([s.probabilities[s.label] for s in sent])
    eps = np.finfo(float).eps
    loss_a, loss_b = -np.log(np.clip(p_a, eps, 1)), -np.log(np.clip(p_b, eps, 1))
    lc = log_loss_body["comparison"]
    assert lc["test"] == "paired t-test"
    assert lc["p_value"] == pytest.approx(sps.ttest_rel(loss_b, loss_a).pvalue)
    assert lc["paired"]["wilcoxon_p_value"] == pytest.approx(sps.wilcoxon(loss_b - loss_a).pvalue)
    assert lc["difference"] == pytest.approx(loss_b.mean() - loss_a.mean())
