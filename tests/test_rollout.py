"""The rollout: when to step, hold, roll back or promote; and a controller that does it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from router.config import Analysis, ModelRef, Rollout, RouterConfig, Traffic, load_config
from router.errors import StoreError
from router.live.rollout import FileLease, RolloutController
from router.live.rollout_plan import Move, RolloutView, figures_now, plan
from router.live.switch import switch
from router.outcomes import MemoryStore

BASE = RouterConfig(
    experiment="e", mode="ab", champion=ModelRef("a", Path("/m/a")),
    challenger=ModelRef("b", Path("/m/b")), traffic=Traffic(challenger_percent=5),
    analysis=Analysis(min_samples=100),
    rollout=Rollout(steps=(5, 25, 50, 100), interval_s=1, auto_promote=True))


def view(action: str = "continue", champion: int = 150, challenger: int = 150) -> RolloutView:
    return RolloutView(action, ("because",), {"champion": champion, "challenger": challenger})


def at(percent: float, **rollout: object) -> RouterConfig:
    return replace(BASE, traffic=Traffic(challenger_percent=percent),
                   rollout=replace(BASE.rollout, **rollout))  # type: ignore[arg-type]


@pytest.mark.parametrize(("config", "seen", "expected"), [
    (at(0), view(challenger=0), Move("step", "rollout starts at 5%", 5)),
    (at(5), view(), ("step", 25)),
    (at(10), view(), ("step", 25)),
    (at(25), view(challenger=99), None),
    (at(25), view("rollback", challenger=10), ("rollback", None)),
    (at(25, auto_rollback=False), view("rollback"), None),
    (at(25), view(), ("step", 50)),
    # The step to 100 % would leave the champion no traffic to compare with, so no decision
    # could promote there: the rollout promotes from 50 % instead, or holds there.
    (at(50), view("continue"), None),
    (at(50), view("promote"), ("promote", None)),
    (at(50, auto_promote=False), view("promote"), None),
    (at(50, steps=(5, 25, 50, 75)), view("continue"), ("step", 75)),
    (at(100), view("continue"), None),
    (at(100), view("promote"), ("promote", None)),
    (at(100, auto_promote=False), view("promote"), None),
    (replace(at(5), mode="single"), view(), None),
    (replace(at(5), rollout=None), view(), None),
])
def test_plan(config: RouterConfig, seen: RolloutView, expected: object) -> None:
    """Step only with enough labelled samples; roll back on a rollback decision; promote last."""
    move = plan(config, seen)
    if expected is None or isinstance(expected, Move):
        assert move == expected
    else:
        assert move is not None and (move.kind, move.percent) == expected


SHADOW = replace(BASE, mode="shadow", traffic=Traffic(challenger_percent=0),
                 rollout=replace(BASE.rollout, from_shadow=True))


@pytest.mark.parametrize(("seen", "expected"), [
    (view(champion=99, challenger=99), None),
    (view(), ("step", 5)),
    (replace(view(), guardrails_judged=False), None),
    (view("rollback", champion=40, challenger=40), ("rollback", None)),
    (view("promote"), ("step", 5)),
])
def test_plan_from_shadow(seen: RolloutView, expected: object) -> None:
    """In shadow: min_samples labelled pairs and judged guardrails before the first users; a
    worse challenger is rolled back there, however few pairs; promotion waits for the steps."""
    move = plan(SHADOW, seen)
    assert (move if move is None else (move.kind, move.percent)) == expected
    assert plan(replace(SHADOW, rollout=BASE.rollout), view()) is None  # no shadow step


YAML = """\
experiment: e
mode: ab   # the rollout moves the percent below
champion: {name: a, path: /m/a}
challenger: {name: b, path: /m/b}
traffic:
  challenger_percent: 5
