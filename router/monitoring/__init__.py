"""Watching the served models between experiments: quality over a rolling window of labelled
outcomes, the distribution of their outputs before any label arrives, training-serving skew by
log-and-compare, and the background task that keeps the monitoring gauges of ``/metrics``
fresh. Input drift is in ``router.stats``.

The names below load their module on first use: ``router skew`` need not import scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.lazy import lazy_names

if TYPE_CHECKING:
    from router.monitoring.outputs import output_report
    from router.monitoring.rolling import rolling_report
    from router.monitoring.skew import (
        SkewRule,
        compare_skew,
        config_skew,
        render_skew,
        store_skew,
    )

__all__ = ["SkewRule", "compare_skew", "config_skew", "output_report", "render_skew",
           "rolling_report", "store_skew"]

_MODULE_OF = {
    "output_report": ".outputs", "rolling_report": ".rolling",
    "SkewRule": ".skew", "compare_skew": ".skew", "config_skew": ".skew", "render_skew": ".skew",
    "store_skew": ".skew",
}

__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, __all__)
