"""The /stats report from a store: each figure against scipy/statsmodels on the same outcomes."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.linear_model import Ridge
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from router.artifacts import save_model
from router.config import RouterConfig, load_config
from router.errors import InputValidationError
from router.outcomes import FeedbackRecord, MemoryStore, PredictionRecord
from router.serving.model import ServedModel
from router.serving.registry import ModelRegistry
from router.serving.snapshot import config_digest, load_models
from router.stats.confidence import running_paired
from router.stats.console import render_report
from router.stats.drift import bin_counts, psi
from router.stats.loader import compute_report
from tests.configs import write_config
from tests.conftest import DIABETES_FEATURES
from tests.stats.test_confidence import by_hand

CLASSES = ("setosa", "versicolor", "virginica")
T0 = 1_700_000_000.0


class Log:
    """Writes an experiment's predictions and feedback into a memory store, and remembers them."""

    def __init__(self, store: MemoryStore, experiment: str = "exp") -> None:
        self.store = store
        self.experiment = experiment
        self.count = 0

    def predict(self, *, variant: str = "champion", prediction: Any = "setosa",
                revision: int = 1, unit: str | None = None, shadow: bool = False,
                fallback: bool = False, error: str | None = None, latency: float = 1.0,
                probabilities: dict[str, float] | None = None, request_id: str | None = None,
                features: tuple[float, ...] = (5.1, 3.5, 1.4, 0.2),
                ts: float | None = None) -> str:
        self.count += 1
        request_id = request_id or f"r{self.count}"
        probability = None if probabilities is None or prediction is None \
            else probabilities[str(prediction)]
        self.store.write_predictions([PredictionRecord(
            request_id=request_id, ts=T0 + self.count if ts is None else ts,
            experiment=self.experiment, revision=revision, variant=variant, model=variant,
            version="1", features=features, prediction=None if error else prediction,
            probability=None if error else probability, latency_ms=latency, shadow=shadow,
            unit_id=unit, probabilities=None if error else probabilities, error=error,
            fallback=fallback)])
        return request_id

    def label(self, request_id: str, label: Any = None, value: float | None = None) -> None:
        self.store.write_feedback([FeedbackRecord(request_id, T0 + 10**6, label=label,
                                                  value=value)])


@pytest.fixture
def iris_models(champion_dir: Path, challenger_dir: Path) -> dict[str, ServedModel]:
    registry = ModelRegistry()
    return {"champion": registry.load(champion_dir), "challenger": registry.load(challenger_dir)}


@pytest.fixture
def make_config(tmp_path: Path, champion_dir: Path, challenger_dir: Path
                ) -> Callable[..., RouterConfig]:
    """A parsed config for the iris models (or the given ones), registered as a revision."""
    count = {"n": 0}

    def make(store: MemoryStore | None = None, *, champion: Path = champion_dir,
             challenger: Path | None = challenger_dir, **kwargs: Any) -> RouterConfig:
        count["n"] += 1
        kwargs.setdefault("traffic", {"challenger_percent": 50})
        path = write_config(tmp_path, champion=champion, challenger=challenger,
                            name=f"router-{count['n']}.yaml", **kwargs)
        config = load_config(path, base_dir=tmp_path)
        if store is not None:
            models = load_models(config, ModelRegistry())
            store.register_revision(config.experiment, config_digest(config, models),
                                    config.to_dict(), T0 + count["n"])
        return config

    return make


@pytest.fixture(scope="module")
def second_regressor(tmp_path_factory: pytest.TempPathFactory,
                     diabetes_data: tuple[np.ndarray, np.ndarray]) -> Path:
    """diabetes-ridge10: a second regression pipeline, to stand as a challenger."""
    X, y = diabetes_data
    model = Pipeline([("scale", StandardScaler()), ("model", Ridge(alpha=10.0))]).fit(X, y)
    return save_model(model, tmp_path_factory.mktemp("models") / "diabetes-ridge10" / "1",
                      name="diabetes-ridge10", version="1", X_train=X, y_train=y,
                      feature_names=DIABETES_FEATURES)


def report(store: MemoryStore, config: RouterConfig, models: dict[str, ServedModel],
           **kwargs: Any) -> dict[str, Any]:
    return compute_report(store, config, models, **kwargs)


