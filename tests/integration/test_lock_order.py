"""Row locks in one order: the batched marks after a publish and AppRecs handled at the same
time never deadlock (PostgreSQL's own count, pg_stat_database.deadlocks, stays at zero).

The marks statement locks outbox rows, then their messages, then their bookings; an AppRec
handler changes the message it answers and that message's booking. Before both took locks in
the same order, PostgreSQL logged deadlocks between them in normal operation.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

from mappers import incoming
from mappers.codes import AppRecStatus
from mappers.model import DialogMessage
from tests.conftest import PG_URL
from tests.support import apprec_for, request
from worker.adapters.store.db import get_message, make_engine
from worker.adapters.store.migrate import upgrade
from worker.adapters.store.outbox import Claimed, Mark
from worker.adapters.transports.kombu import transport_headers
from worker.bootstrap import Deps, bootstrap
from worker.flows import timeouts
from worker.flows.inbound import receive
from worker.flows.outbound import submit
from worker.flows.relay import write_marks
from worker.settings import Settings

pytestmark = pytest.mark.integration

BOOKINGS = 64
BATCH = 8  # marks per statement, as the marks thread writes them under load
# Test-only latency on every UPDATE of a message row, so that the two kinds of transaction
# overlap on every batch instead of once in a while. It changes timing, nothing else.
SLOW_UPDATES = """
CREATE FUNCTION slow_update() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$;
CREATE TRIGGER slow_update BEFORE UPDATE ON messages
FOR EACH ROW EXECUTE FUNCTION slow_update();
"""


@pytest.fixture
def database() -> Iterator[str]:
    """A migrated PostgreSQL database of its own: its deadlock count is this test's alone."""
    name = f"timebok_locks_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        engine = make_engine(url)
        upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql(SLOW_UPDATES)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": name},
            )
            conn.execute(text(f'DROP DATABASE "{name}"'))
        admin.dispose()


class Held:
    """Marks kept back (instead of written by the marks thread) for the test to write."""

    def __init__(self) -> None:
        self.marks: list[Mark] = []

    def add(self, mark: Mark, then: Callable[[Claimed], None]) -> None:
        """Keep the mark."""
        self.marks.append(mark)

    def close(self) -> None:
        """Nothing to write at exit."""


def _deadlocks(url: str) -> int:
    name = make_url(url).database
    engine = create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            query = text("SELECT deadlocks FROM pg_stat_database WHERE datname = :d")
            return int(conn.execute(query, {"d": name}).scalar_one())
    finally:
        engine.dispose()


def _receipts(deps: Deps) -> list[tuple[bytes, dict[str, Any]]]:
    """The clinic's AppRec OK for every message we sent, oldest first."""
    with deps.store.engine.connect() as conn:
        rows = conn.execute(text("SELECT xml FROM messages WHERE direction = 'out' ORDER BY id"))
        sent = [incoming.parse_any(bytes(r[0])) for r in rows]
    out = []
    for msg in sent:
        assert isinstance(msg, DialogMessage)
        env = msg.envelope
        headers = transport_headers(
            from_her_id=env.receiver.her_id,
            to_her_id=env.sender.her_id,
            msg_id=secrets.token_hex(8),
            msg_type="APPREC",
            ref_to_parent=env.msg_id,
        )
        out.append((apprec_for(msg, AppRecStatus.OK), dict(headers)))
    return out


