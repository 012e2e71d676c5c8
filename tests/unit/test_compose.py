"""compose.yaml and ops/ (Docker is not needed): they parse, and they fit the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.unit.test_metrics import STATUS
from worker import metrics

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> Any:
    return yaml.safe_load((ROOT / name).read_text("utf-8"))


def test_compose_services_and_profiles() -> None:
    services = load("compose.yaml")["services"]
    for name in ("rabbitmq", "redis", "postgres", "migrate", "worker", "beat", "flower"):
        assert name in services and "profiles" not in services[name], name
    assert services["epj-sim"]["profiles"] == ["demo"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["worker"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }


def test_the_default_stack_runs_on_rabbitmq() -> None:
    services = load("compose.yaml")["services"]
    broker = services["worker"]["environment"]["TIMEBOK_BROKER_URL"]
    assert broker.startswith("${TIMEBOK_BROKER_URL:-amqp://") and "@rabbitmq:5672" in broker
    for name in ("worker", "beat"):
        assert services[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}


def test_redis_keeps_every_message() -> None:
    command = load("compose.yaml")["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_worker_serves_metrics_without_a_fixed_host_port() -> None:
    compose = load("compose.yaml")
    worker = compose["services"]["worker"]
    port = worker["environment"]["TIMEBOK_METRICS_PORT"]
    assert worker["environment"]["TIMEBOK_DATABASE_URL"].startswith("postgresql")  # the anchor
    assert worker["ports"] == [port]  # container port only: `--scale worker=N` still works
    scrape = load("ops/prometheus.yml")["scrape_configs"][0]["dns_sd_configs"][0]
    assert scrape["names"] == ["worker"] and str(scrape["port"]) == port


def test_prometheus_loads_the_rules() -> None:
    volumes = load("compose.yaml")["services"]["prometheus"]["volumes"]
    assert "./ops/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    assert "./ops/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes
    assert load("ops/prometheus.yml")["rule_files"] == ["alerts.yml"]


def _exported_names() -> set[str]:
    metrics.message_out("APPREC", "1", "1", None)  # make every labelled series exist once
    metrics.message_in("APPREC", "1", "1", None)
    metrics.state_changed("SENT")
    metrics.dead_letter("task")
    metrics.duplicate()
    metrics.request_to_epj(1.0)
    metrics.request_to_notification("confirmed", 1.0)
    metrics.reply_latency("1", "reply", 1.0)
    metrics.lookup("1", "free_slots", "timeout", 15.0)
    families = [*metrics.registry().collect(), *metrics.status_gauges(STATUS, "8093244")]
    return {s.name for f in families for s in f.samples}


def test_alerts_cover_the_runbook_and_use_real_metrics() -> None:
    rules = [r for g in load("ops/alerts.yml")["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {
        "TimebokWorkerDown",
        "TimebokNoWorkers",
        "TimebokIntakeBackingUp",
        "TimebokClinicNoAppRec",
        "TimebokClinicNotAnswering",
        "TimebokDeadLettersGrowing",
        "TimebokClinicLookupsTimingOut",
    } <= names
    exported = _exported_names()
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        for used in re.findall(r"\btimebok_[a-z_]+", rule["expr"]):
            assert used in exported, (rule["alert"], used)
