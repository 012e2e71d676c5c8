"""Operations against a real worker: /metrics, `timebok status --json`, JSON logs, after-commit.

One small run (three reservations, one invalid request, one unreadable message) on a stack of
its own (fresh PostgreSQL schema, private Redis DB, worker with TIMEBOK_METRICS_PORT), then
every operator view is checked against what the run did.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from mappers import incoming
from mappers.codes import AppRecStatus, ReplyCode
from mappers.model import DialogMessage
from tests.conftest import PG_URL, REDIS_BASE, ROOT, WorkerProcess, _free_redis_db, wait_for
from tests.integration.conftest import Stack
from tests.support import CLINIC, apprec_for, confirmed_event, fnr, headers, reply, request
from worker import metrics
from worker.adapters.store import db as st
from worker.adapters.store.migrate import upgrade
from worker.adapters.store.tables import DeadLetterRow
from worker.adapters.transports.kombu import Envelope
from worker.bootstrap import bootstrap
from worker.constants import REQUESTS_QUEUE, SUBMIT_TASK
from worker.entrypoints.app import create_app
from worker.flows import views
from worker.settings import Settings

pytestmark = pytest.mark.integration
CLINIC_QUEUE = f"{CLINIC}_async"
RESERVATION = "DIALOG_INNBYGGER_TIMERESERVASJON"
OTHER_ERROR_QUEUE = "8090010_error"
# Words that must never reach a log line: names, subjects and the clinic's free text.
SECRETS = ("Zerafina", "Quobbelstad", "Vondtiknaerfot", "Xyloblomst", "Kneppkjaerring")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Ops:
    """The stack plus the metrics port and what the run did."""

    stack: Stack
    port: int
    db: int
    ids: dict[str, str]
    fnrs: list[str]
    status_before: tuple[int, dict[str, Any]]


@pytest.fixture(scope="module")
def ops_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, int, int]]:
    """Fresh schema, private Redis DB, a worker serving /metrics on a free port."""
    db = _free_redis_db()
    redis_url = f"{REDIS_BASE}/{db}"
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    schema = f"timebok_ops_{os.getpid()}_{secrets.token_hex(3)}"
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    port = _free_port()
    env = {
        **os.environ,
        "TIMEBOK_BROKER_URL": redis_url,
        "TIMEBOK_DATABASE_URL": PG_URL,
        "TIMEBOK_DATABASE_SCHEMA": schema,
        "TIMEBOK_LOG_FORMAT": "json",
        "TIMEBOK_METRICS_PORT": str(port),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    settings = Settings(broker_url=redis_url, database_url=PG_URL, database_schema=schema)
    deps = bootstrap(settings)
    upgrade(deps.store.engine)
    log = Path(tmp_path_factory.mktemp("ops-worker")) / "worker.log"
    worker = WorkerProcess(env, log).start()
    try:
        yield Stack(settings, deps, env, worker), port, db
    finally:
        worker.stop()
        deps.store.dispose()
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
        with redis.Redis.from_url(redis_url) as client:
            client.flushdb()
        with redis.Redis.from_url(f"{REDIS_BASE}/0") as client:
            client.delete(f"timebok-test-claim:{db}")


def status(stack: Stack) -> tuple[int, dict[str, Any]]:
    """`timebok status --json` as a subprocess with the stack's environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "worker.entrypoints.cli", "status", "--json"],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout)


def state(stack: Stack, booking_id: str) -> str | None:
    try:
        return str(views.booking(stack.deps, booking_id)["state"])
    except views.NotFound:
        return None


def wait_state(stack: Stack, booking_id: str, want: str) -> None:
    wait_for(lambda: state(stack, booking_id) == want, what=f"{booking_id} {want}")


def patient(n: int) -> dict[str, str]:
    return {"fnr": fnr(n), "given_name": "Zerafina", "family_name": "Quobbelstad"}


def deliver(stack: Stack, body: bytes, msg_type: str, msg_id: str | None = None) -> None:
    stack.publish_raw(body, headers(msg_id or str(uuid.uuid4()), msg_type))


