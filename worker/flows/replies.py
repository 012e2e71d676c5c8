"""What each EPJ receipt and reply does to a booking (the README's reply table, in code)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from mappers.codes import AppointmentType, AppRecError, AppRecStatus, ReplyCode, RequestCode
from mappers.model import AppRec, DialogMessage, Event
from worker import texts
from worker.adapters.store.db import (
    booking_by_message,
    get_booking,
    save_moves,
    to_domain,
)
from worker.adapters.store.tables import AppointmentRow, BookingRow, MessageRow
from worker.bootstrap import Deps
from worker.domain.booking import TERMINAL, Action, State
from worker.flows.inbox import (
    AppointmentView,
    Notice,
    notify,
    set_appointment_status,
    upsert_appointment,
)

CONFIRM = frozenset({ReplyCode.CONFIRMED, ReplyCode.CHANGE_CONFIRMED, ReplyCode.CONFIRMED_OTHER})
REFUSE = frozenset(
    {
        ReplyCode.NOT_AVAILABLE,
        ReplyCode.REJECTED,
        ReplyCode.NO_ACCESS,
        ReplyCode.GENERAL_ERROR,
        ReplyCode.NOT_OFFERED,
        ReplyCode.CHANGE_REFUSED,
    }
)
TYPE_NAMES: dict[AppointmentType, str] = {
    AppointmentType.ORDINARY: "in_person",
    AppointmentType.URGENT: "urgent",
    AppointmentType.VIDEO: "video",
    AppointmentType.PHONE: "phone",
}


@dataclass(frozen=True)
class Outcome:
    """The result of one business message: which booking, what happened, or why not (8221)."""

    booking_id: str | None
    detail: str
    error: AppRecError | None = None


# -- receipts ------------------------------------------------------------------------------


def apply_receipt(deps: Deps, s: Session, original: MessageRow, doc: AppRec) -> str:
    """AppRec for one of our messages: OK -> DELIVERED, Avvist -> FAILED + patient told."""
    if original.msg_type == "APPREC":
        return "receipt for a receipt ignored"
    row = get_booking(s, original.booking_id, lock=True) if original.booking_id else None
    if doc.status is not AppRecStatus.REJECTED:
        if original.status in ("queued", "sent"):
            original.status = "delivered"
        _note_errors(original, doc)
        if row is not None and row.state in (State.REQUESTED.value, State.SENT.value):
            if row.state == State.REQUESTED.value:
                _move(s, row, "mark_sent")
            _move(s, row, "mark_delivered")
            row.deadline_at = deps.clock() + timedelta(seconds=deps.settings.reply_timeout)
        return "delivered"
    original.status = "failed"
    _note_errors(original, doc)
    why = "; ".join(f"{e.code} {e.text}".strip() for e in doc.errors) or "AppRec Avvist"
    return _fail_booking(deps, s, row, f"AppRec Avvist: {why}")


def fail_undelivered(deps: Deps, s: Session, original: MessageRow, reason: str) -> str:
    """One of our messages that will never be delivered (a transport error from the bus,
    or one we could not send): as an AppRec Avvist, the booking FAILED, the patient told once."""
    original.status = "failed"
    original.error_text = reason[:1000]
    row = get_booking(s, original.booking_id, lock=True) if original.booking_id else None
    return _fail_booking(deps, s, row, reason)


def _fail_booking(deps: Deps, s: Session, row: BookingRow | None, reason: str) -> str:
    if row is None or State(row.state) not in (State.REQUESTED, State.SENT, State.DELIVERED):
        return f"failure for a booking in state {row.state if row else '-'} ignored"
    _move(s, row, "fail", reason)
    _release_target(s, row)
    _notify(deps, s, row, "undeliverable")
    return "failed"


def _note_errors(original: MessageRow, doc: AppRec) -> None:
    if doc.errors:
        original.error_code = str(doc.errors[0].code)[:8]
        original.error_text = "; ".join(f"{e.code} {e.text}" for e in doc.errors)[:1000]


# -- business messages ---------------------------------------------------------------------


def apply_dialog(deps: Deps, s: Session, doc: DialogMessage) -> Outcome:
    """Route a reply (Notat) or an Avtale (Foresporsel MOA) to its handler."""
    if doc.reply is not None:
        return _reply(deps, s, doc)
    if doc.request is not None and doc.request.code is RequestCode.APPOINTMENT:
        return _avtale(deps, s, doc)
    code = doc.request.code.value if doc.request else "-"
    return Outcome(None, f"function {code} is not one timebok receives", AppRecError.UNSUPPORTED)


def _reply(deps: Deps, s: Session, doc: DialogMessage) -> Outcome:
    assert doc.reply is not None
    row = correlate(s, doc)
    if row is None:
        return Outcome(None, "reply matches no booking", AppRecError.PATIENT_UNKNOWN)
    if State(row.state) in TERMINAL:
        return Outcome(row.id, f"ignored: booking is already {row.state}")
    if row.state == State.REQUESTED.value:
        _move(s, row, "mark_sent")  # the reply proves it left; the relay marks it late
    code = doc.reply.code
    if row.action == Action.CANCEL.value:
        return _cancel_reply(deps, s, row, doc, code)
    if code in REFUSE:
        return _refuse(deps, s, row, doc)
    if code not in CONFIRM:
        return Outcome(
            row.id, f"reply code {code.value} does not answer a booking", AppRecError.OTHER
        )
    if row.action == Action.CHANGE_WISH.value:
        return _change_confirmed(deps, s, row, doc)
    return _confirm(deps, s, row, doc)


def _confirm(deps: Deps, s: Session, row: BookingRow, doc: DialogMessage) -> Outcome:
    if row.state in (State.CONFIRMED.value, State.CANCEL_REQUESTED.value):
        return Outcome(row.id, "already confirmed")
    event = doc.event or _requested_event(row)
    if event is None:
        return Outcome(row.id, "confirmation without an appointment time", AppRecError.OTHER)
    _move(s, row, "confirm", _reply_reason(doc))
    row.appointment_uid = event.uid
    _store_appointment(deps, s, row, doc, event)
    _notify(deps, s, row, "confirmed", event=event, practitioner=_practitioner(row, doc))
    return Outcome(row.id, "confirmed")


def _refuse(deps: Deps, s: Session, row: BookingRow, doc: DialogMessage) -> Outcome:
    # A late answer to a resent request (same MsgId, answered twice) may refuse what the
    # clinic already confirmed, even after the patient asked to cancel it.
    if row.state in (State.CONFIRMED.value, State.CANCEL_REQUESTED.value):
        return Outcome(row.id, "ignored: a refusal after the confirmation")
    reason = _reply_reason(doc)
    _move(s, row, "reject", reason)
    taken = row.action == Action.RESERVE.value and _code(doc) is ReplyCode.NOT_AVAILABLE
    _notify(deps, s, row, "rejected", reason=_clinic_text(doc), slot_taken=taken)
    return Outcome(row.id, "rejected")


def _code(doc: DialogMessage) -> ReplyCode | None:
    return doc.reply.code if doc.reply is not None else None


def _change_confirmed(deps: Deps, s: Session, row: BookingRow, doc: DialogMessage) -> Outcome:
    if row.state in (State.CONFIRMED.value, State.CANCEL_REQUESTED.value):
        return Outcome(row.id, "already confirmed")  # a second answer to a resent change
    _move(s, row, "confirm", _reply_reason(doc))
    target = get_booking(s, row.target_id, lock=True) if row.target_id else None
    if doc.event is None or target is None:
        return Outcome(row.id, "change confirmed")
    if target.state == State.CONFIRMED.value:
        _move(s, target, "confirm", "changed by the clinic")
    row.appointment_uid = target.appointment_uid = doc.event.uid
    _store_appointment(deps, s, target, doc, doc.event)
    key = f"{target.id}:changed:{doc.envelope.msg_id}"
    _notify(
        deps,
        s,
        target,
        "changed",
        event=doc.event,
        key=key,
        practitioner=_practitioner(target, doc),
    )
    return Outcome(row.id, "change confirmed")


def _cancel_reply(
    deps: Deps, s: Session, row: BookingRow, doc: DialogMessage, code: ReplyCode
) -> Outcome:
    target = get_booking(s, row.target_id, lock=True) if row.target_id else None
    uid = _target_uid(row, target, doc)
    if code is ReplyCode.CANCEL_CONFIRMED:
        _move(s, row, "cancel", "patient")
        if target is not None and State(target.state) not in TERMINAL:
            _move(s, target, "cancel", "patient")
        if uid:
            set_appointment_status(s, uid, texts.STATUS_CANCELLED)
        _notify(deps, s, row, "cancel_confirmed", uid=uid)
        return Outcome(row.id, "cancellation confirmed")
    if code in (ReplyCode.CANCEL_REFUSED, *REFUSE):
        _move(s, row, "reject", _reply_reason(doc))
        if target is not None and target.state == State.CANCEL_REQUESTED.value:
            _move(s, target, "confirm", "cancellation refused")
        _notify(deps, s, row, "cancel_refused", reason=_clinic_text(doc), uid=uid)
        return Outcome(row.id, "cancellation refused")
    return Outcome(
        row.id, f"reply code {code.value} does not answer a cancellation", AppRecError.OTHER
    )


# -- Avtale: appointments the clinic publishes ---------------------------------------------


def _avtale(deps: Deps, s: Session, doc: DialogMessage) -> Outcome:
    event, patient = doc.event, doc.envelope.patient
    if event is None:
        return Outcome(None, "Avtale without a vevent", AppRecError.OTHER)
    row = correlate(s, doc)
    known = s.get(AppointmentRow, event.uid)
    if patient is None and row is None and known is None:
        return Outcome(None, "Avtale without a patient", AppRecError.PATIENT_FNR_MISSING)
    if (event.status or "").upper() == "CANCELLED":
        return _clinic_cancel(deps, s, doc, event, row, known)
    if row is not None and row.state in (State.SENT.value, State.DELIVERED.value):
        return _confirm(deps, s, row, doc)
    if row is not None and row.state == State.REQUESTED.value:
        _move(s, row, "mark_sent")
        return _confirm(deps, s, row, doc)
    if known is not None or (row is not None and row.state == State.CONFIRMED.value):
        return _clinic_change(deps, s, doc, event, row)
    return _new_appointment(deps, s, doc, event)


def _clinic_cancel(
    deps: Deps,
    s: Session,
    doc: DialogMessage,
    event: Event,
    row: BookingRow | None,
    known: AppointmentRow | None,
) -> Outcome:
    if row is None and known is None:
        return Outcome(
            None, f"cancellation of unknown appointment {event.uid}", AppRecError.PATIENT_UNKNOWN
        )
    if row is not None and State(row.state) not in TERMINAL:
        _move(s, row, "cancel", "clinic", _clinic_text(doc))
    if known is None and row is not None:
        _store_appointment(deps, s, row, doc, event)
    set_appointment_status(s, event.uid, texts.STATUS_CANCELLED)
    fnr = row.patient_fnr if row is not None else known.patient_fnr if known else None
    _notify_fnr(deps, s, fnr, "cancelled_by_clinic", row, event, key=f"{event.uid}:cancelled")
    return Outcome(row.id if row else None, "cancelled by the clinic")


def _clinic_change(
    deps: Deps, s: Session, doc: DialogMessage, event: Event, row: BookingRow | None
) -> Outcome:
    if row is not None and row.state == State.CONFIRMED.value:
        _move(s, row, "confirm", "changed by the clinic")
        row.appointment_uid = event.uid
    fnr = _patient_fnr(doc, row, event, s)
    _upsert(deps, s, fnr, row, doc, event)
    key = f"{event.uid}:changed:{doc.envelope.msg_id}"
    _notify_fnr(deps, s, fnr, "changed", row, event, key=key)
    return Outcome(row.id if row else None, "appointment changed")


def _new_appointment(deps: Deps, s: Session, doc: DialogMessage, event: Event) -> Outcome:
    fnr = _patient_fnr(doc, None, event, s)
    _upsert(deps, s, fnr, None, doc, event)
    _notify_fnr(deps, s, fnr, "new_appointment", None, event, key=f"{event.uid}:new")
    return Outcome(None, "new appointment from the clinic")


# -- correlation -----------------------------------------------------------------------------


def correlate(s: Session, doc: DialogMessage) -> BookingRow | None:
    """The booking a message concerns: ConversationRef first, then the xCal uid / related-to."""
    conv = doc.envelope.conversation
    if conv is not None:
        for ref in (conv.ref_to_parent, conv.ref_to_conversation):
            booking = booking_by_message(s, ref)
            if booking is not None:
                return booking
    if doc.event is None:
        return None
    refs = [r for r in (doc.event.uid, doc.event.related_to) if r]
    stmt = (
        select(BookingRow)
        .where(BookingRow.action.in_([Action.RESERVE.value, Action.WISH.value]))
        .where(
            or_(
                BookingRow.id.in_(refs),
                BookingRow.appointment_uid.in_(refs),
                BookingRow.slot_id.in_(refs),
            )
        )
        .order_by(BookingRow.created_at.desc())
        .with_for_update(key_share=True)
    )
    return s.scalars(stmt).first()


# -- small helpers ---------------------------------------------------------------------------


def _move(s: Session, row: BookingRow, method: str, *args: str | None) -> None:
    booking = to_domain(row)
    getattr(booking, method)(*args)
    save_moves(s, row, booking)


def _release_target(s: Session, row: BookingRow) -> None:
    """A cancellation that never arrived leaves the appointment as it was."""
    if row.action != Action.CANCEL.value or not row.target_id:
        return
    target = get_booking(s, row.target_id, lock=True)
    if target is not None and target.state == State.CANCEL_REQUESTED.value:
        _move(s, target, "confirm", "cancellation could not be delivered")


def _reply_reason(doc: DialogMessage) -> str | None:
    reply = doc.reply
    if reply is None:
        return None
    from mappers.codes import REPLY_NAMES

    name = REPLY_NAMES.get(reply.code, reply.code.value)
    return f"{reply.code.value} {name}" + (f": {reply.text}" if reply.text else "")


def _clinic_text(doc: DialogMessage) -> str | None:
    if doc.reply is not None:
        return doc.reply.text
    return doc.request.text if doc.request is not None else None


def _practitioner(row: BookingRow | None, doc: DialogMessage) -> str | None:
    for part in (doc.reply, doc.request):
        if part is not None and part.practitioner is not None:
            return part.practitioner.name
    practitioner = (row.request or {}).get("practitioner") if row is not None else None
    return str(practitioner["name"]) if isinstance(practitioner, dict) else None


def _requested_event(row: BookingRow) -> Event | None:
    slot = (row.request or {}).get("slot")
    if not isinstance(slot, dict):
        return None
    from datetime import datetime

    return Event(
        uid=row.id,
        start=datetime.fromisoformat(slot["start"]),
        end=datetime.fromisoformat(slot["end"]),
        contact=row.clinic_her_id or "",
        related_to=slot.get("id"),
    )


def _target_uid(row: BookingRow, target: BookingRow | None, doc: DialogMessage) -> str | None:
    if doc.event is not None:
        return doc.event.uid
    if target is not None and target.appointment_uid:
        return target.appointment_uid
    return row.target_id


def _type_name(row: BookingRow | None, event: Event) -> str:
    if event.appointment_type is not None:
        return TYPE_NAMES.get(event.appointment_type, "in_person")
    requested = (row.request or {}).get("appointment_type") if row is not None else None
    return str(requested or "in_person")


def _patient_fnr(doc: DialogMessage, row: BookingRow | None, event: Event, s: Session) -> str:
    if row is not None and row.patient_fnr:
        return row.patient_fnr
    known = s.get(AppointmentRow, event.uid)
    if known is not None:
        return known.patient_fnr
    patient = doc.envelope.patient
    return patient.fnr if patient is not None else ""


def _clinic_name(deps: Deps, her_id: str | None) -> tuple[str, str | None]:
    clinic = deps.registry.clinic(her_id) if her_id else None
    if clinic is None:
        return (her_id or "klinikken"), None
    return clinic.name, clinic.phone


def _store_appointment(
    deps: Deps, s: Session, row: BookingRow, doc: DialogMessage, event: Event
) -> None:
    _upsert(deps, s, row.patient_fnr or "", row, doc, event)


def _upsert(
    deps: Deps, s: Session, fnr: str, row: BookingRow | None, doc: DialogMessage, event: Event
) -> None:
    her_id = event.contact or doc.envelope.sender.her_id
    name, _phone = _clinic_name(deps, her_id)
    kind = _type_name(row, event)
    upsert_appointment(
        s,
        AppointmentView(
            uid=event.uid,
            patient_fnr=fnr,
            clinic_her_id=her_id,
            clinic_name=name,
            practitioner=_practitioner(row, doc),
            start=event.start,
            end=event.end,
            appointment_type=kind,
            location=texts.place_of_attendance(kind, event.location or name),
            status=texts.STATUS_ASSIGNED,
            booking_id=row.id if row is not None else None,
            video_url=event.url,
            summary=event.summary,
        ),
    )


def _notify(
    deps: Deps,
    s: Session,
    row: BookingRow,
    event_name: str,
    *,
    event: Event | None = None,
    reason: str | None = None,
    practitioner: str | None = None,
    uid: str | None = None,
    key: str | None = None,
    slot_taken: bool = False,
) -> None:
    name, phone = _clinic_name(deps, row.clinic_her_id)
    kind = _type_name(row, event) if event is not None else None
    ctx = texts.NoticeContext(
        clinic_name=name,
        clinic_phone=phone,
        start=event.start if event else None,
        end=event.end if event else None,
        practitioner=practitioner,
        location=(event.location if event else None),
        appointment_type=kind,
        reason=reason,
        video_url=event.url if event else None,
        action=row.action,
        slot_taken=slot_taken,
    )
    appointment = uid or (event.uid if event else row.appointment_uid)
    if row.patient_fnr:
        notify(s, Notice(row.patient_fnr, event_name, ctx, row.id, appointment, key))


def _notify_fnr(
    deps: Deps,
    s: Session,
    fnr: str | None,
    event_name: str,
    row: BookingRow | None,
    event: Event,
    *,
    key: str,
) -> None:
    if not fnr:
        return
    name, phone = _clinic_name(deps, event.contact)
    kind = _type_name(row, event)
    ctx = texts.NoticeContext(
        clinic_name=name,
        clinic_phone=phone,
        start=event.start,
        end=event.end,
        location=event.location,
        appointment_type=kind,
        video_url=event.url,
    )
    booking_id = row.id if row is not None else None
    notify(s, Notice(fnr, event_name, ctx, booking_id, event.uid, key))
