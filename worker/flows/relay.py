"""The outbox relay: publish what is committed and not yet sent, exactly as stored."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection, Select, or_, select, update
from sqlalchemy.orm import Session

from worker import metrics
from worker.adapters.store.db import Store, announce_moves, later, utcnow
from worker.adapters.store.outbox import (
    PUBLISHED_FROM,
    PUBLISHED_TO,
    Claimed,
    Mark,
    claim,
    claim_published,
    insert_outgoing,
    outgoing_pg,
)
from worker.adapters.store.tables import MessageRow, OutboxRow
from worker.adapters.transports.base import (
    Envelope,
    PublishesLater,
    Unsendable,
    transport_headers,
)
from worker.bootstrap import Deps
from worker.errors import EpjUnavailable
from worker.settings import async_queue

log = logging.getLogger("timebok.relay")


@dataclass(frozen=True)
class Pending:
    """One committed outbox row and what its publish needs (read once, or still in hand)."""

    outbox_id: int
    queue: str
    body: bytes
    headers: Mapping[str, str]
    msg_id: str
    msg_type: str
    booking_id: str | None
    receiver_her_id: str | None
    function: str | None
    error_code: str | None
    leased: bool = False  # written just now, leased to this process (see `publish`)


def pending_row(row: OutboxRow, message: MessageRow) -> Pending:
    """What the publish of a just-queued ORM outbox row needs."""
    return Pending(
        row.id,
        row.queue,
        message.xml,
        row.headers,
        message.msg_id,
        message.msg_type,
        message.booking_id,
        message.receiver_her_id,
        message.function,
        message.error_code,
    )


def transport_headers_for(message: MessageRow) -> dict[str, str]:
    """The transport headers of a stored message."""
    return transport_headers(
        from_her_id=message.sender_her_id or "",
        to_her_id=message.receiver_her_id or "",
        msg_id=message.msg_id,
        msg_type=message.msg_type,
        ref_to_parent=message.ref_to_parent,
        ref_to_conversation=message.ref_to_conversation,
    )


def relay(deps: Deps, *, ids: list[int] | None = None, limit: int = 200) -> int:
    """Publish pending outbox rows (all, or just `ids`); returns how many were published.

    Raises EpjUnavailable when the transport is down and nothing could be published.
    """
    return publish(deps, pending(deps, ids, limit))


def publish(deps: Deps, items: Iterable[Pending]) -> int:
    """Publish each item unless another relay has it already; returns how many it published.

    A row this process holds the lease on is published, then marked published: nobody else
    publishes it meanwhile, so no transaction stays open around the publish. In the worker
    on PostgreSQL the mark waits a moment to go in one statement with others
    (worker.adapters.store.marks).
    If the process dies before the mark, the row is republished (same bytes, same MsgId)
    once the lease is over.

    Any other row is claimed (marked published, its booking SENT) under row locks, then
    published, then committed: parallel relays never both publish it, and a failed publish
    rolls the claim back. A crash after publish and before commit republishes the same
    bytes with the same MsgId, which receivers deduplicate.
    """
    published = 0
    for item in items:
        try:
            if (_publish_leased if item.leased else _publish_one)(deps, item):
                published += 1
        except EpjUnavailable:
            if published == 0:
                raise
            break  # the rest waits for the next relay pass
    return published


def lease_end(deps: Deps) -> datetime:
    """Until when a row written now is left to the process that wrote it."""
    return utcnow() + timedelta(seconds=deps.settings.outbox_lease)


def queue_leased(
    deps: Deps,
    conn: Connection,
    message: dict[str, Any],
    now: datetime,
    *,
    booking: dict[str, Any] | None = None,
    answered: dict[str, Any] | None = None,
) -> Pending:
    """Write an outgoing message (with its booking or the message it answers) to the outbox,
    leased to this process, on the receiver's async queue; what its publish needs."""
    queue, headers = _route(message)
    outbox_id = insert_outgoing(
        conn,
        message,
        queue,
        headers,
        now,
        booking=booking,
        leased_until=lease_end(deps),
        answered=answered,
    )
    return _leased(outbox_id, queue, headers, message)