@pytest.fixture(scope="module")
def ops(ops_stack: tuple[Stack, int, int]) -> Ops:
    """The small run: A confirmed (reply delivered twice), B AppRec Avvist, C invalid,
    D sent and unanswered, one unreadable message, one message left on a clinic error queue."""
    stack, port, db = ops_stack
    before = status(stack)
    app = create_app(stack.settings)
    reqs = {
        key: request("reserve", patient=patient(n), subject="Vondtiknaerfot")
        for key, n in (("A", 201), ("B", 202), ("D", 204))
    }
    for req in reqs.values():
        app.send_task(SUBMIT_TASK, args=[req], queue=REQUESTS_QUEUE)
    docs: dict[str, DialogMessage] = {}
    for body, _h in stack.drain(CLINIC_QUEUE, 3):
        doc = incoming.parse_any(body)
        assert isinstance(doc, DialogMessage) and doc.envelope.patient is not None
        key = next(k for k, r in reqs.items() if r["patient"]["fnr"] == doc.envelope.patient.fnr)
        docs[key] = doc
    for key in reqs:
        wait_state(stack, reqs[key]["request_id"], "SENT")

    a, b = docs["A"], docs["B"]
    deliver(stack, apprec_for(a, AppRecStatus.OK), "APPREC")
    wait_state(stack, reqs["A"]["request_id"], "DELIVERED")
    answer = reply(a, ReplyCode.CONFIRMED, event=confirmed_event(a), text="Husk Xyloblomst")
    deliver(stack, answer, RESERVATION)
    wait_state(stack, reqs["A"]["request_id"], "CONFIRMED")
    deliver(stack, answer, RESERVATION)  # redelivered: same receipt again, nothing else
    deliver(stack, apprec_for(b, AppRecStatus.REJECTED, "E21"), "APPREC")
    wait_state(stack, reqs["B"]["request_id"], "FAILED")

    bad = request("reserve", patient=patient(203), subject="Kneppkjaerring " * 5)
    app.send_task(SUBMIT_TASK, args=[bad], queue=REQUESTS_QUEUE)
    wait_state(stack, bad["request_id"], "INVALID")
    deliver(stack, b"this is not XML", "NOT_A_TYPE")
    stack.deps.epj.publish(Envelope(OTHER_ERROR_QUEUE, b"<x/>", {}))
    wait_for(lambda: stack.depth(CLINIC_QUEUE) == 3, what="three receipts on the clinic queue")
    wait_for(lambda: _dead_letters(stack) == 2, what="two dead letters")
    ids = {k: r["request_id"] for k, r in reqs.items()} | {"C": bad["request_id"]}
    fnrs = [fnr(n) for n in (201, 202, 203, 204)]
    return Ops(stack, port, db, ids, fnrs, before)


def _dead_letters(stack: Stack) -> int:
    with stack.deps.store.transaction() as s:
        return len(st.dead_letters(s))


# -- timebok status --json -------------------------------------------------------------------


def test_status_before_the_run_is_clean_and_exits_zero(ops: Ops) -> None:
    code, data = ops.status_before
    assert code == 0, data
    assert data["attention"] == [] and data["dead_letters"] == 0
    assert data["bookings_by_state"] == {} and data["oldest_waiting"] == {}
    assert data["in_flight"] == 0 and data["outbox_backlog"] == 0


def test_status_json_matches_the_run_and_exits_nonzero(ops: Ops) -> None:
    stack = ops.stack
    code, data = status(stack)
    assert code == 1  # dead letters need attention
    assert data["bookings_by_state"] == {"CONFIRMED": 1, "FAILED": 1, "INVALID": 1, "SENT": 1}
    assert data["dead_letters"] == 2
    assert data["attention"] == ["2 dead letters waiting (timebok dlq list)"]
    assert data["oldest_waiting"].keys() == {CLINIC}
    assert data["oldest_waiting"][CLINIC]["booking_id"] == ops.ids["D"]
    assert data["in_flight"] == 0 and data["outbox_backlog"] == 0
    assert data["outbox_oldest"] is None
    queues = data["queues"]
    own = stack.settings.own_her_id
    for name in (REQUESTS_QUEUE, "timebok.maintenance", f"{own}_async", f"{own}_error"):
        assert queues[name] == 0, name
    for clinic in stack.deps.registry.clinics:
        assert f"{clinic.her_id}_async" in queues and f"{clinic.her_id}_error" in queues
    assert queues[CLINIC_QUEUE] == 3 and queues[OTHER_ERROR_QUEUE] == 1
    assert sum(queues.values()) == 4


def test_status_text_lists_what_needs_attention(ops: Ops) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker.entrypoints.cli", "status"],
        env=ops.stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "needs attention:" in proc.stdout and "2 dead letters waiting" in proc.stdout


# -- /metrics ----------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample on the endpoint, keyed by (sample name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


