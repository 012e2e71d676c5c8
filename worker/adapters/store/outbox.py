"""The outbox on the hot path, in as few statements as the database allows.

`insert_outgoing` writes the booking (when new), its first history row, the message and its
outbox row; on PostgreSQL as one statement (data-modifying CTEs), elsewhere as four.
`claim` marks the row published, the message sent and the booking SENT (with its history
row); on PostgreSQL one statement, elsewhere up to four. Two ways to use them (worker.flows.relay):

- fresh rows (a booking or receipt just written): inserted with a lease, so other relays
  leave them alone; the writer publishes, then marks them (`claim_published`, the marks of
  several published rows in one statement: worker.adapters.store.marks). Each step is a
  statement of its own, with no transaction held open around the publish. A crash between
  publish and mark republishes the same bytes with the same MsgId once the lease is over; a reply
  that overtakes the mark finds its booking REQUESTED and moves it on (worker.flows.replies).
- everything else (the beat relay, resends, replays): claim inside a transaction, publish,
  commit. The UPDATE takes the row locks first, so parallel relays never both publish a
  row, and a failed publish rolls the marks back.

Row locks are taken in one order everywhere: outbox rows, then messages, then bookings
(the order of these statements), and within a batch by outbox id. A handler that changes a
message and its booking (an AppRec in, worker.flows.inbound) locks the message first.
Explicit row locks are FOR NO KEY UPDATE, never FOR UPDATE: inserting a row that references
a locked one (an outbox row for a message, a message for a booking) takes a KEY SHARE lock on
it, which FOR UPDATE would block. A resend (bookings locked, then a new outbox row for their
message) would then wait on an AppRec handler holding that message while it waits for the
booking: a deadlock in the other order. FOR NO KEY UPDATE still excludes every other locker.

On PostgreSQL the statements go straight to the driver as plain SQL (psycopg prepares them
after a few runs): building and compiling a Core statement per message cost more CPU than
the database spends running it. The integration tests run both paths on both databases.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, case, func, insert, update

from worker.adapters.store.db import fetch_all_pg, fetch_pg
from worker.adapters.store.tables import BookingRow, HistoryRow, MessageRow, OutboxRow
from worker.domain.booking import Action, Booking, State

bookings = cast(Table, BookingRow.__table__)
history = cast(Table, HistoryRow.__table__)
messages = cast(Table, MessageRow.__table__)
outbox = cast(Table, OutboxRow.__table__)


def _sent_move() -> tuple[str, str]:
    """The move a publish makes, taken from the domain so the SQL cannot disagree with it."""
    booking = Booking("-", Action.RESERVE)
    booking.mark_sent()
    (event,) = booking.events
    return event.source.value, event.target.value


PUBLISHED_FROM, PUBLISHED_TO = _sent_move()


@dataclass(frozen=True)
class Claimed:
    """What `claim` marked: the row (False: another relay has it) and the booking move."""

    row: bool
    booking_id: str | None = None
    created_at: datetime | None = None


# PostgreSQL: the whole insert is one statement; the message names its booking through b.
_INSERT_WITH_BOOKING_PG = """
WITH b AS (
    INSERT INTO bookings (id, conversation_id, action, state, patient_fnr, clinic_her_id,
        process, slot_id, target_id, request, resends, created_at, updated_at)
    VALUES (%(b_id)s, %(b_conversation_id)s, %(b_action)s, %(b_state)s, %(b_patient_fnr)s,
        %(b_clinic_her_id)s, %(b_process)s, %(b_slot_id)s, %(b_target_id)s,
        %(b_request)s::json, %(b_resends)s, %(b_created_at)s, %(b_updated_at)s)
    RETURNING id
), h AS (
    INSERT INTO booking_history (booking_id, source, target, at)
    SELECT id, NULL, %(first_state)s, %(now)s FROM b
), m AS (
    INSERT INTO messages (msg_id, direction, booking_id, msg_type, function, sender_her_id,
        receiver_her_id, ref_to_parent, xml, status, error_code, created_at)
    SELECT %(msg_id)s, %(direction)s, b.id, %(msg_type)s, %(function)s, %(sender_her_id)s,
        %(receiver_her_id)s, %(ref_to_parent)s, %(xml)s, %(status)s, %(error_code)s,
        %(created_at)s
    FROM b RETURNING id
)
INSERT INTO outbox (message_id, queue, headers, created_at, attempts, leased_until)
SELECT id, %(queue)s, %(headers)s::json, %(now)s, 0, %(leased_until)s FROM m RETURNING id
"""
# A message (not a new booking's) and its outbox row: the tail of the two statements below.
_MESSAGE_AND_OUTBOX_PG = """
m AS (
    INSERT INTO messages (msg_id, direction, booking_id, msg_type, function, sender_her_id,
        receiver_her_id, ref_to_parent, xml, status, error_code, created_at)
    VALUES (%(msg_id)s, %(direction)s, %(booking_id)s, %(msg_type)s, %(function)s,
        %(sender_her_id)s, %(receiver_her_id)s, %(ref_to_parent)s, %(xml)s, %(status)s,
        %(error_code)s, %(created_at)s)
    RETURNING id
)
INSERT INTO outbox (message_id, queue, headers, created_at, attempts, leased_until)
SELECT id, %(queue)s, %(headers)s::json, %(now)s, 0, %(leased_until)s FROM m RETURNING id
"""
_INSERT_PG = " ".join(("WITH", _MESSAGE_AND_OUTBOX_PG))
# PostgreSQL: the message being answered (an inbound one) goes in with the answer's insert.
_INSERT_WITH_ANSWERED_PG = " ".join(
    (
        """