@pytest.mark.timeout(180)
def test_marks_and_receipts_at_the_same_time_never_deadlock(database: str, redis_url: str) -> None:
    # The EPJ side in memory: what is published does not matter here, only the marks after.
    settings = Settings(broker_url=redis_url, epj_broker_url="memory://", database_url=database)
    deps, held = bootstrap(settings), Held()
    deps.marks = held  # type: ignore[assignment]
    handlers = [bootstrap(settings) for _ in range(2)]
    try:
        for n in range(BOOKINGS):
            submit(deps, request(patient_n=n + 1))  # published, mark held back: REQUESTED
        receipts = _receipts(deps)
        assert len(held.marks) == len(receipts) == BOOKINGS
        before = _deadlocks(database)
        errors = _race(deps, handlers, held.marks, receipts)
        with deps.store.engine.connect() as conn:
            states = conn.execute(text("SELECT state, count(*) FROM bookings GROUP BY state"))
            by_state = dict(states.all())
    finally:
        for d in (deps, *handlers):
            d.store.dispose()  # backends exit: their statistics are flushed
    assert _deadlocks(database) - before == 0
    assert errors == []
    assert by_state == {"DELIVERED": BOOKINGS}


def _race(
    deps: Deps,
    handlers: list[Deps],
    marks: list[Mark],
    receipts: list[tuple[bytes, dict[str, Any]]],
) -> list[str]:
    """Each batch of marks written while the AppRecs of the same rows are handled."""
    starts = range(0, len(marks), BATCH)
    barrier = threading.Barrier(1 + len(handlers))
    errors: list[str] = []

    def mark() -> None:
        for at in starts:
            barrier.wait()
            try:
                write_marks(deps.store, marks[at : at + BATCH])
            except Exception as exc:
                errors.append(f"marks: {exc}"[:300])

    def handle(k: int) -> None:
        for at in starts:
            barrier.wait()
            # Last row first: it meets the marks statement where it locks that row's booking.
            for body, headers in list(reversed(receipts[at : at + BATCH]))[k :: len(handlers)]:
                try:
                    receive(handlers[k], body, headers)
                except Exception as exc:
                    errors.append(f"receipt: {exc}"[:300])

    threads = [threading.Thread(target=mark)]
    threads += [threading.Thread(target=handle, args=(k,)) for k in range(len(handlers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


@pytest.mark.timeout(120)
def test_a_resend_does_not_wait_for_a_handler_holding_its_message(
    database: str, redis_url: str
) -> None:
    """The resend pass locks overdue bookings, then puts their message in the outbox again;
    the new outbox row's foreign key takes a KEY SHARE lock on the message. An AppRec
    handler locks that message, then its booking. Were the message lock FOR UPDATE, the
    resend would wait for the handler while the handler waited for the booking the resend
    holds: a deadlock (seen in a chaos run). With FOR NO KEY UPDATE the resend goes through
    while the handler holds the message."""
    settings = Settings(
        broker_url=redis_url, epj_broker_url="memory://", database_url=database, max_resends=3
    )
    deps, handler = bootstrap(settings), bootstrap(settings)
    try:
        submit(deps, request(patient_n=1))
        with deps.store.engine.begin() as conn:  # sent an hour ago, no AppRec since
            conn.execute(
                text("UPDATE bookings SET state = 'SENT', deadline_at = :t"), {"t": _ago()}
            )
            msg_id = conn.execute(
                text("SELECT msg_id FROM messages WHERE direction = 'out'")
            ).scalar_one()
        resent: list[int] = []
        with handler.store.transaction() as s:
            assert get_message(s, msg_id, lock=True) is not None  # the handler holds it
            worker = threading.Thread(target=lambda: resent.append(timeouts.check(deps)))
            worker.start()
            # The resend's own transaction commits while the handler holds the message (the
            # relay that publishes it afterwards marks the message, and waits its turn).
            queued = _outbox_rows_within(deps, 2, seconds=20)
        worker.join(60)
    finally:
        for d in (deps, handler):
            d.store.dispose()
    assert queued == 2, "the resend waited for the lock on its message"
    assert resent == [1]


def _ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


def _outbox_rows_within(deps: Deps, want: int, *, seconds: float) -> int:
    """The outbox rows once there are `want` of them, or as many as there are after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        with deps.store.engine.connect() as conn:
            have = int(conn.execute(text("SELECT count(*) FROM outbox")).scalar_one())
        if have >= want or time.monotonic() > deadline:
            return have
        time.sleep(0.1)
