"""The timeline behind the dashboard: each checkpoint is the /stats report of the labels so far."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.config import RouterConfig
from router.outcomes import MemoryStore
from router.serving.model import ServedModel
from router.serving.registry import ModelRegistry
from router.serving.snapshot import load_models
from router.stats import difference_interval, mean_interval, wilson_interval
from router.stats.confidence import running_arm, running_difference, running_paired
from router.stats.loader import compute_report
from router.stats.timeline import checkpoints, compute_timeline
from tests.stats import test_report
from tests.stats.test_report import CLASSES, Log

# The report tests' fixtures, shared by name.
iris_models = test_report.iris_models
make_config = test_report.make_config
second_regressor = test_report.second_regressor

CASES = [(mode, metric) for mode in ("ab", "shadow")
         for metric in ("accuracy", "log_loss", "mae", "rmse")]


def write_log(store: MemoryStore, mode: str, metric: str, n: int, seed: int) -> None:
    """n labelled requests (pairs in shadow mode); labels arrive in a shuffled order."""
    rng = np.random.default_rng(seed)
    log = Log(store)
    ids = []
    for _ in range(n):
        truth = CLASSES[int(rng.integers(0, 3))]
        value = float(rng.normal(150, 50))
        arms = ["champion", "challenger"] if mode == "shadow" else \
            ["challenger" if rng.random() < 0.4 else "champion"]
        rid = None
        for arm in arms:
            if metric in ("mae", "rmse"):
                spread = 40 if arm == "challenger" else 55
                answer: dict[str, Any] = {"prediction": value + float(rng.normal(0, spread))}
            else:
                p = rng.dirichlet([1.0, 1.0, 1.0])
                p[CLASSES.index(truth)] += (2.5 if arm == "challenger" else 1.5) * rng.random()
                p = p / p.sum()
                answer = {"prediction": CLASSES[int(np.argmax(p))],
                          "probabilities": dict(zip(CLASSES, p.tolist(), strict=True))}
            rid = log.predict(variant=arm, shadow=arm == "challenger" and mode == "shadow",
                              request_id=rid, **answer)
        ids.append((rid, truth, value))
    for i in rng.permutation(n):
        rid, truth, value = ids[i]
        if metric in ("mae", "rmse"):
            log.label(rid, value=value)
        else:
            log.label(rid, truth)


@pytest.fixture
def experiment(make_config: Callable[..., RouterConfig], iris_models: dict[str, ServedModel],
               regressor_dir: Path, second_regressor: Path
               ) -> Callable[..., tuple[MemoryStore, Callable[[MemoryStore], RouterConfig],
                                        dict[str, ServedModel]]]:
    """A logged experiment, and how to configure another store like it."""

    def make(mode: str, metric: str, n: int = 300, seed: int = 1) -> Any:
        kwargs: dict[str, Any] = {"mode": mode, "analysis": {"metric": metric}}
        if metric in ("mae", "rmse"):
            kwargs.update(champion=regressor_dir, challenger=second_regressor)

        def configure(store: MemoryStore) -> RouterConfig:
            return make_config(store, **kwargs)  # type: ignore[no-any-return]

        store = MemoryStore()
        config = configure(store)
        models = iris_models if metric in ("accuracy", "log_loss") \
            else load_models(config, ModelRegistry())
        write_log(store, mode, metric, n, seed)
        return store, configure, models

    return make


def first_labels(store: MemoryStore, k: int, configure: Callable[[MemoryStore], RouterConfig]
                 ) -> tuple[MemoryStore, RouterConfig]:
    """The same predictions with only the first k labels that arrived."""
    prefix = MemoryStore()
    config = configure(prefix)
    prefix.write_predictions(store.prediction_records())
    prefix.write_feedback(store.feedback_records()[:k])
    return prefix, config


def flat(figures: dict[str, Any]) -> dict[str, Any]:
    """Nested figures as one flat mapping of numbers (pytest.approx compares no nesting)."""
    out: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in flat(value).items()})
        elif isinstance(value, list):
            out.update({f"{key}[{i}]": v for i, v in enumerate(value)})
        else:
            out[key] = value
    return out


def at(timeline: dict[str, Any], j: int) -> dict[str, Any]:
    """Checkpoint j in the shape of /stats's figures."""
    out: dict[str, Any] = {role: {"labelled": series["labelled"][j],
                                  "metric": series["metric"][j], "ci95": series["ci95"][j]}
                           for role, series in timeline["variants"].items()}
    c = timeline["comparison"]
    out.update(difference=c["difference"][j], difference_ci95=c["difference_ci95"][j],
               difference_cs=c["difference_cs"][j], sequential_p_value=c["sequential_p_value"][j])
    return flat(out)