def ab_log(store: MemoryStore, rng: np.random.Generator, n: int, p_a: float, p_b: float,
           *, sticky: bool = True) -> list[tuple[str, bool]]:
    """n users split at random, each right with p_a (champion) or p_b; returns (arm, right)."""
    log = Log(store)
    outcomes = []
    for i in range(n):
        arm = "challenger" if rng.random() < 0.5 else "champion"
        truth = CLASSES[int(rng.integers(0, 3))]
        right = rng.random() < (p_b if arm == "challenger" else p_a)
        guess = truth if right else CLASSES[(CLASSES.index(truth) + 1) % 3]
        rid = log.predict(variant=arm, prediction=guess, unit=f"u{i}" if sticky else None,
                          latency=float(rng.gamma(2.0, 0.5)))
        log.label(rid, truth)
        outcomes.append((arm, bool(right)))
    return outcomes


def test_ab_accuracy_matches_statsmodels(make_config: Callable[..., RouterConfig],
                                         iris_models: dict[str, ServedModel]) -> None:
    """ab accuracy: Wilson, pooled z-test, Newcombe, mSPRT, sample size and SRM as scipy does."""
    store = MemoryStore()
    config = make_config(store, traffic={"challenger_percent": 50,
                                         "sticky_key": "header:x-user-id"})
    outcomes = ab_log(store, np.random.default_rng(1), 1200, 0.80, 0.86)
    r = report(store, config, iris_models)
    arms = np.array([a == "challenger" for a, _ in outcomes])
    right = np.array([ok for _, ok in outcomes])
    x_a, n_a = int(right[~arms].sum()), int((~arms).sum())
    x_b, n_b = int(right[arms].sum()), int(arms.sum())

    champion, challenger = r["variants"]["champion"], r["variants"]["challenger"]
    assert (champion["requests"], challenger["requests"]) == (n_a, n_b)
    assert (champion["labelled"], challenger["labelled"]) == (n_a, n_b)
    assert champion["metric"] == pytest.approx(x_a / n_a)
    assert champion["metric_ci95"] == pytest.approx(
        list(proportion_confint(x_a, n_a, method="wilson")))
    c = r["comparison"]
    assert c["test"] == "two-proportion z-test" and c["metric"] == "accuracy"
    assert c["difference"] == pytest.approx(x_b / n_b - x_a / n_a)
    assert c["p_value"] == pytest.approx(proportions_ztest([x_b, x_a], [n_b, n_a])[1])
    newcombe = confint_proportions_2indep(x_b, n_b, x_a, n_a, method="newcomb", compare="diff")
    assert c["difference_ci95"] == pytest.approx(list(newcombe))
    # Labels arrived in request order here, so the sequence is the requests' own.
    sequential, low, high = by_hand(right.astype(float).tolist(), arms.tolist(), 1e-4)
    assert c["tau2"] == pytest.approx(1e-4)
    assert c["sequential_p_value"] == pytest.approx(sequential[-1])
    assert c["difference_cs"] == pytest.approx([low[-1], high[-1]])
    assert c["significant"] == (sequential[-1] < 0.05)
    assert r["analysis_unit"] == "user" and champion["units"] == n_a
    # The plan: the smallest n at which 0.01 clears the boundary plus z_0.8 standard errors.
    n = c["samples_needed_per_variant"]
    # Each arm's per-outcome spread, floored as the sequence floors it.
    sd_a, sd_b = (math.sqrt(max(x / k * (1 - x / k), (x + 1) / (k + 2) * (1 - (x + 1) / (k + 2))))
                  for x, k in ((x_a, n_a), (x_b, n_b)))

    def clears(k: float) -> bool:
        v = sd_a**2 / (k * n_a / n_b if n_b <= n_a else k) + sd_b**2 / (
            k if n_b <= n_a else k * n_b / n_a)
        w = math.sqrt(2 * v * (v + 1e-4) / 1e-4 * (math.log(20) + 0.5 * math.log(1 + 1e-4 / v)))
        return w + sps.norm.ppf(0.8) * math.sqrt(v) <= 0.01

    assert clears(n) and not clears(n - 1)
    srm = c["srm"]
    assert srm["unit"] == "users" and srm["expected_percent"] == 50.0
    assert srm["p_value"] == pytest.approx(sps.chisquare([n_a, n_b]).pvalue)
    assert srm["observed_percent"] == pytest.approx(100 * n_b / (n_a + n_b))
    latencies = [record.latency_ms for record in store.prediction_records()
                 if record.variant == "champion"]
    assert champion["latency_ms"]["p99"] == pytest.approx(np.percentile(latencies, 99))
    assert c["paired"] is None and r["mode"] == "ab"


