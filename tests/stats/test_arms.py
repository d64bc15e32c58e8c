"""/stats with several challengers: each comparison against scipy and statsmodels on the same
outcomes, Holm's correction, the sequential test at alpha / k, SRM over every arm, and the
decision per challenger and for the experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from router.config import RouterConfig, load_config
from router.outcomes import MemoryStore
from router.serving.model import ServedModel
from router.serving.registry import ModelRegistry
from router.serving.snapshot import config_digest, load_models
from router.stats.arms import holm, summarise
from router.stats.comparison import Outcomes, independent
from router.stats.console import render_report
from router.stats.decision import Decision, DecisionInputs
from router.stats.loader import compute_report, current_phase, read_columns
from router.stats.model import ArmReport, Settings
from tests.configs import write_config
from tests.stats.test_report import CLASSES, T0, Log

SHARES = {"gb": 20.0, "svc": 20.0}


def multi_config(tmp_path: Path, store: MemoryStore, champion: Path, gb: Path, svc: Path,
                 **sections: Any) -> tuple[RouterConfig, dict[str, ServedModel]]:
    path = write_config(tmp_path, champion=champion, challengers=[
        {"name": "gb", "path": str(gb), "percent": SHARES["gb"]},
        {"name": "svc", "path": str(svc), "percent": SHARES["svc"]}], **sections)
    config = load_config(path, base_dir=tmp_path)
    models = load_models(config, ModelRegistry())
    store.register_revision(config.experiment, config_digest(config, models), config.to_dict(),
                            T0)
    return config, models


def three_arm_log(store: MemoryStore, rng: np.random.Generator, n: int,
                  accuracy: dict[str, float]) -> dict[str, list[bool]]:
    """n users, each in an arm at the configured shares, right with that arm's accuracy."""
    log = Log(store)
    right: dict[str, list[bool]] = {arm: [] for arm in accuracy}
    arms = list(accuracy)
    weights = np.array([60.0, SHARES["gb"], SHARES["svc"]]) / 100
    for i in range(n):
        arm = arms[int(rng.choice(3, p=weights))]
        truth = CLASSES[int(rng.integers(0, 3))]
        ok = bool(rng.random() < accuracy[arm])
        guess = truth if ok else CLASSES[(CLASSES.index(truth) + 1) % 3]
        log.label(log.predict(variant=arm, prediction=guess, unit=f"u{i}"), truth)
        right[arm].append(ok)
    return right


def test_each_challenger_is_compared_with_the_champion_as_statsmodels_does(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path, no_proba_dir: Path) -> None:
    """Every variant's figures, each comparison's z-test and Newcombe interval, Holm's
    adjusted p-values, the SRM chi-square over three arms, each at the unit of users."""
    store = MemoryStore()
    config, models = multi_config(tmp_path, store, champion_dir, challenger_dir, no_proba_dir,
                                  traffic={"sticky_key": "header:x-user-id"})
    right = three_arm_log(store, np.random.default_rng(3), 3000,
                          {"champion": 0.70, "gb": 0.80, "svc": 0.73})
    r = compute_report(store, config, models)
    assert r["challengers"] == ["gb", "svc"] and "comparison" not in r
    x = {arm: sum(oks) for arm, oks in right.items()}
    n = {arm: len(oks) for arm, oks in right.items()}
    for arm in right:
        variant = r["variants"][arm]
        assert (variant["requests"], variant["labelled"], variant["units"]) == (n[arm],) * 3
        assert variant["metric"] == pytest.approx(x[arm] / n[arm])
        assert variant["metric_ci95"] == pytest.approx(
            list(proportion_confint(x[arm], n[arm], method="wilson")))
    p_values = []
    for arm in ("gb", "svc"):
        c = r["comparisons"][arm]
        assert c["difference"] == pytest.approx(x[arm] / n[arm] - x["champion"] / n["champion"])
        p = proportions_ztest([x[arm], x["champion"]], [n[arm], n["champion"]])[1]
        assert c["p_value"] == pytest.approx(p)
        assert c["difference_ci95"] == pytest.approx(list(confint_proportions_2indep(
            x[arm], n[arm], x["champion"], n["champion"], method="newcomb", compare="diff")))
        assert c["alpha"] == 0.025  # the sequential test's share of alpha
        p_values.append(p)
    adjusted = multipletests(p_values, method="holm")[1]
    assert [r["comparisons"][a]["adjusted_p_value"] for a in ("gb", "svc")] == pytest.approx(
        list(adjusted))
    assert r["multiple_comparisons"] == {
        "challengers": 2, "alpha": 0.05, "sequential_alpha": 0.025,
        "adjusted_p_value": "Holm's step-down correction of the fixed-horizon p-values"}
    srm = r["srm"]
    observed = [n["champion"], n["gb"], n["svc"]]
    expected = np.array([60, 20, 20]) * sum(observed) / 100
    assert srm["p_value"] == pytest.approx(sps.chisquare(observed, expected).pvalue)
    assert srm["expected_percent"] == {"champion": 60.0, "gb": 20.0, "svc": 20.0}
    assert srm["observed_percent"]["gb"] == pytest.approx(100 * n["gb"] / sum(observed))
    assert srm["unit"] == "users" and not srm["mismatch"]
    assert set(r["guardrails"]) == {"gb", "svc"} and set(r["decisions"]) == {"gb", "svc"}


