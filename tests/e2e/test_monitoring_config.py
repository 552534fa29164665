"""Monitoring configuration under k8s/monitoring/: the Prometheus alerting rules (checked and unit
tested with the real ``promtool``), their copy in the PrometheusRule, the Grafana dashboard and the
prometheus-adapter rule behind the autoscaler. Every metric they name must be one Switchboard
exports (bots/metrics.py).

``promtool`` comes from Debian's ``prometheus`` package (installed by ``.ci/setup.sh --test``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bots.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
             "group_right", "inf", "nan"}
# Grafana's variables, replaced by values Prometheus accepts before promtool parses an expression.
_GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": ".*", "$bot": ".*"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: run `bash .ci/setup.sh --test` (Debian package prometheus)")
    return path


def _run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=60, check=False)


def _exported_metric_names() -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {family.name + s for family in Metrics().registry.collect() for s in suffixes[family.type]}


def _metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, matchers, ranges, grouping and functions removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        is_call = text[match.end():].lstrip().startswith("(")
        if not is_call and match.group() not in _KEYWORDS:
            names.add(match.group())
    return names


def _rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load((MONITORING / "rules.yml").read_text())["groups"]
    return groups


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_prometheusrule_carries_exactly_the_rules_file() -> None:
    resource = yaml.safe_load((ROOT / "k8s" / "base" / "prometheusrule.yaml").read_text())
    assert resource["spec"] == yaml.safe_load((MONITORING / "rules.yml").read_text()), (
        "k8s/base/prometheusrule.yaml spec.groups differs from k8s/monitoring/rules.yml: edit both together")


def test_promtool_checks_the_rules() -> None:
    result = _run_promtool("check", "rules", str(MONITORING / "rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_alerts_cover_the_required_conditions() -> None:
    alerts = {rule["alert"]: rule for group in _rule_groups() for rule in group["rules"]}
    required = {"switchboard_errors_total": "SwitchboardHighErrorRate",
                "switchboard_message_seconds_bucket": "SwitchboardHighLatencyP95",
                "switchboard_fallbacks_total": "SwitchboardHighFallbackRate",
                "switchboard_handoff_oldest_seconds": "SwitchboardHandoffQueueStale",
                "switchboard_store_up": "SwitchboardStoreUnavailable"}
    for metric, alert in required.items():
        assert metric in _metric_names(alerts[alert]["expr"]), f"{alert} does not use {metric}"
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = _run_promtool("test", "rules", str(MONITORING / "rules.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    alerts = {rule["alert"] for group in _rule_groups() for rule in group["rules"]}
    cases = [case for test in yaml.safe_load((MONITORING / "rules.test.yml").read_text())["tests"]
             for case in test["alert_rule_test"]]
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == alerts
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == alerts


def test_promtool_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    # The unit tests must be able to fail: loosen the error-rate threshold and they do.
    rules = (MONITORING / "rules.yml").read_text()
    assert rules.count("> 0.05") == 1
    (tmp_path / "rules.yml").write_text(rules.replace("> 0.05", "> 0.5"))
    shutil.copy(MONITORING / "rules.test.yml", tmp_path / "rules.test.yml")
    result = _run_promtool("test", "rules", str(tmp_path / "rules.test.yml"))
    assert result.returncode != 0
    assert "SwitchboardHighErrorRate" in result.stdout + result.stderr


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    exported = _exported_metric_names()
    assert "switchboard_message_seconds_bucket" in exported and "switchboard_messages_total" in exported
    exprs = [(r["alert"], r["expr"]) for g in _rule_groups() for r in g["rules"]] + _dashboard_exprs()
    for where, expr in exprs:
        names = _metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        assert names <= exported, f"{where}: unknown metrics {sorted(names - exported)}"
    assert _metric_names('sum by (le) (rate(x_bucket{a="b(c)"}[5m])) / on(pod) y > bool 1e-3') == {"x_bucket", "y"}


def test_dashboard_is_valid_grafana_json_with_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+), *\w+\)", variable["query"]["query"])
            assert selector, variable["name"]
            assert _metric_names(selector.group(1)) <= _exported_metric_names(), variable["name"]
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("per channel", "latency percentiles", "fallback", "handoff", "model version per pod",
                  "sentiment over time", "frustrated conversations"):
        assert topic in titles, f"no panel about {topic}"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["gridPos"]["w"] <= 24
    # promtool parses each expression (as a recording rule) after Grafana's variables are filled in.
    rules = []
    for i, (title, expr) in enumerate(_dashboard_exprs()):
        used = set(re.findall(r"\$\{?(\w+)", expr)) - {"__rate_interval", "__interval"}
        assert used <= variables, f"{title}: undefined variables {used - variables}"
        for var, value in _GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:panel_{i}", "expr": expr})
    (tmp_path / "dashboard-rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run_promtool("check", "rules", str(tmp_path / "dashboard-rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_adapter_serves_the_hpa_metric() -> None:
    """The base HPA needs no adapter (CPU only); the prod-inflight overlay's Pods metric is served by
    the adapter rule, which that overlay's kustomization.yaml quotes for operators."""
    values = yaml.safe_load((MONITORING / "prometheus-adapter-values.yaml").read_text())
    base = yaml.safe_load((ROOT / "k8s" / "base" / "hpa.yaml").read_text())
    assert [m["type"] for m in base["spec"]["metrics"]] == ["Resource"]
    overlay = ROOT / "k8s" / "overlays" / "prod-inflight"
    hpa = yaml.safe_load((overlay / "hpa-patch.yaml").read_text())
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    served = {rule["name"]["as"] for rule in values["rules"]["custom"]}
    assert wanted and wanted <= served
    documented = (overlay / "kustomization.yaml").read_text()
    for rule in values["rules"]["custom"]:
        assert rule["seriesQuery"] in documented and rule["metricsQuery"] in documented
    for rule in values["rules"]["custom"]:
        assert _metric_names(rule["seriesQuery"]) <= _exported_metric_names()
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
