"""Metrics: bounded labels, counters by outcome, status data as gauges, the scrape cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker import metrics

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def sample(name: str, **labels: str) -> float:
    return metrics.registry().get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("her_id", "label"),
    [("8090001", "8090001"), (None, "unknown"), ("", "unknown"), ("80900x1", "unknown")],
)
def test_clinic_label(her_id: str | None, label: str) -> None:
    assert metrics.clinic_label(her_id) == label


@pytest.mark.parametrize(
    ("msg_type", "label"),
    [
        ("DIALOG_INNBYGGER_TIMERESERVASJON", "DIALOG_INNBYGGER_TIMERESERVASJON"),
        ("APPREC", "APPREC"),
        ("ANYTHING_A_SENDER_MADE_UP", "OTHER"),
        (None, "OTHER"),
    ],
)
def test_type_label_is_bounded(msg_type: str | None, label: str) -> None:
    assert metrics.type_label(msg_type) == label


@pytest.mark.parametrize(
    ("status", "code", "labels"),
    [
        ("1", None, ("ok", "none")),
        ("2", "E21", ("rejected", "E21")),
        ("3", "T02", ("ok_with_error", "T02")),
        ("9", "<script>", ("other", "other")),
        (None, "", ("other", "none")),
    ],
)
def test_apprec_labels(status: str | None, code: str | None, labels: tuple[str, str]) -> None:
    assert metrics.apprec_labels(status, code) == labels


def test_apprec_out_counts_message_and_outcome() -> None:
    msgs = {"direction": "out", "type": "APPREC", "clinic": "8090001"}
    outcome = {"direction": "out", "status": "rejected", "code": "T01"}
    before = sample("timebok_messages_total", **msgs), sample("timebok_apprec_total", **outcome)
    metrics.message_out("APPREC", "8090001", "2", "T01")
    after = sample("timebok_messages_total", **msgs), sample("timebok_apprec_total", **outcome)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_business_message_in_is_no_apprec() -> None:
    ok_in = {"direction": "in", "status": "ok", "code": "none"}
    before = sample("timebok_apprec_total", **ok_in)
    metrics.message_in("DIALOG_INNBYGGER_TIMEONSKE", "8090010")
    assert sample("timebok_apprec_total", **ok_in) == before


def test_a_metric_error_never_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("registry gone")

    monkeypatch.setattr(metrics, "_metrics", broken)
    metrics.state_changed("SENT")  # logged, not raised


def test_histograms_observe() -> None:
    before = sample("timebok_reply_latency_seconds_count", clinic="8090001", kind="reply")
    metrics.reply_latency("8090001", "reply", 42.0)
    metrics.request_to_notification("confirmed", -1.0)  # a clock skew is clamped to 0
    assert sample("timebok_reply_latency_seconds_count", clinic="8090001", kind="reply") == (
        before + 1
    )


def test_since() -> None:
    assert metrics.since(None) is None
    assert metrics.since(NOW - timedelta(seconds=90), NOW) == 90.0


STATUS: dict[str, Any] = {
    "queues": {
        "booking.requests": 4,
        "timebok.maintenance": 0,
        "8093244_async": 1,
        "8093244_error": 0,
        "8090001_async": 7,
        "8090001_error": 2,
        "8090010_async": None,
    },
    "in_flight": 3,
    "outbox_backlog": 5,
    "outbox_oldest": None,
    "dead_letters": 6,
    "bookings_by_state": {"SENT": 2, "CONFIRMED": 9},
    "oldest_waiting": {"8090001": {"since": (NOW - timedelta(minutes=5)).isoformat()}},
    "attention": ["6 dead letters waiting (timebok dlq list)"],
}


def _flat(families: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_status_as_gauges() -> None:
    got = _flat(metrics.status_gauges(STATUS, "8093244", now=NOW))
    role = {
        "booking.requests": "intake",
        "timebok.maintenance": "maintenance",
        "8093244_async": "inbound",
        "8093244_error": "error",
        "8090001_async": "clinic",
        "8090001_error": "clinic_error",
    }
    for queue, depth in STATUS["queues"].items():
        key = ("timebok_queue_messages", (("queue", queue), ("role", role.get(queue, "clinic"))))
        assert got.get(key) == (None if depth is None else float(depth)), queue
    assert got[("timebok_bookings", (("state", "CONFIRMED"),))] == 9
    assert got[("timebok_oldest_waiting_seconds", (("clinic", "8090001"),))] == 300
    assert got[("timebok_in_flight_messages", ())] == 3
    assert got[("timebok_dead_letters_waiting", ())] == 6
    assert got[("timebok_outbox_backlog", ())] == 5
    assert got[("timebok_attention_items", ())] == 1
    assert got[("timebok_status_up", ())] == 1


def test_status_unreadable_is_status_up_zero() -> None:
    assert _flat(metrics.status_gauges(None, "8093244")) == {("timebok_status_up", ()): 0.0}


def test_collector_reads_at_most_once_per_ttl() -> None:
    calls: list[int] = []
    clock = [100.0]

    def source() -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 3:
            raise ConnectionError("database down")
        return STATUS

    collector = metrics.StatusCollector(source, "8093244", ttl=3.0, clock=lambda: clock[0])
    for _ in range(5):
        list(collector.collect())
    assert len(calls) == 1
    clock[0] += 3.0
    list(collector.collect())
    assert len(calls) == 2
    clock[0] += 3.0
    down = _flat(list(collector.collect()))
    assert down == {("timebok_status_up", ()): 0.0}
