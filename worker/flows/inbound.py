"""EPJ message in -> receipt / state change -> inbox, exactly once, then our AppRec back."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mappers import apprec as apprec_mapper
from mappers import incoming
from mappers.codes import AppRecError, AppRecStatus, Process
from mappers.errors import MapperError, NotWellFormed
from mappers.model import AppRec, DialogMessage, OriginalMsgRef, Party, ReceiptError
from worker import metrics
from worker.adapters.store.db import (
    add_dead_letter,
    after_commit,
    enqueue,
    get_message,
    sent_info,
    utcnow,
)
from worker.adapters.store.tables import MessageRow, OutboxRow
from worker.adapters.transports.base import NOT_WELL_FORMED_XML, SPOOFING, BusRefusal
from worker.bootstrap import Deps
from worker.errors import TransientError
from worker.flows.lookups import invalidate
from worker.flows.relay import (
    Pending,
    pending_row,
    publish,
    queue_leased_at_commit,
    transport_headers_for,
)
from worker.flows.replies import Outcome, apply_dialog, apply_receipt
from worker.settings import async_queue

log = logging.getLogger("timebok.inbound")

_DIGITS = re.compile(r"^\d{1,20}$")
_RAW_NS = uuid.UUID("0b7f6a52-2d57-4c3e-8a43-6f1e4a9d2c11")


@dataclass(frozen=True)
class Received:
    """What became of one inbound message."""

    msg_id: str
    outcome: str  # processed | duplicate | rejected | ignored
    detail: str = ""


def receive(
    deps: Deps, body: bytes, headers: dict[str, object], *, bus_sender: str | None = None
) -> Received:
    """Handle one raw message from our async queue; never raises but TransientError.

    `bus_sender` (the nhn transport: the fromHerId whose certificate signed it) makes a
    document that is not XML, or whose MsgHead names another sender, a BusRefusal raised
    before anything is stored: those are transport errors on the bus, not AppRec Avvist.
    """
    try:
        result, queued = _receive(deps, body, headers, bus_sender)
    except (TransientError, BusRefusal):
        raise
    except Exception as exc:  # a bug must not poison the queue: keep the bytes, move on
        log.exception("inbound handler failed")
        result, queued = _dead_letter_only(deps, body, headers, f"internal error: {exc!r}")
    if result.outcome == "duplicate":
        metrics.duplicate()
        log.info("duplicate suppressed", extra={"msg_id": result.msg_id})
    if queued:
        try:
            publish(deps, queued)
        except TransientError:
            log.warning("receipt left in the outbox for the relay")
    return result


def _receive(
    deps: Deps, body: bytes, headers: dict[str, object], bus_sender: str | None
) -> tuple[Received, list[Pending]]:
    try:
        doc = incoming.parse_any(
            body,
            max_bytes=deps.settings.max_message_bytes,
        )
    except MapperError as exc:
        if bus_sender is not None:
            _check_on_bus(exc, exc.sender.her_id if exc.sender else None, bus_sender)
        return _reject_unparsed(deps, body, headers, exc)
    if bus_sender is not None:
        sender = doc.sender if isinstance(doc, AppRec) else doc.envelope.sender
        _check_on_bus(None, sender.her_id, bus_sender)
    if isinstance(doc, AppRec):
        try:
            return _receipt(deps, body, headers, doc), []
        except IntegrityError:  # two copies committed at once: again, it finds the other's
            return _receipt(deps, body, headers, doc), []
    for attempt in range(2):
        try:
            # Optimistic first: a new MsgId (the usual case) costs no lookup; a copy of a
            # stored one fails on the unique MsgId and the second attempt finds it.
            return _dialog(deps, body, headers, doc, check_first=attempt > 0)
        except IntegrityError:
            if attempt:  # the same MsgId committed twice at once: the other one won
                return Received(doc.envelope.msg_id, "duplicate", "concurrent delivery"), []
    raise AssertionError("unreachable")


def _check_on_bus(exc: MapperError | None, msg_head_sender: str | None, bus_sender: str) -> None:
    """Refuse on the transport level what the bus must not hand to the application."""
    if isinstance(exc, NotWellFormed):
        raise BusRefusal(NOT_WELL_FORMED_XML, f"the decrypted payload is not XML: {exc}")
    if msg_head_sender is not None and msg_head_sender != bus_sender:
        raise BusRefusal(
            SPOOFING, f"fromHerId {bus_sender} does not match the MsgHead sender {msg_head_sender}"
        )


# -- receipts in ---------------------------------------------------------------------------


def _receipt(deps: Deps, body: bytes, headers: dict[str, object], doc: AppRec) -> Received:
    with deps.store.transaction() as s:
        if get_message(s, doc.msg_id) is not None:
            return Received(doc.msg_id, "duplicate")
        # Lock order everywhere: outbox, then messages, then bookings (as the marks after a
        # publish take them). The receipt updates the message it answers and its booking,
        # so it locks the message first: locking the booking first deadlocked with marks.
        original = get_message(s, doc.original.msg_id, lock=True)
        s.add(_inbound_row(doc.msg_id, "APPREC", body, doc.sender.her_id, original))
        _count_receipt(s, doc, original)
        if original is None or original.direction != "out":
            add_dead_letter(
                s,
                kind="message",
                reason=f"AppRec for unknown message {doc.original.msg_id}",
                error_code=AppRecError.INVALID_MSG_ID.value,
                source_queue=deps.settings.inbound_queue,
                payload=body,
                headers=_jsonable(headers),
                msg_id=doc.msg_id,
            )
            return Received(doc.msg_id, "ignored", "no such outgoing message")
        detail = apply_receipt(deps, s, original, doc)
    log.info(
        "apprec received",
        extra={
            "booking_id": original.booking_id,
            "msg_id": doc.msg_id,
            "her_id": doc.sender.her_id,
            "type": Process.APPREC.value,
            "status": doc.status.value,
            "code": doc.errors[0].code if doc.errors else None,
        },
    )
    return Received(doc.msg_id, "processed", detail)


def _count_receipt(s: Session, doc: AppRec, original: MessageRow | None) -> None:
    code = str(doc.errors[0].code) if doc.errors else None
    after_commit(s, partial(metrics.message_in, "APPREC", doc.sender.her_id, doc.status, code))
    if original is not None and original.direction == "out" and original.sent_at is not None:
        waited = metrics.since(original.sent_at) or 0.0
        after_commit(s, partial(metrics.reply_latency, doc.sender.her_id, "apprec", waited))


# -- business messages in -----------------------------------------------------------------


def _dialog(
    deps: Deps, body: bytes, headers: dict[str, object], doc: DialogMessage, *, check_first: bool
) -> tuple[Received, list[Pending]]:
    env = doc.envelope
    with deps.store.transaction() as s:
        if check_first and get_message(s, env.msg_id) is not None:
            return Received(env.msg_id, "duplicate"), _resend_receipt(s, env.msg_id)
        outcome = _outcome(deps, s, doc)
        _count_dialog(s, doc)  # after _outcome: what the message answers is known by then
        after_commit(s, partial(_calendar_changed, deps, env.sender.her_id))
        if outcome.error is not None:
            _dead_letter(deps, s, body, headers, outcome, env.msg_id)
        # Stored last, complete, with its receipt, in the same transaction: a copy
        # committed meanwhile makes this insert fail on the unique MsgId, and everything
        # above rolls back with it.
        conv = env.conversation
        stored: dict[str, Any] = {
            "msg_id": env.msg_id,
            "direction": "in",
            "booking_id": outcome.booking_id,
            "msg_type": env.process.value[:64],
            "function": (doc.reply.code.value if doc.reply else None)
            or (doc.request.code.value if doc.request else None),
            "sender_her_id": env.sender.her_id,
            "receiver_her_id": None,
            "ref_to_parent": conv.ref_to_parent if conv else None,
            "ref_to_conversation": conv.ref_to_conversation if conv else None,
            "xml": body,
            "status": "processed" if outcome.error is None else "rejected",
            "error_code": outcome.error.value if outcome.error else None,
            "error_text": outcome.detail if outcome.error else None,
            "created_at": utcnow(),
            "sent_at": None,
        }
        receipt = _send_receipt(deps, s, doc, headers, outcome, stored)
    queued = receipt()  # committed: the outbox row is there
    log.info(
        "business message received",
        extra={
            "booking_id": outcome.booking_id,
            "msg_id": env.msg_id,
            "her_id": env.sender.her_id,
            "type": env.process.value,
            "result": outcome.detail,
        },
    )
    state = "processed" if outcome.error is None else "rejected"
    return Received(env.msg_id, state, outcome.detail), [queued]


def _calendar_changed(deps: Deps, sender: str) -> None:
    """A clinic's reply or Avtale: a slot of it may be taken or free now (a confirmation,
    a refusal, a cancellation), so its cached free slots are stale."""
    clinic = deps.registry.clinic(sender)
    if clinic is not None:
        invalidate(deps, clinic.her_id)


def _count_dialog(s: Session, doc: DialogMessage) -> None:
    """Count the message, and time the clinic's reply to the message it answers."""
    env = doc.envelope
    after_commit(s, partial(metrics.message_in, env.process.value, env.sender.her_id))
    if doc.reply is None or env.conversation is None:
        return
    parent = sent_info(s, env.conversation.ref_to_parent)
    waited = metrics.since(parent[1]) if parent and parent[0] == "out" else None
    if waited is not None:
        after_commit(s, partial(metrics.reply_latency, env.sender.her_id, "reply", waited))


