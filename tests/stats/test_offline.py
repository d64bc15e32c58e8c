"""``router.stats.analyze``: an exported log gives the /stats figures, from every input form."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from router.config import RouterConfig
from router.errors import InputValidationError
from router.outcomes import MemoryStore
from router.serving.model import ServedModel
from router.stats import analyze
from tests.stats import test_report
from tests.stats.test_report import CLASSES, Log, report
from tests.stats.test_segments import KEYS, ab_rows, write
from tests.stats.test_segments import stats as segment_stats

iris_models = test_report.iris_models
make_config = test_report.make_config

SAME = ("metric", "test", "difference", "difference_ci95", "p_value", "difference_cs",
        "sequential_p_value", "significant", "samples_needed_per_variant", "tau2")


def sticky_log(store: MemoryStore, rng: np.random.Generator, users: int
               ) -> dict[str, list[Any]]:
    """Users with several requests each, labelled in a shuffled order; returns the export."""
    log = Log(store)
    rows = []
    for user in range(users):
        arm = "challenger" if rng.random() < 0.5 else "champion"
        skill = rng.beta(8, 2) if arm == "champion" else rng.beta(9, 1.5)
        for _ in range(int(rng.integers(1, 8))):
            truth = CLASSES[int(rng.integers(0, 3))]
            guess = truth if rng.random() < skill else CLASSES[(CLASSES.index(truth) + 1) % 3]
            latency = float(rng.gamma(2.0, 0.5))
            rid = log.predict(variant=arm, prediction=guess, unit=f"u{user}", latency=latency)
            rows.append({"request_id": rid, "variant": arm, "prediction": guess, "label": truth,
                         "unit_id": f"u{user}", "latency_ms": latency})
    order = rng.permutation(len(rows))
    export = {key: [] for key in rows[0]}
    for i in order:
        log.label(rows[i]["request_id"], rows[i]["label"])
        for key, value in rows[i].items():
            export[key].append(value)
    return export


def test_the_same_comparison_from_a_mapping_a_dataframe_and_a_csv(
        make_config: Callable[..., RouterConfig], iris_models: dict[str, ServedModel],
        tmp_path: Path) -> None:
    """A sticky experiment logged by the router and exported: analyze() gives /stats's
    comparison, units, guardrails and decision, whatever form the export takes."""
    store = MemoryStore()
    config = make_config(store, traffic={"challenger_percent": 50,
                                         "sticky_key": "header:x-user-id"},
                         analysis={"guardrails": {"error_rate": 0.05, "p99_latency_ms": 5.0}})
    export = sticky_log(store, np.random.default_rng(4), 400)
    live = report(store, config, iris_models)
    assert live["analysis_unit"] == "user"
    assert live["comparison"]["test"] == "z-test on per-user ratios (delta method)"

    path = tmp_path / "outcomes.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(export))
        writer.writeheader()
        writer.writerows(dict(zip(export, row, strict=True)) for row in zip(*export.values(),
                                                                           strict=True))
    analysis = {"guardrails": {"error_rate": 0.05, "p99_latency_ms": 5.0}}
    for source in (export, pd.DataFrame(export), str(path), path):
        offline = analyze(source, analysis)
        assert offline["analysis_unit"] == "user"
        for key in SAME:
            assert offline["comparison"][key] == pytest.approx(live["comparison"][key]), key
        assert offline["comparison"]["srm"]["p_value"] == pytest.approx(
            live["comparison"]["srm"]["p_value"])
        for role in ("champion", "challenger"):
            for key in ("requests", "units", "labelled", "metric", "metric_ci95"):
                assert offline["variants"][role][key] == pytest.approx(
                    live["variants"][role][key]), (role, key)
        for name, check in live["guardrails"].items():  # the same rates and states
            for key in ("estimate", "share_slower", "bound", "state", "requests"):
                assert offline["guardrails"][name].get(key) == check.get(key), (name, key)
        assert offline["decision"] == live["decision"]
        assert "drift" not in offline  # no model references offline


def test_shadow_pairs_by_request_id() -> None:
    """shadow mode: the two rows of a request pair through request_id; McNemar on the pairs."""
    rng = np.random.default_rng(2)
    rows: dict[str, list[Any]] = {"variant": [], "prediction": [], "label": [],
                                  "request_id": []}
    only_a = only_b = 0
    for i in range(300):
        a_right, b_right = rng.random() < 0.8, rng.random() < 0.85
        only_a += a_right and not b_right
        only_b += b_right and not a_right
        for variant, right in (("champion", a_right), ("challenger", b_right)):
            rows["variant"].append(variant)
            rows["prediction"].append("x" if right else "y")
            rows["label"].append("x")
            rows["request_id"].append(f"r{i}")
    out = analyze(rows, mode="shadow")
    paired = out["comparison"]["paired"]
    assert paired["n"] == 300
    assert (paired["champion_only_correct"], paired["challenger_only_correct"]) == (only_a,
                                                                                    only_b)
    assert out["variants"]["challenger"]["shadow"] is True
    assert out["comparison"]["test"] == "McNemar exact test"


def test_regression_metrics_and_failed_calls() -> None:
    """mae on numbers; a row without a prediction is the challenger's error."""
    rows = {"variant": ["champion", "challenger"] * 100,
            "prediction": [1.0, None] + [2.0, 2.5] * 99,
            "label": [1.5, 1.5] * 100}
    out = analyze(rows, {"metric": "mae"})
    challenger = out["variants"]["challenger"]
    assert challenger["errors"] == 1 and challenger["labelled"] == 99
    assert out["variants"]["champion"]["metric"] == pytest.approx((0.5 + 99 * 0.5) / 100)
    assert challenger["metric"] == pytest.approx(1.0)


