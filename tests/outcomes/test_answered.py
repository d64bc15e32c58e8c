"""A request's answered rows: handed over as they are, made into records where they are written."""

from __future__ import annotations

import gc
import json
import math
import pickle
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from router.outcomes import PredictionRecord, open_store
from router.outcomes.answered import (
    AnsweredBatch,
    AnsweredRows,
    ModelTag,
    answered_batch,
    hand,
    records_of,
    records_of_batch,
    records_of_handed,
    row_count,
    store_rows_of_batch,
)
from router.outcomes.batch_packing import unpack_batches
from router.outcomes.memory import MemoryStore
from router.outcomes.rows import StoreRow, prediction_row, record_of_row
from router.outcomes.spill_format import encode_record
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


def handed_and_back(rows: AnsweredRows) -> list[PredictionRecord]:
    """``rows`` as the writer process makes them: handed, pickled in a message, unpickled."""
    message = pickle.loads(pack_records([], [], [hand(rows)]))
    [handed] = message[3]
    return records_of_handed(handed)


def test_handed_rows_become_the_same_records_in_the_writer_process() -> None:
    batch = [
        answered(["a"], labels=["setosa"], probabilities=np.array([[0.9, 0.05, 0.05]])),
        answered(["b:0", "b:1", "b:2"], labels=["setosa", "versicolor", "virginica"],
                 # float32 from some engine: sent as float64, as the record would hold it
                 probabilities=np.eye(3, dtype=np.float32) / 3),
        answered(["c"], error="TimeoutError: timeout"),
        answered(["d"], labels=[2.5], tag=ModelTag("price", 1, "champion", "gbr", "1", None)),
        answered(["e"], labels=[1], tag=IRIS._replace(classes=("0", "1")),
                 probabilities=np.array([[0.1, 0.2, 0.3, 0.7]])[:, 2:]),  # a view
        answered(["f"], labels=[True], tag=IRIS._replace(classes=("False", "True")),
                 probabilities=np.array([[0.1, 0.3, 0.2, 0.7]])[:, ::2]),  # not contiguous
    ]
    for rows in batch:
        assert isinstance(hand(rows)[2], bytes)
        assert handed_and_back(rows) == records_of(rows)
    assert row_count(map(hand, batch)) == 8


def test_labels_json_would_change_travel_as_they_are() -> None:
    """A tuple would come back a list and a big int not at all: the store writes str()."""
    for label in [(1, 2), 2 ** 70, 1.5 + 2j]:
        rows = answered(["t"], labels=[label])
        assert isinstance(hand(rows)[2], AnsweredRows)
        [record] = handed_and_back(rows)
        assert record.prediction == label and str(record.prediction) == str(label)


def test_a_probability_json_has_no_number_for_comes_back_not_a_number() -> None:
    rows = answered(["n"], labels=["setosa"], probabilities=np.array([[math.nan, 0.5, 0.5]]))
    [record] = handed_and_back(rows)
    assert record.probabilities is not None
    assert math.isnan(record.probabilities["setosa"]) and record.probability is not None
    assert math.isnan(record.probability)


def test_the_request_path_keeps_no_reference_to_a_requests_arrays(tmp_path: Path) -> None:
    """What a request answered is encoded as it is handed over, so its arrays are freed then,
    not read again, gone cold, by the hand-over thread."""
    writer = WriterProcess(URL, tmp_path)  # not started: nothing is taken off its queue
    rows = answered(["w"], labels=["setosa"], probabilities=np.array([[0.9, 0.05, 0.05]]))
    features, probabilities = weakref.ref(rows.features), weakref.ref(rows.probabilities)
    writer.submit_answered(rows)
    del rows
    gc.collect()
    assert features() is None and probabilities() is None
    assert writer.backlog == 1
    writer.close(timeout=DEADLINE_S)  # starts it, hands the row over and writes it
    assert writer.written == 1


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
    kind, plain, feedback, handed, batches = \
        pickle.loads(pack_records([], [], list(map(hand, batch))))
    assert (kind, feedback, handed, batches) == ("records", [], None, None)
    assert [(p[0], p[8]) for p in plain] == [("a", "setosa"), ("b", "odd-label")]


def test_probabilities_that_are_not_numbers_travel_as_they_are() -> None:
    odd = answered(["c"], labels=["setosa"],
                   probabilities=np.array([["high", 0.5, 0.5]], dtype=object))
    [record] = handed_and_back(odd)
    assert record == records_of(odd)[0]
    assert record.probabilities == {"setosa": "high", "versicolor": 0.5, "virginica": 0.5}


def sent_as(batches: list[AnsweredBatch]) -> list[AnsweredBatch]:
    """``batches`` as the writer process reads them from its pipe."""
    return unpack_batches(pickle.loads(pack_records([], [], [], batches))[4])


def test_a_batch_becomes_the_records_of_its_requests_in_the_writer_process() -> None:
    """A model call's answer, sent once for the requests it answered, makes each request's
    records as if it had been sent alone."""
    features = np.arange(12, dtype=np.float64).reshape(3, 4) + 0.25
    probabilities = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]],
                             dtype=np.float32)  # some engine's: float64 in the records
    labels = ["virginica", "setosa", "virginica"]
    batch = answered_batch(1.5, 10.75, features, labels, probabilities, [
        (IRIS, ["a:0", "a:1"], "user-1", {"country": "fr"}, False, False, 10.0),
        (IRIS, ["b"], None, None, True, True, 10.5)])
    [sent] = sent_as([batch])
    expected = [
        *records_of(AnsweredRows(["a:0", "a:1"], 1.5, IRIS, labels[:2], 750.0, False,
                                 "user-1", None, False, False, {"country": "fr"},
                                 features[:2], probabilities[:2].astype(np.float64))),
        *records_of(AnsweredRows(["b"], 1.5, IRIS, labels[2:], 250.0, False, None, None,
                                 True, True, None, features[2:],
                                 probabilities[2:].astype(np.float64))),
    ]
    assert records_of_batch(sent) == records_of_batch(batch) == expected
    assert [r.probability for r in expected] == pytest.approx([0.7, 0.6, 0.6])