def queue_leased_at_commit(
    deps: Deps,
    s: Session,
    message: dict[str, Any],
    now: datetime,
    *,
    answered: dict[str, Any] | None = None,
) -> Callable[[], Pending]:
    """As `queue_leased`, in the session's unit of work: on PostgreSQL the insert goes with
    its other writes at commit (store.later). Call the result, once committed, for what
    the publish needs."""
    conn = s.connection()
    if conn.dialect.name != "postgresql":
        item = queue_leased(deps, conn, message, now, answered=answered)
        return lambda: item
    queue, headers = _route(message)
    sql, params = outgoing_pg(message, queue, headers, now, None, lease_end(deps), answered)
    ids: list[int] = []
    later(s, sql, params, then=lambda row: ids.append(int(row[0])))

    def committed() -> Pending:
        (outbox_id,) = ids  # written by the commit, or it raised
        return _leased(outbox_id, queue, headers, message)

    return committed


def _route(message: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The receiver's async queue and the transport headers of an outgoing message."""
    headers = transport_headers(
        from_her_id=message["sender_her_id"],
        to_her_id=message["receiver_her_id"],
        msg_id=message["msg_id"],
        msg_type=message["msg_type"],
        ref_to_parent=message.get("ref_to_parent"),
    )
    return async_queue(message["receiver_her_id"]), headers


def _leased(
    outbox_id: int, queue: str, headers: dict[str, str], message: dict[str, Any]
) -> Pending:
    return Pending(
        outbox_id,
        queue,
        message["xml"],
        headers,
        message["msg_id"],
        message["msg_type"],
        message.get("booking_id"),
        message["receiver_her_id"],
        message.get("function"),
        message.get("error_code"),
        leased=True,
    )


def pending(deps: Deps, ids: list[int] | None = None, limit: int = 200) -> list[Pending]:
    """Unpublished outbox rows, oldest first (all, or just `ids`)."""
    stmt = _pending()
    if ids is not None:
        stmt = stmt.where(OutboxRow.id.in_(ids))
    with deps.store.transaction() as s:
        rows = s.execute(stmt.order_by(OutboxRow.id).limit(limit)).all()
    return [Pending(*row) for row in rows]


def pending_for(s: Session, booking_id: str) -> list[Pending]:
    """A booking's unpublished outbox rows, oldest first."""
    stmt = _pending().where(MessageRow.booking_id == booking_id).order_by(OutboxRow.id)
    return [Pending(*row) for row in s.execute(stmt)]


def _pending() -> Select[Any]:
    return (
        select(
            OutboxRow.id,
            OutboxRow.queue,
            MessageRow.xml,
            OutboxRow.headers,
            MessageRow.msg_id,
            MessageRow.msg_type,
            MessageRow.booking_id,
            MessageRow.receiver_her_id,
            MessageRow.function,
            MessageRow.error_code,
        )
        .join(MessageRow, MessageRow.id == OutboxRow.message_id)
        .where(OutboxRow.published_at.is_(None))
        .where(or_(OutboxRow.leased_until.is_(None), OutboxRow.leased_until < utcnow()))
    )


def _publish_one(deps: Deps, item: Pending) -> bool:
    now = utcnow()
    try:
        with deps.store.transaction() as s:
            claimed = claim(s.connection(), item.outbox_id, now, _deadline(deps))
            if not claimed.row:
                return False
            deps.epj.publish(Envelope(item.queue, item.body, dict(item.headers)))
    except EpjUnavailable as exc:
        _record_failure(deps, item, exc)
        raise
    except Unsendable as exc:  # the claim was rolled back with the transaction
        _unsendable(deps, item, exc)
        return False
    _published(item, claimed)
    return True


def _publish_leased(deps: Deps, item: Pending) -> bool:
    epj = deps.epj
    if deps.marks is not None and isinstance(epj, PublishesLater):
        return _publish_leased_later(deps, epj, item)
    try:
        deps.epj.publish(Envelope(item.queue, item.body, dict(item.headers)))
    except EpjUnavailable as exc:
        _record_failure(deps, item, exc)
        raise
    except Unsendable as exc:
        _unsendable(deps, item, exc)
        return False
    mark = Mark(item.outbox_id, utcnow(), _deadline(deps))
    _log_published(item)
    if deps.marks is not None:  # the worker: marked with others by its marks thread
        deps.marks.add(mark, partial(_marked, item, mark.at))
        return True
    with deps.store.statement() as conn:
        claimed = claim_published(conn, [mark]).get(item.outbox_id, Claimed(False))
    _marked(item, mark.at, claimed)
    return True


def _publish_leased_later(deps: Deps, epj: PublishesLater, item: Pending) -> bool:
    """The worker on the national bus: the broker's `accepted` takes a quorum queue's round
    trip, so the handler does not wait for it; the mark goes to the marks thread once it
    comes. No answer (a lost connection) leaves the row to the relay when its lease ends,
    which publishes it again with the same MsgId."""
    marks = deps.marks
    assert marks is not None

    def done(error: BaseException | None) -> None:
        if error is not None:
            log.warning(
                "EPJ transport did not accept a message: %s", error, extra={"queue": item.queue}
            )
            return
        mark = Mark(item.outbox_id, utcnow(), _deadline(deps))
        _log_published(item)
        marks.add(mark, partial(_marked, item, mark.at))

    try:
        epj.publish_later(Envelope(item.queue, item.body, dict(item.headers)), done)
    except Unsendable as exc:
        _unsendable(deps, item, exc)
        return False
    return True


def write_marks(store: Store, marks: list[Mark]) -> dict[int, Claimed]:
    """Write marks of published leased rows in one statement (see worker.adapters.store.marks)."""
    with store.statement() as conn:
        return claim_published(conn, marks)


def _marked(item: Pending, at: datetime, claimed: Claimed) -> None:
    if not claimed.row:  # the lease ran out before the mark: another relay sent it too
        log.warning("published twice (same MsgId)", extra={"msg_id": item.msg_id})
    _moved(item, claimed, at)


def _deadline(deps: Deps) -> datetime:
    return deps.clock() + timedelta(seconds=deps.settings.apprec_timeout)


def _published(item: Pending, claimed: Claimed) -> None:
    _log_published(item)
    _moved(item, claimed)


def _log_published(item: Pending) -> None:
    log.info(
        "message published",
        extra={
            "booking_id": item.booking_id,
            "msg_id": item.msg_id,
            "her_id": item.receiver_her_id,
            "type": item.msg_type,
            "queue": item.queue,
        },
    )
    metrics.message_out(item.msg_type, item.receiver_her_id, item.function, item.error_code)


def _moved(item: Pending, claimed: Claimed, at: datetime | None = None) -> None:
    if claimed.booking_id is not None:
        moves = [(PUBLISHED_FROM, PUBLISHED_TO)]
        announce_moves(
            claimed.booking_id, item.receiver_her_id, item.msg_id, claimed.created_at, moves, at
        )


def _unsendable(deps: Deps, item: Pending, exc: Unsendable) -> None:
    """Never to be sent as it is (e.g. no certificates for the receiver on the bus): the row
    leaves the outbox, the message and its booking fail with the reason, the patient is told."""
    from worker.flows.replies import fail_undelivered

    log.error(
        "message cannot be sent: %s",
        exc,
        extra={"booking_id": item.booking_id, "msg_id": item.msg_id, "queue": item.queue},
    )
    with deps.store.transaction() as s:
        row = s.get(OutboxRow, item.outbox_id)
        if row is None or row.published_at is not None:
            return
        message = s.get(MessageRow, row.message_id)
        s.delete(row)
        if message is None:
            return
        if message.msg_type == "APPREC":  # our receipt: its booking is not what failed
            message.status, message.error_text = "failed", f"not sent: {exc}"[:1000]
            return
        fail_undelivered(deps, s, message, f"not sent: {exc}")


def _record_failure(deps: Deps, item: Pending, exc: EpjUnavailable) -> None:
    """The row stays pending and shows why; the next relay pass tries it again."""
    log.warning("EPJ transport unavailable", extra={"queue": item.queue})
    with deps.store.transaction() as s:
        s.execute(
            update(OutboxRow)
            .where(OutboxRow.id == item.outbox_id, OutboxRow.published_at.is_(None))
            .values(
                attempts=OutboxRow.attempts + 1,
                last_error=str(exc)[:500],
                leased_until=None,  # the next relay pass may take it at once
            )
        )
