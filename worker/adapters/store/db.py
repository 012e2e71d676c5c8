"""The SQLAlchemy store: engine, migrations check, and the queries the handlers use."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar, cast

from psycopg.pq import ExecStatus
from psycopg.types.json import Json
from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, make_transient_to_detached, sessionmaker
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.elements import TextClause

from worker import metrics
from worker.adapters.store.read import Reader
from worker.adapters.store.tables import (
    BookingRow,
    DeadLetterRow,
    HistoryRow,
    MessageRow,
    OutboxRow,
    UtcDateTime,
)
from worker.domain.booking import Action, Booking, State
from worker.errors import NotMigrated, StoreUnavailable

log = logging.getLogger("timebok.store")
moves_log = logging.getLogger("timebok.booking")
T = TypeVar("T")
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
IDLE_PING_AFTER = 1.0  # seconds a pooled connection may idle before checkout pings it


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def make_engine(url: str, schema: str | None = None, *, autocommit: bool = False) -> Engine:
    """Build the engine: SQLite tuned for concurrent readers, PostgreSQL with a pool.

    `autocommit` (PostgreSQL): connections that are in autocommit mode from the start,
    for `Store.statement`; switching a pooled connection there and back on every checkout
    cost a fifth of such a statement's client CPU.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    connect_args: dict[str, Any] = {}
    if schema:
        connect_args["options"] = f"-csearch_path={schema}"
    options: dict[str, Any] = {"pool_size": 5, "max_overflow": 5}
    if autocommit:
        options = {"pool_size": 2, "max_overflow": 8, "isolation_level": "AUTOCOMMIT"}
    engine = create_engine(url, connect_args=connect_args, hide_parameters=True, **options)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Pre-ping a pooled connection only when it sat idle: a busy worker pays no round trip.

    pool_pre_ping would add a SELECT 1 to every transaction. A connection the server dropped
    while it idled is still caught here; one dropped mid-burst fails its transaction once
    (StoreUnavailable, retried), after which SQLAlchemy invalidates the whole pool.
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_AFTER:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError("pooled connection is gone") from exc


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

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


_AFTER_COMMIT = "timebok.after_commit"


def after_commit(s: Session, hook: Callable[[], None]) -> None:
    """Run `hook` once this unit of work has committed; never when it rolls back."""
    s.info.setdefault(_AFTER_COMMIT, []).append(hook)


def _run_hooks(hooks: list[Callable[[], None]]) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:  # metrics and log lines must never undo a committed change
            log.warning("after-commit hook failed", exc_info=True)