EXPECTED_COUNTERS: list[tuple[str, dict[str, str], float]] = [
    ("timebok_messages_total", {"direction": "out", "type": RESERVATION, "clinic": CLINIC}, 3),
    ("timebok_messages_total", {"direction": "out", "type": "APPREC", "clinic": CLINIC}, 3),
    ("timebok_messages_total", {"direction": "in", "type": "APPREC", "clinic": CLINIC}, 2),
    ("timebok_messages_total", {"direction": "in", "type": RESERVATION, "clinic": CLINIC}, 1),
    ("timebok_messages_total", {"direction": "in", "type": "OTHER", "clinic": CLINIC}, 1),
    ("timebok_apprec_total", {"direction": "in", "status": "ok", "code": "none"}, 1),
    ("timebok_apprec_total", {"direction": "in", "status": "rejected", "code": "E21"}, 1),
    ("timebok_apprec_total", {"direction": "out", "status": "ok", "code": "none"}, 2),
    ("timebok_state_changes_total", {"state": "REQUESTED"}, 4),
    ("timebok_state_changes_total", {"state": "SENT"}, 3),
    ("timebok_state_changes_total", {"state": "DELIVERED"}, 1),
    ("timebok_state_changes_total", {"state": "CONFIRMED"}, 1),
    ("timebok_state_changes_total", {"state": "FAILED"}, 1),
    ("timebok_state_changes_total", {"state": "INVALID"}, 1),
    ("timebok_dead_letters_total", {"kind": "request"}, 1),
    ("timebok_dead_letters_total", {"kind": "message"}, 1),
    ("timebok_duplicate_messages_total", {}, 1),
    ("timebok_request_to_epj_seconds_count", {}, 3),
    ("timebok_request_to_notification_seconds_count", {"event": "confirmed"}, 1),
    ("timebok_request_to_notification_seconds_count", {"event": "undeliverable"}, 1),
    ("timebok_request_to_notification_seconds_count", {"event": "invalid"}, 1),
    ("timebok_reply_latency_seconds_count", {"clinic": CLINIC, "kind": "apprec"}, 2),
    ("timebok_reply_latency_seconds_count", {"clinic": CLINIC, "kind": "reply"}, 1),
]


def test_metrics_counters_match_the_run(ops: Ops) -> None:
    def counted() -> bool:
        samples = scrape(ops.port)
        return all(value(samples, n, **lb) == want for n, lb, want in EXPECTED_COUNTERS)

    wait_for(counted, timeout=15, interval=0.5, what="counters of the run")
    samples = scrape(ops.port)
    [rejected_out] = [
        (dict(lb), v)
        for (n, lb), v in samples.items()
        if n == "timebok_apprec_total"
        and ("direction", "out") in lb
        and ("status", "rejected") in lb
    ]
    with ops.stack.deps.store.transaction() as s:
        code = s.query(DeadLetterRow.error_code).filter_by(kind="message").scalar()
    assert rejected_out == ({"direction": "out", "status": "rejected", "code": code}, 1.0)
    total_out = sum(
        v
        for (n, lb), v in samples.items()
        if n == "timebok_messages_total" and ("direction", "out") in lb
    )
    assert total_out == 6  # three requests, three receipts: nothing counted twice or lost
    assert (value(samples, "timebok_request_to_epj_seconds_sum") or 0) > 0


def test_metrics_gauges_match_the_run(ops: Ops) -> None:
    stack = ops.stack
    own = stack.settings.own_her_id
    expected = {
        ("timebok_queue_messages", (("queue", CLINIC_QUEUE), ("role", "clinic"))): 3.0,
        ("timebok_queue_messages", (("queue", OTHER_ERROR_QUEUE), ("role", "clinic_error"))): 1.0,
        ("timebok_queue_messages", (("queue", f"{own}_async"), ("role", "inbound"))): 0.0,
        ("timebok_queue_messages", (("queue", REQUESTS_QUEUE), ("role", "intake"))): 0.0,
        ("timebok_bookings", (("state", "CONFIRMED"),)): 1.0,
        ("timebok_bookings", (("state", "FAILED"),)): 1.0,
        ("timebok_bookings", (("state", "INVALID"),)): 1.0,
        ("timebok_bookings", (("state", "SENT"),)): 1.0,
        ("timebok_dead_letters_waiting", ()): 2.0,
        ("timebok_in_flight_messages", ()): 0.0,
        ("timebok_outbox_backlog", ()): 0.0,
        ("timebok_attention_items", ()): 1.0,
        ("timebok_status_up", ()): 1.0,
    }

    def matches() -> bool:
        samples = scrape(ops.port)
        return all(value(samples, n, **dict(lb)) == v for (n, lb), v in expected.items())

    wait_for(matches, timeout=15, interval=0.5, what="gauges of the run")
    samples = scrape(ops.port)
    assert stack.depth(CLINIC_QUEUE) == 3  # the gauge is the real depth, not a count of ours
    waiting = value(samples, "timebok_oldest_waiting_seconds", clinic=CLINIC)
    assert waiting is not None and 0 < waiting < 600
    queues = {dict(lb)["queue"] for (n, lb) in samples if n == "timebok_queue_messages"}
    assert {f"{c.her_id}_error" for c in stack.deps.registry.clinics} <= queues


