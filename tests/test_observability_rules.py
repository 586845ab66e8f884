"""Prometheus configuration and rules: ``promtool check config``, ``promtool check
rules`` and the rule unit tests (``promtool test rules``), with every alerting rule
covered by a test in which it fires, and every metric a rule reads exported."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import CollectorRegistry

from app.config import PROJECT_ROOT
from app.metrics import Metrics

OPS = PROJECT_ROOT / "ops"
RULES = sorted((OPS / "rules").glob("*.rules.yml"))
RULE_TESTS = sorted((OPS / "tests").glob("*.yml"))
ALERTS = {
    "FraudWorkerDown",
    "FraudWorkersAbsent",
    "FraudConsumerLagGrowing",
    "FraudPartitionStalled",
    "FraudAlertRateAnomalous",
    "FraudLatencyBudgetFastBurn",
    "FraudLatencyBudgetSlowBurn",
    "FraudRejectedEventsRising",
    "FraudFeatureDrift",
    "FraudAlignmentSourceStalled",
}


def _promtool(*args: str) -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: .ci/run installs Debian's `prometheus` package")
    result = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    return out


def _rules() -> list[dict]:
    return [r for path in RULES for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-local.yml"])
def test_both_configs_load_the_rule_files(name):
    out = _promtool("check", "config", str(OPS / name))
    assert "SUCCESS: 1 rule files found" in out
    assert yaml.safe_load((OPS / name).read_text())["rule_files"] == ["rules/*.rules.yml"]


def test_promtool_checks_the_rules():
    out = _promtool("check", "rules", *map(str, RULES))
    assert f"SUCCESS: {len(_rules())} rules found" in out


def test_the_alerting_rules_are_the_issue_s():
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    assert alerts == ALERTS
    for rule in _rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"page", "ticket"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_promtool_rule_unit_tests_pass():
    out = _promtool("test", "rules", *map(str, RULE_TESTS))
    assert "SUCCESS" in out and "FAILED" not in out


def test_every_alerting_rule_has_a_test_where_it_fires_and_one_where_it_does_not():
    fires, silent = set(), set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case["exp_alerts"] else silent).add(case["alertname"])
    assert fires == ALERTS
    assert silent == ALERTS


def test_rules_read_only_metrics_the_workers_export():
    exported = {
        sample_name
        for family in Metrics(CollectorRegistry()).registry.collect()
        for sample_name in (
            family.name,
            f"{family.name}_total",
            f"{family.name}_bucket",
            f"{family.name}_count",
            f"{family.name}_sum",
        )
    }
    recorded = {r["record"] for r in _rules() if "record" in r}
    for rule in _rules():
        for name in re.findall(r"\b(fraud[_:][a-z0-9_:]+)\b", rule["expr"]):
            assert name in exported | recorded, f"{rule.get('alert') or rule.get('record')}: {name}"