def _outcome(deps: Deps, s: Session, doc: DialogMessage) -> Outcome:
    receiver = doc.envelope.receiver
    own = deps.settings.own_her_id
    if own not in (receiver.her_id, receiver.address):
        return Outcome(None, f"receiver {receiver.address} is not us", AppRecError.RECEIVER_UNKNOWN)
    return apply_dialog(deps, s, doc)


def _send_receipt(
    deps: Deps,
    s: Session,
    doc: DialogMessage,
    headers: dict[str, object],
    outcome: Outcome,
    answered: dict[str, Any],
) -> Callable[[], Pending]:
    """Our AppRec for a business message, queued with the message's own row (`answered`).

    Call the result once committed."""
    env = doc.envelope
    errors: tuple[ReceiptError, ...] = ()
    status = AppRecStatus.OK
    if outcome.error is not None:
        status = AppRecStatus.REJECTED
        errors = (ReceiptError(outcome.error, _error_text(outcome.error), outcome.detail[:200]),)
    to = _sender_her_id(headers) or env.sender.her_id
    original = OriginalMsgRef(env.process.value, env.gen_date, env.msg_id)
    receipt = _apprec(deps, Party(to, env.sender.name), status, original, errors)
    return _queue_receipt(deps, s, receipt, to, outcome.booking_id, env.msg_id, answered)


