"""Statistics for champion/challenger experiments: pure functions over counts and arrays.

Arm ``a`` is the champion and arm ``b`` the challenger; differences are ``b - a`` and a
positive statistic favours the challenger. Nothing here does I/O, so the same functions serve
``/stats``, the CLI, the rollout and offline analysis in a notebook.
"""

from router.stats.decision import Decision, DecisionInputs, GuardrailCheck, decide
from router.stats.drift import bin_counts, ks_p_value, psi, sample_from_histogram
from router.stats.means import (
    mean_difference_interval,
    mean_interval,
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
