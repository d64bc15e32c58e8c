"""Tests for router.demo.training: the demo models, their held-out rows and the written
router.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ruamel.yaml import YAML

from router.artifacts import load_model
from router.demo.training import load_holdout, train_demo

SPEC_KEYS = [
    "experiment",
    "mode",
    "champion",
    "challenger",
    "traffic",
    "shadow",
    "analysis",
    "store",
    "limits",
    "batching",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """train_demo run once into a fresh directory."""
    return train_demo(tmp_path_factory.mktemp("demo"))


def test_writes_both_model_directories(demo: dict[str, Any]) -> None:
    """Champion and challenger are saved under models/<name>/1 with held-out metrics."""
    root: Path = demo["root"]
    for role, name in (("champion", "breast-cancer-lr"), ("challenger", "breast-cancer-rf")):
        assert demo[role]["path"] == root / "models" / name / "1"
        artifact = load_model(demo[role]["path"])
        assert artifact.name == name
        assert artifact.metadata["classes"] == ["benign", "malignant"]
        assert artifact.feature_names[:2] == ("mean_radius", "mean_texture")
        assert artifact.metadata["metrics"] == demo[role]["metrics"]
        assert artifact.metadata["metrics"]["holdout_rows"] == 228


def test_challenger_beats_champion_on_the_holdout(demo: dict[str, Any]) -> None:
    """The challenger's held-out accuracy is higher than the champion's, as the saved files say."""
    champion = demo["champion"]["metrics"]["accuracy"]
    challenger = demo["challenger"]["metrics"]["accuracy"]
    assert challenger > champion
    X, y, names = load_holdout(demo["root"])
    assert demo["holdout"] == demo["root"] / "models" / "demo-holdout.npz"
    assert X.shape == (228, 30) and X.dtype == np.float64
    assert list(names) == list(load_model(demo["champion"]["path"]).feature_names)
    for role in ("champion", "challenger"):
        model = load_model(demo[role]["path"]).model
        assert np.mean(model.predict(X) == y) == demo[role]["metrics"]["accuracy"]


def test_config_has_the_spec_keys(demo: dict[str, Any]) -> None:
    """router.yaml parses, has SPEC's keys, relative model paths and a comment on every line."""
    config_path: Path = demo["config"]
    assert config_path == demo["root"] / "configs" / "router.yaml"
    text = config_path.read_text()
    config = YAML(typ="rt").load(text)
    assert list(config) == SPEC_KEYS
    assert config["mode"] == "ab"
    assert config["traffic"]["challenger_percent"] == 50
    assert config["traffic"]["sticky_key"] == "header:x-user-id"
    assert config["store"] == "sqlite:///var/outcomes.db"
    for role in ("champion", "challenger"):
        assert set(config[role]) == {"name", "path"}
        assert config[role]["name"] == demo[role]["name"]
        assert demo["root"] / config[role]["path"] == demo[role]["path"]
    assert set(config["shadow"]) == {"sample_percent", "queue_size", "timeout_ms", "drain_s"}
    assert set(config["analysis"]) == {
        "metric",
        "alpha",
        "min_effect",
        "min_samples",
        "guardrails",
    }
    assert set(config["limits"]) == {"max_body_bytes", "max_batch"}
    assert set(config["batching"]) == {"max_batch", "max_wait_ms"}
    assert all("#" in line for line in text.splitlines() if line.strip())
    assert (demo["root"] / "var").is_dir()


def test_existing_demo_is_not_overwritten_without_force(demo: dict[str, Any]) -> None:
    """A second train_demo refuses to overwrite; force=True rewrites the same models."""
    config_before = demo["config"].read_text()
    with pytest.raises(FileExistsError, match="force"):
        train_demo(demo["root"])
    again = train_demo(demo["root"], force=True)
    assert again["challenger"]["metrics"] == demo["challenger"]["metrics"]
    assert (
        load_model(demo["challenger"]["path"]).metadata["metrics"] == again["challenger"]["metrics"]
    )
    assert demo["config"].read_text() == config_before
