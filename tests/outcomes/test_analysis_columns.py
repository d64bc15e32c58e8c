"""``analysis_columns``: the same numpy columns from the memory, SQLite and PostgreSQL stores."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.outcomes import (
    FeedbackRecord,
    MemoryStore,
    OutcomeStore,
    PredictionRecord,
    SQLiteStore,
    open_store,
)
from router.outcomes import sqlite_columns as columns_module

CLASSES = ("setosa", "versicolor", "virginica")
T0 = 1_700_000_000.0


def prediction(request_id: str, ts: float, **changes: Any) -> PredictionRecord:
    fields: dict[str, Any] = {
        "request_id": request_id, "ts": ts, "experiment": "iris", "revision": 1,
        "variant": "champion", "model": "rf", "version": "1", "features": (5.1, 3.5, 1.4, 0.2),
        "prediction": "setosa", "probability": 0.7, "latency_ms": 0.25,
        "probabilities": {"setosa": 0.7, "versicolor": 0.2, "virginica": 0.1},
    }
    fields.update(changes)
    return PredictionRecord(**fields)


def feedback(request_id: str, label: str | None = None, value: float | None = None
             ) -> FeedbackRecord:
    return FeedbackRecord(request_id=request_id, ts=T0 + 100, label=label, value=value)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OutcomeStore]:
    """One empty store of each kind."""
    made: OutcomeStore
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "postgres":
        made = open_store(request.getfixturevalue("postgres_url"), tmp_path)
    else:
        made = SQLiteStore(tmp_path / "outcomes.db")
    yield made
    made.close()


def by_time(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-row columns in timestamp order (the stores promise no order of their own)."""
    order = np.argsort(columns["ts"], kind="stable")
    return {k: v[order] if v.ndim == 1 or k == "segments" else v for k, v in columns.items()}


@pytest.fixture
def classified(store: OutcomeStore) -> OutcomeStore:
    """A small ab log of two revisions, another experiment, and feedback of every kind."""
    store.write_predictions([
        prediction("a", T0 + 1, unit_id="u1", latency_ms=0.5),
        prediction("b", T0 + 2, variant="challenger", prediction="versicolor", probability=0.6,
                   probabilities={"setosa": 0.1, "versicolor": 0.6, "virginica": 0.3},
                   unit_id="u2"),
        prediction("c", T0 + 3, variant="challenger", prediction=None, probability=None,
                   probabilities=None, error="RuntimeError: boom", unit_id="u3"),
        prediction("c", T0 + 3.5, fallback=True, unit_id="u3"),
        prediction("d", T0 + 4, revision=2, features=(6.0, 3.0, 4.5, 1.5)),
        prediction("x", T0 + 5, experiment="other"),
    ])
    store.write_feedback([
        feedback("a", "virginica"),
        feedback("b", "versicolor"),
        feedback("a", "setosa"),        # a correction: the latest label wins
        feedback("d", "not-a-class"),
        feedback("ghost", "setosa"),    # names no prediction
        feedback("ghost", "setosa"),    # twice, still one unknown id
        feedback("x", "setosa"),        # known, though in another experiment
    ])
    return store


def test_rows_flags_and_latest_feedback(classified: OutcomeStore) -> None:
    """Each logged row of the experiment is one entry; the latest feedback per id is joined."""
    c = by_time(classified.analysis_columns("iris", classes=CLASSES))
    assert c["ts"].tolist() == [T0 + 1, T0 + 2, T0 + 3, T0 + 3.5, T0 + 4]
    assert c["revision"].tolist() == [1, 1, 1, 1, 2]
    assert c["challenger"].tolist() == [False, True, True, False, False]
    assert c["fallback"].tolist() == [False, False, False, True, False]
    assert c["error"].tolist() == [False, False, True, False, False]
    assert not c["shadow"].any()
    assert c["latency_ms"][0] == pytest.approx(0.5)
    assert c["predicted"].tolist() == [0, 1, -1, 0, 0]
    # a: corrected to setosa; b: versicolor; c (both rows): none; d: a label that is no class.
    assert c["label"].tolist() == [0, 1, -1, -1, -2]
    fid = c["feedback_id"]
    assert (fid[2:4] == -1).all() and (fid[[0, 1, 4]] >= 0).all()
    assert fid[1] < fid[0] < fid[4]  # ranks follow arrival: "a" was corrected after "b"
    assert int(c["unknown_feedback_ids"]) == 1