@pytest.mark.parametrize(("outcomes", "analysis", "kwargs", "names"), [
    ({"variant": ["champion"], "prediction": ["a"]}, None, {}, "'label' column"),
    ({"variant": ["blue"], "prediction": ["a"], "label": ["a"]}, None, {}, "row 1: variant"),
    ({"variant": ["champion"], "prediction": ["a"], "label": ["a", "b"]}, None, {},
     "differ in length"),
    ({"variant": ["champion"], "prediction": ["a"], "label": ["a"]}, {"metric": "log_loss"}, {},
     "metric must be one of"),
    ({"variant": ["champion"], "prediction": ["a"], "label": ["a"]}, {"alpah": 0.1}, {},
     "unknown analysis keys: alpah"),
    ({"variant": ["champion"], "prediction": ["a"], "label": ["a"]}, None, {"mode": "shadow"},
     "request_id column"),
    ({"variant": ["champion"], "prediction": ["x"], "label": [1]}, {"metric": "mae"}, {},
     "row 1: prediction must be a number"),
    ("/nonexistent/outcomes.csv", None, {}, "cannot read /nonexistent/outcomes.csv"),
])
def test_bad_exports_are_named(outcomes: Any, analysis: Any, kwargs: dict[str, Any],
                               names: str) -> None:
    """Each problem is an InputValidationError whose message names the column, row or key."""
    with pytest.raises(InputValidationError, match=names):
        analyze(outcomes, analysis, **kwargs)


def test_a_csv_file_is_named_by_its_path(tmp_path: Path) -> None:
    """The person who exported the file knows it by its path, not as "the outcomes"."""
    export = tmp_path / "june.csv"
    export.write_text("variant,prediction\nchampion,a\n")
    with pytest.raises(InputValidationError) as raised:
        analyze(export)
    assert str(raised.value).startswith(f"{export} has no 'label' column")


def test_segment_columns_give_the_live_reports_segments(tmp_path: Path) -> None:
    """Columns named segment:<key> are segment keys (or the keys analysis.segments names, as
    the YAML writes them): the export of a logged experiment gives /stats's segments."""
    store = MemoryStore()
    write(store, ab_rows(np.random.default_rng(2), 1500))
    live = segment_stats(store)["segments"]
    labels = {f.request_id: f.label for f in store.feedback_records()}
    records = store.prediction_records()
    export = {"variant": [r.variant for r in records],
              "prediction": [r.prediction for r in records],
              "label": [labels[r.request_id] for r in records],
              **{f"segment:{key}": [(r.segments or {}).get(key) for r in records]
                 for key in KEYS}}
    path = tmp_path / "outcomes.csv"
    pd.DataFrame(export).to_csv(path, index=False)
    plain = {k.removeprefix("segment:"): v for k, v in export.items()}
    for offline in (analyze(export)["segments"], analyze(path)["segments"],
                    analyze(plain, {"segments": ["header:x-country", "body:plan"]})["segments"]):
        assert list(offline) == list(KEYS)
        for key in KEYS:
            assert list(offline[key]) == list(live[key])
            for value, segment in live[key].items():
                assert offline[key][value]["variants"] == segment["variants"]
                for name, figure in segment["comparison"].items():
                    assert offline[key][value]["comparison"][name] == pytest.approx(figure)


@pytest.mark.parametrize(("outcomes", "analysis", "names"), [
    ({"variant": ["champion"], "prediction": ["a"], "label": ["a"]}, {"segments": ["plan"]},
     "no 'plan' column for the segment plan"),
    ({"variant": ["champion"], "prediction": ["a"], "label": ["a"]}, {"segments": "plan"},
     "segments is a list"),
    ({"variant": ["champion"], "prediction": ["a"], "label": ["a"],
      **{f"segment:k{i}": ["x"] for i in range(6)}}, None, "at most 5 segment keys, got 6"),
])
def test_bad_segments_are_named(outcomes: Any, analysis: Any, names: str) -> None:
    with pytest.raises(InputValidationError, match=names):
        analyze(outcomes, analysis)
