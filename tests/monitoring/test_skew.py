"""Training-serving skew: the per-feature figures, the rule that flags a feature (against
numpy's isclose and scipy's one-sample t-test on the same numbers), and every input fault named."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_1samp

from router.errors import InputValidationError
from router.monitoring import SkewRule, compare_skew, store_skew
from router.outcomes import PredictionRecord, SQLiteStore

NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def tables(n: int = 400, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """A logged table of ``n`` rows and its offline twin: ``petal_length`` offset by 0.5,
    ``sepal_width`` with float noise well within the tolerance, the others equal."""
    rng = np.random.default_rng(seed)
    values = rng.normal(3.0, 1.0, (n, len(NAMES)))
    ids = [f"req-{i}" for i in range(n)]
    logged = {"request_id": ids, **{name: values[:, j] for j, name in enumerate(NAMES)}}
    offline = {name: values[:, j].copy() for j, name in enumerate(NAMES)}
    offline["petal_length"] = offline["petal_length"] + 0.5
    offline["sepal_width"] = offline["sepal_width"] * (1 + rng.uniform(-1e-9, 1e-9, n))
    return logged, {"request_id": ids, **offline}


def test_a_constant_offset_is_flagged_and_float_noise_is_not() -> None:
    """Only the offset feature is skewed; its figures are the offset's, logged minus offline."""
    logged, offline = tables()
    report = compare_skew(logged, offline)
    assert report["rows_joined"] == 400 and report["rows_missing"] == 0
    assert list(report["features"]) == list(NAMES)
    skewed = [name for name, entry in report["features"].items() if entry["skewed"]]
    assert skewed == ["petal_length"]
    offset = report["features"]["petal_length"]
    assert offset["mismatch_share"] == 1.0
    assert offset["mean_diff"] == pytest.approx(-0.5)
    assert offset["max_abs_diff"] == pytest.approx(0.5)
    noisy = report["features"]["sepal_width"]
    assert noisy["mismatch_share"] == 0.0 and 0 < noisy["max_abs_diff"] < 1e-7
    assert report["features"]["petal_width"] == {"mismatch_share": 0.0, "max_abs_diff": 0.0,
                                                  "mean_diff": 0.0, "skewed": False}


def test_the_join_counts_missing_ids_and_ignores_unasked_ones() -> None:
    """Offline ids never logged are missing; logged ids the offline file lacks are not asked
    about; the offline columns and rows may come in any order."""
    logged, offline = tables(50)
    order = list(reversed(range(10, 50)))  # the first ten logged rows are not recomputed
    shuffled = {name: [offline[name][i] for i in order] for name in reversed(list(offline))}
    shuffled["request_id"] += ["never-logged-1", "never-logged-2"]
    for name in NAMES:
        shuffled[name] += [1.0, 2.0]
    report = compare_skew(logged, shuffled)
    assert (report["rows_joined"], report["rows_missing"]) == (40, 2)
    assert list(report["features"]) == list(NAMES)
    assert [n for n, e in report["features"].items() if e["skewed"]] == ["petal_length"]


def test_mismatches_follow_numpy_isclose_and_nan_rules() -> None:
    """A value differs when |logged - offline| > atol + rtol * |offline|, as numpy.isclose
    says; two NaNs agree, a NaN and a number differ and stay out of the differences."""
    rtol, atol = 1e-3, 1e-2
    offline = np.array([100.0, 100.0, -50.0, 0.0, 0.0, np.nan, np.nan, 7.0])
    logged = np.array([100.11, 100.2, -50.0599, 0.00999, 0.0101, np.nan, 1.0, np.nan])
    ids = [f"r{i}" for i in range(offline.size)]
    report = compare_skew({"request_id": ids, "x": logged}, {"request_id": ids, "x": offline},
                          rtol=rtol, atol=atol, max_mismatch_share=0.5)
    entry = report["features"]["x"]
    expected = ~np.isclose(logged, offline, rtol=rtol, atol=atol, equal_nan=True)
    assert expected.tolist() == [False, True, False, False, True, False, True, True]
    assert entry["mismatch_share"] == pytest.approx(expected.mean())
    diff = (logged - offline)[:5]
    assert entry["max_abs_diff"] == pytest.approx(np.abs(diff).max())
    assert entry["mean_diff"] == pytest.approx(diff.mean())
    assert entry["skewed"] is False  # 4 of 8 is not more than half; the mean is no shift


def columns(ids: list[str], values: np.ndarray, names: str) -> dict[str, Any]:
    return {"request_id": ids, **{name: values[:, j] for j, name in enumerate(names)}}