def test_sequential_p_value_follows_label_arrival(make_config: Callable[..., RouterConfig],
                                                  iris_models: dict[str, ServedModel]) -> None:
    """The always-valid p-value runs over outcomes in the order their labels arrived."""
    store = MemoryStore()
    config = make_config(store)
    log = Log(store)
    rng = np.random.default_rng(5)
    rows = []
    for _ in range(400):
        arm = "challenger" if rng.random() < 0.5 else "champion"
        right = bool(rng.random() < (0.9 if arm == "challenger" else 0.7))
        rows.append((log.predict(variant=arm, prediction="setosa"), arm, right))
    order = rng.permutation(len(rows))
    for i in order:  # labels come back in another order than the requests went out
        rid, _, right = rows[i]
        log.label(rid, "setosa" if right else "virginica")
    arms = np.array([rows[i][1] == "challenger" for i in order])
    right = np.array([rows[i][2] for i in order])
    expected, _, _ = by_hand(right.astype(float).tolist(), arms.tolist(), 1e-4)
    got = report(store, config, iris_models)["comparison"]["sequential_p_value"]
    assert got == pytest.approx(expected[-1])


def test_fallback_rows_count_against_the_challenger(make_config: Callable[..., RouterConfig],
                                                    iris_models: dict[str, ServedModel]
                                                    ) -> None:
    """A failed challenger's request is its error; the champion's fallback answer is left out."""
    store = MemoryStore()
    config = make_config(store)
    log = Log(store)
    for i in range(10):
        rid = log.predict(variant="challenger", error="RuntimeError: boom", unit=f"f{i}")
        log.predict(variant="champion", fallback=True, request_id=rid, unit=f"f{i}")
        log.label(rid, "setosa")
    for i in range(30):
        log.label(log.predict(variant="champion", unit=f"c{i}"), "setosa")
        log.label(log.predict(variant="challenger", unit=f"b{i}"), "versicolor")
    r = report(store, config, iris_models)
    champion, challenger = r["variants"]["champion"], r["variants"]["challenger"]
    assert champion["requests"] == 30 and champion["labelled"] == 30
    assert champion["metric"] == 1.0  # the fallback answers (right, too) are not counted
    assert challenger["requests"] == 40 and challenger["errors"] == 10
    assert challenger["error_rate"] == pytest.approx(0.25)
    assert challenger["labelled"] == 30 and challenger["fallbacks"] == 10
    # The SRM counts the failed requests as the challenger's assignment: 40 against 30.
    assert r["comparison"]["srm"]["revisions"][0]["challenger"] == 40


