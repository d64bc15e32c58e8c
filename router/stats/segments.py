"""``/stats``'s ``segments``: the experiment broken down by the values of each segment key.

Per key (``analysis.segments``), per value: each variant's requests, labelled outcomes, metric
and its 95 % interval, and the challenger against the champion within the segment with the
same fixed-horizon tests as the whole experiment's ``comparison.p_value`` (in ab mode
``router.stats.comparison.fixed_test``: per request, or per user under a sticky key; in shadow
mode the paired tests of ``paired_test`` on the requests both models scored, paired by their
feedback as in the whole comparison, a pair in the segment of the champion's row). The p-values
of one key's values are corrected together by Holm's method (``adjusted_p_value``), since a
reader scans them all for the worst; the keys are separate questions and are not pooled.

At most :data:`MAX_VALUES` values per key are shown, the most frequent among the experiment's
requests (ties by value); the rest are pooled as :data:`OTHER`, and so is a value spelled
``other``. Pooling happens here, at analysis time, over every gateway's rows at once: each
gateway logs the values it saw, so no gateway's own view of which values are frequent decides
what the others' rows count as. A request without a value for a key is in none of its segments.

The decision stays on the whole experiment; a segment where the challenger is significantly
worse after the correction gives a warning among the decision's reasons
(:func:`segment_warnings`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from router.outcomes.columns import AnalysisColumns
from router.stats.comparison import (
    Outcomes,
    Units,
    fixed_test,
    metric_interval,
    paired_rows,
    paired_test,
    units_of,
)
from router.stats.holm import holm
from router.stats.paired import mcnemar_test
from router.stats.units import UnitIndex

__all__ = ["MAX_VALUES", "OTHER", "segment_codes", "segment_report", "segment_warnings"]

MAX_VALUES = 50
OTHER = "other"

Columns = AnalysisColumns


def segment_codes(values: np.ndarray, counted: np.ndarray, limit: int = MAX_VALUES
                  ) -> tuple[list[str], np.ndarray]:
    """The values shown for one key and each row's code: ``names`` are the ``limit`` most
    frequent values among the ``counted`` rows (ties by value), then :data:`OTHER` when any
    counted row is pooled; a row's code is its index in ``names``, -1 without a value.

    By 64-bit hashes rather than the strings themselves: sorting a million Python strings
    costs seconds, their cached hashes almost nothing.
    """
    n = values.size
    present = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    hashes = np.fromiter((0 if v is None else hash(v) for v in values), dtype=np.int64,
                         count=n)
    distinct, first, inverse = np.unique(hashes[present], return_index=True,
                                         return_inverse=True)
    rows = np.flatnonzero(present)
    counts = np.bincount(inverse[counted[rows]], minlength=distinct.size)
    text = [str(values[rows[i]]) for i in first]
    ranked = sorted((i for i in range(distinct.size) if counts[i] and text[i] != OTHER),
                    key=lambda i: (-counts[i], text[i]))
    kept = ranked[:limit]
    names = [text[i] for i in kept]
    index = np.full(distinct.size, len(names), dtype=np.int64)  # pooled unless kept
    index[kept] = np.arange(len(kept))
    codes = np.full(n, -1, dtype=np.int64)
    codes[rows] = index[inverse]
    if bool(np.any(counted & (codes == len(names)))):
        names.append(OTHER)
    else:
        codes[codes == len(names)] = -1  # only rows outside the experiment: no segment shown
    return names, codes


def _figures(outcomes: Outcomes, requests: int, rows: np.ndarray, units: Units | None
             ) -> dict[str, Any]:
    """A variant's figures within a segment; ``rows`` are its scored rows (indices)."""
    y = outcomes.y[rows]
    interval = metric_interval(outcomes, y, units)
    return {"requests": requests, "labelled": int(y.size), "metric": outcomes.value(y),
            "metric_ci95": None if interval is None else [float(interval[0]),
                                                          float(interval[1])]}


def _comparison(outcomes: Outcomes, y_a: np.ndarray, y_b: np.ndarray, test: tuple[Any, ...]
                ) -> dict[str, Any]:
    p_value, interval = test
    metric_a, metric_b = outcomes.value(y_a), outcomes.value(y_b)
    return {"difference": None if metric_a is None or metric_b is None else metric_b - metric_a,
            "difference_ci95": None if interval is None else [float(interval[0]),
                                                              float(interval[1])],
            "p_value": None if p_value is None else float(p_value),
            "adjusted_p_value": None}


