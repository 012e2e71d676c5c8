"""The store on both backends: migrations, unique keys, outbox locking, dead letters."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from tests.conftest import PG_URL
from worker.adapters.store import db as st
from worker.adapters.store import outbox as ob
from worker.adapters.store.migrate import current_revision, head_revision, upgrade
from worker.adapters.store.tables import AppointmentRow, BookingRow, MessageRow, OutboxRow
from worker.errors import NotMigrated
from worker.flows.inbox import AppointmentView, Notice, notify, upsert_appointment
from worker.texts import NoticeContext

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[st.Store]:
    """A freshly migrated store on each backend."""
    schema = None
    if request.param == "sqlite":
        engine = st.make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    else:
        schema = request.getfixturevalue("pg_schema") + "_store"
        engine = st.make_engine(PG_URL, schema)
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    s = st.Store(engine)
    with pytest.raises(NotMigrated, match="timebok migrate"):
        s.check_migrated()
    upgrade(engine)
    s.check_migrated()
    yield s
    if schema:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def _booking(s, booking_id: str = "b1") -> BookingRow:  # type: ignore[no-untyped-def]
    row = BookingRow(
        id=booking_id,
        action="reserve",
        state="REQUESTED",
        created_at=NOW,
        updated_at=NOW,
        resends=0,
    )
    s.add(row)
    s.flush()
    return row


def _message(msg_id: str, booking_id: str | None = "b1") -> MessageRow:
    return MessageRow(
        msg_id=msg_id,
        direction="out",
        booking_id=booking_id,
        msg_type="T",
        xml=b"<x/>",
        status="queued",
        created_at=NOW,
    )


def test_migrated_to_head(store: st.Store) -> None:
    assert current_revision(store.engine) == head_revision()


def test_timestamps_come_back_aware(store: st.Store) -> None:
    with store.transaction() as s:
        _booking(s)
    with store.transaction() as s:
        row = st.get_booking(s, "b1")
        assert row is not None and row.created_at == NOW and row.created_at.tzinfo is not None


def test_msg_id_is_unique(store: st.Store) -> None:
    with store.transaction() as s:
        _booking(s)
        s.add(_message("m1"))
    with pytest.raises(IntegrityError), store.transaction() as s:
        s.add(_message("m1"))


def _outgoing(msg_id: str, booking_id: str | None = "b1", msg_type: str = "T") -> dict[str, object]:
    return {
        "msg_id": msg_id,
        "direction": "out",
        "booking_id": booking_id,
        "msg_type": msg_type,
        "xml": b"<x/>",
        "status": "queued",
        "created_at": NOW,
    }


_NEW_BOOKING = {
    "id": "b1",
    "action": "reserve",
    "state": "REQUESTED",
    "created_at": NOW,
    "updated_at": NOW,
    "resends": 0,
}
LATER = datetime(2026, 11, 26, 12, 0, 5, tzinfo=UTC)
DEADLINE = datetime(2026, 11, 26, 12, 5, tzinfo=UTC)


def test_a_booking_and_its_message_go_in_together(store: st.Store) -> None:
    with store.transaction() as s:
        oid = ob.insert_outgoing(
            s.connection(), _outgoing("m1"), "q_async", {"msgId": "m1"}, NOW, _NEW_BOOKING
        )
    with store.transaction() as s:
        row = st.get_booking(s, "b1")
        assert row is not None and row.state == "REQUESTED" and row.created_at == NOW
        assert [(h.source, h.target, h.at) for h in st.history(s, "b1")] == [
            (None, "REQUESTED", NOW)
        ]
        (message,) = st.messages_for(s, "b1")
        assert (message.msg_id, message.status, message.sent_at) == ("m1", "queued", None)
        outbox = s.get(OutboxRow, oid)
        assert outbox is not None and outbox.message_id == message.id
        assert (outbox.queue, outbox.headers, outbox.published_at) == (
            "q_async",
            {"msgId": "m1"},
            None,
        )
        assert st.outbox_backlog(s) == 1
    with pytest.raises(IntegrityError), store.transaction() as s:
        ob.insert_outgoing(s.connection(), _outgoing("m2"), "q_async", {}, NOW, _NEW_BOOKING)
    with store.transaction() as s:  # the failed repeat left nothing behind
        assert [m.msg_id for m in st.messages_for(s, "b1")] == ["m1"]


def test_claim_marks_the_row_the_message_and_the_booking_once(store: st.Store) -> None:
    with store.transaction() as s:
        oid = ob.insert_outgoing(s.connection(), _outgoing("m1"), "q_async", {}, NOW, _NEW_BOOKING)
    with store.transaction() as s:
        claimed = ob.claim(s.connection(), oid, LATER, DEADLINE)
    assert claimed == ob.Claimed(True, "b1", NOW)
    with store.transaction() as s:
        row = st.get_booking(s, "b1")
        assert row is not None
        assert (row.state, row.deadline_at, row.updated_at) == ("SENT", DEADLINE, LATER)
        moves = [(h.source, h.target, h.at) for h in st.history(s, "b1")]
        assert moves == [(None, "REQUESTED", NOW), ("REQUESTED", "SENT", LATER)]
        (message,) = st.messages_for(s, "b1")
        assert (message.status, message.sent_at) == ("sent", LATER)
        outbox = s.get(OutboxRow, oid)
        assert outbox is not None and (outbox.published_at, outbox.attempts) == (LATER, 1)
    with store.transaction() as s:
        assert ob.claim(s.connection(), oid, LATER, DEADLINE) == ob.Claimed(False)


def test_claim_of_a_receipt_or_a_resend_leaves_the_booking_alone(store: st.Store) -> None:
    with store.transaction() as s:
        first = ob.insert_outgoing(
            s.connection(), _outgoing("m1"), "q_async", {}, NOW, _NEW_BOOKING
        )
    with store.transaction() as s:
        ob.claim(s.connection(), first, LATER, DEADLINE)
        receipt = ob.insert_outgoing(
            s.connection(), _outgoing("r1", msg_type="APPREC"), "q_async", {}, NOW
        )
        again = st.enqueue(s, st.messages_for(s, "b1")[0], "q_async", {}).id
    with store.transaction() as s:
        assert ob.claim(s.connection(), receipt, LATER, DEADLINE) == ob.Claimed(True)
        assert ob.claim(s.connection(), again, LATER, DEADLINE) == ob.Claimed(True)
    with store.transaction() as s:
        assert [h.target for h in st.history(s, "b1")] == ["REQUESTED", "SENT"]
        assert st.outbox_backlog(s) == 0


def test_a_rolled_back_claim_leaves_the_row_pending(store: st.Store) -> None:
    with store.transaction() as s:
        oid = ob.insert_outgoing(s.connection(), _outgoing("m1"), "q_async", {}, NOW, _NEW_BOOKING)
    claimed: list[ob.Claimed] = []

    def claim_then_fail() -> None:
        with store.transaction() as s:
            claimed.append(ob.claim(s.connection(), oid, LATER, DEADLINE))
            raise RuntimeError("publish failed")

    with pytest.raises(RuntimeError):
        claim_then_fail()
    assert claimed == [ob.Claimed(True, "b1", NOW)]
    with store.transaction() as s:
        row = st.get_booking(s, "b1")
        assert row is not None and row.state == "REQUESTED"
        assert st.outbox_backlog(s) == 1
        assert [h.target for h in st.history(s, "b1")] == ["REQUESTED"]


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)  # SQLite has no row locks
def test_a_second_relay_waits_for_the_first_and_never_claims_twice(store: st.Store) -> None:
    with store.transaction() as s:
        oid = ob.insert_outgoing(s.connection(), _outgoing("m1"), "q_async", {}, NOW, _NEW_BOOKING)
    results: list[ob.Claimed] = []

    def second() -> None:
        with store.transaction() as s2:
            results.append(ob.claim(s2.connection(), oid, LATER, DEADLINE))

    with store.transaction() as s:
        assert ob.claim(s.connection(), oid, LATER, DEADLINE).row
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second claim must wait for the row lock"
    thread.join(10)
    assert results == [ob.Claimed(False)]


def test_notification_key_prevents_a_second_write(store: st.Store) -> None:
    ctx = NoticeContext(clinic_name="Testlegekontoret")
    notice = Notice("13116900216", "confirmed", ctx, booking_id="b1")
    from worker.adapters.store.tables import NotificationRow

    with store.transaction() as s:
        notify(s, notice)
        notify(s, notice)  # the same key in the same unit of work
    with store.transaction() as s:
        notify(s, notice)  # and in the next one
    with store.transaction() as s:
        (row,) = s.scalars(select(NotificationRow)).all()
        assert (row.dedupe_key, row.booking_id, row.event) == ("b1:confirmed", "b1", "confirmed")

    with pytest.raises(IntegrityError), store.transaction() as s:
        s.add(
            NotificationRow(
                dedupe_key=notice.dedupe_key,
                patient_fnr="1",
                event="x",
                title="t",
                body="b",
                repliable=False,
                created_at=NOW,
            )
        )


def test_dead_letters(store: st.Store) -> None:
    with store.transaction() as s:
        dl = st.add_dead_letter(
            s,
            kind="message",
            reason="T01 not XML",
            source_queue="q",
            payload=b"\xff\xfe",
            error_code="T01",
        )
        dl_id = dl.id
    with store.transaction() as s:
        [row] = st.dead_letters(s)
        assert row.id == dl_id and row.payload == b"\xff\xfe" and row.error_code == "T01"


def test_appointment_upsert_updates_and_keeps_its_booking(store: st.Store) -> None:
    first = AppointmentView(
        uid="a1",
        patient_fnr="13116900216",
        clinic_her_id="8090001",
        clinic_name="Testlegekontoret",
        practitioner="August September",
        start=NOW,
        end=LATER,
        appointment_type="in_person",
        location="Testlegekontoret",
        status="Tildelt",
        booking_id="b1",
    )
    moved = replace(first, start=LATER, end=DEADLINE, practitioner=None, booking_id=None)
    with store.transaction() as s:
        upsert_appointment(s, first)
    with store.transaction() as s:
        upsert_appointment(s, moved)  # a clinic's change names no booking
    with store.transaction() as s:
        (row,) = s.scalars(select(AppointmentRow)).all()
        assert (row.start, row.end, row.practitioner) == (LATER, DEADLINE, None)
        assert row.booking_id == "b1" and row.start.tzinfo is not None
        assert row.clinic_name == "Testlegekontoret" and row.status == "Tildelt"


def test_booking_by_message_is_a_loaded_locked_row(store: st.Store) -> None:
    with store.transaction() as s:
        ob.insert_outgoing(s.connection(), _outgoing("m1"), "q_async", {}, NOW, _NEW_BOOKING)
    with store.transaction() as s:
        row = st.booking_by_message(s, "m1")
        assert row is not None and (row.id, row.state, row.created_at) == ("b1", "REQUESTED", NOW)
        assert row.created_at.tzinfo is not None
        assert st.sent_info(s, "m1") == ("out", None)
        assert st.booking_by_message(s, "no-such-message") is None
        row.state = "SENT"  # tracked like any loaded row: flushed at commit
    with store.transaction() as s:
        loaded = st.get_booking(s, "b1")
        assert loaded is not None and loaded.state == "SENT"
        assert st.booking_by_message(s, "m1") is loaded  # one object per row in a session


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)  # SQLite has no row locks
def test_booking_by_message_holds_the_row_lock(store: st.Store) -> None:
    with store.transaction() as s:
        ob.insert_outgoing(s.connection(), _outgoing("m1"), "q_async", {}, NOW, _NEW_BOOKING)
    seen: list[str] = []

    def second() -> None:
        with store.transaction() as s2:
            row = st.booking_by_message(s2, "m1")
            seen.append(row.state if row else "-")

    with store.transaction() as s:
        row = st.booking_by_message(s, "m1")
        assert row is not None
        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second reader must wait for the row lock"
        row.state = "SENT"
    thread.join(10)
    assert seen == ["SENT"]  # it read the row as the first transaction left it


def test_marks_after_publish_go_in_one_batch_each_at_its_own_time(store: st.Store) -> None:
    later = datetime(2026, 11, 26, 12, 0, 7, tzinfo=UTC)
    with store.transaction() as s:
        conn = s.connection()
        first = ob.insert_outgoing(conn, _outgoing("m1"), "q_async", {}, NOW, _NEW_BOOKING)
        other = {**_NEW_BOOKING, "id": "b2"}
        second = ob.insert_outgoing(conn, _outgoing("m2", "b2"), "q_async", {}, NOW, other)
        receipt = ob.insert_outgoing(conn, _outgoing("r1", msg_type="APPREC"), "q_async", {}, NOW)
        taken = ob.insert_outgoing(conn, _outgoing("m3", None), "q_async", {}, NOW)
    with store.transaction() as s:  # a relay got to this one first (its lease ran out)
        assert ob.claim(s.connection(), taken, NOW, DEADLINE).row
    marks = [
        ob.Mark(first, LATER, DEADLINE),
        ob.Mark(second, later, DEADLINE),
        ob.Mark(receipt, LATER, DEADLINE),
        ob.Mark(taken, LATER, DEADLINE),
    ]
    with store.transaction() as s:
        claimed = ob.claim_published(s.connection(), marks)
    assert claimed == {
        first: ob.Claimed(True, "b1", NOW),
        second: ob.Claimed(True, "b2", NOW),
        receipt: ob.Claimed(True),
    }
    with store.transaction() as s:
        for booking_id, at in (("b1", LATER), ("b2", later)):
            row = st.get_booking(s, booking_id)
            assert row is not None and (row.state, row.deadline_at) == ("SENT", DEADLINE)
            assert [(h.target, h.at) for h in st.history(s, booking_id)][1:] == [("SENT", at)]
            sent = [(m.msg_type, m.status, m.sent_at) for m in st.messages_for(s, booking_id)]
            assert sent[0] == ("T", "sent", at)
        assert st.outbox_backlog(s) == 0
    with store.transaction() as s:  # marked once: a second batch marks nothing
        assert ob.claim_published(s.connection(), marks) == {}
        assert [h.target for h in st.history(s, "b1")] == ["REQUESTED", "SENT"]


@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_a_mark_after_publish_does_not_wait_for_the_disk(store: st.Store) -> None:
    with store.transaction() as s:
        oid = ob.insert_outgoing(s.connection(), _outgoing("m1"), "q_async", {}, NOW, _NEW_BOOKING)
    with store.transaction() as s:
        assert ob.claim_published(s.connection(), [ob.Mark(oid, LATER, DEADLINE)])
        assert s.execute(text("SHOW synchronous_commit")).scalar() == "off"
    with store.transaction() as s:  # for that one transaction only
        assert s.execute(text("SHOW synchronous_commit")).scalar() == "on"


_NOTE = text(
    "INSERT INTO booking_history (booking_id, source, target, at) VALUES (:b, NULL, :t, :at)"
)


def _targets(store: st.Store, booking_id: str = "b1") -> list[str]:
    with store.transaction() as s:
        return [row.target for row in st.history(s, booking_id)]


def test_later_writes_go_at_commit_in_order_after_the_flush(store: st.Store) -> None:
    seen: list[object] = []
    with store.transaction() as s:
        _booking(s)  # pending in the ORM: flushed before the queued writes that need it
        for target in ("A", "B", "C"):
            st.later(s, _NOTE, {"b": "b1", "t": target, "at": NOW})
        returning = text("SELECT count(*) FROM booking_history WHERE booking_id = :b")
        st.later(s, returning, {"b": "b1"}, then=seen.append)
        assert seen == []  # nothing sent yet
    assert _targets(store) == ["A", "B", "C"]
    assert [tuple(row) for row in seen] == [(3,)]  # type: ignore[call-overload]


def test_later_writes_are_dropped_on_rollback(store: st.Store) -> None:
    with store.transaction() as s:
        _booking(s)

    def handler_fails() -> None:
        with store.transaction() as s:
            st.later(s, _NOTE, {"b": "b1", "t": "LOST", "at": NOW})
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        handler_fails()
    with store.transaction() as s:
        st.later(s, _NOTE, {"b": "b1", "t": "KEPT", "at": NOW})
    assert _targets(store) == ["KEPT"]


def test_a_failing_later_write_fails_the_whole_commit(
    store: st.Store, caplog: pytest.LogCaptureFixture
) -> None:
    with store.transaction() as s:
        _booking(s)

    def commit_fails() -> None:
        with store.transaction() as s:
            st.later(s, _NOTE, {"b": "b1", "t": "FIRST", "at": NOW})
            st.later(s, _NOTE, {"b": "no-such-booking", "t": "X", "at": NOW})  # foreign key
            for after in ("Y", "Z", "W"):  # writes queued behind the failing one
                st.later(s, _NOTE, {"b": "b1", "t": after, "at": NOW})
            row = MessageRow(
                msg_id="m9", direction="in", msg_type="X", xml=b"", status="x", created_at=NOW
            )
            s.add(row)

    with caplog.at_level(logging.WARNING):
        for _ in range(5):  # whether the driver sees the error early varies: a few tries
            with pytest.raises(IntegrityError):
                commit_fails()
    assert not caplog.records  # the error is raised, not also logged by the driver
    with store.transaction() as s:
        assert st.history(s, "b1") == [] and st.get_message(s, "m9") is None
    with store.transaction() as s:  # the pooled connection is fine afterwards
        st.later(s, _NOTE, {"b": "b1", "t": "AFTER", "at": NOW})
    assert _targets(store) == ["AFTER"]


def test_a_held_booking_writes_only_what_changed_at_commit(store: st.Store) -> None:
    with store.transaction() as s:
        ob.insert_outgoing(s.connection(), _outgoing("m1"), "q_async", {}, NOW, _NEW_BOOKING)
    with store.transaction() as s:
        row = st.booking_by_message(s, "m1")
        assert row is not None and st.get_booking(s, "b1", lock=True) is row  # one object
        assert st.held_booking(s, "b1") is row and row not in s  # outside the unit of work
        row.state, row.appointment_uid, row.updated_at = "CONFIRMED", "uid-1", LATER
        row.request = {"slot": {"id": "s1"}}  # a JSON column goes through as JSON
        in_db = select(BookingRow.state).where(BookingRow.id == "b1")
        assert s.connection().execute(in_db).scalar_one() == "REQUESTED"  # written at commit
    with store.transaction() as s:
        stored = st.get_booking(s, "b1")
        assert stored is not None
        assert (stored.state, stored.appointment_uid, stored.updated_at) == (
            "CONFIRMED",
            "uid-1",
            LATER,
        )
        assert stored.created_at == NOW and stored.action == "reserve"
        assert stored.request == {"slot": {"id": "s1"}}


def test_a_held_booking_is_forgotten_on_rollback(store: st.Store) -> None:
    with store.transaction() as s:
        ob.insert_outgoing(s.connection(), _outgoing("m1"), "q_async", {}, NOW, _NEW_BOOKING)

    def handler_fails() -> None:
        with store.transaction() as s:
            row = st.booking_by_message(s, "m1")
            assert row is not None
            row.state = "CONFIRMED"
            raise RuntimeError("handler failed")

    with pytest.raises(RuntimeError):
        handler_fails()
    with store.transaction() as s:
        stored = st.get_booking(s, "b1")
        assert stored is not None and stored.state == "REQUESTED"
        assert st.held_booking(s, "b1") is None


def test_statements_run_on_connections_that_are_autocommit_from_the_start(
    pg_schema: str,
) -> None:
    store = st.Store.open(PG_URL, pg_schema)
    try:
        with store.statement() as conn:
            assert conn.connection.driver_connection.autocommit  # type: ignore[union-attr]
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        with store.transaction() as s:  # the session's pool is a different one
            driver = s.connection().connection.driver_connection
            assert driver is not None and not driver.autocommit
    finally:
        store.dispose()