def _apprec(
    deps: Deps,
    to: Party,
    status: AppRecStatus,
    original: OriginalMsgRef,
    errors: tuple[ReceiptError, ...],
) -> AppRec:
    return AppRec(
        msg_id=str(uuid.uuid4()),
        gen_date=deps.clock(),
        sender=deps.own_party,
        receiver=to,
        status=status,
        original=original,
        errors=errors,
    )


def _queue_receipt(
    deps: Deps,
    s: Session,
    receipt: AppRec,
    to: str,
    booking_id: str | None,
    answers: str,
    answered: dict[str, Any] | None = None,
) -> Callable[[], Pending]:
    xml = apprec_mapper.build(receipt)
    error_code = receipt.errors[0].code if receipt.errors else None
    message = {
        "msg_id": receipt.msg_id,
        "direction": "out",
        "booking_id": booking_id,
        "msg_type": Process.APPREC.value,
        "function": receipt.status.value,
        "sender_her_id": receipt.sender.her_id,
        "receiver_her_id": to,
        "ref_to_parent": answers,
        "xml": xml,
        "status": "queued",
        "error_code": error_code,
        "created_at": utcnow(),
    }
    return queue_leased_at_commit(deps, s, message, utcnow(), answered=answered)


def _resend_receipt(s: Session, inbound_msg_id: str) -> list[Pending]:
    """A redelivered message gets the receipt we already made (same MsgId), nothing new."""
    receipt = (
        s.query(MessageRow)
        .filter_by(direction="out", msg_type=Process.APPREC.value, ref_to_parent=inbound_msg_id)
        .order_by(MessageRow.id.desc())  # after a dead-letter replay: the newer receipt
        .first()
    )
    if receipt is None or (receipt.sent_at is None and not _in_flight(s, receipt)):
        return []  # never made (an AppRec for an AppRec) or waiting in the outbox
    headers = transport_headers_for(receipt)
    row = enqueue(s, receipt, async_queue(receipt.receiver_her_id or ""), headers)
    return [pending_row(row, receipt)]


def _in_flight(s: Session, receipt: MessageRow) -> bool:
    """Published by the process that wrote it, or about to be (its mark may come later)."""
    leased = select(OutboxRow.id).where(
        OutboxRow.message_id == receipt.id, OutboxRow.leased_until.is_not(None)
    )
    return s.execute(leased.limit(1)).first() is not None


def _error_text(code: AppRecError) -> str:
    from mappers.codes import APPREC_ERROR_NAMES

    return APPREC_ERROR_NAMES.get(code, "Annen feil")


# -- messages we cannot read -------------------------------------------------------------