def test_the_sequential_test_of_each_challenger_runs_at_alpha_over_k(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path, no_proba_dir: Path) -> None:
    """Each comparison's confidence sequence is the one-challenger sequence at alpha / 2."""
    store = MemoryStore()
    config, models = multi_config(tmp_path, store, champion_dir, challenger_dir, no_proba_dir)
    three_arm_log(store, np.random.default_rng(8), 2000,
                  {"champion": 0.70, "gb": 0.78, "svc": 0.70})
    r = compute_report(store, config, models)
    settings = Settings(metric="accuracy", alpha=0.025, min_effect=0.01, classes=CLASSES)
    columns = read_columns(store, config, settings, current_phase(store.revisions("exp")))
    outcomes = Outcomes(columns, "accuracy")
    in_a = (columns["arm"] == 0) & outcomes.scored
    for place, arm in enumerate(("gb", "svc"), 1):
        alone, _ = independent(columns, in_a, (columns["arm"] == place) & outcomes.scored,
                               outcomes, settings, False)
        c = r["comparisons"][arm]
        assert c["difference_cs"] == pytest.approx(alone["difference_cs"])
        assert c["sequential_p_value"] == pytest.approx(alone["sequential_p_value"])
        assert c["significant"] == alone["significant"]


def test_a_better_and_a_level_challenger_promote_the_better_one(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path, no_proba_dir: Path) -> None:
    """gb clearly better, svc no different: gb's decision is promote, svc's continue, and the
    experiment's decision promotes gb by name."""
    store = MemoryStore()
    config, models = multi_config(tmp_path, store, champion_dir, challenger_dir, no_proba_dir,
                                  analysis={"guardrails": {"error_rate": 0.05}})
    three_arm_log(store, np.random.default_rng(4), 4000,
                  {"champion": 0.60, "gb": 0.85, "svc": 0.60})
    r = compute_report(store, config, models)
    assert r["decisions"]["gb"]["action"] == "promote"
    assert r["decisions"]["svc"]["action"] == "continue"
    assert r["decision"]["action"] == "promote" and r["decision"]["challenger"] == "gb"
    assert r["decision"]["reasons"][0].startswith("promote gb: challenger is significantly")
    # router stats prints every arm within 80 columns.
    text = render_report(r)
    assert all(len(line) <= 80 for line in text.splitlines())
    for expected in ("CHAMPION", "GB", "SVC", "COMPARISON gb", "COMPARISON svc", "Holm",
                     "SAMPLE RATIO (requests", "GUARDRAILS", "DECISION  PROMOTE gb"):
        assert expected in text, expected