def test_a_rare_one_sided_difference_is_judged_by_scipys_t_test() -> None:
    """Below the mismatch share, a feature is skewed exactly when scipy's ttest_1samp on its
    differences is below alpha over the features and the mean difference is beyond the
    tolerance; over twelve seeds both verdicts occur, so the comparison is not vacuous."""
    rule, n, shifted = SkewRule(), 2000, 18  # 0.9 % of rows differ, under the default 1 %
    verdicts = set()
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        offline = rng.normal(0.0, 1.0, (n, 3))
        logged = offline.copy()
        rows = rng.choice(n, shifted, replace=False)
        logged[rows, 0] += rng.normal(1.0, 1.0, shifted) * 10  # one-sided, not always clearly
        logged[rows[:3], 1] += [10.0, -10.0, 10.0]
        ids = [str(i) for i in range(n)]
        report = compare_skew(columns(ids, logged, "abc"), columns(ids, offline, "abc"))
        for j, name in enumerate("abc"):
            diff = logged[:, j] - offline[:, j]
            entry = report["features"][name]
            assert entry["mismatch_share"] <= rule.max_mismatch_share
            p = ttest_1samp(diff, 0.0).pvalue if np.ptp(diff) > 0 else 1.0
            beyond = abs(diff.mean()) > rule.atol + rule.rtol * np.abs(offline[:, j]).mean()
            assert entry["skewed"] is bool(p < rule.alpha / 3 and beyond), (seed, name, p)
        verdicts.add(report["features"]["a"]["skewed"])
    assert verdicts == {True, False}


@pytest.mark.parametrize(("differing", "skewed"), [(10, False), (11, True)])
def test_frequent_differences_are_skew_whatever_their_sign(differing: int,
                                                           skewed: bool) -> None:
    """Differences that cancel out (mean zero) still flag a feature when more than
    max_mismatch_share of its rows differ: 10 of 1,000 is not more than 1 %, 11 is."""
    offline = np.ones(1000)
    shifts = [3.0, -3.0] * 5 if differing == 10 else [3.0, -3.0] * 4 + [6.0, -3.0, -3.0]
    logged = offline.copy()
    logged[:differing] += shifts  # they sum to zero: no one-sided shift
    ids = [str(i) for i in range(1000)]
    report = compare_skew({"request_id": ids, "x": logged}, {"request_id": ids, "x": offline})
    entry = report["features"]["x"]
    assert entry["mismatch_share"] == differing / 1000 and entry["mean_diff"] == 0.0
    assert entry["skewed"] is skewed


def test_dataframes_and_csv_files_give_the_same_report(tmp_path: Path) -> None:
    """A pandas DataFrame, a CSV path and a mapping are one and the same input."""
    logged, offline = tables(60)
    path = tmp_path / "offline.csv"
    pd.DataFrame(offline).to_csv(path, index=False, float_format="%.17g")
    expected = compare_skew(logged, offline)
    assert compare_skew(pd.DataFrame(logged), pd.DataFrame(offline)) == expected
    assert compare_skew(logged, path) == expected
    assert compare_skew(logged, str(path)) == expected


def test_no_joined_row_gives_empty_figures() -> None:
    """Without a joined row there is nothing to measure: figures None, nothing skewed."""
    report = compare_skew({"request_id": ["a"], "x": [1.0]}, {"request_id": ["b"], "x": [1.0]})
    assert report == {"rows_joined": 0, "rows_missing": 1, "features": {"x": {
        "mismatch_share": None, "max_abs_diff": None, "mean_diff": None, "skewed": False}}}


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


LOGGED = {"request_id": ["a", "b"], "x": [1.0, 2.0], "y": [3.0, 4.0]}


