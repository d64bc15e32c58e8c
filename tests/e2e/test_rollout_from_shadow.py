"""End to end: a rollout that starts in shadow. A better challenger goes from shadow through
5, 25 and 50 % to promotion; a worse one is stopped in shadow, before any user was served by it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from tests.configs import write_config
from tests.e2e.test_rollout import drive, history_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def guessing_dir(save_iris_model: Callable[..., Path]) -> Path:
    """iris-guess: always the most frequent class (accuracy one in three)."""
    return save_iris_model("iris-guess", DummyClassifier(strategy="most_frequent"))


def run(tmp_path: Path, champion: Path, challenger: Path,
        iris_data: tuple[np.ndarray, np.ndarray], until: Callable[[dict[str, Any]], bool],
        timeout: float = 150) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """Serve with ``steps: [shadow, 5, 25, 50]`` under traffic until ``until(/config)``;
    returns the last /config, the history and how many answers the challenger gave users."""
    config = write_config(
        tmp_path, champion=champion, challenger=challenger, mode="shadow",
        store="sqlite:///outcomes.db",
        traffic={"challenger_percent": 0, "sticky_key": "header:x-user-id"},
        analysis={"min_samples": 30, "min_effect": 0.1},
        rollout={"steps": ["shadow", 5, 25, 50], "interval_s": 1, "auto_promote": True,
                 "auto_rollback": True})
    current = drive(config, tmp_path, iris_data, until, timeout)
    with sqlite3.connect(tmp_path / "outcomes.db") as db:
        served = db.execute("SELECT COUNT(*) FROM predictions WHERE variant = 'challenger' "
                            "AND shadow = 0").fetchone()[0]
    return current, history_of(tmp_path / "outcomes.db"), int(served)


def test_a_better_challenger_goes_from_shadow_to_promotion(
        tmp_path: Path, guessing_dir: Path, champion_dir: Path,
        iris_data: tuple[np.ndarray, np.ndarray]) -> None:
    """Shadow, then 5, 25 and 50 % of users, each step after min_samples; then promoted."""
    config, history, served = run(tmp_path, guessing_dir, champion_dir, iris_data,
                                  until=lambda c: c["config"]["champion"]["name"] == "chall")
    assert config["config"]["champion"]["name"] == "chall", (history, config["decision"])
    steps = [(h["from"], h["to"]) for h in history if h["action"] == "step"]
    assert steps == [("shadow", "5%"), ("5%", "25%"), ("25%", "50%")], history
    assert "labelled pairs" in history[0]["reason"]
    assert history[-1]["action"] == "promote"
    assert served > 0


def test_a_worse_challenger_is_stopped_in_shadow(
        tmp_path: Path, champion_dir: Path, guessing_dir: Path,
        iris_data: tuple[np.ndarray, np.ndarray]) -> None:
    """The paired comparison finds it worse: rolled back in shadow, no user served by it."""
    config, history, served = run(tmp_path, champion_dir, guessing_dir, iris_data,
                                  until=lambda c: c["config"]["mode"] == "single")
    assert config["config"]["mode"] == "single", (history, config["decision"])
    assert [h["action"] for h in history] == ["rollback"], history
    assert "in shadow" in history[0]["reason"] and "significantly worse" in history[0]["reason"]
    assert served == 0