def figures(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {role: {"labelled": v["labelled"], "metric": v["metric"],
                                  "ci95": v["metric_ci95"]}
                           for role, v in report["variants"].items()}
    c = report["comparison"]
    out.update(difference=c["difference"], difference_ci95=c["difference_ci95"],
               difference_cs=c["difference_cs"], sequential_p_value=c["sequential_p_value"])
    return flat(out)


@pytest.mark.parametrize(("mode", "metric"), CASES)
def test_each_checkpoint_is_the_report_of_the_labels_so_far(mode: str, metric: str,
                                                            experiment: Any) -> None:
    """At a checkpoint, every figure equals /stats computed with only the labels until then."""
    store, configure, models = experiment(mode, metric)
    config = configure(MemoryStore())
    timeline = compute_timeline(store, config, models)
    labelled = timeline["labelled"]
    assert len(labelled) == 50 and labelled == sorted(labelled)
    assert timeline["mode"] == mode and timeline["metric"] == metric
    per_label = 2 if mode == "shadow" else 1
    assert labelled[-1] == 300 * per_label
    assert figures(compute_report(store, config, models)) == pytest.approx(at(timeline, -1))
    for j in (0, 7, 24):
        prefix, prefix_config = first_labels(store, labelled[j] // per_label, configure)
        expected = figures(compute_report(prefix, prefix_config, models))
        got = at(timeline, j)
        if metric == "rmse":  # the path keeps the whole experiment's tau2, the prefix not
            for key in [k for k in expected if k.startswith(("sequential", "difference_cs"))]:
                expected.pop(key)
                got.pop(key, None)
        assert got == pytest.approx(expected), j
    if mode == "shadow":
        assert timeline["comparison"]["pairs"][-1] == 300


def test_ab_accuracy_checkpoints_by_the_stats_functions(experiment: Any) -> None:
    """ab accuracy: Wilson, Newcombe and the confidence sequence's path on each prefix."""
    store, configure, models = experiment("ab", "accuracy", n=400, seed=4)
    timeline = compute_timeline(store, configure(MemoryStore()), models)
    arms: list[bool] = []
    right: list[bool] = []
    predictions = {p.request_id: p for p in store.prediction_records()}
    for label in store.feedback_records():  # in the order the labels arrived
        p = predictions[label.request_id]
        arms.append(p.variant == "challenger")
        right.append(p.prediction == label.label)
    is_b, ok = np.array(arms), np.array(right)
    y = ok.astype(float)
    path = running_difference(running_arm(y, ~is_b, bounded=True),
                              running_arm(y, is_b, bounded=True), 1e-4, 0.05).p_value
    c = timeline["comparison"]
    for j, k in enumerate(timeline["labelled"]):
        x_a, n_a = int((ok[:k] & ~is_b[:k]).sum()), int((~is_b[:k]).sum())
        x_b, n_b = int((ok[:k] & is_b[:k]).sum()), int(is_b[:k].sum())
        assert timeline["variants"]["champion"]["ci95"][j] == pytest.approx(
            list(wilson_interval(x_a, n_a)))
        assert timeline["variants"]["challenger"]["metric"][j] == pytest.approx(x_b / n_b)
        assert c["difference_ci95"][j] == pytest.approx(list(difference_interval(x_a, n_a,
                                                                                 x_b, n_b)))
        assert c["sequential_p_value"][j] == pytest.approx(path[k - 1])


def test_shadow_mae_checkpoints_by_the_stats_functions(experiment: Any) -> None:
    """shadow mae: per-variant t intervals, the paired t interval and the sequence's path on
    each prefix."""
    store, configure, models = experiment("shadow", "mae", n=200, seed=5)
    timeline = compute_timeline(store, configure(MemoryStore()), models)
    rows: dict[str, dict[bool, float]] = {}
    for p in store.prediction_records():
        rows.setdefault(p.request_id, {})[p.shadow] = p.prediction
    truth = [(f.request_id, f.value) for f in store.feedback_records()]
    loss_a = np.array([abs(rows[rid][False] - v) for rid, v in truth])
    loss_b = np.array([abs(rows[rid][True] - v) for rid, v in truth])
    d = loss_b - loss_a
    path = running_paired(d, 1e-4, 0.05).p_value
    c = timeline["comparison"]
    for j, pairs in enumerate(c["pairs"]):
        assert timeline["labelled"][j] == 2 * pairs
        assert timeline["variants"]["champion"]["ci95"][j] == pytest.approx(
            list(mean_interval(loss_a[:pairs])))
        assert c["difference"][j] == pytest.approx(d[:pairs].mean())
        assert c["difference_ci95"][j] == pytest.approx(list(mean_interval(d[:pairs])))
        assert c["sequential_p_value"][j] == pytest.approx(path[pairs - 1])


def test_an_empty_log_and_single_mode(make_config: Callable[..., RouterConfig],
                                      iris_models: dict[str, ServedModel]) -> None:
    """No labels: no checkpoints; single mode: the champion's series and no comparison."""
    store = MemoryStore()
    timeline = compute_timeline(store, make_config(store), iris_models)
    assert timeline["labelled"] == [] and timeline["comparison"]["difference"] == []
    assert timeline["variants"]["champion"]["metric"] == []
    log = Log(store)
    log.predict()  # answered, never labelled: still nothing to draw
    assert compute_timeline(store, make_config(store), iris_models)["labelled"] == []
    alone = MemoryStore()  # a new phase: a store of its own
    config = make_config(alone, mode="single", challenger=None)
    log = Log(alone)
    log.label(log.predict(), "setosa")
    single = compute_timeline(alone, config, {"champion": iris_models["champion"]})
    assert single["mode"] == "single" and single["comparison"] is None
    assert single["variants"]["champion"] == {"labelled": [1], "metric": [1.0],
                                              "ci95": [list(wilson_interval(1, 1))]}


def test_checkpoints_are_even_and_never_split_a_label() -> None:
    """Up to 50 positions, ending with the last; rows sharing a feedback rank stay together."""
    keys = np.repeat(np.arange(1000), 2)
    ends = checkpoints(keys)
    assert ends.size == 50 and ends[-1] == keys.size - 1
    assert np.all(keys[ends] != keys[np.minimum(ends + 1, keys.size - 1)]) or ends[-1]
    assert np.all(ends % 2 == 1)
    assert checkpoints(np.arange(7)).tolist() == list(range(7))
    assert checkpoints(np.zeros(0)).size == 0


def test_shadow_labels_without_pairs_yet(make_config: Callable[..., RouterConfig],
                                         iris_models: dict[str, ServedModel]) -> None:
    """Labelled champion rows whose shadow calls are not logged yet: a checkpoint with no pair
    has no confidence sequence and a p-value of 1, not an error."""
    store = MemoryStore()
    config = make_config(store, mode="shadow")
    log = Log(store)
    for _ in range(3):
        log.label(log.predict(), "setosa")
    timeline = compute_timeline(store, config, iris_models)
    c = timeline["comparison"]
    assert c["pairs"] == [0, 0, 0]
    assert c["difference_cs"] == [None] * 3 and c["sequential_p_value"] == [1.0] * 3