def test_the_writer_process_writes_batches_beside_requests(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:  # noqa: F811
    writer = make_process(tmp_path)
    alone = answered(["alone"], labels=["setosa"], probabilities=np.array([[0.9, 0.05, 0.05]]))
    writer.submit_answered(alone)
    expected = records_of(alone)
    for i in range(300):
        batch = answered_batch(
            2.5, 3.0, np.full((2, 4), float(i)), ["setosa", "virginica"],
            np.full((2, 3), 1 / 3), [(IRIS, [f"q{i}"], None, None, False, False, 2.0),
                                     (IRIS, [f"s{i}"], "u", None, False, False, 2.5)])
        writer.submit_batch(batch)
        expected += records_of_batch(batch)
    assert writer.backlog == 601
    writer.close(timeout=DEADLINE_S)
    store = open_store(URL, tmp_path)
    try:
        assert sorted(store.prediction_records()) == sorted(expected)
    finally:
        store.close()


def varied_batch() -> AnsweredBatch:
    """Requests of every kind a model call answers: segments or none, forced, a fallback, an
    integer label, float32 arrays, a NaN feature and a NaN probability, a numpy revision."""
    features = np.arange(20, dtype=np.float32).reshape(5, 4) + 0.25
    features[1, 2] = np.nan
    probabilities = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, np.nan], [0.2, 0.2, 0.6],
                              [0.5, 0.25, 0.25], [0.3, 0.3, 0.4]], dtype=np.float32)
    labels: list[object] = ["virginica", "setosa", "virginica", 1, "virginica"]
    integers = IRIS._replace(classes=("0", "1", "2"))
    return answered_batch(1.5, 10.75, features, labels, probabilities, [
        (IRIS, ["a:0", "a:1"], "user-1", {"country": "fr"}, False, False, 10.0),
        (IRIS, ["b"], None, None, True, True, 10.5),
        (integers, ["c"], "user-2", {}, False, False, 10.25),
        (IRIS._replace(revision=np.int64(4)), ["d"], None, None, False, False, 9.0)])


def test_a_batch_becomes_the_store_rows_its_records_would_be_written_as() -> None:
    """The writer process writes a model call's rows without a record per row: each row is
    the one the store would have made of the record."""
    for batch in [varied_batch(), *[answered_batch(
            2.0, 3.0, np.ones((2, 3)), labels, None,
            [(ModelTag("price", 2, "champion", "gbr", "1", None), ["r0", "r1"], None, None,
              False, False, 2.5)])
            for labels in ([2.5, 3.25], [(1, 2), 1.5 + 2j], [[1], {"a": 1}])]]:
        [sent] = sent_as([batch])
        expected = [prediction_row(r) for r in records_of_batch(batch)]
        assert store_rows_of_batch(sent) == store_rows_of_batch(batch) == expected
        assert all(type(row) is StoreRow for row in store_rows_of_batch(batch))


def test_a_store_row_reads_back_as_its_record() -> None:
    """Spill files and dead letters hold records: a row the store refused is set aside as the
    record it came from, and the memory store keeps it as one."""
    records = records_of_batch(varied_batch())
    rows = store_rows_of_batch(varied_batch())
    for record, row in zip(records, rows, strict=True):
        if record.request_id == "a:1":
            continue  # its NaNs: JSON's null, read back as NaN (features) or None
        # No segments at all and an empty set of them are the same column: NULL.
        record = record._replace(segments=record.segments or None)
        assert record_of_row(row) == record
        assert encode_record("predictions", row) == encode_record("predictions", record)
    store = MemoryStore()
    store.write_predictions(rows[:1])
    assert store.prediction_records() == records[:1]


def test_the_writer_process_sets_a_batch_row_aside_and_writes_the_rest(
        tmp_path: Path, make_process: Callable[..., WriterProcess]) -> None:  # noqa: F811
    writer = make_process(tmp_path, spill_dir=tmp_path / "spill")
    good = varied_batch()
    odd = answered_batch(1.5, 2.0, np.ones((1, 4)), ["setosa"],
                         np.array([["high", 0.5, 0.5]], dtype=object),
                         [(IRIS, ["odd"], None, None, False, False, 1.0)])
    assert good.probabilities is not None
    bad_id = answered_batch(good.ts, good.done, good.features[:2], good.labels[:2],
                            good.probabilities[:2],
                            [(IRIS, ["\udc00bad", "ok"], None, None, False, False, 10.0)])
    for batch in (good, odd, bad_id):
        writer.submit_batch(batch)
    writer.close(timeout=DEADLINE_S)
    assert writer.dead_letters == 2
    store = open_store(URL, tmp_path)
    try:
        written = store.prediction_records()
    finally:
        store.close()
    assert [r.request_id for r in written] == ["a:0", "a:1", "b", "c", "d", "ok"]
    assert written[0] == records_of_batch(good)[0]
    lines = (tmp_path / "spill" / "dead-letters.jsonl").read_text().splitlines()[1:]
    assert [json.loads(line)["record"]["request_id"] for line in lines] == ["odd", "\udc00bad"]
