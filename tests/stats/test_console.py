"""``router stats``: offline replay from a store and a config, --json, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from router.cli import main
from router.config import load_config
from router.outcomes import FeedbackRecord, MemoryStore, PredictionRecord, SQLiteStore
from router.serving.registry import ModelRegistry
from router.serving.snapshot import config_digest, load_models
from router.stats.console import render_report
from tests.configs import write_config


@pytest.fixture
def logged(tmp_path: Path, champion_dir: Path, challenger_dir: Path,
           monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config and its SQLite store holding 300 labelled requests (challenger always right)."""
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                        store="sqlite:///outcomes.db", traffic={"challenger_percent": 50},
                        analysis={"min_samples": 100})
    config = load_config(path, base_dir=tmp_path)
    store = SQLiteStore(tmp_path / "outcomes.db")
    revision = store.register_revision("exp", config_digest(
        config, load_models(config, ModelRegistry())), config.to_dict(), 1.0)
    predictions, labels = [], []
    for i in range(300):
        variant = "challenger" if i % 2 else "champion"
        guess = "setosa" if variant == "challenger" or i % 4 == 0 else "virginica"
        predictions.append(PredictionRecord(
            request_id=f"r{i}", ts=1_700_000_000 + i, experiment="exp", revision=revision,
            variant=variant, model=variant, version="1", features=(5.1, 3.5, 1.4, 0.2),
            prediction=guess, probability=0.9, latency_ms=0.5,
            probabilities={"setosa": 0.9 if guess == "setosa" else 0.05,
                           "versicolor": 0.05,
                           "virginica": 0.9 if guess == "virginica" else 0.05}))
        labels.append(FeedbackRecord(f"r{i}", 1_700_001_000 + i, label="setosa"))
    store.write_predictions(predictions)
    store.write_feedback(labels)
    store.close()
    return path


def test_offline_table_from_the_configs_store(logged: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """--config alone reads the config's store and prints the table with the decision."""
    assert main(["stats", "--config", str(logged)]) == 0
    out = capsys.readouterr().out
    assert "CHAMPION" in out and "COMPARISON  accuracy" in out
    assert "DECISION  PROMOTE" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    # Rolling quality: the champion was right on half its 150 labels, the challenger on all.
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith(("  champion ", "  challenger "))}
    assert rows["champion"][1:3] == ["150", "0.5000"]
    assert rows["challenger"][1:3] == ["150", "1.0000"]
    # The challenger answered setosa to all 150 requests, where its training answers were mixed.
    assert (rows["champion"][-1], rows["challenger"][-1]) == ("mixed", "CONSTANT")


def test_offline_replay_with_other_settings(logged: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """--store, --metric and --alpha replay the verdict; --json prints the /stats report."""
    assert main(["stats", "--store", "sqlite:///outcomes.db", "--config", str(logged),
                 "--metric", "log_loss", "--alpha", "0.01", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["comparison"]["metric"] == "log_loss"
    assert report["comparison"]["alpha"] == 0.01
    assert report["variants"]["champion"]["labelled"] == 150


def test_errors_are_one_line(logged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable gateway, a metric that cannot apply: one line, exit 1; both sources, a
    usage mistake: one line, exit 2 (docs/cli.md)."""
    cases = (
        (["stats", "--url", "http://127.0.0.1:9"], 1),
        (["stats", "--config", str(logged), "--metric", "mae"], 1),
        (["stats", "--url", "http://127.0.0.1:9", "--config", str(logged)], 2),
    )
    for argv, code in cases:
        try:
            exited = main(argv)
        except SystemExit as usage:  # argparse's way out
            exited = usage.code
        assert exited == code, argv
        err = capsys.readouterr().err
        assert err.startswith("router: error: ") and err.count("\n") == 1, err


def test_segments_are_a_table_per_key() -> None:
    """Each key's values with both variants' counts and metrics, the difference and the
    Holm-adjusted p-value, in 80 columns."""
    from tests.stats.test_segments import ab_rows, stats, write

    store = MemoryStore()
    write(store, ab_rows(np.random.default_rng(2), 1500))
    report = stats(store)
    lines = render_report(report).splitlines()
    assert max(len(line) for line in lines) <= 80
    start = lines.index(next(line for line in lines if line.startswith("SEGMENTS")))
    de = report["segments"]["x-country"]["DE"]
    row = next(line for line in lines[start:] if line.split()[:1] == ["DE"])
    assert row.split() == [
        "DE", str(de["variants"]["champion"]["labelled"]),
        f"{de['variants']['champion']['metric']:.4f}",
        str(de["variants"]["challenger"]["labelled"]),
        f"{de['variants']['challenger']['metric']:.4f}",
        f"{de['comparison']['difference']:+.4f}", f"{de['comparison']['adjusted_p_value']:.4f}"]
    assert any(line.split()[:1] == ["plan"] for line in lines[start:])