def test_revisions_select_rows(classified: OutcomeStore) -> None:
    """Only the rows of the revisions asked for; an empty list gives empty columns."""
    one = classified.analysis_columns("iris", [2], classes=CLASSES)
    assert one["revision"].tolist() == [2]
    # Feedback matched by the rows left out is still known feedback.
    assert int(one["unknown_feedback_ids"]) == 1
    assert by_time(classified.analysis_columns("iris", [1, 2], classes=CLASSES)
                   )["revision"].tolist() == [1, 1, 1, 1, 2]
    empty = classified.analysis_columns("iris", [], classes=CLASSES, units=True)
    assert all(v.size == 0 for k, v in empty.items() if k != "unknown_feedback_ids")
    assert {"ts", "challenger", "predicted", "label", "unit_key"} <= set(empty)


def test_true_probability_of_the_label(classified: OutcomeStore) -> None:
    """The probability the model gave the true label: 0 for no class, NaN without one."""
    c = by_time(classified.analysis_columns("iris", classes=CLASSES, true_probability=True))
    p = c["true_probability"]
    assert p[0] == pytest.approx(0.7) and p[1] == pytest.approx(0.6)
    assert math.isnan(p[2]) and math.isnan(p[3]) and p[4] == 0.0


def test_true_probability_of_wrong_predictions(store: OutcomeStore) -> None:
    """A wrong prediction's probability of the true label comes from its logged probabilities:
    0 where they leave the label out, NaN where there are none; a correction counts."""
    store.write_predictions([
        prediction("w1", T0 + 1),
        prediction("w2", T0 + 2, probabilities={"setosa": 0.9, "versicolor": 0.1}),
        prediction("w3", T0 + 3, prediction=None, probability=None, probabilities=None,
                   error="RuntimeError: boom"),
        prediction("w4", T0 + 4),
        prediction("w5", T0 + 5),
    ])
    store.write_feedback([feedback("w1", "virginica"), feedback("w2", "virginica"),
                          feedback("w3", "versicolor"), feedback("w4", "setosa"),
                          feedback("w4", "versicolor"), feedback("w5", "setosa")])
    p = by_time(store.analysis_columns("iris", classes=CLASSES, true_probability=True)
                )["true_probability"]
    assert p[0] == pytest.approx(0.1) and p[1] == 0.0 and math.isnan(p[2])
    assert p[3] == pytest.approx(0.2) and p[4] == pytest.approx(0.7)


def test_units_and_features(classified: OutcomeStore) -> None:
    """Unit ids come back as 64-bit keys (0 where absent; equal ids, equal keys), with the time
    only where there is none; features of the latest served rows."""
    c = classified.analysis_columns("iris", classes=CLASSES, units=True, feature_rows=2)
    # The time is gone where there is a unit, so the rows are told apart by their flags.
    row = {"a": ~c["challenger"] & ~c["fallback"] & (c["revision"] == 1),
           "b": c["challenger"] & ~c["error"], "c-error": c["error"], "c-fallback": c["fallback"],
           "d": c["revision"] == 2}
    assert all(int(mask.sum()) == 1 for mask in row.values())
    key = {name: int(c["unit_key"][mask][0]) for name, mask in row.items()}
    assert key["c-error"] == key["c-fallback"]
    assert len({key["a"], key["b"], key["c-error"]}) == 3
    assert 0 not in (key["a"], key["b"], key["c-error"]) and key["d"] == 0
    assert c["ts"][row["d"]][0] == T0 + 4
    assert np.isnan(c["ts"][~row["d"]]).all()
    features = c["features"]
    assert features.shape == (2, 4)
    # The latest two answered rows: d, then c's error row (the fallback repeats its inputs).
    assert sorted(features[:, 2].tolist()) == [1.4, 4.5]


