"""Watching the served models between experiments: quality over a rolling window of labelled
outcomes, the distribution of their outputs before any label arrives, and the background task
that keeps the monitoring gauges of ``/metrics`` fresh. Input drift is in ``router.stats``.
"""

from router.monitoring.outputs import output_report
from router.monitoring.rolling import rolling_report

__all__ = ["output_report", "rolling_report"]
