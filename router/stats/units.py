"""Each row's unit of assignment as a small integer, worked out once per report.

With a sticky key the report groups outcomes by user in several places: the variants' unit
counts and intervals, the sample ratio check, the fixed-horizon test, the sequence's running
per-user sums, the segments. Each grouping of a million 64-bit keys costs a sort; one sort of
every row's unit gives each unit a code (its rank among the units), and from then on a group
is a ``np.bincount`` away.

The codes keep the units' order, so a grouping by code lists the groups exactly as one by
``np.unique`` of the units would, and every sum over them adds the same numbers in the same
order.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from router.outcomes.columns import AnalysisColumns

__all__ = ["UnitCodes", "UnitIndex", "factorize", "group_sums", "stable_order", "unit_values"]

Codes = NDArray[np.int64]
_DIGIT_BITS = 16  # the radix sort's digit: numpy sorts uint16 stably by radix
_DIGIT_MASK = (1 << _DIGIT_BITS) - 1
Floats = NDArray[np.float64]


class UnitCodes(NamedTuple):
    """Some outcomes' units as codes below ``size`` that keep the units' order (equal units,
    equal codes; a smaller unit, a smaller code); codes need not all be used."""

    codes: Codes
    size: int

    def distinct(self) -> int:
        """How many different units."""
        return int(np.count_nonzero(np.bincount(self.codes, minlength=self.size)))

    def repeats(self) -> bool:
        """Some unit has more than one outcome."""
        return self.codes.size > 0 and int(np.bincount(self.codes).max()) > 1


def factorize(values: NDArray[np.integer]) -> UnitCodes:
    """Each value's rank among the distinct values: ``np.unique(values,
    return_inverse=True)[1]``, and how many there are."""
    if values.size == 0:
        return UnitCodes(np.zeros(0, dtype=np.int64), 0)
    order = np.argsort(values)
    ordered = values[order]
    rank = np.zeros(values.size, dtype=np.int64)
    np.cumsum(ordered[1:] != ordered[:-1], out=rank[1:])
    codes = np.empty(values.size, dtype=np.int64)
    codes[order] = rank
    return UnitCodes(codes, int(rank[-1]) + 1)


def group_sums(units: UnitCodes, weights: Floats) -> Floats:
    """The sum of ``weights`` over each unit present, in the units' order: what
    ``np.bincount(np.unique(units, return_inverse=True)[1], weights)`` gives."""
    # numpy's stub types every bincount as integers; with weights it sums floats.
    sums: Floats = np.bincount(units.codes, weights=weights,  # type: ignore[assignment]
                               minlength=units.size)
    present = np.bincount(units.codes, minlength=units.size) > 0
    return sums[present]


def stable_order(units: UnitCodes) -> Codes:
    """``np.argsort(units.codes, kind="stable")``, as a radix sort: the codes are below
    ``units.size``, so a few 16-bit digits, and numpy sorts 16-bit integers stably by radix,
    several times faster than it sorts 64-bit ones (a merge sort)."""
    order: Codes = np.arange(units.codes.size, dtype=np.int64)
    # Least significant digit first: each pass is stable, so ties keep the previous passes'
    # order, and in the end the positions' own.
    for shift in range(0, max(units.size - 1, 1).bit_length(), _DIGIT_BITS):
        digits = ((units.codes[order] >> shift) & _DIGIT_MASK).astype(np.uint16)
        order = order[np.argsort(digits, kind="stable")]
    return order


def unit_values(keys: NDArray[np.int64], rows: NDArray[np.int64]) -> NDArray[np.int64]:
    """The unit of each of ``rows`` (indices): its unit key, or for a row without one (key 0),
    assigned at random, a unit of its own (``-1 - row``)."""
    selected = keys[rows]
    return np.where(selected != 0, selected, -1 - rows.astype(np.int64))


class UnitIndex:
    """The unit of every row of the columns as a code (see the module doc)."""

    def __init__(self, keys: NDArray[np.int64]) -> None:
        self.has_id = keys != 0
        self.all = factorize(unit_values(keys, np.arange(keys.size)))

    @classmethod
    def of(cls, columns: AnalysisColumns) -> UnitIndex | None:
        """The index of the columns' units, None when they have no unit key."""
        keys = columns.get("unit_key")
        return None if keys is None else cls(keys)

    def take(self, rows: NDArray[np.int64]) -> UnitCodes:
        """The units of ``rows`` (indices)."""
        return UnitCodes(self.all.codes[rows], self.all.size)

    def unseen(self) -> NDArray[np.bool_]:
        """A flag per unit, none set: for :meth:`first_visits`."""
        return np.zeros(self.all.size, dtype=bool)

    def first_visits(self, rows: NDArray[np.bool_], seen: NDArray[np.bool_]
                     ) -> NDArray[np.bool_]:
        """``rows`` less those of a unit id flagged in ``seen``; flags the units ``rows``
        carry. Rows without a unit id are kept: each is a unit of its own."""
        codes = self.all.codes
        with_id = rows & self.has_id
        fresh: NDArray[np.bool_] = rows & ~(with_id & seen[codes])
        seen[codes[with_id]] = True
        return fresh

    def users(self, rows: NDArray[np.bool_]) -> int:
        """Distinct unit ids among the ``rows`` mask that carry one."""
        return UnitCodes(self.all.codes[rows & self.has_id], self.all.size).distinct()