class Store:
    """Sessions and transactions over one engine (plus autocommit connections)."""

    def __init__(self, engine: Engine, autocommit: Engine | None = None) -> None:
        self.engine = engine
        self._autocommit = autocommit  # PostgreSQL: `make_engine(..., autocommit=True)`
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, schema: str | None = None) -> Store:
        """The store for a database URL, with its autocommit connections on PostgreSQL."""
        engine = make_engine(url, schema)
        if engine.dialect.name != "postgresql":
            return cls(engine)
        return cls(engine, make_engine(url, schema, autocommit=True))

    def dispose(self, *, close: bool = True) -> None:
        """Release pooled connections (close=False in a forked child: the parent's)."""
        for engine in (self.engine, self._autocommit):
            if engine is not None:
                engine.dispose(close=close)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error."""
        session = self._sessions()
        try:
            with session.begin():
                yield session
            hooks = session.info.pop(_AFTER_COMMIT, [])
        except OperationalError as exc:
            raise StoreUnavailable(f"database error: {exc.orig!s}"[:300]) from exc
        finally:
            session.close()
        _run_hooks(hooks)

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A connection for statements that each commit on their own.

        PostgreSQL: autocommit, so one statement costs one round trip and no BEGIN/COMMIT.
        SQLite (in-process, where a transaction costs nothing): one short transaction.
        """
        try:
            if self._autocommit is not None:
                with self._autocommit.connect() as conn:
                    yield conn
            elif self.is_postgres:
                with self.engine.connect() as conn:
                    yield conn.execution_options(isolation_level="AUTOCOMMIT")
            else:
                with self.engine.begin() as conn:
                    yield conn
        except OperationalError as exc:
            raise StoreUnavailable(f"database error: {exc.orig!s}"[:300]) from exc

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        """The read side's queries (`worker.adapters.store.read`) on a pooled connection."""
        raw = self.engine.raw_connection()
        try:
            if not self.is_postgres:  # isolation_level None (_pragmas): our own BEGIN
                cursor = raw.cursor()
                cursor.execute("BEGIN")
                cursor.close()
            yield Reader(raw, postgres=self.is_postgres)
        except DBAPIError as exc:
            raise StoreUnavailable(f"database error: {exc.orig!s}"[:300]) from exc
        except self.engine.dialect.loaded_dbapi.OperationalError as exc:
            raise StoreUnavailable(f"database error: {exc!s}"[:300]) from exc
        finally:
            raw.rollback()
            raw.close()

    @property
    def is_postgres(self) -> bool:
        """True on PostgreSQL (row locks with SKIP LOCKED are available)."""
        return self.engine.dialect.name == "postgresql"

    def check_migrated(self) -> None:
        """Refuse to run on a database whose schema is not at the latest migration."""
        from worker.adapters.store.migrate import current_revision, head_revision

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
    """The booking row with this id (optionally locked, FOR NO KEY UPDATE)."""
    held = held_booking(s, booking_id)
    if held is not None:  # read and locked in this unit of work already
        return held
    stmt = select(BookingRow).where(BookingRow.id == booking_id)
    if lock:
        stmt = stmt.with_for_update(key_share=True).execution_options(populate_existing=True)
    return s.scalars(stmt).first()


def to_domain(row: BookingRow) -> Booking:
    """The pure domain object for a stored booking."""
    return Booking(id=row.id, action=Action(row.action), state=State(row.state), reason=row.reason)


_INSERT_HISTORY = text(
    "INSERT INTO booking_history (booking_id, source, target, reason, at)"
    " VALUES (:booking_id, :source, :target, :reason, :at)"
).bindparams(bindparam("at", type_=UtcDateTime()))


Move = tuple[str | None, str, str | None, datetime]  # source, target, reason, at


def add_history(s: Session, booking_id: str, moves: Sequence[Move]) -> None:
    """Queue history rows, in order, with the unit of work's other writes (`later`).

    Plain SQL (no unit-of-work for append-only rows); they are sent after the ORM flush,
    so a booking created in the same unit of work is in the database first.
    """
    for src, dst, why, at in moves:
        values = {"booking_id": booking_id, "source": src, "target": dst, "reason": why, "at": at}
        later(s, _INSERT_HISTORY, values)


def save_moves(s: Session, row: BookingRow, booking: Booking) -> None:
    """Persist the domain object's new state and one history row per recorded move."""
    add_history(
        s, row.id, [(e.source.value, e.target.value, e.reason, e.at) for e in booking.events]
    )
    _announce(s, row, [(ev.source.value, ev.target.value) for ev in booking.events])
    booking.events.clear()
    row.state = booking.state.value
    row.reason = booking.reason
    row.updated_at = utcnow()


def observe_created(s: Session, booking_id: str) -> None:
    """Log and count a new booking's first state (REQUESTED) once it is committed."""
    row = s.get(BookingRow, booking_id)  # in the session already: no query
    if row is not None:
        _announce(s, row, [(None, State.REQUESTED.value)])


def _announce(s: Session, row: BookingRow, moves: list[tuple[str | None, str]]) -> None:
    if moves:
        facts = (row.id, row.clinic_her_id, row.conversation_id, row.created_at)
        after_commit(s, partial(announce_moves, *facts, moves))


def announce_moves(
    booking_id: str,
    her_id: str | None,
    msg_id: str | None,
    created_at: datetime | None,
    moves: Sequence[tuple[str | None, str]],
    at: datetime | None = None,
) -> None:
    """One log line and one count per committed state change (never the reason: free text).

    `at`: when the changes happened, if not just now (a mark written after its publish).
    """
    for source, target in moves:
        moves_log.info(
            "booking state changed",
            extra={
                "booking_id": booking_id,
                "from_state": source,
                "to_state": target,
                "msg_id": msg_id,
                "her_id": her_id,
            },
        )
        metrics.state_changed(target)
        if source == State.REQUESTED.value and target == State.SENT.value:
            metrics.request_to_epj(metrics.since(created_at, at) or 0.0)


