"""Model calls' answers packed for the writer process's pipe read back as they were."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from router.outcomes.answered import AnsweredBatch, ModelTag, answered_batch, records_of_batch
from router.outcomes.batch_packing import pack_batches, unpack_batches
from router.outcomes.writer_child import pack_records

IRIS = ModelTag("iris", 3, "challenger", "iris-gb", "2", ("setosa", "versicolor", "virginica"))
CHAMPION = IRIS._replace(variant="champion", model="iris-rf", version="7")


def batches() -> list[AnsweredBatch]:
    """Calls of one tag, and one whose requests differ in every column."""
    same = [answered_batch(1.5 + i, 10.0 + i, np.full((2, 4), float(i)), ["setosa"] * 2,
                           np.full((2, 3), 1 / 3, dtype=np.float32),
                           [(IRIS, [f"a{i}"], f"user-{i}", None, False, False, 9.0 + i),
                            (IRIS, [f"b{i}"], None, None, False, False, 9.5 + i)])
            for i in range(3)]
    varied = answered_batch(
        4.0, 20.0, np.arange(8, dtype=np.float32).reshape(4, 2), ["setosa", 2, None, "x"],
        None, [(IRIS, ["c:0", "c:1"], "u", {"country": "fr"}, True, False, 19.0),
               (CHAMPION, ["d"], None, None, False, True, 19.5),
               (IRIS._replace(revision=np.int64(4)), ["e"], "v", {}, False, False, 19.25)])
    objects = answered_batch(5.0, 21.0, np.array([["a", 1]], dtype=object), [1.5],
                             np.array([["high", 0.5, 0.5]], dtype=object),
                             [(CHAMPION, ["f"], None, None, False, False, 20.0)])
    return [*same, varied, objects]


def test_packed_batches_read_back_as_the_same_records() -> None:
    sent = batches()
    read = unpack_batches(pack_batches(sent))
    assert [records_of_batch(b) for b in read] == [records_of_batch(b) for b in sent]
    for before, after in zip(sent, read, strict=True):
        assert after.rows == before.rows
        assert after.features.dtype == before.features.dtype
        assert after.asked[1:] == before.asked[1:]
        assert [tuple(tag) for tag in before.asked[0]] == list(after.asked[0])


def test_a_tag_shared_by_many_requests_is_packed_once() -> None:
    """Without pickle's memo, a tag repeated in every batch would be written every time."""
    data = pack_batches(batches())
    assert data.count(b"iris-gb") == 2  # IRIS in eight requests, its revision 4 in one
    assert data.count(b"iris-rf") == 1  # CHAMPION in two


def test_a_batch_the_fast_pickle_cannot_take_goes_as_records() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    bad = answered_batch(1.0, 2.0, np.ones((1, 2)), [cycle], None,
                         [(IRIS, ["g"], None, None, False, False, 1.0)])
    with pytest.raises(ValueError):
        pack_batches([bad])
    # The hand-over then sends the batch's records, which pickle with its memo takes.
    _, records, _, _, batches = pickle.loads(pack_records([], [], [], [bad]))
    assert batches is None
    assert [r[0] for r in records] == ["g"]


def test_equal_segments_in_another_order_keep_their_own() -> None:
    """The store writes a request's segments as JSON in their order: two requests whose
    segments are equal but listed differently (a reload between them) keep each its own."""
    batch = answered_batch(1.0, 2.0, np.ones((2, 2)), ["a", "b"], None, [
        (IRIS, ["h"], None, {"country": "fr", "plan": "pro"}, False, False, 1.0),
        (IRIS, ["i"], None, {"plan": "pro", "country": "fr"}, False, False, 1.0)])
    [read] = unpack_batches(pack_batches([batch]))
    assert [list(s) for s in read.asked[3]] == [["country", "plan"], ["plan", "country"]]
