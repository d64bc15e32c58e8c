"""The rollout with several challengers: each one stepped, stopped or promoted on its own."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from router.config import Analysis, ModelRef, Rollout, RouterConfig, load_config
from router.config.challengers import ListedChallenger
from router.live.rollout import RolloutController
from router.live.rollout_plan import Move, RolloutView, plan, view_of_report
from router.outcomes import MemoryStore

BASE = RouterConfig(
    experiment="e", mode="ab", champion=ModelRef("a", Path("/m/a")),
    challengers=(ListedChallenger("gb", Path("/m/gb"), 5),
                 ListedChallenger("lr", Path("/m/lr"), 5)),
    analysis=Analysis(min_samples=100),
    rollout=Rollout(steps=(5, 25, 50), interval_s=1, auto_promote=True))


def arm(name: str, action: str = "continue", labelled: int = 150, champion: int = 150,
        judged: bool = True) -> RolloutView:
    return RolloutView(action, (f"{name} {action}",), {"champion": champion, name: labelled},
                       guardrails_judged=judged)


def seen(gb: RolloutView | None = None, lr: RolloutView | None = None,
         action: str = "continue", challenger: str | None = None) -> RolloutView:
    return RolloutView(action, ("summary",), {}, arms={"gb": gb or arm("gb"),
                                                       "lr": lr or arm("lr")},
                       challenger=challenger)


def at(gb: float, lr: float, **changes: object) -> RouterConfig:
    listed = (ListedChallenger("gb", Path("/m/gb"), gb), ListedChallenger("lr", Path("/m/lr"), lr))
    return replace(BASE, challengers=listed, **changes)  # type: ignore[arg-type]


def moved(move: Move | None) -> tuple[str, float | None, str | None] | None:
    return None if move is None else (move.kind, move.percent, move.challenger)


@pytest.mark.parametrize(("config", "view", "expected"), [
    (at(0, 0), seen(arm("gb", labelled=0), arm("lr", labelled=0)), ("step", 5, None)),
    (at(5, 5), seen(), ("step", 25, "gb")),
    (at(25, 5), seen(arm("gb", labelled=20)), ("step", 25, "lr")),
    (at(25, 5), seen(arm("gb", labelled=20), arm("lr", labelled=20)), None),
    (at(25, 25), seen(lr=arm("lr", "rollback", labelled=10)), ("rollback", None, "lr")),
    (at(25, 0), seen(lr=arm("lr", "rollback")), ("step", 50, "gb")),
    (at(50, 25), seen(action="promote", challenger="gb"), ("promote", None, "gb")),
    # gb at 50 % beside lr's 50 % would leave the champion nothing: 25 % is gb's last step.
    (at(25, 50), seen(action="promote", challenger="gb"), ("promote", None, "gb")),
    (at(25, 25), seen(action="promote", challenger="gb"), ("step", 50, "gb")),
    (at(50, 50), seen(action="continue"), None),
    # lr at 50 % beside gb at 50 % would leave the champion no traffic: lr holds at 25 %, and
    # is promoted from there.
    (at(50, 25), seen(), None),
    (at(50, 25), seen(action="promote", challenger="lr"), ("promote", None, "lr")),
    (at(25, 25), seen(action="promote", challenger="lr"), ("step", 50, "gb")),
    (replace(at(25, 25), rollout=replace(BASE.rollout, auto_rollback=False)),  # type: ignore[arg-type]
     seen(gb=arm("gb", "rollback")), None),
])
def test_each_challenger_moves_on_its_own_decision(config: RouterConfig, view: RolloutView,
                                                   expected: object) -> None:
    """Start every challenger at the first step together; then stop a worse one, promote the
    one the experiment's decision names at the last step, or step the first with enough
    labelled outcomes; a challenger stopped at 0 % stays stopped."""
    assert moved(plan(config, view)) == expected


SHADOW = replace(at(0, 0), mode="shadow",
                 rollout=replace(BASE.rollout, from_shadow=True))  # type: ignore[arg-type]


@pytest.mark.parametrize(("view", "expected"), [
    (seen(), ("step", 5, None)),
    (seen(arm("gb", labelled=99)), None),
    (seen(lr=arm("lr", judged=False)), None),
    (seen(lr=arm("lr", "rollback", labelled=3)), ("rollback", None, "lr")),
])
def test_from_shadow_every_challenger_is_judged_first(view: RolloutView,
                                                      expected: object) -> None:
    """In shadow a worse challenger is stopped before any user sees it; once every one has
    min_samples labelled pairs and judged guardrails, all get the first share together."""
    assert moved(plan(SHADOW, view)) == expected


MULTI_YAML = """\
experiment: e
mode: ab
champion: {name: a, path: /m/a}
challengers:
  - {name: gb, path: /m/gb, percent: 5}   # boosted
  - {name: lr, path: /m/lr, percent: 5}   # linear
