"""Booking request -> stored booking -> validated EPJ message in the outbox -> clinic queue."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mappers import message as dialog_message
from mappers.codes import Process
from mappers.errors import MapperError
from mappers.model import (
    DialogMessage,
)
from worker import fnr as fnrs
from worker import texts
from worker.adapters.registry import Clinic
from worker.adapters.store.db import (
    add_dead_letter,
    add_history,
    after_commit,
    announce_moves,
    get_booking,
    observe_created,
    save_moves,
    utcnow,
)
from worker.adapters.store.tables import AppointmentRow, BookingRow, MessageRow
from worker.bootstrap import Deps
from worker.constants import REQUESTS_QUEUE
from worker.domain.booking import Action, Booking, State
from worker.flows.compose import Target, build_dialog, function_for
from worker.flows.inbox import Notice, notify
from worker.flows.relay import Pending, pending_for, publish, queue_leased
from worker.request import (
    BookingRequest,
    FieldError,
    InvalidRequest,
    parse_request,
)

log = logging.getLogger("timebok.outbound")

ID_NAMESPACE = uuid.UUID("6f1d2c1e-4c0b-4f53-9d0e-2b1f6c9a7e10")


@dataclass(frozen=True)
class SubmitResult:
    """What became of one submitted request."""

    booking_id: str
    state: str
    created: bool  # False when this request_id was seen before (idempotent repeat)
    reason: str | None = None
    msg_id: str | None = None


class Refused(Exception):
    """A rule the request breaks only in context (registry, referenced booking)."""

    def __init__(self, field: str, message: str, patient_text: str | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.error = FieldError(field, message)
        self.patient_text = patient_text


def payload_id(payload: object) -> str:
    """A stable booking id for a payload whose request_id cannot be read."""
    if isinstance(payload, bytes | str):
        raw = payload.encode() if isinstance(payload, str) else payload
    else:
        raw = json.dumps(payload, sort_keys=True, default=str).encode()
    if isinstance(payload, dict) and _is_uuid(payload.get("request_id")):
        return str(payload["request_id"])
    return str(uuid.uuid5(ID_NAMESPACE, raw.hex()))


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def submit(deps: Deps, payload: object) -> SubmitResult:
    """Handle one intake request: idempotent by request_id, never sends an invalid one."""
    try:
        req = parse_request(payload, now=deps.clock())
    except InvalidRequest as exc:
        return _store_invalid(deps, payload, payload_id(payload), list(exc.errors), None)
    for attempt in range(2):
        try:
            # Optimistic first: a new request_id (the usual case) costs no lookup; a repeat
            # fails on the primary key and the second attempt reads what is stored.
            result, queued = _submit_valid(deps, req, check_first=attempt > 0)
            break
        except IntegrityError:
            # This request_id is stored already (by an earlier delivery or another worker).
            if attempt:
                raise
    if queued and req.action in _FREES_OR_TAKES_A_SLOT:
        # Another patient's cached free slots at this clinic are stale now (see lookups).
        from worker.flows.lookups import invalidate

        invalidate(deps, req.clinic.her_id)
    if queued and publish(deps, queued) and result.state == State.REQUESTED.value:
        # The relay moved the booking to SENT with the publish: no need to read it back.
        return replace(result, state=State.SENT.value)
    return result


_TARGETED = frozenset({Action.CANCEL, Action.CHANGE_WISH})  # these read a stored booking
_FREES_OR_TAKES_A_SLOT = frozenset({Action.RESERVE, Action.CANCEL})


@dataclass(frozen=True)
class _Plan:
    """A valid request made into its EPJ message, ready to be stored."""

    clinic: Clinic
    process: Process
    msg: DialogMessage
    xml: bytes
    now: datetime


def _submit_valid(
    deps: Deps, req: BookingRequest, *, check_first: bool
) -> tuple[SubmitResult, list[Pending]]:
    if not check_first and req.action not in _TARGETED:
        try:
            plan = _plan(deps, req, None)
        except (Refused, MapperError):
            plan = None  # refused or a bug: the full path below records which
        if plan is not None:
            # Nothing to read first: the whole write is one statement, committed alone.
            with deps.store.statement() as conn:
                queued = _queue(deps, conn, req, plan)
            _announce_new(req, plan)
            return _accepted(req, plan), [queued]
    with deps.store.transaction() as s:
        stored = _stored(deps, s, req) if check_first else None
        if stored is not None:
            return stored
        try:
            return _accept(deps, s, req)
        except Refused as exc:
            # Refused before any write: a repeat of a stored request answers as the first did.
            stored = None if check_first else _stored(deps, s, req)
            if stored is not None:
                return stored
            refused = exc
    invalid = _store_invalid(
        deps, req.model_dump(mode="json"), req.request_id, [refused.error], refused.patient_text
    )
    return invalid, []


def _stored(
    deps: Deps, s: Session, req: BookingRequest
) -> tuple[SubmitResult, list[Pending]] | None:
    """What an earlier delivery of this request_id stored, or None for a new one."""
    row = get_booking(s, req.request_id)
    if row is None:
        return None
    log.info("duplicate request suppressed", extra={"booking_id": row.id})
    return _existing(s, row), pending_for(s, row.id)


def _existing(s: Session, row: BookingRow) -> SubmitResult:
    msg = s.query(MessageRow).filter_by(booking_id=row.id, direction="out").first()
    return SubmitResult(row.id, row.state, False, row.reason, msg.msg_id if msg else None)


def _plan(deps: Deps, req: BookingRequest, target: Target | None) -> _Plan:
    """Check the request against the registry and build its message (MapperError: a bug)."""
    clinic = _clinic(deps, req)
    process, code = function_for(req, target)
    _check_support(deps, clinic, process)
    now = deps.clock()
    msg = build_dialog(deps.own_party, req, clinic, process, code, target, now)
    return _Plan(clinic, process, msg, dialog_message.build(msg), now)


def _accept(deps: Deps, s: Session, req: BookingRequest) -> tuple[SubmitResult, list[Pending]]:
    target = _target(s, req) if req.action in _TARGETED else None
    try:
        plan = _plan(deps, req, target)
    except MapperError as exc:
        clinic = _clinic(deps, req)
        process, _code = function_for(req, target)
        return _store_bug(deps, s, req, clinic, process, str(exc)), []
    if target is not None and target.booking is not None:
        _mark_target(s, target.booking, req)
    queued = _queue(deps, s.connection(), req, plan)
    after_commit(s, partial(_announce_new, req, plan))
    return _accepted(req, plan), [queued]


def _accepted(req: BookingRequest, plan: _Plan) -> SubmitResult:
    return SubmitResult(req.request_id, State.REQUESTED.value, True, None, plan.msg.envelope.msg_id)


def _announce_new(req: BookingRequest, plan: _Plan) -> None:
    env = plan.msg.envelope
    moves = [(None, State.REQUESTED.value)]
    announce_moves(req.request_id, plan.clinic.her_id, env.msg_id, plan.now, moves)


def _queue(deps: Deps, conn: Connection, req: BookingRequest, plan: _Plan) -> Pending:
    """The new booking, its message and outbox row, in one go; what the publish needs.

    Stored with its conversation from the start; the appointment uid stays empty until the
    clinic's confirmation assigns one. The outbox row is leased to this process.
    """
    env, clinic = plan.msg.envelope, plan.clinic
    booking = _booking_values(req, clinic.her_id, plan.process, plan.now, env.msg_id)
    function = plan.msg.request.code.value if plan.msg.request else None
    message = {
        "msg_id": env.msg_id,
        "direction": "out",
        "booking_id": req.request_id,
        "msg_type": env.process.value,
        "function": function,
        "sender_her_id": env.sender.her_id,
        "receiver_her_id": clinic.her_id,
        "xml": plan.xml,
        "status": "queued",
        "created_at": utcnow(),
    }
    return queue_leased(deps, conn, message, plan.now, booking=booking)


def _clinic(deps: Deps, req: BookingRequest) -> Clinic:
    clinic = deps.registry.clinic(req.clinic.her_id)
    if clinic is None:
        raise Refused(
            "clinic.her_id",
            f"HER-id {req.clinic.her_id} is not in the address registry",
            texts.clinic_unknown(req.clinic.name),
        )
    return clinic


def _check_support(deps: Deps, clinic: Clinic, process: Process) -> None:
    if not deps.registry.supports(clinic.her_id, process):
        patient_text = (
            texts.clinic_unsupported(clinic.name, clinic.phone, process)
            if clinic.connected
            else texts.clinic_not_connected(clinic.name, clinic.phone)
        )
        raise Refused(
            "clinic.her_id",
            f"clinic {clinic.her_id} does not support {process.value}",
            patient_text,
        )


def _target(s: Session, req: BookingRequest) -> Target:
    ref = req.booking_ref or ""
    row = get_booking(s, ref, lock=True)
    appointment = s.get(AppointmentRow, row.appointment_uid if row and row.appointment_uid else ref)
    if row is None and appointment is not None and appointment.booking_id:
        row = get_booking(s, appointment.booking_id, lock=True)
    if row is None and appointment is None:
        raise Refused("booking_ref", "no booking or appointment with this reference")
    _check_target(req, row, appointment)
    return Target(row, appointment)


def _check_target(
    req: BookingRequest, row: BookingRow | None, appointment: AppointmentRow | None
) -> None:
    fnr = row.patient_fnr if row is not None else appointment.patient_fnr if appointment else None
    if fnr != req.patient.fnr:
        raise Refused("booking_ref", "refers to another patient's booking")
    if row is not None and row.action == Action.CANCEL.value:
        raise Refused("booking_ref", "refers to a cancellation, not a booking")
    if req.action is Action.CHANGE_WISH and (row is None or row.action != Action.WISH.value):
        raise Refused("booking_ref", "change_wish must refer to an earlier wish")
    if appointment is not None and appointment.status == texts.STATUS_CANCELLED:
        raise Refused("booking_ref", "the appointment is already cancelled")
    if row is not None and appointment is None and State(row.state) in _CLOSED:
        raise Refused("booking_ref", f"the booking is already {row.state}")


_CLOSED = frozenset({State.REJECTED, State.CANCELLED, State.FAILED, State.EXPIRED, State.INVALID})


def _booking_values(
    req: BookingRequest,
    her_id: str,
    process: Process | None,
    now: datetime,
    conversation_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": req.request_id,
        "conversation_id": conversation_id,
        "action": req.action.value,
        "state": State.REQUESTED.value,
        "patient_fnr": req.patient.fnr,
        "clinic_her_id": her_id,
        "process": process.value if process else None,
        "slot_id": req.slot.id if req.slot else None,
        "target_id": req.booking_ref,
        "request": req.model_dump(mode="json"),
        "resends": 0,
        "created_at": now,
        "updated_at": now,
    }


def _new_booking(
    s: Session, req: BookingRequest, clinic: Clinic, process: Process, now: datetime
) -> tuple[BookingRow, Booking]:
    row = BookingRow(**_booking_values(req, clinic.her_id, process, now))
    s.add(row)
    s.flush()
    _record_created(s, row.id, now)
    return row, Booking(row.id, req.action)


def _record_created(s: Session, booking_id: str, now: datetime) -> None:
    add_history(s, booking_id, [(None, State.REQUESTED.value, None, now)])
    observe_created(s, booking_id)


def _mark_target(s: Session, target: BookingRow, req: BookingRequest) -> None:
    if req.action is Action.CANCEL and target.state == State.CONFIRMED.value:
        booking = Booking(target.id, Action(target.action), State(target.state), target.reason)
        booking.request_cancel()
        save_moves(s, target, booking)


def _store_bug(
    deps: Deps, s: Session, req: BookingRequest, clinic: Clinic, process: Process, why: str
) -> SubmitResult:
    row, booking = _new_booking(s, req, clinic, process, deps.clock())
    booking.fail("internal error: the outgoing document failed schema validation")
    save_moves(s, row, booking)
    add_dead_letter(
        s,
        kind="outgoing",
        reason=f"outgoing document does not validate: {why}"[:2000],
        source_queue=REQUESTS_QUEUE,
        payload=json.dumps(req.model_dump(mode="json")).encode(),
        error_code="T02",
        booking_id=row.id,
    )
    log.error("outgoing document failed validation", extra={"booking_id": row.id})
    return SubmitResult(row.id, row.state, True, row.reason)


def _store_invalid(
    deps: Deps,
    payload: object,
    booking_id: str,
    errors: list[FieldError],
    patient_text: str | None,
) -> SubmitResult:
    reason = "; ".join(f"{e.field}: {e.message}" for e in errors)
    raw = _raw(payload)
    now = deps.clock()
    with deps.store.transaction() as s:
        row = get_booking(s, booking_id)
        if row is not None:
            return SubmitResult(row.id, row.state, False, row.reason)
        info = _loose(payload)
        row = BookingRow(
            id=booking_id,
            action=str(info.get("action") or "unknown")[:16],
            state=State.REQUESTED.value,
            patient_fnr=info.get("fnr"),
            clinic_her_id=info.get("her_id"),
            request={"errors": [{"field": e.field, "message": e.message} for e in errors]},
            resends=0,
            created_at=now,
            updated_at=now,
        )
        s.add(row)
        s.flush()
        _record_created(s, row.id, now)
        booking = Booking(row.id, Action.RESERVE)
        booking.invalidate(reason)
        save_moves(s, row, booking)
        add_dead_letter(
            s,
            kind="request",
            reason=reason,
            source_queue=REQUESTS_QUEUE,
            payload=raw,
            booking_id=row.id,
        )
        if row.patient_fnr:
            clinic = deps.registry.clinic(row.clinic_her_id) if row.clinic_her_id else None
            ctx = texts.NoticeContext(
                clinic_name=clinic.name if clinic else info.get("clinic_name") or "klinikken",
                clinic_phone=clinic.phone if clinic else None,
                reason=patient_text,
            )
            notify(s, Notice(row.patient_fnr, "invalid", ctx, booking_id=row.id))
    log.info("booking invalid", extra={"booking_id": booking_id, "reason_fields": _fields(errors)})
    return SubmitResult(booking_id, State.INVALID.value, True, reason)


def _fields(errors: list[FieldError]) -> str:
    return ",".join(e.field for e in errors)


def _raw(payload: object) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, default=str).encode()


def _loose(payload: object) -> dict[str, Any]:
    """Best-effort facts from an invalid payload: only what is itself valid."""
    data: Any = payload
    if isinstance(payload, bytes | str):
        try:
            data = json.loads(payload)
        except ValueError:
            return {}
    if not isinstance(data, dict):
        return {}
    patient: dict[str, Any] = _sub(data, "patient")
    clinic: dict[str, Any] = _sub(data, "clinic")
    fnr = str(patient.get("fnr", ""))
    return {
        "action": data.get("action") if isinstance(data.get("action"), str) else None,
        "fnr": fnr if fnrs.is_valid(fnr) else None,
        "her_id": str(clinic.get("her_id"))[:20] if clinic.get("her_id") else None,
        "clinic_name": str(clinic.get("name"))[:100] if clinic.get("name") else None,
    }


def _sub(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}
