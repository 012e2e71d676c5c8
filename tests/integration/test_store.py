"""The store on both backends: migrations, unique keys, outbox locking, dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.conftest import PG_URL
from worker.adapters import store as st
from worker.adapters.migrate import current_revision, head_revision, upgrade
from worker.adapters.tables import BookingRow, MessageRow
from worker.errors import NotMigrated
from worker.inbox import Notice, notify
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


def test_outbox_pending_and_published(store: st.Store) -> None:
    with store.transaction() as s:
        _booking(s)
        ids = [st.enqueue(s, _message(f"m{i}"), "q_async", {"msgId": f"m{i}"}).id for i in range(3)]
    with store.transaction() as s:
        pairs = st.pending_messages(s, 10)
        assert [r.id for r, _m in pairs] == ids
        assert [m.msg_id for _r, m in pairs] == ["m0", "m1", "m2"]
        pairs[0][0].published_at = NOW
    with store.transaction() as s:
        assert st.outbox_backlog(s) == 2
        assert [r.id for r, _m in st.pending_messages(s, 10, ids=[ids[2]])] == [ids[2]]


def test_notification_key_prevents_a_second_write(store: st.Store) -> None:
    ctx = NoticeContext(clinic_name="Testlegekontoret")
    notice = Notice("13116900216", "confirmed", ctx, booking_id="b1")
    with store.transaction() as s:
        assert notify(s, notice) is True
        assert notify(s, notice) is False
    from worker.adapters.tables import NotificationRow

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