def history(s: Session, booking_id: str) -> list[HistoryRow]:
    """The state changes of a booking, oldest first."""
    stmt = select(HistoryRow).where(HistoryRow.booking_id == booking_id).order_by(HistoryRow.id)
    return list(s.scalars(stmt))


def bookings_by_state(s: Session) -> dict[str, int]:
    """How many bookings are in each state."""
    rows = s.execute(select(BookingRow.state, func.count()).group_by(BookingRow.state))
    return {state: int(n) for state, n in rows}


# -- messages and outbox ------------------------------------------------------------------


def get_message(s: Session, msg_id: str, *, lock: bool = False) -> MessageRow | None:
    """The stored message with this MsgId (remembered for the session once found),
    optionally locked (FOR NO KEY UPDATE: see worker.adapters.store.outbox)."""
    # One inbound message looks up the message it answers more than once (metrics, then
    # correlation); MsgIds never change and rows are never deleted, so a hit stays valid.
    found: dict[str, MessageRow] = s.info.setdefault("timebok.messages", {})
    row = None if lock else found.get(msg_id)
    if row is None:
        stmt = select(MessageRow).where(MessageRow.msg_id == msg_id)
        if lock:
            stmt = stmt.with_for_update(key_share=True).execution_options(populate_existing=True)
        row = s.scalars(stmt).first()
        if row is not None:
            found[msg_id] = row
    return row


def fetch_pg(conn: Connection, sql: str, params: dict[str, Any]) -> Any:
    """One hot statement straight on the driver (psycopg prepares it after a few runs).

    Returns its first row (None without one). Errors come out as SQLAlchemy's
    (IntegrityError, OperationalError), like any other.
    """
    return _on_driver(conn, sql, params, _first_row)


def fetch_all_pg(conn: Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    """As `fetch_pg`, all rows."""
    return _on_driver(conn, sql, params, _all_rows)


def _on_driver(conn: Connection, sql: str, params: dict[str, Any], rows: Callable[[Any], T]) -> T:
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, params)
        return rows(cursor)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _dbapi_error(conn, cursor, sql, params, exc) from exc
    finally:
        cursor.close()


def _first_row(cursor: Any) -> Any:
    return cursor.fetchone() if _has_rows(cursor) else None


def _all_rows(cursor: Any) -> list[Any]:
    return list(cursor.fetchall()) if _has_rows(cursor) else []


def _has_rows(cursor: Any) -> bool:
    # The result status, not `cursor.description`, which builds a column object per column.
    return cursor.pgresult is not None and cursor.pgresult.status == ExecStatus.TUPLES_OK


def _dbapi_error(conn: Connection, cursor: Any, sql: str, params: Any, exc: Any) -> Any:
    """The driver's error as SQLAlchemy's (IntegrityError, OperationalError, ...)."""
    gone = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
    if gone:
        conn.invalidate(exc)  # never back into the pool
    return DBAPIError.instance(
        sql,
        params,
        exc,
        conn.dialect.loaded_dbapi.Error,
        hide_parameters=True,  # values are patient data
        connection_invalidated=gone,
    )


_LATER = "timebok.later"  # session.info: the writes `later` queued, in order

Then = Callable[[Any], None]


def later(
    s: Session, statement: TextClause | str, params: dict[str, Any], then: Then | None = None
) -> None:
    """Queue a plain-SQL write for the end of this unit of work; `then(first row)` after it.

    For writes nothing in the same unit of work reads back (history rows, notifications,
    appointments, the message an inbound reply is stored as). They are sent when the
    session commits, after the ORM flush and in the order queued; on PostgreSQL all of
    them and the COMMIT go in one pipeline: one round trip instead of one per statement.
    A failed write fails the commit (with SQLAlchemy's error, as from `fetch_pg`), and a
    rollback drops them unsent. On PostgreSQL the values go to psycopg as they are (str,
    int, bool, bytes, aware datetimes), skipping SQLAlchemy's bind processing; a `str`
    statement is psycopg's SQL, for PostgreSQL only.
    """
    s.info.setdefault(_LATER, []).append((statement, params, then))


