"""What the monitoring gauges read: the report's drift, rolling quality and outputs, computed
without the comparisons, tests and decision of a whole ``/stats`` report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from router.config import RouterConfig
from router.outcomes import MemoryStore
from router.serving.model import ServedModel
from router.stats import arms, report
from router.stats.loader import compute_report, monitoring_sections
from tests.stats.test_arms import multi_config, three_arm_log
from tests.stats.test_report import ab_log, iris_models, make_config  # noqa: F401  fixtures

SECTIONS = ("drift", "rolling", "outputs")


def refuse(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the monitoring sections ran the whole report")


def test_the_sections_are_the_reports_own(make_config: Callable[..., RouterConfig],  # noqa: F811
                                          iris_models: dict[str, ServedModel],  # noqa: F811
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Two arms, sticky users: drift, rolling and outputs equal /stats's, and the comparisons,
    sequential test and decision are not computed for them."""
    store = MemoryStore()
    config = make_config(store, traffic={"challenger_percent": 50,
                                         "sticky_key": "header:x-user-id"},
                         monitoring={"window": 200})
    ab_log(store, np.random.default_rng(21), 600, 0.7, 0.8)
    whole = compute_report(store, config, iris_models)
    monkeypatch.setattr(report, "assemble", refuse)
    sections = monitoring_sections(store, config, iris_models)
    assert set(sections) == set(SECTIONS)
    for name in SECTIONS:
        assert sections[name] == whole[name], name
    assert sections["rolling"]["variants"]["challenger"]["labelled"] == 200


def test_with_several_challengers_each_arm_is_in_the_sections(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path, no_proba_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    config, models = multi_config(tmp_path, store, champion_dir, challenger_dir, no_proba_dir,
                                  traffic={"sticky_key": "header:x-user-id"})
    three_arm_log(store, np.random.default_rng(22), 900,
                  {"champion": 0.70, "gb": 0.80, "svc": 0.73})
    whole = compute_report(store, config, models)
    monkeypatch.setattr(arms, "assemble_arms", refuse)
    sections = monitoring_sections(store, config, models)
    for name in SECTIONS:
        assert sections[name] == whole[name], name
    assert set(sections["rolling"]["variants"]) == {"champion", "gb", "svc"}