def test_segment_values_by_key(store: OutcomeStore) -> None:
    """Each asked segment key gives a column of the values rows carry (None where a row has
    none), in the order asked; values SQL and JSON would quote come back whole."""
    store.write_predictions([
        prediction("a", T0 + 1, segments={"x-country": "DE", "plan": "pro"}),
        prediction("b", T0 + 2, segments={"plan": 'team, "big" \'s \u00e9'}),
        prediction("c", T0 + 3),
        prediction("d", T0 + 4, variant="challenger", shadow=True,
                   segments={"x-country": "FR"}),
    ])
    store.write_feedback([feedback("a", "setosa"), feedback("a", "virginica")])
    c = by_time(store.analysis_columns("iris", classes=CLASSES, segments=["plan", "x-country"]))
    assert c["segments"].tolist() == [["pro", "DE"], ['team, "big" \'s \u00e9', None],
                                      [None, None], [None, "FR"]]
    assert c["label"].tolist() == [2, -1, -1, -1]
    assert "segments" not in store.analysis_columns("iris", classes=CLASSES)
    assert store.analysis_columns("none", segments=["plan"])["segments"].shape == (0, 1)


def test_forced_rows_are_flagged_and_left_out_of_the_features(store: OutcomeStore) -> None:
    """A row whose variant the client chose carries the forced flag (with its class codes
    intact) and never stands for live inputs in the drift features."""
    store.write_predictions([
        prediction("a", T0 + 1, features=(1.0, 1.0, 1.0, 1.0)),
        prediction("b", T0 + 2, variant="challenger", prediction="virginica", forced=True,
                   features=(9.0, 9.0, 9.0, 9.0)),
    ])
    store.write_feedback([feedback("b", "versicolor")])
    c = by_time(store.analysis_columns("iris", classes=CLASSES, feature_rows=5))
    assert c["forced"].tolist() == [False, True]
    assert c["challenger"].tolist() == [False, True]
    assert not c["shadow"].any() and not c["fallback"].any() and not c["error"].any()
    assert c["predicted"].tolist() == [0, 2]
    assert c["label"].tolist() == [-1, 1]
    assert c["features"].tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_regression_values(store: OutcomeStore) -> None:
    """Without classes: predicted values and the values feedback gave, NaN where absent."""
    store.write_predictions([prediction("r1", T0 + 1, prediction=3.5, probability=None,
                                         probabilities=None),
                             prediction("r2", T0 + 2, prediction=1.25, probability=None,
                                        probabilities=None)])
    store.write_feedback([feedback("r1", value=4.0)])
    c = by_time(store.analysis_columns("iris"))
    assert c["value"].tolist() == [3.5, 1.25]
    assert c["label_value"][0] == 4.0 and math.isnan(c["label_value"][1])
    assert "predicted" not in c and "label" not in c


def test_sqlite_unit_ids_holding_the_separator(tmp_path: Path) -> None:
    """SQLite sends unit ids joined by \\x1f; an id holding it is still read back whole."""
    store = SQLiteStore(tmp_path / "outcomes.db")
    try:
        store.write_predictions([prediction("a", T0, unit_id="odd\x1fid"),
                                 prediction("b", T0 + 1, unit_id="plain")])
        store.write_feedback([feedback("a", "setosa"), feedback("a", "virginica")])
        c = store.analysis_columns("iris", classes=CLASSES, units=True)
        assert sorted(zip(c["unit_key"].tolist(), c["label"].tolist(), strict=True)) == sorted(
            [(hash("odd\x1fid"), 2), (hash("plain"), -1)])
    finally:
        store.close()


