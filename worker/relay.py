"""The outbox relay: publish what is committed and not yet sent, exactly as stored."""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import partial

from sqlalchemy.orm import Session

from mappers.codes import Process
from worker import metrics
from worker.adapters.epj import Envelope, transport_headers
from worker.adapters.store import (
    after_commit,
    get_booking,
    pending_messages,
    save_moves,
    to_domain,
    utcnow,
)
from worker.adapters.tables import MessageRow, OutboxRow
from worker.bootstrap import Deps
from worker.domain.booking import State
from worker.errors import EpjUnavailable

log = logging.getLogger("timebok.relay")


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

    Each row is published while its row lock is held and marked in the same transaction,
    so parallel relays never take the same row. A crash after publish and before commit
    republishes the same bytes with the same MsgId, which receivers deduplicate.
    """
    published, failed = 0, None
    with deps.store.transaction() as s:
        for row, message in pending_messages(s, limit, ids):
            try:
                _publish(deps, s, row, message)
            except EpjUnavailable as exc:
                # Committed, not rolled back with the raise: the row shows why it still waits.
                row.attempts += 1
                row.last_error = str(exc)[:500]
                log.warning("EPJ transport unavailable", extra={"queue": row.queue})
                failed = exc
                break
            published += 1
    if failed is not None and published == 0:
        raise failed
    return published


def _publish(deps: Deps, s: Session, row: OutboxRow, message: MessageRow) -> None:
    # Lock the booking before publishing so a fast reply waits until SENT is committed.
    # A receipt never moves its booking: no lock (nor query) for those.
    booking_id = message.booking_id if message.msg_type != Process.APPREC.value else None
    booking = get_booking(s, booking_id, lock=True) if booking_id else None
    deps.epj.publish(Envelope(row.queue, message.xml, dict(row.headers)))
    if booking is not None and booking.state == State.REQUESTED.value:
        domain = to_domain(booking)
        domain.mark_sent()
        save_moves(s, booking, domain)
        booking.deadline_at = deps.clock() + timedelta(seconds=deps.settings.apprec_timeout)
    now = utcnow()
    row.published_at = now
    row.attempts += 1
    message.sent_at = message.sent_at or now
    if message.status == "queued":
        message.status = "sent"
    log.info(
        "message published",
        extra={
            "booking_id": message.booking_id,
            "msg_id": message.msg_id,
            "her_id": message.receiver_her_id,
            "type": message.msg_type,
            "queue": row.queue,
        },
    )
    facts = (message.msg_type, message.receiver_her_id, message.function, message.error_code)
    after_commit(s, partial(metrics.message_out, *facts))
