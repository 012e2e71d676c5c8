"""The SQLAlchemy store: engine, migrations check, and the queries the handlers use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from worker.adapters.tables import (
    BookingRow,
    DeadLetterRow,
    HistoryRow,
    MessageRow,
    OutboxRow,
)
from worker.domain.booking import Action, Booking, State
from worker.errors import NotMigrated, StoreUnavailable

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def make_engine(url: str, schema: str | None = None) -> Engine:
    """Build the engine: SQLite tuned for concurrent readers, PostgreSQL with a pool."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    connect_args: dict[str, Any] = {}
    if schema:
        connect_args["options"] = f"-csearch_path={schema}"
    return create_engine(
        url, pool_size=5, max_overflow=5, pool_pre_ping=True, connect_args=connect_args
    )


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite would run SELECTs outside any transaction and so lose updates between
        # processes; take transaction control back and begin every one IMMEDIATE (below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # WAL lets the CLI read while workers write; busy_timeout waits instead of failing.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # SQLite has no row locks: IMMEDIATE takes the write lock up front, so transactions
        # from several worker processes run one after another instead of overwriting.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Store:
    """Sessions and transactions over one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error."""
        session = self._sessions()
        try:
            with session.begin():
                yield session
        except OperationalError as exc:
            raise StoreUnavailable(f"database error: {exc.orig!s}"[:300]) from exc
        finally:
            session.close()

    @property
    def is_postgres(self) -> bool:
        """True on PostgreSQL (row locks with SKIP LOCKED are available)."""
        return self.engine.dialect.name == "postgresql"

    def check_migrated(self) -> None:
        """Refuse to run on a database whose schema is not at the latest migration."""
        from worker.adapters.migrate import current_revision, head_revision

        current, head = current_revision(self.engine), head_revision()
        if current != head:
            raise NotMigrated(
                f"database is at migration {current or 'none'}, code needs {head}: "
                "run `timebok migrate` first"
            )

    def ping(self) -> None:
        """Raise StoreUnavailable when the database does not answer."""
        with self.transaction() as s:
            s.execute(text("SELECT 1"))


# -- bookings ---------------------------------------------------------------------------


def get_booking(s: Session, booking_id: str, *, lock: bool = False) -> BookingRow | None:
    """The booking row with this id (optionally locked FOR UPDATE)."""
    stmt = select(BookingRow).where(BookingRow.id == booking_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return s.scalars(stmt).first()


def find_booking_by_ref(s: Session, ref: str) -> BookingRow | None:
    """A booking by its id, or by the appointment uid / slot id it concerns."""
    row = get_booking(s, ref, lock=True)
    if row is not None:
        return row
    stmt = (
        select(BookingRow)
        .where((BookingRow.appointment_uid == ref) | (BookingRow.slot_id == ref))
        .where(BookingRow.action != Action.CANCEL.value)
        .order_by(BookingRow.created_at.desc())
        .with_for_update()
    )
    return s.scalars(stmt).first()


def to_domain(row: BookingRow) -> Booking:
    """The pure domain object for a stored booking."""
    return Booking(id=row.id, action=Action(row.action), state=State(row.state), reason=row.reason)


def save_moves(s: Session, row: BookingRow, booking: Booking) -> None:
    """Persist the domain object's new state and one history row per recorded move."""
    for ev in booking.events:
        s.add(
            HistoryRow(
                booking_id=row.id,
                source=ev.source.value,
                target=ev.target.value,
                reason=ev.reason,
                at=ev.at,
            )
        )
    booking.events.clear()
    row.state = booking.state.value
    row.reason = booking.reason
    row.updated_at = utcnow()


def history(s: Session, booking_id: str) -> list[HistoryRow]:
    """The state changes of a booking, oldest first."""
    stmt = select(HistoryRow).where(HistoryRow.booking_id == booking_id).order_by(HistoryRow.id)
    return list(s.scalars(stmt))


def bookings_by_state(s: Session) -> dict[str, int]:
    """How many bookings are in each state."""
    rows = s.execute(select(BookingRow.state, func.count()).group_by(BookingRow.state))
    return {state: int(n) for state, n in rows}


# -- messages and outbox ------------------------------------------------------------------


def get_message(s: Session, msg_id: str) -> MessageRow | None:
    """The stored message with this MsgId."""
    return s.scalars(select(MessageRow).where(MessageRow.msg_id == msg_id)).first()


def messages_for(s: Session, booking_id: str) -> list[MessageRow]:
    """Every message in or out for a booking, in order."""
    stmt = select(MessageRow).where(MessageRow.booking_id == booking_id).order_by(MessageRow.id)
    return list(s.scalars(stmt))


def enqueue(s: Session, message: MessageRow, queue: str, headers: dict[str, str]) -> OutboxRow:
    """Put a message in the outbox, committed with the state change that produced it."""
    s.add(message)
    s.flush()
    row = OutboxRow(
        message_id=message.id, queue=queue, headers=headers, created_at=utcnow(), attempts=0
    )
    s.add(row)
    s.flush()
    return row


def pending_outbox(s: Session, limit: int, ids: list[int] | None = None) -> list[OutboxRow]:
    """Unpublished outbox rows, locked so parallel relays never take the same row."""
    stmt = select(OutboxRow).where(OutboxRow.published_at.is_(None))
    if ids is not None:
        stmt = stmt.where(OutboxRow.id.in_(ids))
    stmt = stmt.order_by(OutboxRow.id).limit(limit).with_for_update(skip_locked=True)
    return list(s.scalars(stmt))


def outbox_backlog(s: Session) -> int:
    """How many outbox rows are not yet published."""
    stmt = select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None))
    return int(s.scalar(stmt) or 0)


# -- dead letters ----------------------------------------------------------------------


def add_dead_letter(
    s: Session,
    *,
    kind: str,
    reason: str,
    source_queue: str,
    payload: bytes,
    error_code: str | None = None,
    booking_id: str | None = None,
    msg_id: str | None = None,
    headers: dict[str, Any] | None = None,
    attempts: int = 1,
) -> DeadLetterRow:
    """Record something that could not be processed, with the raw payload for replay."""
    row = DeadLetterRow(
        kind=kind,
        reason=reason,
        error_code=error_code,
        source_queue=source_queue,
        attempts=attempts,
        payload=payload,
        headers=headers,
        booking_id=booking_id,
        msg_id=msg_id,
        created_at=utcnow(),
    )
    s.add(row)
    s.flush()
    return row


def dead_letters(s: Session, *, include_replayed: bool = False) -> list[DeadLetterRow]:
    """Dead letters, newest first."""
    stmt = select(DeadLetterRow).order_by(DeadLetterRow.id.desc())
    if not include_replayed:
        stmt = stmt.where(DeadLetterRow.replayed_at.is_(None))
    return list(s.scalars(stmt))


def get_dead_letter(s: Session, dl_id: int) -> DeadLetterRow | None:
    """One dead letter by id."""
    return s.get(DeadLetterRow, dl_id)
