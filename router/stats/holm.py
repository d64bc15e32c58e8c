"""Holm's step-down correction: p-values adjusted so that a family of tests keeps its error
rate (the family-wise error rate) at alpha, shared by the comparisons of several challengers
and by the values of a segment key."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["holm"]


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (as ``statsmodels``' ``multipletests(method="holm")``
    computes them): the ``i``-th smallest of ``m`` becomes ``max over j <= i of
    min(1, (m - j + 1) p_(j))``; None stays None and is not counted as a test."""
    present = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted
