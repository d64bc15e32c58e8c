"""Statistics for champion/challenger experiments: pure functions over counts and arrays.

Arm ``a`` is the champion and arm ``b`` the challenger; differences are ``b - a`` and a
positive statistic favours the challenger. Nothing here does I/O, so the same functions serve
``/stats``, the CLI, the rollout and offline analysis in a notebook.

The names below load their module on first use, so that a caller of one test (``router skew``)
does not import what the report needs (the model registry, scikit-learn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.lazy import lazy_names

if TYPE_CHECKING:
    from router.stats.decision import Decision, DecisionInputs, GuardrailCheck, decide
    from router.stats.drift import bin_counts, ks_p_value, psi, sample_from_histogram
    from router.stats.means import (
        mean_difference_interval,
        mean_interval,
        one_sample_t_test,
        samples_per_arm_means,
        welch_test,
    )
    from router.stats.offline import analyze
    from router.stats.paired import mcnemar_test, wilcoxon_test
    from router.stats.proportions import (
        difference_interval,
        samples_per_arm,
        two_proportion_test,
        wilson_interval,
    )
    from router.stats.sequential import (
        always_valid_p_values,
        always_valid_p_values_means,
        paired_always_valid_p_values,
    )
    from router.stats.srm import SRM_ALPHA, srm_test

__all__ = [
    "SRM_ALPHA",
    "Decision",
    "DecisionInputs",
    "GuardrailCheck",
    "always_valid_p_values",
    "always_valid_p_values_means",
    "analyze",
    "bin_counts",
    "decide",
    "difference_interval",
    "ks_p_value",
    "mcnemar_test",
    "mean_difference_interval",
    "mean_interval",
    "one_sample_t_test",
    "paired_always_valid_p_values",
    "psi",
    "sample_from_histogram",
    "samples_per_arm",
    "samples_per_arm_means",
    "srm_test",
    "two_proportion_test",
    "welch_test",
    "wilcoxon_test",
    "wilson_interval",
]

_MODULE_OF = {
    "Decision": ".decision", "DecisionInputs": ".decision", "GuardrailCheck": ".decision",
    "decide": ".decision", "bin_counts": ".drift", "ks_p_value": ".drift", "psi": ".drift",
    "sample_from_histogram": ".drift", "mean_difference_interval": ".means",
    "mean_interval": ".means", "one_sample_t_test": ".means", "samples_per_arm_means": ".means",
    "welch_test": ".means", "analyze": ".offline", "mcnemar_test": ".paired",
    "wilcoxon_test": ".paired", "difference_interval": ".proportions",
    "samples_per_arm": ".proportions", "two_proportion_test": ".proportions",
    "wilson_interval": ".proportions", "always_valid_p_values": ".sequential",
    "always_valid_p_values_means": ".sequential", "paired_always_valid_p_values": ".sequential",
    "SRM_ALPHA": ".srm", "srm_test": ".srm",
}

__getattr__, __dir__ = lazy_names(__name__, _MODULE_OF, __all__)
