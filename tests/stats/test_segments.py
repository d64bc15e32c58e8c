"""``/stats``'s segments: per-value figures as statsmodels computes them, Holm's correction
across a key's values, pooling beyond 50 values, and the warning in the decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from router.outcomes import FeedbackRecord, MemoryStore, PredictionRecord
from router.stats.console import render_report
from router.stats.loader import compute_report
from router.stats.model import Design, Phase, Settings
from router.stats.report import build_report
from router.stats.segments import OTHER, segment_codes
from router.stats.timeline import compute_timeline
from tests.stats.test_arms import multi_config

CLASSES = ("setosa", "versicolor", "virginica")
KEYS = ("x-country", "plan")
T0 = 1_700_000_000.0


def test_the_most_frequent_values_are_kept_and_the_rest_pooled_as_other() -> None:
    """50 values by frequency among the counted rows (ties by value), then ``other`` for the
    rest and for a value spelled other; a value no counted row has is never shown by itself,
    and rows without a value are in no segment."""
    values: list[str | None] = []
    for i in range(60):
        values += [f"v{i:02d}"] * (100 - i)
    values += ["tie-b", "tie-a"] * 100 + [OTHER] * 500 + [None] * 7 + ["unseen"] * 3
    counted = np.array([v != "unseen" for v in values])
    names, codes = segment_codes(np.array(values, dtype=object), counted)
    assert names[:3] == ["tie-a", "tie-b", "v00"]  # 100 each: the tie broken by value
    assert names[3:50] == [f"v{i:02d}" for i in range(1, 48)]
    assert names[50:] == [OTHER] and len(names) == 51
    shown = dict(zip(names, np.bincount(codes[codes >= 0], minlength=51).tolist(), strict=True))
    assert shown[OTHER] == 500 + sum(100 - i for i in range(48, 60)) + 3  # "unseen" too
    assert codes[[i for i, v in enumerate(values) if v is None]].tolist() == [-1] * 7
    few, few_codes = segment_codes(np.array(["a", "b", "a", None, "c"], dtype=object),
                                   np.array([True, True, True, True, False]))
    assert few == ["a", "b"] and few_codes.tolist() == [0, 1, 0, -1, -1]


def write(store: MemoryStore, rows: list[dict[str, Any]]) -> None:
    """Predictions (``variant``, ``right``, ``segments``, optional ``unit``, ``shadow``,
    ``request_id``, ``value``), each labelled in order."""
    truths: dict[str, str] = {}  # a request's label, shared by its shadow copy
    for i, row in enumerate(rows):
        request_id = row.get("request_id", f"r{i}")
        labelled = request_id in truths
        truth = truths.setdefault(request_id, CLASSES[len(truths) % 3])
        if "value" in row:
            prediction = row["value"]
        else:
            wrong = CLASSES[(CLASSES.index(truth) + 1) % 3]
            prediction = truth if row["right"] else wrong
        store.write_predictions([PredictionRecord(
            request_id=request_id, ts=T0 + i, experiment="exp", revision=1,
            variant=row["variant"], model=row["variant"], version="1", features=(1.0,),
            prediction=prediction, probability=None, latency_ms=1.0,
            shadow=row.get("shadow", False), unit_id=row.get("unit"),
            segments=row["segments"])])
        if not labelled:
            store.write_feedback([FeedbackRecord(
                request_id, T0, label=None if "value" in row else truth,
                value=row.get("truth"))])


def stats(store: MemoryStore, *, mode: str = "ab", metric: str = "accuracy",
          sticky: bool = False, segments: tuple[str, ...] = KEYS) -> dict[str, Any]:
    classes = CLASSES if metric == "accuracy" else None
    columns = store.analysis_columns("exp", classes=classes, units=sticky, segments=segments)
    design = Design(experiment="exp", mode=mode, models={"champion": ("a", "1"),
                                                         "challenger": ("b", "1")},
                    sticky=sticky, min_samples=50, segments=segments)
    settings = Settings(metric=metric, alpha=0.05, min_effect=0.01, classes=classes)
    return build_report(columns, design=design, phase=Phase(revisions=None), settings=settings)


# Each country's chance of a right answer per variant; plans add nothing. Over all countries
# the challenger is about one point worse: no significant difference on 3,000 requests.
RATES = {"DE": (0.85, 0.70), "FR": (0.80, 0.86), "IT": (0.75, 0.80), "ES": (0.82, 0.85)}


def ab_rows(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        country = str(rng.choice(list(RATES), p=[0.3, 0.3, 0.25, 0.15]))
        variant = "challenger" if rng.random() < 0.5 else "champion"
        segments: dict[str, str] = {"plan": str(rng.choice(["free", "pro"]))}
        if rng.random() < 0.95:  # some requests carry no country
            segments["x-country"] = country
        rate = RATES[country][variant == "challenger"]
        rows.append({"variant": variant, "right": bool(rng.random() < rate),
                     "segments": segments})
    return rows


def test_ab_segments_match_statsmodels() -> None:
    """Per key and value: requests, labelled, Wilson intervals, the pooled z-test, Newcombe's
    interval of the difference, and Holm's correction across the key's values, as statsmodels
    computes them on the same rows."""
    store = MemoryStore()
    rows = ab_rows(np.random.default_rng(2), 3000)
    write(store, rows)
    report = stats(store)
    assert list(report["segments"]) == list(KEYS)
    for key in KEYS:
        shown = report["segments"][key]
        values = sorted({r["segments"][key] for r in rows if key in r["segments"]})
        assert sorted(shown) == values
        counts = [sum(r["segments"].get(key) == v for r in rows) for v in shown]
        assert counts == sorted(counts, reverse=True)  # the most frequent first
        assert_matches_statsmodels(shown, {value: {variant: [
            r["right"] for r in rows
            if r["variant"] == variant and r["segments"].get(key) == value]
            for variant in ("champion", "challenger")} for value in shown})


def assert_matches_statsmodels(shown: dict[str, Any], right: dict[str, dict[str, list[bool]]],
                               challenger: str = "challenger") -> None:
    """One key's segments against statsmodels on the outcomes each value's requests had
    (``right[value][variant]``): counts, Wilson intervals, the pooled z-test, Newcombe's
    interval, and Holm's correction across the values; with several challengers, those of
    the one named."""
    p_values = []
    comparisons = []
    for value, segment in shown.items():
        arms = {}
        for variant in ("champion", challenger):
            x, n = sum(right[value][variant]), len(right[value][variant])
            arms[variant] = (x, n)
            figures = segment["variants"][variant]
            assert (figures["requests"], figures["labelled"]) == (n, n)
            assert figures["metric"] == pytest.approx(x / n)
            assert figures["metric_ci95"] == pytest.approx(
                list(proportion_confint(x, n, method="wilson")))
        (x_a, n_a), (x_b, n_b) = arms["champion"], arms[challenger]
        comparison = segment["comparison"] if "comparison" in segment \
            else segment["comparisons"][challenger]
        comparisons.append(comparison)
        assert comparison["difference"] == pytest.approx(x_b / n_b - x_a / n_a)
        assert comparison["p_value"] == pytest.approx(
            proportions_ztest([x_b, x_a], [n_b, n_a])[1])
        assert comparison["difference_ci95"] == pytest.approx(list(
            confint_proportions_2indep(x_b, n_b, x_a, n_a, method="newcomb",
                                       compare="diff")))
        p_values.append(comparison["p_value"])
    adjusted = multipletests(p_values, method="holm")[1]
    assert [c["adjusted_p_value"] for c in comparisons] == pytest.approx(adjusted.tolist())


def test_each_of_several_challengers_is_compared_within_each_segment(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path, no_proba_dir: Path) -> None:
    """With challengers: every variant's figures per segment, each challenger's comparison
    under comparisons, Holm's correction per challenger across the key's values; a
    challenger worse in a segment is named in the warning."""
    store = MemoryStore()
    config, models = multi_config(tmp_path, store, champion_dir, challenger_dir, no_proba_dir,
                                  analysis={"segments": ["header:x-country"]})
    rng = np.random.default_rng(6)
    rates = {"DE": {"champion": 0.85, "gb": 0.85, "svc": 0.55},
             "FR": {"champion": 0.80, "gb": 0.82, "svc": 0.80}}
    rows = []
    for _ in range(3000):
        country = str(rng.choice(list(rates)))
        variant = str(rng.choice(["champion", "gb", "svc"], p=[0.6, 0.2, 0.2]))
        rows.append({"variant": variant, "right": bool(rng.random() < rates[country][variant]),
                     "segments": {"x-country": country}})
    write(store, rows)
    report = compute_report(store, config, models)
    shown = report["segments"]["x-country"]
    assert all(set(s["variants"]) == {"champion", "gb", "svc"} for s in shown.values())
    for challenger in ("gb", "svc"):
        assert_matches_statsmodels(shown, {value: {variant: [
            r["right"] for r in rows
            if r["variant"] == variant and r["segments"]["x-country"] == value]
            for variant in ("champion", challenger)} for value in shown}, challenger)
    [warning] = [r for r in report["decision"]["reasons"] if r.startswith("warning:")]
    assert warning.startswith("warning: challenger svc worse in segment x-country=DE (")
    timeline = compute_timeline(store, config, models)  # draws no segment, and fails not
    assert list(timeline["timelines"]) == ["gb", "svc"]
    table = render_report(report).splitlines()
    assert max(len(line) for line in table) <= 80
    assert [line.split()[:3] for line in table if line.startswith("  x-country")] == [
        ["x-country", "(gb)", "champion"], ["x-country", "(svc)", "champion"]]


def test_a_segment_where_the_challenger_is_significantly_worse_is_a_warning() -> None:
    """The decision's action is the whole experiment's (no significant difference yet); the
    segment where the challenger is worse after Holm's correction (DE) is named in a
    warning; a better or unclear one is not."""
    store = MemoryStore()
    write(store, ab_rows(np.random.default_rng(2), 3000))
    report = stats(store)
    without = stats(store, segments=())
    assert report["decision"]["action"] == without["decision"]["action"] == "continue"
    reasons = report["decision"]["reasons"]
    assert reasons[:len(without["decision"]["reasons"])] == without["decision"]["reasons"]
    [warning] = [r for r in reasons if r.startswith("warning:")]
    de = report["segments"]["x-country"]["DE"]["comparison"]
    assert de["adjusted_p_value"] < 0.05 and de["difference"] < 0
    assert warning.startswith("warning: challenger worse in segment x-country=DE (accuracy "
                              f"difference {de['difference']:+.4f}")
    assert f"Holm-adjusted p = {de['adjusted_p_value']:.2g}" in warning
    assert without["segments"] == {}


def test_shadow_segments_are_paired_with_mcnemar() -> None:
    """In shadow mode each segment compares the pairs of its requests with McNemar's exact
    test (statsmodels), a pair in the segment of its request."""
    rng = np.random.default_rng(8)
    rows: list[dict[str, Any]] = []
    truth_right = {"free": (0.8, 0.7), "pro": (0.7, 0.8)}
    for i in range(800):
        plan = str(rng.choice(["free", "pro"]))
        for variant, rate in zip(("champion", "challenger"), truth_right[plan], strict=True):
            rows.append({"variant": variant, "right": bool(rng.random() < rate),
                         "segments": {"plan": plan}, "request_id": f"q{i}",
                         "shadow": variant == "challenger"})
    write(store := MemoryStore(), rows)
    report = stats(store, mode="shadow", segments=("plan",))
    shown = report["segments"]["plan"]
    predictions = {(r.request_id, r.shadow): r.prediction for r in store.prediction_records()}
    truth = {f.request_id: f.label for f in store.feedback_records()}
    p_values = []
    for plan, segment in shown.items():
        ids = {r["request_id"] for r in rows if r["segments"]["plan"] == plan}
        a = np.array([predictions[(i, False)] == truth[i] for i in sorted(ids)])
        b = np.array([predictions[(i, True)] == truth[i] for i in sorted(ids)])
        table = [[int((a & b).sum()), int((a & ~b).sum())],
                 [int((~a & b).sum()), int((~a & ~b).sum())]]
        comparison = segment["comparison"]
        assert comparison["pairs"] == len(ids)
        assert comparison["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue)
        assert comparison["difference"] == pytest.approx(b.mean() - a.mean())
        assert segment["variants"]["challenger"]["requests"] == len(ids)
        p_values.append(comparison["p_value"])
    assert [s["comparison"]["adjusted_p_value"] for s in shown.values()] == pytest.approx(
        multipletests(p_values, method="holm")[1].tolist())


@pytest.mark.parametrize(("metric", "sticky"), [("accuracy", True), ("mae", False),
                                                ("rmse", False)])
def test_one_segment_of_everyone_is_the_whole_comparison(metric: str, sticky: bool) -> None:
    """A key every request carries with one value gives the whole experiment's fixed-horizon
    figures: the same tests, per user under a sticky key with repeat users (delta method),
    Welch's for a mean error, the delta method for RMSE."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(900):
        variant = "challenger" if i % 2 else "champion"
        row: dict[str, Any] = {"variant": variant, "segments": {"plan": "all"},
                               "unit": f"u{i % 300}" if sticky else None}
        if metric == "accuracy":
            row["right"] = bool(rng.random() < (0.8 if i % 2 else 0.75))
        else:
            row["value"], row["truth"] = float(rng.normal()), float(rng.normal(0.1 * (i % 2)))
        rows.append(row)
    write(store := MemoryStore(), rows)
    report = stats(store, metric=metric, sticky=sticky, segments=("plan",))
    whole, segment = report["comparison"], report["segments"]["plan"]["all"]
    assert segment["comparison"]["difference"] == pytest.approx(whole["difference"])
    assert segment["comparison"]["p_value"] == pytest.approx(whole["p_value"])
    assert segment["comparison"]["difference_ci95"] == pytest.approx(whole["difference_ci95"])
    assert segment["comparison"]["adjusted_p_value"] == pytest.approx(whole["p_value"])
    for variant in ("champion", "challenger"):
        assert segment["variants"][variant]["metric_ci95"] == pytest.approx(
            report["variants"][variant]["metric_ci95"])
