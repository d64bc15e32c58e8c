"""A stable sort of integer columns, at a fraction of numpy's own stable sort's cost.

numpy's ``kind="stable"`` argsort of 64-bit integers is a merge sort several times slower
than its default sort, which runs vectorised (AVX-512 or AVX2 where the CPU has them). A stable
order needs no stable sort: sort once for the distinct values' ranks, then sort the numbers
``rank * 2^bits + index``, all distinct, whose order is the stable one.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["stable_argsort"]


def stable_argsort(values: NDArray[np.integer]) -> NDArray[np.int64]:
    """``np.argsort(values, kind="stable")`` for a 1-d integer array: the indices that sort
    ``values``, equal values in the order they come."""
    n = values.size
    if n < 2:
        return np.arange(n, dtype=np.int64)
    bits = (n - 1).bit_length()  # an index fits in this many bits, and so does a rank
    order = np.argsort(values)
    ordered = values[order]
    rank = np.cumsum(ordered[1:] != ordered[:-1])
    composite = np.empty(n, np.int64)
    composite[0] = order[0]
    composite[1:] = (rank << bits) | order[1:]
    composite.sort()
    indices: NDArray[np.int64] = composite & ((1 << bits) - 1)
    return indices
