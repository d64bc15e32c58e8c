"""The public surface of router.stats, pinned so that a rename is a deliberate change."""

from __future__ import annotations

import router.stats

EXPECTED = {
    # SPEC.md, "Python API for the statistics", and its second round's offline analysis
    "analyze",
    "GuardrailCheck",
    "wilson_interval",
    "two_proportion_test",
    "difference_interval",
    "mcnemar_test",
    "srm_test",
    "psi",
    "always_valid_p_values",
    "samples_per_arm",
    "welch_test",
    "wilcoxon_test",
    # what /stats, the CLI and the rollout also need
    "SRM_ALPHA",
    "always_valid_p_values_means",
    "paired_always_valid_p_values",
    "mean_interval",
    "mean_difference_interval",
    "samples_per_arm_means",
    "one_sample_t_test",
    "ks_p_value",
    "bin_counts",
    "sample_from_histogram",
    "Decision",
    "DecisionInputs",
    "decide",
}


def test_all_lists_exactly_the_public_names() -> None:
    """__all__ is the spec's functions plus the documented helpers, and each one exists."""
    assert set(router.stats.__all__) == EXPECTED
    for name in router.stats.__all__:
        assert getattr(router.stats, name) is not None


def test_every_public_name_is_documented() -> None:
    """Every exported function and class has a docstring."""
    for name in router.stats.__all__:
        obj = getattr(router.stats, name)
        if callable(obj):
            assert obj.__doc__, name
