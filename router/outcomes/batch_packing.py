"""Model calls' answers (``AnsweredBatch``) packed for the pipe to the writer process, and read
back there.

The hand-over thread packs every batch of its pass in one pickle, and its CPU is the serving
core's, so the format is made for pickle's speed:

- an array goes as its dtype, shape and bytes (2.6 against 0.5 µs a 10-row array, which pickle
  otherwise reduces through Python);
- the pickle keeps no memo (``Pickler.fast``): pickle otherwise files every string and tuple
  it writes in a table, and that table cost about a fifth of the hand-over thread;
- without a memo a repeated object would be written again each time, so the models' tags,
  shared by every request a model answers, go once in a table of the pass, and each batch
  names them by their place in it; the columns that are one value for a whole call (the
  tag, forced, fallback, and segments when no request has any) go as that value once.

docs/performance.md ("Where logging's cost goes") has the measurements.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from router.outcomes.answered import AnsweredBatch

__all__ = ["pack_batches", "unpack_batches"]

_NUMBERS = "biuf"  # numpy dtype kinds

# An array as pickle takes it fastest: its dtype, shape and bytes.
PlainArray = tuple[str, tuple[int, ...], bytes]


def pack_batches(batches: Sequence[AnsweredBatch]) -> bytes:
    """``batches`` as one pickle for :func:`unpack_batches`. Raises what pickle raises on a
    value it cannot take (the caller then sends records instead)."""
    tags: list[tuple[Any, ...]] = []  # every tag the batches name, once
    places: dict[int, int] = {}  # id(tag) -> its place in tags
    plain = []
    for _, ts, done, features, labels, probabilities, asked in batches:
        tag_column, row_ids, unit_ids, segments, forced, fallback, asked_at = asked
        plain.append((
            ts, done, _plain(features), labels,
            None if probabilities is None else _plain(probabilities),
            _places(tag_column, places, tags), row_ids, unit_ids, _one_if_all(segments, None),
            _one_if_same(forced), _one_if_same(fallback), asked_at))
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    # No memo: nothing here is written twice (the tags are in their table) and nothing holds
    # itself; a label that does fails here, and the caller sends records.
    pickler.fast = True
    pickler.dump((tags, plain))
    return buffer.getvalue()


def unpack_batches(data: bytes) -> list[AnsweredBatch]:
    """The batches :func:`pack_batches` packed, each tag a plain tuple."""
    tags, plain = pickle.loads(data)
    out = []
    for (ts, done, features, labels, probabilities, places, row_ids, unit_ids, segments,
         forced, fallback, asked_at) in plain:
        n = len(row_ids)
        features = _array(features)
        tag_column = tuple(tags[place] for place in places) if len(places) == n \
            else (tags[places[0]],) * n
        out.append(AnsweredBatch(
            len(features), ts, done, features, labels,
            None if probabilities is None else _array(probabilities),
            (tag_column, row_ids, unit_ids, _every(segments, n), _every(forced, n),
             _every(fallback, n), asked_at)))
    return out


def _places(column: tuple[Any, ...], places: dict[int, int], tags: list[tuple[Any, ...]]
            ) -> tuple[int, ...]:
    """Where each tag of ``column`` is in ``tags`` (added when new); one place when every
    request of the call has the same tag, as nearly every call does."""
    first = column[0]
    if column.count(first) == len(column):
        return (_place(first, places, tags),)
    return tuple(_place(tag, places, tags) for tag in column)


def _place(tag: tuple[Any, ...], places: dict[int, int], tags: list[tuple[Any, ...]]) -> int:
    place = places.get(id(tag))  # the tags outlive the pass: their batches hold them
    if place is None:
        place = places[id(tag)] = len(tags)
        tags.append(tuple(tag))  # a plain tuple: a named tuple pickles through Python
    return place


def _one_if_same(column: tuple[Any, ...]) -> tuple[Any, ...]:
    """A column of flags the gateway sets (``bool``) as one value when they are all equal."""
    return column[:1] if column.count(column[0]) == len(column) else column


def _one_if_all(column: tuple[Any, ...], value: Any) -> tuple[Any, ...]:
    """``(value,)`` when every entry is ``value``; else the column. Segments are squeezed only
    when no request has any: two equal dicts may list their keys in another order, which the
    store's JSON text keeps."""
    return (value,) if column.count(value) == len(column) else column


def _every(column: tuple[Any, ...], n: int) -> tuple[Any, ...]:
    return column if len(column) == n else column * n


def _plain(array: np.ndarray) -> np.ndarray | PlainArray:
    if array.dtype.kind not in _NUMBERS:
        return array  # objects: pickled as they are
    return array.dtype.str, array.shape, array.tobytes()


def _array(value: np.ndarray | PlainArray) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    dtype, shape, data = value
    return np.frombuffer(data, dtype=dtype).reshape(shape)
