"""deploy/prometheus/alerts.yaml: valid for promtool, its unit tests pass, and every metric it
reads is one the gateway exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool() -> str:
    """Skip (locally) or fail (in CI) when Prometheus's promtool is missing."""
    found = shutil.which("promtool")
    if found is None:
        message = "the alert rule tests need promtool"
        if os.environ.get("CI"):
            pytest.fail(message + " (apt-get install prometheus)")
        pytest.skip(message)
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=RULES_DIR, capture_output=True, text=True,
                          timeout=120, check=False)


def test_promtool_checks_the_rules() -> None:
    """`promtool check rules alerts.yaml` succeeds."""
    result = run("check", "rules", "alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """`promtool test rules alerts.test.yaml`: each alert fires when it should, and not before."""
    result = run("test", "rules", "alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    """Each rule of alerts.yaml is named in at least one alert_rule_test."""
    yaml = YAML(typ="safe")
    rules = yaml.load((RULES_DIR / "alerts.yaml").read_text())
    tests = yaml.load((RULES_DIR / "alerts.test.yaml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]}
    assert alerts == tested


def test_the_rules_read_only_metrics_the_gateway_exports(
        make_client: Any, champion_dir: Path, challenger_dir: Path) -> None:
    """Every router_* name in an expression is a family (or sample) of a shadow gateway's
    /metrics, once its monitoring gauges are set."""
    client = make_client(champion=champion_dir, challenger=challenger_dir, mode="shadow")
    client.post("/predict", json={"features": [5.1, 3.5, 1.4, 0.2]})
    text = client.get("/metrics").text
    exported: set[str] = set()
    for family in text_string_to_metric_families(text):
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
    rules = YAML(typ="safe").load((RULES_DIR / "alerts.yaml").read_text())
    used = {name for group in rules["groups"] for rule in group["rules"]
            for name in re.findall(r"\brouter_[a-z0-9_]+", rule["expr"])}
    assert used
    missing = {n for n in used if n not in exported and re.sub(r"_(total|bucket)$", "", n)
               not in exported}
    assert not missing