def _reject_unparsed(
    deps: Deps, body: bytes, headers: dict[str, object], exc: MapperError
) -> tuple[Received, list[Pending]]:
    original = exc.original
    msg_id = (original.msg_id if original else None) or _header(headers, "msgId")
    msg_id = (msg_id or str(uuid.uuid5(_RAW_NS, body[:1_000_000].hex())))[:64]
    code = AppRecError(exc.code) if exc.code in AppRecError else AppRecError.FORMAT_OTHER
    with deps.store.transaction() as s:
        if get_message(s, msg_id) is not None:
            return Received(msg_id, "duplicate", "unreadable message seen before"), []
        msg_type = (original.msg_type if original else None) or _header(headers, "type")
        row = _inbound_row(msg_id, msg_type or "UNKNOWN", b"", _sender(exc, headers), None)
        row.status, row.error_code, row.error_text = "rejected", code.value, str(exc)[:500]
        s.add(row)
        after_commit(s, partial(metrics.message_in, row.msg_type, row.sender_her_id))
        add_dead_letter(
            s,
            kind="message",
            reason=str(exc)[:2000],
            error_code=code.value,
            source_queue=deps.settings.inbound_queue,
            payload=body,
            headers=_jsonable(headers),
            msg_id=msg_id,
        )
        receipt = _receipt_for_unparsed(deps, s, exc, headers, msg_id, code)
    ids = [receipt()] if receipt is not None else []
    log.warning(
        "unreadable message rejected",
        extra={
            "msg_id": msg_id,
            "her_id": _sender(exc, headers),
            "type": msg_type or "UNKNOWN",
            "code": code.value,
        },
    )
    return Received(msg_id, "rejected", f"{code.value}: {exc}"), ids


def _sender(exc: MapperError, headers: dict[str, object]) -> str | None:
    """Who to answer: the MsgHead sender when it could be read, else the transport header."""
    if exc.sender is not None and _DIGITS.match(exc.sender.her_id):
        return exc.sender.her_id
    return _sender_her_id(headers)


def _receipt_for_unparsed(
    deps: Deps,
    s: Session,
    exc: MapperError,
    headers: dict[str, object],
    msg_id: str,
    code: AppRecError,
) -> Callable[[], Pending] | None:
    to = _sender(exc, headers)
    msg_type = (exc.original.msg_type if exc.original else None) or _header(headers, "type")
    msg_type = msg_type or "UNKNOWN"
    if to is None or msg_type.upper() == Process.APPREC.value:
        return None  # nobody to answer, or never an AppRec for an AppRec
    issued = exc.original.issue_date if exc.original else deps.clock()
    original = OriginalMsgRef(msg_type[:64], issued, msg_id)
    errors = (ReceiptError(code, _error_text(code), str(exc)[:200]),)
    name = exc.sender.name if exc.sender is not None else to
    receipt = _apprec(deps, Party(to, name), AppRecStatus.REJECTED, original, errors)
    return _queue_receipt(deps, s, receipt, to, None, msg_id)


def _dead_letter(
    deps: Deps,
    s: Session,
    body: bytes,
    headers: dict[str, object],
    outcome: Outcome,
    msg_id: str,
) -> None:
    add_dead_letter(
        s,
        kind="message",
        reason=outcome.detail[:2000],
        error_code=outcome.error.value if outcome.error else None,
        source_queue=deps.settings.inbound_queue,
        payload=body,
        headers=_jsonable(headers),
        booking_id=outcome.booking_id,
        msg_id=msg_id,
    )


def _dead_letter_only(
    deps: Deps, body: bytes, headers: dict[str, object], why: str
) -> tuple[Received, list[Pending]]:
    with deps.store.transaction() as s:
        add_dead_letter(
            s,
            kind="message",
            reason=why[:2000],
            error_code=AppRecError.OTHER.value,
            source_queue=deps.settings.inbound_queue,
            payload=body,
            headers=_jsonable(headers),
            msg_id=_header(headers, "msgId"),
        )
    return Received(_header(headers, "msgId") or "-", "rejected", why), []


# -- small helpers -------------------------------------------------------------------------


def _inbound_row(
    msg_id: str, msg_type: str, body: bytes, sender: str | None, original: MessageRow | None
) -> MessageRow:
    return MessageRow(
        msg_id=msg_id,
        direction="in",
        booking_id=original.booking_id if original is not None else None,
        msg_type=msg_type[:64],
        sender_her_id=sender,
        ref_to_parent=original.msg_id if original is not None else None,
        xml=body,
        status="received",
        created_at=utcnow(),
    )


def _header(headers: dict[str, object], name: str) -> str | None:
    value = headers.get(name)
    return str(value)[:200] if value not in (None, "") else None


def _sender_her_id(headers: dict[str, object]) -> str | None:
    value = _header(headers, "fromHerId")
    return value if value is not None and _DIGITS.match(value) else None


def _jsonable(headers: dict[str, object]) -> dict[str, str]:
    return {str(k)[:100]: str(v)[:500] for k, v in headers.items()}