rollout: {steps: [5, 25, 50], interval_s: 0.01}
analysis: {min_samples: 100}
store: memory://
"""


def test_controller_moves_each_challenger_in_the_file(tmp_path: Path) -> None:
    """A tick steps gb alone (its figures recorded), the next stops lr alone: the file keeps
    its comments and the history names each challenger."""
    path = tmp_path / "router.yaml"
    path.write_text(MULTI_YAML)
    store = MemoryStore()
    views = iter([seen(arm("gb"), arm("lr", labelled=10)),
                  seen(arm("gb", labelled=10), arm("lr", "rollback"))])

    def evaluate() -> RolloutView:
        view = next(views)
        return replace(view, arms={name: replace(a, figures={"challenger": name})
                                   for name, a in view.arms.items()})

    controller = RolloutController(path, tmp_path, store,
                                   lambda: load_config(path, base_dir=tmp_path),
                                   evaluate=evaluate, apply=lambda: None)
    moves = []
    for _ in range(400):
        move = controller.tick()
        if move is not None:
            moves.append(moved(move))
        if len(moves) == 2:
            break
    controller.lease.release()
    assert moves == [("step", 25, "gb"), ("rollback", None, "lr")]
    config = load_config(path, base_dir=tmp_path)
    assert [(a.variant, a.percent) for a in config.arms] == [("gb", 25.0), ("lr", 0.0)]
    assert "# boosted" in path.read_text() and "# linear" in path.read_text()
    history = store.history()
    assert [(h.action, h.from_model, h.to_model, h.details["challenger"]) for h in history] == [
        ("step", "gb 5%", "gb 25%", "gb"), ("rollback", "lr", "a", "lr")]
    assert history[1].details["decision"] == "rollback"


def test_the_view_of_a_report_holds_each_challengers_decision(
        tmp_path: Path, champion_dir: Path, challenger_dir: Path, no_proba_dir: Path) -> None:
    """What the controller reads of a /stats report with several challengers: each one's
    decision, labelled counts beside the champion's, and its comparison's figures."""
    import numpy as np

    from router.outcomes import MemoryStore as Store
    from router.stats.loader import assemble_report
    from tests.stats.test_arms import multi_config, three_arm_log

    store = Store()
    config, models = multi_config(tmp_path, store, champion_dir, challenger_dir, no_proba_dir)
    three_arm_log(store, np.random.default_rng(4), 3000,
                  {"champion": 0.60, "gb": 0.85, "svc": 0.60})
    report = assemble_report(store, config, models)
    view = view_of_report(report)
    assert (view.action, view.challenger) == ("promote", "gb")
    assert set(view.arms) == {"gb", "svc"}
    gb = view.arms["gb"]
    assert gb.action == "promote" and gb.labelled == {
        "champion": report.json["variants"]["champion"]["labelled"],
        "gb": report.json["variants"]["gb"]["labelled"]}
    assert gb.figures["adjusted_p_value"] == report.json["comparisons"]["gb"]["adjusted_p_value"]
    assert gb.figures["challenger_metric"] == report.json["variants"]["gb"]["metric"]