@pytest.mark.parametrize("ranges", [1, 3])
def test_many_rows_match_the_memory_store(tmp_path: Path, ranges: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """On 5,000 random rows, SQLite's columns equal the memory store's (the reference), read
    in one pass or in rowid ranges on several connections at once."""
    monkeypatch.setattr(columns_module, "_WORKERS", ranges)
    monkeypatch.setattr(columns_module, "_PARALLEL_ROWS", 1000)
    rng = np.random.default_rng(7)
    records = [
        prediction(f"r{i}", T0 + i * 0.001, revision=int(rng.integers(1, 3)),
                   variant="challenger" if rng.random() < 0.3 else "champion",
                   prediction=CLASSES[int(rng.integers(0, 3))],
                   latency_ms=float(rng.gamma(2.0, 0.4)), unit_id=f"u{rng.integers(0, 900)}")
        for i in range(5000)
    ]
    labels = [feedback(f"r{i}", CLASSES[int(rng.integers(0, 3))])
              for i in rng.permutation(5000)[:4000]]
    columns, units = [], []
    for store in (MemoryStore(), SQLiteStore(tmp_path / "many.db")):
        store.write_predictions(records)
        store.write_feedback(labels)
        columns.append(by_time(store.analysis_columns("iris", [1, 2], classes=CLASSES)))
        with_units = store.analysis_columns("iris", [1, 2], classes=CLASSES, units=True)
        units.append(sorted(zip(*(with_units[k].tolist() for k in (
            "unit_key", "revision", "challenger", "predicted", "label")), strict=True)))
        store.close()
    memory, sqlite = columns
    assert units[0] == units[1]
    for name in ("revision", "challenger", "predicted", "label"):
        assert memory[name].tolist() == sqlite[name].tolist(), name
    np.testing.assert_allclose(memory["latency_ms"], sqlite["latency_ms"], atol=1e-6)
    np.testing.assert_allclose(memory["ts"], sqlite["ts"], atol=1e-6)
    # The arrival ranks differ in origin (0 or 1) but agree in order.
    labelled = memory["feedback_id"] >= 0
    assert (labelled == (sqlite["feedback_id"] >= 0)).all()
    assert (np.argsort(memory["feedback_id"][labelled])
            == np.argsort(sqlite["feedback_id"][labelled])).all()


def test_arms_number_each_challenger(store: OutcomeStore) -> None:
    """Asked with the challengers' variants, each row gets its arm: the variant's place among
    them from 1, 0 for the champion (shadow rows keep their challenger's arm); a later read
    of the same question brings new rows their arm too."""
    store.write_predictions([
        prediction("a", T0 + 1), prediction("b", T0 + 2, variant="gb", segments={"plan": "p"}),
        prediction("c", T0 + 3, variant="lr-2"),
        prediction("d", T0 + 4, variant="gb", shadow=True)])
    arms = ("gb", "lr-2")
    first = by_time(store.analysis_columns("iris", classes=CLASSES, arms=arms))
    assert first["arm"].tolist() == [0, 1, 2, 1]
    both = by_time(store.analysis_columns("iris", classes=CLASSES, arms=arms, segments=["plan"]))
    assert both["arm"].tolist() == [0, 1, 2, 1]
    assert both["segments"].tolist() == [[None], ["p"], [None], [None]]
    assert not first["challenger"].any()
    assert "arm" not in store.analysis_columns("iris", classes=CLASSES)
    store.write_predictions([prediction("e", T0 + 5, variant="lr-2")])
    store.write_feedback([feedback("b", "setosa")])
    again = by_time(store.analysis_columns("iris", classes=CLASSES, arms=arms))
    assert again["arm"].tolist() == [0, 1, 2, 1, 2]
    assert again["label"].tolist() == [-1, 0, -1, -1, -1]


def test_latest_rows_read_only_the_newest_of_the_log(classified: OutcomeStore) -> None:
    """``latest_rows``: the question's rows among the log's newest that many, with their latest
    feedback (what the monitoring gauges read, whatever the log's size); nothing kept."""
    # The log's 4 newest rows are c (fallback), d and x (another experiment).
    c = by_time(classified.analysis_columns("iris", classes=CLASSES, latest_rows=3))
    assert c["ts"].tolist() == [T0 + 3.5, T0 + 4]
    assert c["label"].tolist() == [-1, -2]
    everything = by_time(classified.analysis_columns("iris", classes=CLASSES, latest_rows=100))
    assert everything["ts"].tolist() == [T0 + 1, T0 + 2, T0 + 3, T0 + 3.5, T0 + 4]
    assert everything["label"].tolist() == [0, 1, -1, -1, -2]
    # A read of the newest rows does not replace a kept whole read, nor is it kept itself.
    kept = getattr(classified, "kept_arrays", list)()
    assert kept == []