@event.listens_for(Session, "before_commit")
def _write_behind(s: Session) -> None:
    if _LATER not in s.info and _HELD not in s.info:
        return  # most units of work queue nothing
    on_pg = s.get_bind().dialect.name == "postgresql"
    writes: list[tuple[TextClause | str, dict[str, Any], Then | None]] = [
        *_held_updates(s, on_driver=on_pg),
        *s.info.pop(_LATER, []),
    ]
    if not writes:
        return
    s.flush()  # rows the queued writes refer to (a new booking, say) go first
    conn = s.connection()
    if not on_pg:
        for statement, params, then in writes:
            if isinstance(statement, str):
                raise TypeError("psycopg SQL runs on PostgreSQL only")
            result = conn.execute(statement, params)
            if then is not None:
                then(result.first() if result.returns_rows else None)
        return
    _pipeline(
        conn,
        [
            (stmt if isinstance(stmt, str) else _pyformat(stmt), params, then)
            for stmt, params, then in writes
        ],
    )


def _pipeline(conn: Connection, writes: list[tuple[str, dict[str, Any], Then | None]]) -> None:
    """Send the writes and the COMMIT in one psycopg pipeline, then hand out first rows.

    SQLAlchemy's own COMMIT that follows a success finds the driver's transaction closed
    and sends nothing (psycopg's commit() is a no-op outside a transaction). A failed write
    is raised once, as SQLAlchemy's error: it is caught inside the pipeline block, so the
    pipeline's end (which fails again, "pipeline aborted") has nothing to log over it.
    """
    driver: Any = conn.connection.driver_connection
    dbapi_error = conn.dialect.loaded_dbapi.Error
    cursors: list[tuple[Any, Then | None]] = []
    failed: Exception | None = None
    try:
        with driver.pipeline():
            try:
                for sql, params, then in writes:
                    cursor = driver.cursor()
                    cursors.append((cursor, then))
                    cursor.execute(sql, params)
                driver.commit()
            except dbapi_error as exc:
                failed = exc
        if failed is None:
            for cursor, then in cursors:
                if then is not None:
                    then(_first_row(cursor))
    except dbapi_error as exc:
        failed = failed or exc
    finally:
        for cursor, _then in cursors:
            cursor.close()
    if failed is not None:
        sent = "; ".join(sql for sql, _params, _then in writes)
        raise _dbapi_error(conn, None, sent, None, failed) from failed


@event.listens_for(Session, "after_soft_rollback")
def _drop_writes(s: Session, _previous: Any) -> None:
    s.info.pop(_LATER, None)
    s.info.pop(_HELD, None)


@cache
def _pyformat(statement: TextClause) -> str:
    """The statement with psycopg's placeholders: `:name` -> `%(name)s`."""
    return _NAMED.sub(r"%(\1)s", statement.text)


_NAMED = re.compile(r"(?<![:\w]):(\w+)")


_SENT = "timebok.sent"  # session cache: msg_id -> (direction, sent_at)


_BOOKING_COLUMNS = tuple(c.key for c in BookingRow.__table__.columns)
# Column names from the table model (no input reaches the text); the message id is a parameter.
_BOOKING_BY_MESSAGE_PG = " ".join(
    (
        "SELECT m.direction, m.sent_at,",
        ", ".join(f"b.{c}" for c in _BOOKING_COLUMNS),
        "FROM bookings b JOIN messages m ON m.booking_id = b.id",
        "WHERE m.msg_id = %(msg_id)s FOR NO KEY UPDATE OF b",
    )
)


