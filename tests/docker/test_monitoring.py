"""The monitoring profile's files: every metric the alert rules and the Grafana dashboard name
is in a real ``/metrics`` scrape with the labels they use, and promtool accepts the files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from ops.metrics import record_job_finished, record_rate_limit_hit
from tests.factories import GenerationJobFactory
from tests.support.paths import ROOT
from tests.support.redis_state import redis_client

MONITORING = ROOT / "docker"
RULES = MONITORING / "prometheus" / "alerts.yml"
CONFIG = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
# Series Prometheus makes itself for every target, never in an exporter's text.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    expressions = []
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            expressions += [target["expr"] for target in panel.get("targets", [])]
    return expressions


def names_and_labels(expression: str) -> tuple[dict[str, set[str]], set[str]]:
    """``({metric: labels its matchers use}, labels its groupings use)`` of a PromQL expression."""
    grouping = {
        label.strip()
        for _, labels in GROUPING.findall(expression)
        for label in labels.split(",")
        if label.strip()
    }
    bare = GROUPING.sub(" ", expression)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # range durations
    metrics: dict[str, set[str]] = {}
    for match in SELECTOR.finditer(bare):
        name, matchers = match.group(1), match.group(2) or ""
        after = bare[match.end() :].lstrip()
        if name in KEYWORDS or after.startswith("(") or re.fullmatch(r"[0-9.e]+", name):
            continue  # a function or an operator keyword
        metrics.setdefault(name, set()).update(MATCHER.findall(matchers))
    return metrics, grouping


def scraped_labels(client: Client, token: str) -> dict[str, set[str]]:
    """``{sample name: label names}`` of a real scrape, once every series has a sample."""
    GenerationJobFactory()
    record_job_finished(outcome="completed", run_seconds=0.7)
    record_job_finished(outcome="failed", failure_code="timeout")
    record_rate_limit_hit(rule="submit")
    client.get("/healthz")
    # Outside DEBUG a scrape needs the token, as Prometheus sends it from the compose secret.
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


@pytest.fixture
def scrape(db: None, client: Client, settings: Any) -> dict[str, set[str]]:
    settings.METRICS_TOKEN = "monitoring-test-token"
    redis_client().delete("imagegen:metrics:jobs", "imagegen:metrics:rate_limit_hits")
    try:
        return scraped_labels(client, settings.METRICS_TOKEN)
    finally:
        redis_client().delete("imagegen:metrics:jobs", "imagegen:metrics:rate_limit_hits")


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_the_rules_and_the_dashboard_name_is_scraped_with_the_labels_they_use(
    source: str, scrape: dict[str, set[str]]
) -> None:
    expressions = rule_expressions() if source == "rules" else dashboard_expressions()
    assert expressions
    for expression in expressions:
        metrics, grouping = names_and_labels(expression)
        ours = {name: labels for name, labels in metrics.items() if name not in SYNTHETIC}
        for name, labels in ours.items():
            assert name in scrape, f"{name} (in {expression!r}) is not in /metrics"
            assert labels <= scrape[name], f"{name} has no label {labels - scrape[name]}"
        if ours:
            available = set().union(*(scrape[name] for name in ours))
            assert grouping <= available, f"{expression!r} groups by {grouping - available}"


def test_the_promql_reader_finds_names_matchers_and_groupings() -> None:
    metrics, grouping = names_and_labels(
        'sum by (code) (rate(a_total{code="x", model=~"m"}[5m])) / ignoring (code) group_left sum(b) > 0.1'
    )
    assert metrics == {"a_total": {"code", "model"}, "b": set()}
    assert grouping == {"code"}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    if executable is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return subprocess.run([executable, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_scrape_config() -> None:
    # Syntax only: the token file and the rule paths exist inside the container, not here.
    result = promtool("check", "config", "--syntax-only", CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_starts_prometheus_and_grafana_with_the_monitoring_profile_only() -> None:
    services = yaml.safe_load((MONITORING / "compose.yaml").read_text())["services"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]
    assert all(
        "profiles" not in service
        for name, service in services.items()
        if name not in {"prometheus", "grafana"}
    )