def _arm(action: str, difference: float, higher_is_better: bool = True) -> ArmReport:
    inputs = DecisionInputs(metric="accuracy" if higher_is_better else "mae",
                            higher_is_better=higher_is_better, min_samples=1,
                            labelled_champion=10, labelled_challenger=10, significant=True,
                            difference=difference)
    return ArmReport(Decision(action, (f"{action} because",)), inputs, None)  # type: ignore[arg-type]


def test_two_winners_promote_the_better_with_the_reason() -> None:
    """Two challengers significantly better: the larger improvement wins, and the reasons say
    why the other was passed over; for a loss the larger improvement is the more negative."""
    decision, chosen = summarise({"b": _arm("promote", 0.02), "c": _arm("promote", 0.05)})
    assert (decision.action, chosen) == ("promote", "c")
    assert decision.reasons[0] == "promote c: promote because"
    assert "b is significantly better too, by +0.0200 accuracy against c's +0.0500" \
        in decision.reasons[1]
    _, chosen = summarise({"b": _arm("promote", -0.3, False), "c": _arm("promote", -0.1, False)})
    assert chosen == "b"


def test_a_challenger_to_stop_names_itself_and_a_winner_comes_first() -> None:
    """No winner: any rollback stops the experiment's worst arm by name; a winner outranks a
    rollback (promoting it ends the others); otherwise continue with each arm's reasons."""
    decision, chosen = summarise({"b": _arm("continue", 0.0), "c": _arm("rollback", -0.1)})
    assert (decision.action, chosen) == ("rollback", "c")
    assert decision.reasons == ("roll back c: rollback because",)
    decision, chosen = summarise({"b": _arm("promote", 0.1), "c": _arm("rollback", -0.1)})
    assert (decision.action, chosen) == ("promote", "b")
    decision, chosen = summarise({"b": _arm("continue", 0.0), "c": _arm("continue", 0.0)})
    assert (decision.action, chosen) == ("continue", None)
    assert decision.reasons == ("b: continue because", "c: continue because")


def test_holm_matches_statsmodels() -> None:
    """Holm's adjusted p-values as statsmodels computes them; None is no test."""
    rng = np.random.default_rng(2)
    for k in (1, 2, 3, 7):
        p = rng.uniform(0, 0.2, k).tolist()
        assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert holm([0.01, None, 0.04]) == pytest.approx([0.02, None, 0.04])


def test_each_challenger_has_the_timeline_of_its_comparison(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path, no_proba_dir: Path) -> None:
    """/stats/timeline with several challengers: one timeline per challenger, whose last
    checkpoint is that challenger's comparison in /stats."""
    from router.stats.timeline import compute_timeline

    store = MemoryStore()
    config, models = multi_config(tmp_path, store, champion_dir, challenger_dir, no_proba_dir)
    three_arm_log(store, np.random.default_rng(6), 1500,
                  {"champion": 0.70, "gb": 0.80, "svc": 0.70})
    r = compute_report(store, config, models)
    timeline = compute_timeline(store, config, models)
    assert timeline["challengers"] == ["gb", "svc"]
    for arm in ("gb", "svc"):
        alone = timeline["timelines"][arm]
        assert list(alone["variants"]) == ["champion", arm] and alone["alpha"] == 0.025
        assert alone["labelled"][-1] == (r["variants"]["champion"]["labelled"]
                                         + r["variants"][arm]["labelled"])
        assert alone["variants"][arm]["metric"][-1] == pytest.approx(r["variants"][arm]["metric"])
        last = {key: values[-1] for key, values in alone["comparison"].items()
                if isinstance(values, list)}
        c = r["comparisons"][arm]
        assert last["sequential_p_value"] == pytest.approx(c["sequential_p_value"])
        assert last["difference_cs"] == pytest.approx(c["difference_cs"])
        assert last["difference_ci95"] == pytest.approx(c["difference_ci95"])
