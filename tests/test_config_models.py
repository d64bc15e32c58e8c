"""The config checked against the models it names: an analysis metric that cannot judge them is
refused where the file is read (``router validate``, ``router serve``, a live edit), with its
key and line, rather than by every ``/stats`` for the whole run."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.cli import main
from router.config import load_config
from router.errors import ConfigError
from router.serving.registry import ModelRegistry
from router.serving.snapshot import load_models
from router.stats.loader import resolve_settings
from tests.configs import write_config


@pytest.mark.parametrize(("metric", "fits"), [("accuracy", True), ("log_loss", True),
                                               ("mae", False), ("rmse", False)])
def test_a_classifiers_metric(tmp_path: Path, champion_dir: Path, challenger_dir: Path,
                              metric: str, fits: bool) -> None:
    path = write_config(tmp_path, champion=champion_dir, challenger=challenger_dir,
                        analysis={"metric": metric})
    config = load_config(path, base_dir=tmp_path)
    if fits:
        assert set(load_models(config, ModelRegistry())) == {"champion", "challenger"}
        return
    with pytest.raises(ConfigError) as info:
        load_models(config, ModelRegistry())
    [problem] = info.value.problems
    assert problem.path == "analysis.metric" and problem.line == config.lines["analysis.metric"]
    assert problem.message == (f"{metric} judges regressors; these models are classifiers "
                               "(use accuracy or log_loss)")


def test_a_regressors_metric(tmp_path: Path, regressor_dir: Path) -> None:
    """Regressors: accuracy or log_loss written in the file is refused; with no metric in the
    file, they are judged by mae rather than by the classifiers' default."""
    path = write_config(tmp_path, champion=regressor_dir, mode="single",
                        analysis={"metric": "accuracy"})
    config = load_config(path, base_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        load_models(config, ModelRegistry())
    assert [p.path for p in info.value.problems] == ["analysis.metric"]
    assert "accuracy judges classifiers; these models are regressors" in info.value.message
    path = write_config(tmp_path, champion=regressor_dir, mode="single")
    config = load_config(path, base_dir=tmp_path)
    models = load_models(config, ModelRegistry())
    assert resolve_settings(config, models).metric == "mae"


def test_log_loss_needs_probabilities(tmp_path: Path, champion_dir: Path,
                                      no_proba_dir: Path) -> None:
    path = write_config(tmp_path, champion=champion_dir, challenger=no_proba_dir,
                        analysis={"metric": "log_loss"})
    with pytest.raises(ConfigError) as info:
        load_models(load_config(path, base_dir=tmp_path), ModelRegistry())
    [problem] = info.value.problems
    assert problem.path == "analysis.metric"
    assert problem.message == ("log_loss needs probabilities; iris-svc has no predict_proba "
                               "(use accuracy)")


def test_validate_names_the_metrics_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         champion_dir: Path, challenger_dir: Path) -> None:
    """The newcomer's case: ``metric: mae`` on classifiers passed validate and serve, and
    then every /stats of the run was a 422."""
    path = tmp_path / "router.yaml"
    path.write_text(f"experiment: e\nmode: ab\nchampion: {{name: a, path: {champion_dir}}}\n"
                    f"challenger: {{name: b, path: {challenger_dir}}}\n"
                    "analysis:\n  metric: mae\n")
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == (f"{path}:6: analysis.metric: mae judges regressors; these "
                                 "models are classifiers (use accuracy or log_loss)\n")