WITH a AS (
    INSERT INTO messages (msg_id, direction, booking_id, msg_type, function, sender_her_id,
        receiver_her_id, ref_to_parent, ref_to_conversation, xml, status, error_code,
        error_text, created_at, sent_at)
    VALUES (%(a_msg_id)s, %(a_direction)s, %(a_booking_id)s, %(a_msg_type)s, %(a_function)s,
        %(a_sender_her_id)s, %(a_receiver_her_id)s, %(a_ref_to_parent)s,
        %(a_ref_to_conversation)s, %(a_xml)s, %(a_status)s, %(a_error_code)s,
        %(a_error_text)s, %(a_created_at)s, %(a_sent_at)s)
),""",
        _MESSAGE_AND_OUTBOX_PG,
    )
)
_MESSAGE_DEFAULTS = {
    "booking_id": None,
    "function": None,
    "sender_her_id": None,
    "receiver_her_id": None,
    "ref_to_parent": None,
    "error_code": None,
}
_BOOKING_DEFAULTS = {
    "b_conversation_id": None,
    "b_patient_fnr": None,
    "b_clinic_her_id": None,
    "b_process": None,
    "b_slot_id": None,
    "b_target_id": None,
    "b_resends": 0,
}


def outgoing_pg(
    message: dict[str, Any],
    queue: str,
    headers: dict[str, str],
    now: datetime,
    booking: dict[str, Any] | None = None,
    leased_until: datetime | None = None,
    answered: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """`insert_outgoing` on PostgreSQL as (psycopg SQL, parameters): one statement whose
    one row holds the outbox id."""
    params = {**_MESSAGE_DEFAULTS, **message, "queue": queue, "now": now}
    params["headers"] = json.dumps(headers)
    params["leased_until"] = leased_until
    sql = _INSERT_PG
    if answered is not None:
        params.update({f"a_{k}": v for k, v in answered.items()})
        sql = _INSERT_WITH_ANSWERED_PG
    if booking is not None:
        params.update(_BOOKING_DEFAULTS)
        params.update({f"b_{k}": v for k, v in booking.items()})
        request = booking.get("request")
        params["b_request"] = None if request is None else json.dumps(request)
        params["first_state"] = State.REQUESTED.value
        sql = _INSERT_WITH_BOOKING_PG
    return sql, params


def insert_outgoing(
    conn: Connection,
    message: dict[str, Any],
    queue: str,
    headers: dict[str, str],
    now: datetime,
    booking: dict[str, Any] | None = None,
    leased_until: datetime | None = None,
    answered: dict[str, Any] | None = None,
) -> int:
    """Insert (booking, first history row,) message and outbox row; returns the outbox id.

    `answered`: a message row (all columns) to insert too, the inbound message an AppRec
    answers; its MsgId already stored raises IntegrityError. `leased_until`: the writer
    publishes the row itself and other relays
    leave it alone until then (worker.flows.relay). A booking id already stored raises
    IntegrityError.
    """
    if conn.dialect.name == "postgresql":
        sql, params = outgoing_pg(message, queue, headers, now, booking, leased_until, answered)
        return int(fetch_pg(conn, sql, params)[0])
    if answered is not None:
        conn.execute(insert(messages).values(answered))
    if booking is not None:
        conn.execute(insert(bookings).values(booking))
        conn.execute(insert(history).values(_first_move(booking["id"], now)))
    message_id = conn.execute(insert(messages).values(message).returning(messages.c.id))
    row = {
        "message_id": message_id.scalar_one(),
        **_outbox_values(queue, headers, now),
        "leased_until": leased_until,
    }
    return int(conn.execute(insert(outbox).values(row).returning(outbox.c.id)).scalar_one())


def _outbox_values(queue: str, headers: dict[str, str], now: datetime) -> dict[str, Any]:
    return {"queue": queue, "headers": headers, "created_at": now, "attempts": 0}


def _first_move(booking_id: str, now: datetime) -> dict[str, Any]:
    return {"booking_id": booking_id, "source": None, "target": State.REQUESTED.value, "at": now}


# PostgreSQL: a claim is one statement over the rows in `v` (one row, or a batch of marks
# after their publish, each with its own time and deadline).
_CLAIM_CTES = (
    " o AS (UPDATE outbox SET published_at = v.at, attempts = attempts + 1,"
    " leased_until = NULL FROM v"
    " WHERE outbox.id = v.id AND outbox.published_at IS NULL"
    " RETURNING outbox.id, outbox.message_id, v.at, v.deadline),"
    " m AS (UPDATE messages SET sent_at = coalesce(sent_at, o.at),"
    " status = CASE WHEN status = %(queued)s THEN %(sent)s ELSE status END"
    " FROM o WHERE messages.id = o.message_id"
    " RETURNING o.id AS outbox_id, messages.booking_id, messages.msg_type, o.at, o.deadline),"
    " b AS (UPDATE bookings SET state = %(dst)s, reason = NULL, updated_at = m.at,"
    " deadline_at = m.deadline FROM m WHERE bookings.id = m.booking_id"
    " AND m.msg_type <> %(receipt)s AND bookings.state = %(src)s"
    " RETURNING m.outbox_id, bookings.id, bookings.created_at, m.at),"
    " h AS (INSERT INTO booking_history (booking_id, source, target, at)"
    " SELECT id, %(src)s, %(dst)s, at FROM b)"
)
# One row: it always returns one row.
_CLAIM_PG = " ".join(
    (
        "WITH v AS (SELECT %(id)s::integer AS id, %(now)s::timestamptz AS at,"
        " %(deadline)s::timestamptz AS deadline),",
        _CLAIM_CTES,
        "SELECT (SELECT count(*) FROM o), b.id, b.created_at FROM (SELECT 1) one"
        " LEFT JOIN b ON true",
    )
)
# A batch of marks after their publish: one row per outbox row it marked. It does not wait
# for the WAL flush (synchronous_commit off for this one transaction): a mark lost in a
# database crash only means the row is published once more, same bytes and MsgId, when its
# lease ends; nothing else depends on it.
_CLAIM_PUBLISHED_PG = " ".join(
    (
        "WITH cfg AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)),"
        " v AS (SELECT * FROM unnest(%(ids)s::integer[], %(ats)s::timestamptz[],"
        " %(deadlines)s::timestamptz[]) AS v (id, at, deadline)),",
        _CLAIM_CTES,
        "SELECT o.id, b.id, b.created_at FROM cfg, o LEFT JOIN b ON b.outbox_id = o.id",
    )
)
_RECEIPT = "APPREC"  # Process.APPREC: a receipt never moves its booking
_CLAIM_CONSTANTS = {
    "src": PUBLISHED_FROM,
    "dst": PUBLISHED_TO,
    "queued": "queued",
    "sent": "sent",
    "receipt": _RECEIPT,
}


@dataclass(frozen=True)
class Mark:
    """A leased row published at `at`: to be marked, its booking's deadline from then."""

    outbox_id: int
    at: datetime
    deadline: datetime