# -- JSON logs ---------------------------------------------------------------------------------


def log_lines(stack: Stack) -> list[dict[str, Any]]:
    out = []
    for line in stack.worker.log.read_text("utf-8", "replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_one_log_line_per_state_change_with_ids(ops: Ops) -> None:
    lines = log_lines(ops.stack)
    a = ops.ids["A"]
    moves = [r for r in lines if r["msg"] == "booking state changed" and r["booking_id"] == a]
    assert [(r["from_state"], r["to_state"]) for r in moves] == [
        (None, "REQUESTED"),
        ("REQUESTED", "SENT"),
        ("SENT", "DELIVERED"),
        ("DELIVERED", "CONFIRMED"),
    ]
    assert {r["her_id"] for r in moves} == {CLINIC}
    sent = views.booking(ops.stack.deps, a)["messages"][0]["msg_id"]
    assert {r["msg_id"] for r in moves[1:]} == {sent}
    states = [r for r in lines if r["msg"] == "booking state changed"]
    assert len(states) == 4 + 3 + 2 + 2  # A, B (.. FAILED), D (.. SENT), C (.. INVALID)


def test_message_log_lines_are_consistent(ops: Ops) -> None:
    lines = log_lines(ops.stack)
    kinds = {
        "message published",
        "apprec received",
        "business message received",
        "unreadable message rejected",
    }
    per_message = [r for r in lines if r["msg"] in kinds]
    assert {r["msg"] for r in per_message} == kinds
    for r in per_message:
        assert {"msg_id", "her_id", "type"} <= r.keys(), r
        assert "booking_id" in r or r["msg"] == "unreadable message rejected", r
    published = [r for r in per_message if r["msg"] == "message published"]
    assert len(published) == 6
    assert {r["type"] for r in published} == {RESERVATION, "APPREC"}


def test_logs_hold_no_fnr_and_no_free_text(ops: Ops) -> None:
    raw = ops.stack.worker.log.read_text("utf-8", "replace")
    for number in ops.fnrs:
        assert number not in raw
    for word in SECRETS:
        assert word not in raw, word
    assert log_lines(ops.stack), "the worker logged JSON"


# -- after-commit hooks (the unit of work) -----------------------------------------------------


class Boom(Exception):
    """Raised inside a unit of work to roll it back."""


def _rolled_back(store: st.Store, work: Callable[[Session], object]) -> None:
    with store.transaction() as s:
        work(s)
        raise Boom


def test_after_commit_hooks_run_only_on_commit(tmp_path: Path) -> None:
    store = st.Store(st.make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    upgrade(store.engine)
    ran: list[str] = []
    with store.transaction() as s:
        st.after_commit(s, lambda: ran.append("committed"))
        assert ran == []  # not before the commit
    assert ran == ["committed"]

    with pytest.raises(Boom):
        _rolled_back(store, lambda s: st.after_commit(s, lambda: ran.append("rolled back")))
    assert ran == ["committed"]

    def broken() -> None:
        raise RuntimeError("a metrics bug")

    with store.transaction() as s:  # a failing hook never undoes or breaks the unit of work
        st.after_commit(s, broken)
        st.after_commit(s, lambda: ran.append("after the broken one"))
    assert ran == ["committed", "after the broken one"]
    store.dispose()


def test_dead_letter_counted_once_committed(tmp_path: Path) -> None:
    store = st.Store(st.make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    upgrade(store.engine)
    reg = metrics.registry()

    def count() -> float:
        return reg.get_sample_value("timebok_dead_letters_total", {"kind": "task"}) or 0.0

    start = count()
    with pytest.raises(Boom):
        _rolled_back(
            store,
            lambda s: st.add_dead_letter(s, kind="task", reason="x", source_queue="q", payload=b""),
        )
    assert count() == start
    with store.transaction() as s:
        st.add_dead_letter(s, kind="task", reason="x", source_queue="q", payload=b"")
        assert count() == start
    assert count() == start + 1
    store.dispose()
