"""Booking request -> the DialogMessage a clinic receives (which function, which documents)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from mappers.codes import Process, RequestCode
from mappers.model import (
    DialogMessage,
    Envelope,
    Event,
    Party,
    Person,
    Practitioner,
    Relation,
    Request,
)
from worker import texts
from worker.adapters.registry import Clinic
from worker.adapters.store.tables import AppointmentRow, BookingRow
from worker.domain.booking import Action
from worker.kinds import appointment_type_code
from worker.request import BookingRequest, relation_code, urgency


@dataclass(frozen=True)
class Target:
    """The booking or appointment a cancel / change_wish refers to."""

    booking: BookingRow | None
    appointment: AppointmentRow | None

    @property
    def uid(self) -> str | None:
        """The appointment uid the clinic knows, when there is one."""
        if self.appointment is not None:
            return self.appointment.uid
        return self.booking.appointment_uid if self.booking is not None else None


def function_for(req: BookingRequest, target: Target | None) -> tuple[Process, RequestCode]:
    if req.action is Action.RESERVE:
        return Process.RESERVATION, RequestCode.RESERVE
    if req.action is Action.WISH:
        return Process.WISH, RequestCode.WISH
    if req.action is Action.CHANGE_WISH:
        return Process.WISH, RequestCode.WISH_CHANGE
    booking = target.booking if target else None
    if booking is not None and booking.action == Action.WISH.value and not target_uid(target):
        return Process.WISH, RequestCode.WISH_CANCEL
    if booking is not None and booking.action == Action.RESERVE.value:
        return Process.RESERVATION, RequestCode.CANCEL
    return Process.CANCELLATION, RequestCode.CANCEL


def target_uid(target: Target | None) -> str | None:
    """The appointment uid of a target, if it has one."""
    return target.uid if target is not None else None


def build_dialog(
    sender: Party,
    req: BookingRequest,
    clinic: Clinic,
    process: Process,
    code: RequestCode,
    target: Target | None,
    now: datetime,
) -> DialogMessage:
    envelope = Envelope(
        process=process,
        msg_id=str(uuid.uuid4()),
        gen_date=now,
        sender=sender,
        receiver=_receiver(clinic, req.clinic.unit_her_id),
        patient=Person(
            req.patient.fnr, req.patient.given_name, req.patient.family_name, req.patient.phone
        ),
    )
    return DialogMessage(
        envelope=envelope,
        request=_request(req, code),
        event=_event(req, clinic, target),
        relation=_relation(req),
    )


def _request(req: BookingRequest, code: RequestCode) -> Request:
    """The Foresporsel; a wish carries its wanted type, urgency and service, having no vevent."""
    request = Request(code, req.subject, _text(req), _practitioner(req))
    if req.action not in (Action.WISH, Action.CHANGE_WISH):
        return request
    return replace(
        request,
        appointment_type=appointment_type_code(req.appointment_type),
        urgency=urgency(req.appointment_type),
        service=req.service.value if req.service is not None else None,
    )


def _receiver(clinic: Clinic, unit_her_id: str | None) -> Party:
    unit = next((u for u in clinic.units if u.her_id == unit_her_id), None)
    inner = Party(unit.her_id, unit.name) if unit is not None else None
    return Party(clinic.her_id, clinic.name, inner)


def _text(req: BookingRequest) -> str | None:
    parts = [req.message] if req.message else []
    parts += [f"{qa.question}: {qa.answer}" for qa in req.questionnaire or []]
    return "\n".join(parts) or None


def _practitioner(req: BookingRequest) -> Practitioner | None:
    p = req.practitioner
    return Practitioner(p.name, p.her_id, p.hpr) if p is not None else None


def _relation(req: BookingRequest) -> Relation | None:
    r = req.requester
    code = relation_code(r.relation) if r is not None else None
    if r is None or code is None:
        return None
    return Relation(Person(r.fnr, r.given_name, r.family_name), code)


def _event(req: BookingRequest, clinic: Clinic, target: Target | None) -> Event | None:
    if req.action is Action.RESERVE and req.slot is not None:
        return Event(
            uid=req.request_id,
            start=req.slot.start,
            end=req.slot.end,
            contact=clinic.her_id,
            related_to=req.slot.id,
            summary=req.subject,
            location=texts.place_of_attendance(req.appointment_type, clinic.name),
            appointment_type=appointment_type_code(req.appointment_type),
            service=req.service,
        )
    appt = target.appointment if target is not None else None
    if appt is None:
        return None
    return Event(
        uid=appt.uid,
        start=appt.start,
        end=appt.end,
        contact=appt.clinic_her_id,
        summary=appt.summary,
        location=appt.location,
        status="CANCELLED" if req.action is Action.CANCEL else None,
    )
