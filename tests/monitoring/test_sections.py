"""What the monitoring gauges read: the report's drift, rolling quality and outputs, computed
without the comparisons, tests and decision of a whole ``/stats`` report."""

from __future__ import annotations

import sys
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


def refuse_everywhere(monkeypatch: pytest.MonkeyPatch, function: Callable[..., Any]) -> None:
    """Make ``function`` raise under every name a loaded module holds it by: a patch of its
    own module alone misses a caller that imported it by name before the test ran."""
    for module in list(sys.modules.values()):
        for name, value in list(getattr(module, "__dict__", {}).items()):
            if value is function:
                monkeypatch.setattr(module, name, refuse)


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
    refuse_everywhere(monkeypatch, report.assemble)
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
    refuse_everywhere(monkeypatch, arms.assemble_arms)
    sections = monitoring_sections(store, config, models)
    for name in SECTIONS:
        assert sections[name] == whole[name], name
    assert set(sections["rolling"]["variants"]) == {"champion", "gb", "svc"}


def test_over_a_longer_log_the_sections_read_its_newest_rows_and_keep_nothing(
        tmp_path: Path, make_config: Callable[..., RouterConfig],  # noqa: F811
        iris_models: dict[str, ServedModel],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A log of 600 rows read through the gateway's shared reader with room for 300: the
    sections are those of the report over the newest 300 rows alone (their feedback
    included), and the reader holds no column afterwards."""
    from router.outcomes import SQLiteStore
    from router.stats import loader
    from router.stats.reader import SharedColumns
    from tests.stats.test_report import Log

    # Scaled down together, as they stand: feature drift reads its newest rows within these.
    monkeypatch.setattr(loader, "MONITORING_ROWS", 300)
    monkeypatch.setattr(loader, "DRIFT_ROWS", 150)
    store, newest = SQLiteStore(tmp_path / "outcomes.db"), MemoryStore()
    config = make_config(store, traffic={"challenger_percent": 50}, monitoring={"window": 100})
    make_config(newest, traffic={"challenger_percent": 50}, monitoring={"window": 100})
    rng = np.random.default_rng(23)
    logs = Log(store), Log(newest)  # type: ignore[arg-type]
    for i in range(600):
        arm = "challenger" if rng.random() < 0.5 else "champion"
        guess, truth = ("setosa", "setosa") if rng.random() < 0.7 else ("setosa", "virginica")
        features = tuple(float(v) for v in rng.normal([5.8, 3.0, 3.7, 1.2], 0.4))
        for log in logs[: 1 if i < 300 else 2]:
            log.label(log.predict(variant=arm, prediction=guess, features=features,
                                  request_id=f"r{i}"), truth)
    shared = SharedColumns(store)
    sections = monitoring_sections(shared, config, iris_models)
    whole = compute_report(newest, config, iris_models)
    for name in SECTIONS:
        assert sections[name] == whole[name], name
    assert sum(e["labelled"] for e in sections["rolling"]["variants"].values()) == 200
    assert shared.kept_bytes() == 0
    store.close()


def test_the_sections_read_no_column_they_do_not_use(
        make_config: Callable[..., RouterConfig],  # noqa: F811
        iris_models: dict[str, ServedModel]) -> None:  # noqa: F811
    """Sticky users, segments and log loss ask the full report's read for each row's unit key,
    segment values and the true label's probability; drift, rolling quality and outputs use
    none of them, and the gauges read on the serving process, so they are not asked for."""
    store = MemoryStore()
    config = make_config(store, traffic={"challenger_percent": 50,
                                         "sticky_key": "header:x-user-id"},
                         analysis={"metric": "log_loss",
                                   "segments": ["header:x-country"]})
    ab_log(store, np.random.default_rng(24), 300, 0.7, 0.8)
    asked: list[dict[str, Any]] = []
    read = store.analysis_columns

    def recording(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs)
        return read(*args, **kwargs)

    store.analysis_columns = recording  # type: ignore[method-assign]
    monitoring_sections(store, config, iris_models)
    (question,) = asked
    assert question["units"] is False
    assert question["true_probability"] is False
    assert list(question["segments"]) == []
    compute_report(store, config, iris_models)
    assert asked[1]["units"] is True and asked[1]["true_probability"] is True
    assert list(asked[1]["segments"]) == ["x-country"]
