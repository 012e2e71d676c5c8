"""Beat housekeeping: resend unanswered messages (same MsgId), give up on overdue bookings."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker import texts
from worker.adapters.store.db import enqueue, save_moves, to_domain
from worker.adapters.store.tables import BookingRow, MessageRow, OutboxRow
from worker.bootstrap import Deps
from worker.domain.booking import Action, State
from worker.flows.inbox import Notice, notify
from worker.flows.relay import relay, transport_headers_for
from worker.settings import async_queue

log = logging.getLogger("timebok.timeouts")

BATCH = 200


def check(deps: Deps) -> int:
    """One pass: returns how many bookings were resent, failed or expired."""
    now = deps.clock()
    with deps.store.transaction() as s:
        overdue = _overdue(s, now)
        touched = sum(_handle(deps, s, row, now) for row in overdue)
    if touched:
        relay(deps)
    return touched


def _overdue(s: Session, now: datetime) -> list[BookingRow]:
    stmt = (
        select(BookingRow)
        .where(BookingRow.state.in_([State.SENT.value, State.DELIVERED.value]))
        .where(BookingRow.deadline_at.is_not(None), BookingRow.deadline_at < now)
        .order_by(BookingRow.deadline_at)
        .limit(BATCH)
        .with_for_update(skip_locked=True, key_share=True)
    )
    return list(s.scalars(stmt))


def _handle(deps: Deps, s: Session, row: BookingRow, now: datetime) -> int:
    cfg = deps.settings
    if row.state == State.DELIVERED.value:
        _give_up(deps, s, row, "expire", "expired", "no reply from the clinic in time")
        return 1
    message = _sent_message(s, row)
    if message is not None and _still_in_outbox(s, message):
        # Our own EPJ transport is down: the last copy has not left. Another copy would only
        # queue up behind it, and a clinic that never got it is not silent: wait, uncounted.
        row.deadline_at = now + timedelta(seconds=cfg.apprec_timeout)
        log.warning("resend waits for the EPJ transport", extra={"booking_id": row.id})
        return 0
    if row.resends < cfg.max_resends and message is not None and message.receiver_her_id:
        # Queue the stored document again: same bytes, same MsgId.
        headers = transport_headers_for(message)
        enqueue(s, message, async_queue(message.receiver_her_id), headers)
        row.resends += 1
        row.deadline_at = now + timedelta(seconds=cfg.apprec_timeout * 2**row.resends)
        log.info("resent without receipt", extra={"booking_id": row.id, "attempt": row.resends})
        return 1
    _give_up(deps, s, row, "fail", "undeliverable", "no AppRec from the clinic")
    return 1


def _sent_message(s: Session, row: BookingRow) -> MessageRow | None:
    """The business message this booking sent (one per booking; receipts excluded)."""
    stmt = (
        select(MessageRow)
        .where(MessageRow.booking_id == row.id, MessageRow.direction == "out")
        .where(MessageRow.msg_type != "APPREC")
        .order_by(MessageRow.id)
    )
    return s.scalars(stmt).first()


def _still_in_outbox(s: Session, message: MessageRow) -> bool:
    stmt = select(OutboxRow.id).where(
        OutboxRow.message_id == message.id, OutboxRow.published_at.is_(None)
    )
    return s.scalars(stmt.limit(1)).first() is not None


def _give_up(deps: Deps, s: Session, row: BookingRow, method: str, event: str, why: str) -> None:
    booking = to_domain(row)
    getattr(booking, method)(why)
    save_moves(s, row, booking)
    row.deadline_at = None
    if row.action == Action.CANCEL.value and row.target_id:
        _restore_target(s, row.target_id)
    clinic = deps.registry.clinic(row.clinic_her_id) if row.clinic_her_id else None
    ctx = texts.NoticeContext(
        clinic_name=clinic.name if clinic else (row.clinic_her_id or "klinikken"),
        clinic_phone=clinic.phone if clinic else None,
    )
    if row.patient_fnr:
        notify(s, Notice(row.patient_fnr, event, ctx, booking_id=row.id))
    log.warning("booking gave up", extra={"booking_id": row.id, "state": row.state})


def _restore_target(s: Session, target_id: str) -> None:
    target = s.get(BookingRow, target_id)
    if target is not None and target.state == State.CANCEL_REQUESTED.value:
        booking = to_domain(target)
        booking.confirm("cancellation got no answer")
        save_moves(s, target, booking)