analysis: {min_samples: 100}
rollout: {steps: [5, 25, 50], interval_s: 0.01}
store: memory://
"""


def test_controller_steps_rewrites_and_records(tmp_path: Path) -> None:
    """Each tick past the interval moves one step: file rewritten, history with figures."""
    path = tmp_path / "router.yaml"
    path.write_text(YAML)
    store = MemoryStore()
    applied: list[float] = []

    def current() -> RouterConfig:
        return load_config(path, base_dir=tmp_path)

    controller = RolloutController(path, tmp_path, store, current,
                                   evaluate=lambda: RolloutView("continue", ("ok",),
                                                                {"champion": 120,
                                                                 "challenger": 130},
                                                                {"difference": 0.01}),
                                   apply=lambda: applied.append(
                                       current().traffic.challenger_percent))
    assert controller.tick() is None  # the new leader waits one interval first
    moves = []
    for _ in range(200):
        move = controller.tick()
        if move is not None:
            moves.append(move.percent)
        if len(moves) == 2:
            break
    assert moves == [25, 50] and applied == [25, 50]
    assert "# the rollout moves the percent below" in path.read_text()
    history = store.history()
    assert [(h.action, h.from_model, h.to_model) for h in history] == [
        ("step", "5%", "25%"), ("step", "25%", "50%")]
    assert all(h.actor == controller.actor and h.actor.startswith("rollout@") for h in history)
    assert history[0].details["difference"] == 0.01 and history[0].details["reasons"] == ["ok"]
    controller.lease.release()


def test_only_one_process_holds_the_lease(tmp_path: Path) -> None:
    """The lease is exclusive, and free again once its holder lets go."""
    first, second = FileLease(tmp_path / "lease"), FileLease(tmp_path / "lease")
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


def test_postgres_lease_is_exclusive_and_freed_with_its_connection(postgres_url: str) -> None:
    """Across processes and machines: one holder; dropping it frees the lease."""
    from router.live.rollout import PostgresLease

    first, second = PostgresLease(postgres_url, "exp"), PostgresLease(postgres_url, "exp")
    other = PostgresLease(postgres_url, "another-experiment")
    try:
        assert first.try_acquire() and not second.try_acquire() and other.try_acquire()
        assert first.try_acquire()  # still held: a live connection keeps it
        first.release()
        assert second.try_acquire()
    finally:
        for lease in (first, second, other):
            lease.release()


def test_automatic_rollback_after_a_promotion_stops_the_new_challenger(tmp_path: Path) -> None:
    """Promote, start a new experiment by hand with previous: left in place, then a rollout
    rollback: the new challenger stops, the champion stays, the history names both."""
    path = tmp_path / "router.yaml"
    path.write_text(YAML)
    store = MemoryStore()
    switch("promote", path, tmp_path, store, reason="b is better", actor="test")
    text = path.read_text()
    assert "previous: {name: a, path: /m/a}" in text
    path.write_text(text.replace("mode: single", "mode: ab")
                    .replace("challenger_percent: 5", "challenger_percent: 0")
                    + "challenger: {name: c, path: /m/c}\n")
    config = load_config(path, base_dir=tmp_path)
    assert (config.champion.name, config.previous and config.previous.name) == ("b", "a")

    controller = RolloutController(
        path, tmp_path, store, lambda: load_config(path, base_dir=tmp_path),
        evaluate=lambda: RolloutView("rollback", ("challenger is significantly worse",),
                                     {"champion": 300, "challenger": 300}),
        apply=lambda: None)
    move = None
    for _ in range(200):
        move = controller.tick()
        if move is not None:
            break
    controller.lease.release()
    assert move is not None and move.kind == "rollback"
    config = load_config(path, base_dir=tmp_path)
    assert config.mode == "single" and config.traffic.challenger_percent == 0
    assert config.champion.name == "b"
    assert config.challenger is not None and config.challenger.name == "c"
    assert config.previous is not None and config.previous.name == "a"
    entry = store.history()[-1]
    assert (entry.action, entry.from_model, entry.to_model) == ("rollback", "c", "b")
    assert "significantly worse" in entry.reason


def test_a_switch_made_by_hand_goes_ahead_when_its_figures_cannot_be_read() -> None:
    """An operator rolls back when things fail, the statistics' store included: the figures
    say why they are missing instead of stopping the switch."""
    def unreadable() -> RolloutView:
        raise StoreError("store 'postgresql://db/x' is unreachable")

    assert figures_now(unreadable) == {
        "figures_unavailable": "StoreError: store 'postgresql://db/x' is unreachable"}
    view = RolloutView(action="continue", reasons=("too few labels",), labelled={},
                       figures={"p_value": 0.4})
    assert figures_now(lambda: view) == {"p_value": 0.4, "decision": "continue",
                                         "reasons": ["too few labels"]}