@pytest.mark.parametrize("metric", ["log_loss", "mae", "rmse"])
def test_ab_losses_use_welch(metric: str, make_config: Callable[..., RouterConfig],
                             iris_models: dict[str, ServedModel], regressor_dir: Path,
                             second_regressor: Path) -> None:
    """Losses: per-variant t intervals, Welch's test on per-request losses, as scipy."""
    store = MemoryStore()
    rng = np.random.default_rng(3)
    log = Log(store)
    losses: dict[str, list[float]] = {"champion": [], "challenger": []}
    if metric == "log_loss":
        config = make_config(store, analysis={"metric": metric})
        models = iris_models
        truth: dict[str, list[str]] = {"champion": [], "challenger": []}
        probs: dict[str, list[list[float]]] = {"champion": [], "challenger": []}
        for _ in range(300):
            arm = "challenger" if rng.random() < 0.5 else "champion"
            p = rng.dirichlet([4, 1, 1] if arm == "challenger" else [2, 1, 1])
            label = CLASSES[0] if rng.random() < 0.8 else CLASSES[1]
            rid = log.predict(variant=arm, prediction=CLASSES[int(np.argmax(p))],
                              probabilities=dict(zip(CLASSES, p.tolist(), strict=True)))
            log.label(rid, label)
            truth[arm].append(label)
            probs[arm].append(p.tolist())
            losses[arm].append(-math.log(max(p[CLASSES.index(label)], 2.2e-16)))
        for arm in ("champion", "challenger"):
            expected = log_loss(truth[arm], probs[arm], labels=list(CLASSES))
            assert np.mean(losses[arm]) == pytest.approx(expected)
    else:
        config = make_config(store, champion=regressor_dir, challenger=second_regressor,
                             analysis={"metric": metric})
        models = load_models(config, ModelRegistry())
        for _ in range(300):
            arm = "challenger" if rng.random() < 0.5 else "champion"
            value = float(rng.normal(150, 50))
            error = float(rng.normal(0, 40 if arm == "challenger" else 55))
            rid = log.predict(variant=arm, prediction=value + error)
            log.label(rid, value=value)
            losses[arm].append(abs(error) if metric == "mae" else error**2)
    r = report(store, config, models)
    a, b = np.array(losses["champion"]), np.array(losses["challenger"])
    c = r["comparison"]
    assert c["test"] == "Welch t-test"
    assert c["p_value"] == pytest.approx(sps.ttest_ind(b, a, equal_var=False).pvalue)
    champion = r["variants"]["champion"]
    t_interval = sps.t.interval(0.95, a.size - 1, loc=a.mean(), scale=sps.sem(a))
    if metric == "rmse":
        assert champion["metric"] == pytest.approx(math.sqrt(a.mean()))
        assert champion["metric_ci95"] == pytest.approx([math.sqrt(x) for x in t_interval])
        assert c["difference"] == pytest.approx(math.sqrt(b.mean()) - math.sqrt(a.mean()))
        low, high = c["difference_ci95"]
        assert low < c["difference"] < high
        # tau² is min_effect carried to the squared-error scale at the champion's RMSE.
        r_a = math.sqrt(a.mean())
        assert c["tau2"] == pytest.approx(((r_a + 0.01) ** 2 - r_a**2) ** 2)
    else:
        assert champion["metric"] == pytest.approx(a.mean())
        assert champion["metric_ci95"] == pytest.approx(list(t_interval))
        assert c["difference"] == pytest.approx(b.mean() - a.mean())
        welch = sps.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
        assert c["difference_ci95"] == pytest.approx([welch.low, welch.high])