def booking_by_message(s: Session, msg_id: str) -> BookingRow | None:
    """The booking a stored message belongs to, locked (FOR NO KEY UPDATE), in one query.

    The message's direction and send time are remembered for the session (`sent_info`);
    the message itself (with its document) is not loaded. The row is read with plain SQL
    (on PostgreSQL straight on the driver) and held by the unit of work, which writes its
    changes at commit (`_as_loaded`): a reply's hot path, where the ORM's own load and
    flush cost more than the queries. SQLite has no row locks: its transactions take the
    write lock up front (BEGIN IMMEDIATE).
    """
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        found = fetch_pg(conn, _BOOKING_BY_MESSAGE_PG, {"msg_id": msg_id})
    else:
        table = cast(Table, BookingRow.__table__)
        stmt = (
            select(MessageRow.direction, MessageRow.sent_at, *table.columns)
            .join(MessageRow, MessageRow.booking_id == table.c.id)
            .where(MessageRow.msg_id == msg_id)
        )
        found = conn.execute(stmt).first()
    if found is None:
        return None
    direction, sent_at, *values = found
    booking = _as_loaded(s, dict(zip(_BOOKING_COLUMNS, values, strict=True)))
    s.info.setdefault(_SENT, {})[msg_id] = (direction, _utc(sent_at))
    return booking


def _as_loaded(s: Session, values: dict[str, Any]) -> BookingRow:
    """A BookingRow from a row read just now, whose changes are written at commit.

    The row stays out of the session (adding it and flushing it through the unit of work
    cost more CPU than the rest of a reply): `_write_behind` compares it with the values
    read and queues one UPDATE of the changed columns with the unit of work's other writes.
    """
    known = s.identity_map.get(identity_key(BookingRow, values["id"]))
    if known is not None:  # already in this session: refresh it (as populate_existing)
        s.refresh(known)
        return known
    held: dict[str, tuple[BookingRow, dict[str, Any]]] = s.info.setdefault(_HELD, {})
    if values["id"] in held:
        return held[values["id"]][0]
    for key in ("created_at", "updated_at", "deadline_at"):
        values[key] = _utc(values[key])
    row = BookingRow(**values)
    make_transient_to_detached(row)  # no pending changes: as freshly loaded
    held[row.id] = (row, values)
    return row


_HELD = "timebok.held"  # session.info: booking id -> (row read by `_as_loaded`, values read)


def held_booking(s: Session, booking_id: str) -> BookingRow | None:
    """The booking row this unit of work holds (read by `booking_by_message`), if any."""
    held = s.info.get(_HELD, {}).get(booking_id)
    return None if held is None else held[0]


def _held_updates(s: Session, *, on_driver: bool) -> list[tuple[TextClause, dict[str, Any], None]]:
    """One UPDATE per held booking row that changed, of the changed columns only.

    `on_driver`: the values go to psycopg as they are, a JSON column's wrapped.
    """
    updates: list[tuple[TextClause, dict[str, Any], None]] = []
    for row, read in s.info.pop(_HELD, {}).values():
        changed = tuple(c for c in _BOOKING_COLUMNS if getattr(row, c) != read[c])
        if changed:
            params = {c: getattr(row, c) for c in changed}
            for c in _JSON_COLUMNS.intersection(changed) if on_driver else ():
                params[c] = None if params[c] is None else Json(params[c])
            updates.append((_update_booking(changed), {**params, "id": row.id}, None))
    return updates


_JSON_COLUMNS = frozenset(
    c.key for c in cast(Table, BookingRow.__table__).columns if isinstance(c.type, JSON)
)


@cache
def _update_booking(columns: tuple[str, ...]) -> TextClause:
    table = cast(Table, BookingRow.__table__)
    sets = ", ".join(f'"{c}" = :{c}' for c in columns)  # names from the table model only
    return text(f"UPDATE bookings SET {sets} WHERE id = :id").bindparams(  # noqa: S608
        *(bindparam(c, type_=table.c[c].type) for c in columns)
    )


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def sent_info(s: Session, msg_id: str) -> tuple[str, datetime | None] | None:
    """(direction, sent_at) of a stored message, or None when there is no such message."""
    known: tuple[str, datetime | None] | None = s.info.get(_SENT, {}).get(msg_id)
    if known is not None:
        return known
    row = get_message(s, msg_id)
    return None if row is None else (row.direction, row.sent_at)


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
    after_commit(s, partial(metrics.dead_letter, kind))
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
