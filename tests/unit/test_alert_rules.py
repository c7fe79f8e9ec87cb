"""contrib/prometheus/xlb-rules.yml, checked by Prometheus' own promtool:
the rules parse (`promtool check rules`), and their unit tests pass
(`promtool test rules xlb-rules.test.yml`), in which every alert fires on a
series that should fire it and stays quiet beside one that should not.

promtool comes with Debian's `prometheus` package (build.py installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.metric_names import documented, named_in, served

RULES_DIR = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"
RULES = RULES_DIR / "xlb-rules.yml"
RULE_TESTS = RULES_DIR / "xlb-rules.test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("needs promtool (Debian: apt-get install prometheus)")
    return path


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def run_promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", RULES.name, cwd=RULES_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=RULES_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases: dict[str, list[list[Any]]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    for alert in alerts():
        expected = cases.get(alert["alert"], [])
        assert any(expected), f"{alert['alert']}: no test where it fires"
        assert any(not e for e in expected), f"{alert['alert']}: no test where it stays quiet"


@pytest.mark.parametrize("name", [a["alert"] for a in alerts()])
def test_an_alert_that_never_fires_fails_its_tests(
    promtool: str, tmp_path: Path, name: str
) -> None:
    """The tests hold each alert to its expression: the same rules with
    this one's expression replaced by one that never fires must fail."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                rule["expr"] = "vector(0) > 1"
    (tmp_path / RULES.name).write_text(json.dumps(rules))  # JSON is YAML
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = run_promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert f"alertname: {name}," in result.stdout + result.stderr


def test_the_rules_read_only_metrics_xlb_serves_and_documents() -> None:
    for alert in alerts():
        names = named_in(alert["expr"])
        assert names, alert["alert"]
        assert names <= served(), f"{alert['alert']}: {names - served()} not in xlb/metrics.py"
        assert names <= documented(), f"{alert['alert']}: {names - documented()} not in docs"
