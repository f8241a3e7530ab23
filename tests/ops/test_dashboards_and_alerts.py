"""The sample Grafana dashboard, Prometheus alert rules and scrape config: they load, the alerts the
operators need are there, and every `unlearn_*` metric they name is one the service exports (names
collected from the API's registry, the job metrics and a real scrape of the database/broker collector),
so a renamed metric breaks this test instead of a dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\bunlearn_[a-z0-9_]+\b")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


def sample_names(collector: Any) -> set[str]:
    names = set()
    for family in collector.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


@pytest.fixture
def exported(database_url: str, broker_url: str) -> set[str]:
    from prometheus_client import REGISTRY

    from app.metrics import ApiMetrics
    from core.observability import metrics
    from core.observability.collector import METRIC_NAMES, ServiceStateCollector
    from worker import metrics as worker_metrics  # registers the worker's own heartbeat gauge

    state = sample_names(ServiceStateCollector(database_url, broker_url, ["cpu"]))
    assert set(METRIC_NAMES) <= state  # both sources were read: nothing left out of the scrape
    jobs = {name for name in sample_names(REGISTRY) if name.startswith("unlearn_")}
    assert metrics.JOB_DURATION._name + "_bucket" in jobs
    assert worker_metrics.WORKER_HEARTBEAT._name in jobs
    return sample_names(ApiMetrics().registry) | jobs | state


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "unlearn-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_metric_the_dashboard_and_alerts_use_is_exported(exported: set[str]) -> None:
    exprs = [rule["expr"] for rule in alert_rules()] + dashboard_exprs()
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert len(used) >= 10
    assert not used - exported, f"not exported by the service: {sorted(used - exported)}"


def test_the_alerts_operators_need_are_there() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    overdue = rules["UnlearnDeletionRequestsOverdue"]["expr"]
    assert "unlearn_deletion_requests_overdue" in overdue and "> 0" in overdue
    oldest = rules["UnlearnOldestQueuedRequestOverAnHour"]["expr"]
    assert "unlearn_deletion_request_oldest_queued_age_seconds" in oldest and "> 3600" in oldest
    heartbeat = rules["UnlearnWorkerHeartbeatLost"]["expr"]
    assert "unlearn_worker_heartbeat_timestamp_seconds" in heartbeat
    assert 'up{job="unlearn-worker"}' in heartbeat
    errors = rules["UnlearnApiServerErrors"]["expr"]
    assert 'status=~"5.."' in errors and "unlearn_http_requests_total" in errors
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"], name


def test_prometheus_scrapes_the_api_and_the_workers_and_loads_the_rules() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["unlearn-api"]["static_configs"][0]["targets"] == ["api:8000"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    workers = {
        f"{name}:{spec['environment']['UNLEARN_WORKER_METRICS_PORT']}"
        for name, spec in compose["services"].items()
        if name.startswith("worker-")
    }
    assert {"worker-gpu-0:9540", "worker-callbacks:9540"} <= workers
    assert set(jobs["unlearn-worker"]["static_configs"][0]["targets"]) == workers