def _paired(outcomes: Outcomes, in_segment: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]
            ) -> dict[str, Any]:
    """shadow mode: the pairs whose champion row is in the segment, tested as pairs."""
    a, b = pairs
    inside = in_segment[a]
    y_a, y_b = outcomes.y[a[inside]], outcomes.y[b[inside]]
    mcnemar_p = None
    if outcomes.metric == "accuracy":
        mcnemar_p = mcnemar_test(int(((y_a == 1) & (y_b == 0)).sum()),
                                 int(((y_a == 0) & (y_b == 1)).sum()))
    comparison = _comparison(outcomes, y_a, y_b, paired_test(outcomes, y_a, y_b, mcnemar_p))
    comparison["pairs"] = int(y_a.size)
    return comparison


def segment_report(columns: Columns, masks: Mapping[str, np.ndarray], outcomes: Outcomes, *,
                   mode: str, keys: Sequence[str], clustered: bool = False,
                   challengers: Sequence[str] = ("challenger",),
                   index: UnitIndex | None = None) -> dict[str, dict[str, Any]]:
    """``/stats``'s ``segments`` (module doc): per key, per value, the variants' figures and,
    with one challenger, its ``comparison``; with several (``challengers`` names their masks),
    ``comparisons`` by name, each corrected across the key's values on its own. ``masks`` are
    the variants' rows (the report's), ``clustered`` says some unit (a user, or a batch
    request) has several outcomes; ``index``, the columns' units coded, spares the groupings
    a sort."""
    values = columns.get("segments")
    if not keys or values is None:
        return {}
    compared = tuple(challengers) if mode in ("ab", "shadow") else ()
    roles = ("champion", *compared)
    counted = np.logical_or.reduce([masks[role] for role in roles])
    pairs = {name: paired_rows(columns, masks["champion"] & outcomes.scored,
                               masks[name] & outcomes.scored)
             for name in compared} if mode == "shadow" else {}
    report: dict[str, dict[str, Any]] = {}
    for j, key in enumerate(keys):
        names, codes = segment_codes(values[:, j], counted)
        segments: dict[str, Any] = {}
        for code, name in enumerate(names):
            in_segment = codes == code
            rows = {role: np.flatnonzero(masks[role] & in_segment & outcomes.scored)
                    for role in roles}
            units = {role: units_of(columns, found, index) if clustered else None
                     for role, found in rows.items()}
            variants = {role: _figures(outcomes, int((masks[role] & in_segment).sum()),
                                       rows[role], units[role]) for role in roles}
            comparisons = {
                challenger: _paired(outcomes, in_segment, pairs[challenger]) if pairs else
                _comparison(outcomes, outcomes.y[rows["champion"]], outcomes.y[rows[challenger]],
                            fixed_test(outcomes, outcomes.y[rows["champion"]],
                                       outcomes.y[rows[challenger]], units["champion"],
                                       units[challenger]))
                for challenger in compared}
            segments[name] = {"variants": variants, "comparisons": comparisons}
        for challenger in compared:
            found = [s["comparisons"][challenger] for s in segments.values()]
            for comparison, p in zip(found, holm([c["p_value"] for c in found]), strict=True):
                comparison["adjusted_p_value"] = p
        if tuple(challengers) == ("challenger",):  # one challenger: its comparison alone
            for segment in segments.values():
                segment["comparison"] = segment.pop("comparisons").get("challenger")
        report[key] = segments
    return report


def segment_warnings(segments: Mapping[str, Mapping[str, Any]], metric: str, alpha: float
                     ) -> list[str]:
    """A sentence for each segment where a challenger is significantly worse after Holm's
    correction, for the decision's reasons."""
    warnings = []
    higher_is_better = metric == "accuracy"
    for key, values in segments.items():
        for value, segment in values.items():
            if "comparisons" in segment:
                named = [(f"challenger {name}", c) for name, c in segment["comparisons"].items()]
            else:
                named = [("challenger", segment["comparison"])]
            for who, comparison in named:
                if comparison is None:
                    continue
                adjusted, difference = comparison["adjusted_p_value"], comparison["difference"]
                if adjusted is None or difference is None or adjusted >= alpha:
                    continue
                if (difference < 0) != higher_is_better or difference == 0:
                    continue
                interval = comparison["difference_ci95"]
                shown = "" if interval is None else \
                    f", 95% CI [{interval[0]:+.4f}, {interval[1]:+.4f}]"
                warnings.append(
                    f"warning: {who} worse in segment {key}={value} ({metric} difference "
                    f"{difference:+.4f}{shown}, Holm-adjusted p = {adjusted:.2g}); the "
                    "decision rests on the whole experiment")
    return warnings
