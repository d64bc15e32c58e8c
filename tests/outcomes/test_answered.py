"""A request's answered rows: handed over as they are, made into records where they are written."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

from router.outcomes import PredictionRecord, open_store
from router.outcomes.answered import AnsweredRows, ModelTag, pack, records_of, row_count, unpack
from router.outcomes.writer_child import pack_records
from router.outcomes.writer_process import WriterProcess
from tests.outcomes.test_writer_process import DEADLINE_S, URL, make_process  # noqa: F401

IRIS = ModelTag("iris", 3, "challenger", "iris-gb", "2", ("setosa", "versicolor", "virginica"))


def answered(row_ids: list[str], *, labels: list[object] | None = None,
             probabilities: np.ndarray | None = None, error: str | None = None,
             tag: ModelTag = IRIS) -> AnsweredRows:
    features = np.arange(len(row_ids) * 4, dtype=np.float64).reshape(len(row_ids), 4) + 0.25
    return AnsweredRows(row_ids, 1.5, tag, labels, 2.25, False, "user-7", error, True, False,
                        {"country": "fr"}, features, probabilities)


def test_each_row_becomes_the_record_the_gateway_used_to_build() -> None:
    rows = answered(["r:0", "r:1"], labels=["virginica", "setosa"],
                    probabilities=np.array([[0.05, 0.2, 0.75], [0.9, 0.05, 0.05]]))
    assert records_of(rows) == [
        PredictionRecord("r:0", 1.5, "iris", 3, "challenger", "iris-gb", "2",
                         (0.25, 1.25, 2.25, 3.25), "virginica", 0.75, 2.25, False, "user-7",
                         {"setosa": 0.05, "versicolor": 0.2, "virginica": 0.75}, None, True,
                         False, {"country": "fr"}),
        PredictionRecord("r:1", 1.5, "iris", 3, "challenger", "iris-gb", "2",
                         (4.25, 5.25, 6.25, 7.25), "setosa", 0.9, 2.25, False, "user-7",
                         {"setosa": 0.9, "versicolor": 0.05, "virginica": 0.05}, None, True,
                         False, {"country": "fr"}),
    ]


def test_a_failed_call_and_a_regressor_log_no_probabilities() -> None:
    [failed] = records_of(answered(["f"], error="ValueError: bad row"))
    assert (failed.prediction, failed.probability, failed.probabilities, failed.error) == \
        (None, None, None, "ValueError: bad row")
    regressor = ModelTag("price", 1, "champion", "gbr", "1", None)
    [value] = records_of(answered(["v"], labels=[3.5], tag=regressor))
    assert (value.prediction, value.probability, value.probabilities) == (3.5, None, None)


def test_integer_labels_find_their_probability_under_their_text() -> None:
    tag = IRIS._replace(classes=("0", "1"))
    [record] = records_of(answered(["i"], labels=[1], probabilities=np.array([[0.25, 0.75]]),
                                   tag=tag))
    assert (record.prediction, record.probability) == (1, 0.75)


def test_a_packed_batch_pickles_and_unpacks_to_the_same_records() -> None:
    batch = [
        answered(["a"], labels=["setosa"], probabilities=np.array([[0.9, 0.05, 0.05]])),
        answered(["b:0", "b:1", "b:2"], labels=["setosa", "versicolor", "virginica"],
                 # float32 from some engine: sent as float64, as the record would hold it
                 probabilities=np.eye(3, dtype=np.float32)),
        answered(["c"], error="TimeoutError: timeout"),
        answered(["d"], labels=[2.5], tag=ModelTag("price", 1, "champion", "gbr", "1", None)),
    ]
    message = pickle.loads(pickle.dumps(pack(batch), protocol=pickle.HIGHEST_PROTOCOL))
    expected = [record for rows in batch for record in records_of(rows)]
    assert unpack(message) == expected
    assert row_count(batch) == len(expected) == 6


def test_the_writer_process_writes_answered_rows_beside_records(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:  # noqa: F811
    writer = make_process(tmp_path)
    probabilities = np.array([[0.05, 0.2, 0.75], [0.9, 0.05, 0.05]])
    plain = records_of(answered(["plain"], labels=["setosa"], probabilities=probabilities[1:]))
    writer.submit_predictions(plain)
    submitted = []
    for i in range(500):
        rows = answered([f"q{i}:0", f"q{i}:1"], labels=["virginica", "setosa"],
                        probabilities=probabilities)
        writer.submit_answered(rows)
        submitted += records_of(rows)
    assert writer.backlog == 1_001  # rows, not requests
    writer.close(timeout=DEADLINE_S)

    store = open_store(URL, tmp_path)
    try:
        assert store.prediction_records() == [*plain, *submitted]
    finally:
        store.close()
    assert writer.written == 1_001 and writer.backlog == 0


def test_a_label_pickle_cannot_take_travels_as_its_text() -> None:
    """The whole batch then goes as records, the odd value as the text the store would write."""

    class Odd:
        def __reduce__(self) -> object:
            raise TypeError("not picklable")

        def __str__(self) -> str:
            return "odd-label"

    batch = [answered(["a"], labels=["setosa"], probabilities=np.array([[0.9, 0.05, 0.05]])),
             answered(["b"], labels=[Odd()])]
    kind, plain, feedback, packed = pickle.loads(pack_records([], [], batch))
    assert (kind, feedback, packed) == ("records", [], None)
    assert [(p[0], p[8]) for p in plain] == [("a", "setosa"), ("b", "odd-label")]


def test_probabilities_that_are_not_numbers_travel_as_records() -> None:
    odd = answered(["c"], labels=["setosa"],
                   probabilities=np.array([["high", 0.5, 0.5]], dtype=object))
    _, plain, _, packed = pickle.loads(pack_records([], [], [odd]))
    assert packed is None
    assert plain[0][13] == {"setosa": "high", "versicolor": 0.5, "virginica": 0.5}