@pytest.mark.parametrize(("rows", "message"), [
    ([["id", "x", "y"], ["a", "1", "3"]], "{path} has no 'request_id' column (columns: id, x, y)"),
    ([["request_id", "x", "y", "z"], ["a", "1", "3", "0"]],
     "{path} has columns that are no feature of the model: z (features: x, y)"),
    ([["request_id", "x"], ["a", "1"]], "{path} lacks feature columns: y (features: x, y)"),
    ([["request_id", "x", "y"], ["a", "1", "3"], ["a", "2", "4"]],
     "{path} row 2: request_id 'a' repeats row 1"),
    ([["request_id", "x", "y"], ["", "1", "3"]], "{path} row 1: request_id is empty"),
    ([["request_id", "x", "y"], ["a", "1", "3"], ["b", "2", "four"]],
     "{path} row 2, column y: not a number: 'four'"),
    ([["request_id", "x", "y"], ["a", "1", "3"], ["b", "2"]],
     "row 2 (line 3) has 2 fields, the header 3"),
    ([["request_id", "x", "x"], ["a", "1", "3"]], "names a column twice: x"),
])
def test_a_bad_offline_file_is_named_on_one_line(tmp_path: Path, rows: list[list[str]],
                                                 message: str) -> None:
    """Each fault of the offline file raises one line naming the file and the row or column."""
    path = write_csv(tmp_path / "offline.csv", rows)
    with pytest.raises(InputValidationError) as info:
        compare_skew(LOGGED, path)
    assert message.format(path=path) in info.value.message and "\n" not in info.value.message


def test_an_empty_or_binary_file_is_no_csv(tmp_path: Path) -> None:
    """An empty file and bytes that are not UTF-8 text are refused, naming the file."""
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputValidationError, match=r"empty\.csv is empty"):
        compare_skew(LOGGED, empty)
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputValidationError, match=r"model\.bin is not a UTF-8 CSV file"):
        compare_skew(LOGGED, binary)
    with pytest.raises(InputValidationError, match="cannot read"):
        compare_skew(LOGGED, tmp_path / "nowhere.csv")


@pytest.mark.parametrize(("options", "field"), [
    ({"rtol": -1.0}, "rtol"), ({"atol": float("nan")}, "atol"),
    ({"max_mismatch_share": 1.0}, "max_mismatch_share"), ({"alpha": 0.0}, "alpha")])
def test_a_bad_setting_is_named(options: dict[str, float], field: str) -> None:
    """Tolerances are finite and non-negative, the share in [0, 1), alpha in (0, 1)."""
    with pytest.raises(InputValidationError, match=field):
        compare_skew(LOGGED, LOGGED, **options)


def record(request_id: str, features: tuple[float, ...], **changes: Any) -> PredictionRecord:
    fields: dict[str, Any] = {
        "request_id": request_id, "ts": 1.0, "experiment": "exp", "revision": 1,
        "variant": "champion", "model": "champ", "version": "1", "features": features,
        "prediction": "setosa", "probability": 0.9, "latency_ms": 1.0}
    return PredictionRecord(**{**fields, **changes})


def test_store_skew_reads_the_logged_inputs_of_the_offline_ids(tmp_path: Path) -> None:
    """A SQLite log of single and batch rows (``<id>:<i>``) and a shadow pair, compared with
    an offline table in another column order: joined by id, missing counted, the offset
    feature flagged."""
    store = SQLiteStore(tmp_path / "outcomes.db")
    rows = {"single": (5.1, 3.5, 1.4, 0.2), "batch:0": (6.0, 3.0, 4.8, 1.8),
            "batch:1": (5.9, 3.0, 5.1, 1.8), "shadowed": (4.9, 3.0, 1.4, 0.2)}
    store.write_predictions([record(i, f) for i, f in rows.items()]
                            + [record("shadowed", rows["shadowed"], variant="challenger",
                                      shadow=True)])
    ids = [*rows, "not-logged"]
    offline = {"request_id": ids,
               "petal_width": [f[3] for f in rows.values()] + [0.0],
               "petal_length": [f[2] + 0.25 for f in rows.values()] + [0.0],
               "sepal_width": [f[1] for f in rows.values()] + [0.0],
               "sepal_length": [f[0] for f in rows.values()] + [0.0]}
    try:
        report = store_skew(store, offline, NAMES)
        expected = compare_skew({"request_id": list(rows),
                                 **{n: [f[j] for f in rows.values()]
                                    for j, n in enumerate(NAMES)}}, offline)
    finally:
        store.close()
    assert (report["rows_joined"], report["rows_missing"]) == (4, 1)
    assert report == expected
    assert [n for n, e in report["features"].items() if e["skewed"]] == ["petal_length"]


def test_store_skew_refuses_rows_logged_with_other_features(tmp_path: Path) -> None:
    """A logged row with another number of inputs than the model's features is named."""
    store = SQLiteStore(tmp_path / "outcomes.db")
    store.write_predictions([record("old", (1.0, 2.0))])
    try:
        with pytest.raises(InputValidationError,
                           match="request 'old' was logged with 2 inputs, the model has 4"):
            store_skew(store, {"request_id": ["old"], **{n: [1.0] for n in NAMES}}, NAMES)
    finally:
        store.close()