def shadow_log(store: MemoryStore, rng: np.random.Generator, n: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n requests scored by both models (shadow rows for the challenger), all labelled."""
    log = Log(store)
    a_right, b_right, a_loss, b_loss = [], [], [], []
    for _ in range(n):
        truth = CLASSES[int(rng.integers(0, 3))]
        pairs = []
        for strength in (1.5, 2.5):
            p = rng.dirichlet([1.0, 1.0, 1.0])
            p[CLASSES.index(truth)] += strength * rng.random()
            pairs.append(p / p.sum())
        rid = log.predict(prediction=CLASSES[int(np.argmax(pairs[0]))],
                          probabilities=dict(zip(CLASSES, pairs[0].tolist(), strict=True)))
        log.predict(variant="challenger", shadow=True, request_id=rid,
                    prediction=CLASSES[int(np.argmax(pairs[1]))],
                    probabilities=dict(zip(CLASSES, pairs[1].tolist(), strict=True)))
        log.label(rid, truth)
        t = CLASSES.index(truth)
        a_right.append(np.argmax(pairs[0]) == t)
        b_right.append(np.argmax(pairs[1]) == t)
        a_loss.append(-math.log(pairs[0][t]))
        b_loss.append(-math.log(pairs[1][t]))
    return np.array(a_right), np.array(b_right), np.array(a_loss), np.array(b_loss)


def test_shadow_accuracy_is_paired(make_config: Callable[..., RouterConfig],
                                   iris_models: dict[str, ServedModel]) -> None:
    """shadow: McNemar's exact test, agreement with Wilson, paired mSPRT, as statsmodels."""
    store = MemoryStore()
    config = make_config(store, mode="shadow")
    a, b, _, _ = shadow_log(store, np.random.default_rng(11), 500)
    r = report(store, config, iris_models, shadow_calls={"offered": 500, "done": 500})
    c = r["comparison"]
    paired = c["paired"]
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    table = [[int((a & b).sum()), only_a], [only_b, int((~a & ~b).sum())]]
    assert paired["n"] == 500
    assert (paired["champion_only_correct"], paired["challenger_only_correct"]) == (only_a,
                                                                                     only_b)
    assert paired["mcnemar_p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue)
    assert c["p_value"] == paired["mcnemar_p_value"] and c["test"] == "McNemar exact test"
    predictions = {(p.request_id, p.shadow): p.prediction for p in store.prediction_records()}
    same = sum(predictions[(rid, False)] == predictions[(rid, True)]
               for rid, shadow in predictions if not shadow)
    assert paired["agreement"] == pytest.approx(same / 500)
    assert paired["agreement_ci95"] == pytest.approx(
        list(proportion_confint(same, 500, method="wilson")))
    d = b.astype(float) - a.astype(float)
    assert c["difference"] == pytest.approx(d.mean())
    assert c["sequential_p_value"] == pytest.approx(
        running_paired(d, 1e-4, 0.05, bounded=True).p_value[-1])
    assert r["variants"]["challenger"]["shadow"] is True
    assert r["variants"]["challenger"]["shadow_calls"] == {"offered": 500, "done": 500}
    assert c["srm"] is None


def test_shadow_losses_use_the_paired_t_test(make_config: Callable[..., RouterConfig],
                                             iris_models: dict[str, ServedModel]) -> None:
    """shadow log loss: the paired t-test on per-request losses tests the mean difference it
    is shown beside (scipy's ttest_rel); Wilcoxon's p-value is kept under its own name."""
    store = MemoryStore()
    config = make_config(store, mode="shadow", analysis={"metric": "log_loss"})
    _, _, la, lb = shadow_log(store, np.random.default_rng(12), 400)
    r = report(store, config, iris_models)
    c = r["comparison"]
    assert c["test"] == "paired t-test"
    assert c["p_value"] == pytest.approx(sps.ttest_rel(lb, la).pvalue)
    assert c["paired"]["wilcoxon_p_value"] == pytest.approx(sps.wilcoxon(lb - la).pvalue)
    assert c["difference"] == pytest.approx(lb.mean() - la.mean())
    d = lb - la
    assert c["difference_ci95"] == pytest.approx(
        list(sps.t.interval(0.95, d.size - 1, loc=d.mean(), scale=sps.sem(d))))


def test_a_new_split_starts_a_new_phase(make_config: Callable[..., RouterConfig],
                                        iris_models: dict[str, ServedModel]) -> None:
    """Outcomes of an earlier split are left out; revisions of one split are pooled."""
    store = MemoryStore()
    make_config(store, traffic={"challenger_percent": 50})
    log = Log(store)
    for i in range(100):  # revision 1: a 50 % split where the challenger did badly
        log.label(log.predict(revision=1, variant="challenger", unit=f"a{i}",
                              prediction="virginica"), "setosa")
    make_config(store, traffic={"challenger_percent": 20})
    config = make_config(store, traffic={"challenger_percent": 20,
                                         "sticky_key": "header:x-user-id"},
                         analysis={"min_samples": 50})
    for i in range(80):
        log.label(log.predict(revision=2, unit=None), "setosa")
        log.label(log.predict(revision=3, unit=f"u{i}"), "setosa")
    for i in range(20):
        log.label(log.predict(revision=2, variant="challenger"), "setosa")
        log.label(log.predict(revision=3, variant="challenger", unit=f"v{i}"), "setosa")
    r = report(store, config, iris_models)
    assert r["phase"]["revisions"] == [2, 3] and r["config_revision"] == 3
    assert r["variants"]["challenger"]["requests"] == 40
    assert r["variants"]["challenger"]["metric"] == 1.0
    srm = r["comparison"]["srm"]
    assert [row["unit"] for row in srm["revisions"]] == ["requests", "users"]
    assert srm["expected_percent"] == pytest.approx(20.0)
    assert srm["p_value"] == pytest.approx(sps.chisquare([160, 40], [160, 40]).pvalue)


def test_a_challenger_at_100_percent_is_compared_with_nothing(
        make_config: Callable[..., RouterConfig], iris_models: dict[str, ServedModel]) -> None:
    """At 100 % the champion serves no one: the decision says why it cannot compare, rather
    than asking for champion labels that cannot come."""
    store = MemoryStore()
    config = make_config(store, traffic={"challenger_percent": 100})
    log = Log(store)
    for _ in range(300):
        log.label(log.predict(variant="challenger"), "setosa")
    reasons = report(store, config, iris_models)["decision"]["reasons"]
    assert len(reasons) == 1 and "the champion serves no traffic in this phase" in reasons[0]
    assert "router promote" in reasons[0]


def test_shadow_counts_labelled_pairs(make_config: Callable[..., RouterConfig],
                                      iris_models: dict[str, ServedModel]) -> None:
    """In shadow mode the comparison needs pairs, and the decision counts them as such, not
    as the champion's labelled requests (most of which may have no shadow copy)."""
    store = MemoryStore()
    config = make_config(store, mode="shadow")
    shadow_log(store, np.random.default_rng(5), 40)
    log = Log(store)
    for _ in range(300):  # requests the challenger never saw (sample_percent below 100)
        log.label(log.predict(), "setosa")
    r = report(store, config, iris_models)
    assert r["variants"]["champion"]["labelled"] == 340
    assert r["decision"]["reasons"] == [
        "40 labelled pairs (requests both models answered, with feedback); 200 needed"]


def test_srm_counts_a_user_once_across_the_phases_revisions(
        make_config: Callable[..., RouterConfig], iris_models: dict[str, ServedModel]) -> None:
    """An edit that keeps the phase (here alpha) adds a revision; a user who comes back after
    it is still one user, or every such edit would multiply the chi-square statistic."""
    store = MemoryStore()
    sticky = {"challenger_percent": 50, "sticky_key": "header:x-user-id"}
    make_config(store, traffic=sticky)
    config = make_config(store, traffic=sticky, analysis={"alpha": 0.01})
    log = Log(store)
    for revision in (1, 2):
        for i in range(120):
            log.predict(revision=revision, unit=f"a{i}")
        for i in range(80):
            log.predict(revision=revision, variant="challenger", unit=f"b{i}")
    srm = report(store, config, iris_models)["comparison"]["srm"]
    assert [(row["champion"], row["challenger"]) for row in srm["revisions"]] == [(120, 80)]
    assert srm["p_value"] == pytest.approx(sps.chisquare([120, 80], [100, 100]).pvalue)


def test_srm_counts_batches_as_one_request(make_config: Callable[..., RouterConfig],
                                           iris_models: dict[str, ServedModel]) -> None:
    """Without a sticky key, the rows of one batch (one timestamp) are one assigned request."""
    store = MemoryStore()
    config = make_config(store)
    log = Log(store)
    for i in range(50):
        for j in range(10):  # a batch of 10 rows to the champion
            log.predict(request_id=f"b{i}:{j}", ts=T0 + i)
        log.predict(variant="challenger", ts=T0 + 1000 + i)
    srm = report(store, config, iris_models)["comparison"]["srm"]
    assert srm["revisions"][0]["champion"] == 50 and srm["revisions"][0]["challenger"] == 50
    assert srm["p_value"] == pytest.approx(1.0) and not srm["mismatch"]


def test_sample_ratio_mismatch_blocks_the_decision(make_config: Callable[..., RouterConfig],
                                                   iris_models: dict[str, ServedModel]) -> None:
    """A split far from the configured one is a mismatch (p < 0.001): the action is continue."""
    store = MemoryStore()
    config = make_config(store, traffic={"challenger_percent": 50,
                                         "sticky_key": "body:user_id"})
    log = Log(store)
    for i in range(700):
        log.label(log.predict(variant="champion", unit=f"a{i}", prediction="virginica"),
                  "setosa")
    for i in range(300):
        log.label(log.predict(variant="challenger", unit=f"b{i}"), "setosa")
    r = report(store, config, iris_models)
    srm = r["comparison"]["srm"]
    assert srm["mismatch"] and srm["p_value"] < 0.001
    assert srm["p_value"] == pytest.approx(sps.chisquare([700, 300]).pvalue)
    assert r["decision"]["action"] == "continue"
    assert "sample ratio mismatch" in r["decision"]["reasons"][0]


def test_decision_promotes_a_better_challenger_and_waits_on_a_tie(
        make_config: Callable[..., RouterConfig], iris_models: dict[str, ServedModel]) -> None:
    """Clearly better with enough samples: promote; the same accuracy: continue."""
    better = MemoryStore()
    config = make_config(better, traffic={"challenger_percent": 50,
                                          "sticky_key": "header:x-user-id"})
    ab_log(better, np.random.default_rng(2), 1200, 0.34, 0.95)
    r = report(better, config, iris_models)
    assert r["decision"]["action"] == "promote", r["decision"]
    assert r["comparison"]["significant"]

    tie = MemoryStore()
    config = make_config(tie, traffic={"challenger_percent": 50,
                                       "sticky_key": "header:x-user-id"})
    ab_log(tie, np.random.default_rng(4), 1200, 0.9, 0.9)
    r = report(tie, config, iris_models)
    assert r["decision"]["action"] == "continue", r["decision"]


def test_guardrail_breach_rolls_back(make_config: Callable[..., RouterConfig],
                                     iris_models: dict[str, ServedModel]) -> None:
    """A challenger over its p99 latency guardrail gets rollback, whatever its accuracy."""
    store = MemoryStore()
    config = make_config(store, analysis={"guardrails": {"p99_latency_ms": 50},
                                          "min_samples": 100})
    log = Log(store)
    for i in range(150):
        log.label(log.predict(variant="champion", unit=f"a{i}"), "setosa")
        log.label(log.predict(variant="challenger", unit=f"b{i}", latency=80.0), "setosa")
    r = report(store, config, iris_models)
    assert r["decision"]["action"] == "rollback"
    assert "p99 limit" in r["decision"]["reasons"][0]


def test_drift_against_the_champions_reference(make_config: Callable[..., RouterConfig],
                                               iris_models: dict[str, ServedModel],
                                               iris_data: tuple[np.ndarray, np.ndarray]
                                               ) -> None:
    """Feature PSI against the saved histogram, KS against the reference sample, thresholds."""
    store = MemoryStore()
    config = make_config(store)
    log = Log(store)
    X, _ = iris_data
    rows = X[np.random.default_rng(8).integers(0, len(X), 300)].copy()
    rows[:, 3] += 1.5  # petal_width moved far off its training range
    for row in rows:
        log.predict(features=tuple(row.tolist()))
    r = report(store, config, iris_models)
    drift = r["drift"]
    champion = iris_models["champion"]
    reference = champion.metadata["reference"]["features"]
    for j, name in enumerate(champion.feature_names):
        expected = psi(reference[name]["counts"], bin_counts(rows[:, j], reference[name]["edges"]))
        assert drift["features"][name]["psi"] == pytest.approx(expected)
        ks = sps.ks_2samp(champion.reference_sample[:, j], rows[:, j]).pvalue
        assert drift["features"][name]["ks_p_value"] == pytest.approx(ks)
    assert drift["features"]["petal_width"]["status"] == "major"
    assert drift["features"]["sepal_length"]["status"] == "stable"
    assert drift["rows"] == 300
    predicted = champion.metadata["reference"]["predictions"]
    assert drift["prediction_psi"] == pytest.approx(psi(predicted["counts"], [300, 0, 0]))


def test_overrides_and_refusals(make_config: Callable[..., RouterConfig],
                                iris_models: dict[str, ServedModel]) -> None:
    """alpha and metric override the config; a metric that cannot apply is refused by name."""
    store = MemoryStore()
    config = make_config(store)
    ab_log(store, np.random.default_rng(6), 200, 0.8, 0.8)
    r = report(store, config, iris_models, alpha=0.2, metric="accuracy")
    assert r["comparison"]["alpha"] == 0.2
    for metric in ("mae", "rmse", "f1"):
        with pytest.raises(InputValidationError, match="metric"):
            report(store, config, iris_models, metric=metric)
    with pytest.raises(InputValidationError, match="alpha"):
        report(store, config, iris_models, alpha=1.5)


def test_log_loss_needs_probabilities(make_config: Callable[..., RouterConfig],
                                      no_proba_dir: Path) -> None:
    """metric log_loss with a model that has no predict_proba is refused, naming the model."""
    store = MemoryStore()
    config = make_config(store, challenger=no_proba_dir)
    models = load_models(config, ModelRegistry())
    with pytest.raises(InputValidationError, match="iris-svc"):
        report(store, config, models, metric="log_loss")


def test_single_mode_and_unknown_feedback(make_config: Callable[..., RouterConfig],
                                          iris_models: dict[str, ServedModel]) -> None:
    """mode single reports the champion alone; feedback for unknown ids is counted."""
    store = MemoryStore()
    config = make_config(store, mode="single", challenger=None)
    log = Log(store)
    log.label(log.predict(), "setosa")
    log.label("nobody", "setosa")
    r = report(store, config, {"champion": iris_models["champion"]})
    assert r["mode"] == "single" and r["comparison"] is None
    assert set(r["variants"]) == {"champion"}
    assert r["decision"]["action"] == "continue"
    assert r["unknown_feedback_ids"] == 1


def test_an_empty_log_reports_without_figures(make_config: Callable[..., RouterConfig],
                                              iris_models: dict[str, ServedModel]) -> None:
    """Before any request every figure is null or zero, and the action is continue."""
    store = MemoryStore()
    config = make_config(store)
    r = report(store, config, iris_models)
    assert r["variants"]["champion"]["requests"] == 0
    assert r["variants"]["champion"]["metric"] is None
    assert r["comparison"]["sequential_p_value"] == 1.0 and not r["comparison"]["significant"]
    assert r["decision"]["action"] == "continue"
    assert r["drift"]["features"] == {}


def test_the_table_fits_80_columns(make_config: Callable[..., RouterConfig],
                                   iris_models: dict[str, ServedModel]) -> None:
    """router stats' table: every line within 80 characters, each section present."""
    store = MemoryStore()
    config = make_config(store, mode="shadow")
    shadow_log(store, np.random.default_rng(9), 300)
    text = render_report(report(store, config, iris_models,
                                shadow_calls={"offered": 300, "done": 300, "dropped": 0}))
    assert max(len(line) for line in text.splitlines()) <= 80
    for section in ("CHAMPION", "CHALLENGER (shadow)", "COMPARISON", "McNemar", "DRIFT",
                    "DECISION"):
        assert section in text


def batch_log(store: MemoryStore, rng: np.random.Generator, *, units: bool
              ) -> tuple[list[bool], list[bool]]:
    """200 requests of 1 to 12 rows each, in calls of four requests that share a time stamp,
    each request's rows with its own latency; a request's rows are all right or all wrong (one
    client's rows are alike), the challenger's more often. ``units``: each request under a
    user of its own. Returns each row's correctness, and whether the challenger answered it."""
    log, right, challenger = Log(store), [], []
    for call in range(50):
        for place in range(4):
            number = call * 4 + place
            variant = "challenger" if rng.random() < 0.5 else "champion"
            correct = rng.random() < (0.7 if variant == "challenger" else 0.6)
            for row in range(int(rng.integers(1, 13))):
                request_id = log.predict(
                    variant=variant, prediction="setosa", ts=T0 + call,
                    latency=2.0 + place / 8, request_id=f"q{number}:{row}",
                    unit=f"user-{number}" if units else None)
                log.label(request_id, "setosa" if correct else "virginica")
                right.append(correct)
                challenger.append(variant == "challenger")
    return right, challenger


def test_a_batch_requests_rows_are_one_units_outcomes_without_a_sticky_key(
        make_config: Callable[..., RouterConfig], iris_models: dict[str, ServedModel]) -> None:
    """Without a sticky key the request is the unit, and a batch request's rows, assigned
    together and alike, are grouped as a user's are: the comparison equals the one of the same
    rows with each request under a user of its own. Counted as independent rows, the
    two-proportion z-test's p-value is less than half what it should be."""
    by_request, by_user = MemoryStore(), MemoryStore()
    right, challenger = batch_log(by_request, np.random.default_rng(5), units=False)
    batch_log(by_user, np.random.default_rng(5), units=True)
    plain = report(by_request, make_config(by_request, analysis={"min_samples": 10}),
                   iris_models)
    sticky = {"challenger_percent": 50, "sticky_key": "header:x-user-id"}
    users = report(by_user, make_config(by_user, traffic=sticky,
                                        analysis={"min_samples": 10}), iris_models)
    ours, theirs = plain["comparison"], users["comparison"]
    assert ours["test"] == "z-test on per-request ratios (delta method)"
    assert theirs["test"] == "z-test on per-user ratios (delta method)"
    for field in ("p_value", "difference_ci95", "sequential_p_value", "difference_cs"):
        assert ours[field] == pytest.approx(theirs[field]), field
    assert plain["analysis_unit"] == "request"
    rows, is_b = np.array(right), np.array(challenger)
    _, naive = proportions_ztest([rows[is_b].sum(), rows[~is_b].sum()],
                                 [is_b.sum(), (~is_b).sum()])
    assert naive < ours["p_value"] / 2