def claim_published(conn: Connection, marks: Sequence[Mark]) -> dict[int, Claimed]:
    """Mark rows that were published already (leased rows), many in one statement.

    Returns what was marked, by outbox id; a row missing from the answer had been marked
    by somebody else (its lease ran out and a relay published it too).
    """
    marks = sorted(marks, key=lambda m: m.outbox_id)  # rows locked in one order (see above)
    if conn.dialect.name != "postgresql":
        claimed = {m.outbox_id: claim(conn, m.outbox_id, m.at, m.deadline) for m in marks}
        return {oid: c for oid, c in claimed.items() if c.row}
    params = {
        "ids": [m.outbox_id for m in marks],
        "ats": [m.at for m in marks],
        "deadlines": [m.deadline for m in marks],
        **_CLAIM_CONSTANTS,
    }
    rows = fetch_all_pg(conn, _CLAIM_PUBLISHED_PG, params)
    return {oid: Claimed(True, booking_id, created_at) for oid, booking_id, created_at in rows}


def claim(conn: Connection, outbox_id: int, now: datetime, deadline: datetime) -> Claimed:
    """Mark one outbox row published, its message sent and its booking SENT, before the
    publish, inside a transaction: the row locks keep other relays off until commit, and a
    failed publish rolls the marks back.

    Returns Claimed(row=False) when the row was published already or is being published by
    another relay: then do not publish it.
    """
    if conn.dialect.name == "postgresql":
        params = {"id": outbox_id, "now": now, "deadline": deadline, **_CLAIM_CONSTANTS}
        claimed, booking_id, created_at = fetch_pg(conn, _CLAIM_PG, params)
        return Claimed(bool(claimed), booking_id, created_at)
    marked = conn.execute(
        update(outbox)
        .where(outbox.c.id == outbox_id, outbox.c.published_at.is_(None))
        .values(published_at=now, attempts=outbox.c.attempts + 1, leased_until=None)
        .returning(outbox.c.message_id)
    ).first()
    if marked is None:
        return Claimed(False)
    sent = conn.execute(
        update(messages)
        .where(messages.c.id == marked.message_id)
        .values(**_sent_values(now))
        .returning(messages.c.booking_id, messages.c.msg_type)
    ).first()
    if sent is None or sent.booking_id is None or sent.msg_type == _RECEIPT:
        return Claimed(True)
    moved = conn.execute(
        update(bookings)
        .where(bookings.c.id == sent.booking_id, bookings.c.state == PUBLISHED_FROM)
        .values(**_booking_sent(now, deadline))
        .returning(bookings.c.id, bookings.c.created_at)
    ).first()
    if moved is None:
        return Claimed(True)
    conn.execute(insert(history).values(_move(moved.id, now)))
    return Claimed(True, moved.id, moved.created_at)


def _sent_values(now: datetime) -> dict[str, Any]:
    return {
        "sent_at": func.coalesce(messages.c.sent_at, now),
        "status": case((messages.c.status == "queued", "sent"), else_=messages.c.status),
    }


def _booking_sent(now: datetime, deadline: datetime) -> dict[str, Any]:
    return {"state": PUBLISHED_TO, "reason": None, "updated_at": now, "deadline_at": deadline}


def _move(booking_id: str, now: datetime) -> dict[str, Any]:
    return {
        "booking_id": booking_id,
        "source": PUBLISHED_FROM,
        "target": PUBLISHED_TO,
        "reason": None,
        "at": now,
    }
