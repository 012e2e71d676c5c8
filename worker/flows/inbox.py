"""The patient's inbox and Timeavtaler: written in the same transaction as the state change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy import Boolean, bindparam, select, text
from sqlalchemy.orm import Session

from worker import metrics, texts
from worker.adapters.store.db import after_commit, held_booking, later, utcnow
from worker.adapters.store.tables import AppointmentRow, BookingRow, NotificationRow, UtcDateTime


@dataclass(frozen=True)
class Notice:
    """One inbox notification to write, with the key that makes it happen once."""

    patient_fnr: str
    event: str
    ctx: texts.NoticeContext
    booking_id: str | None = None
    appointment_uid: str | None = None
    key: str | None = None  # defaults to "<booking or appointment>:<event>"

    @property
    def dedupe_key(self) -> str:
        """The unique key: one notification per (booking, event) unless told otherwise."""
        if self.key:
            return self.key
        subject = self.booking_id or self.appointment_uid or "-"
        return f"{subject}:{self.event}"


# Plain SQL that PostgreSQL and SQLite (3.35+) both run: building the equivalent Core
# statement for every notification cost more CPU than the database spends on it.
_NOTIFY = text(
    "INSERT INTO notifications (dedupe_key, patient_fnr, booking_id, event, title, body,"
    " appointment_uid, repliable, created_at) VALUES (:dedupe_key, :patient_fnr, :booking_id,"
    " :event, :title, :body, :appointment_uid, :repliable, :created_at)"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
).bindparams(bindparam("repliable", type_=Boolean()), bindparam("created_at", type_=UtcDateTime()))


def notify(s: Session, notice: Notice) -> None:
    """Write the notification unless one with the same key exists.

    One statement (INSERT ... ON CONFLICT DO NOTHING), sent with the unit of work's other
    writes when it commits (`later`): the unique key decides, so two transactions racing
    on one key still write it once.
    """
    title, body = texts.notification(notice.event, notice.ctx)
    values = {
        "dedupe_key": notice.dedupe_key,
        "patient_fnr": notice.patient_fnr,
        "booking_id": notice.booking_id,
        "event": notice.event,
        "title": title,
        "body": body,
        "appointment_uid": notice.appointment_uid,
        "repliable": False,
        "created_at": utcnow(),
    }
    later(s, _NOTIFY, values, then=partial(_time_it, s, notice, _created_at(s, notice)))


def _created_at(s: Session, notice: Notice) -> datetime | None:
    """When the booking the notice is about was requested (for notices about a booking)."""
    if notice.booking_id is None:
        return None
    booking = held_booking(s, notice.booking_id) or s.get(BookingRow, notice.booking_id)
    return booking.created_at if booking is not None else None


def _time_it(s: Session, notice: Notice, requested: datetime | None, written: object) -> None:
    """Observe request -> notification once committed, when it was written just now."""
    if written is not None and requested is not None:
        waited = metrics.since(requested) or 0.0
        after_commit(s, partial(metrics.request_to_notification, notice.event, waited))


@dataclass(frozen=True)
class AppointmentView:
    """What Timeavtaler shows for one appointment."""

    uid: str
    patient_fnr: str
    clinic_her_id: str
    clinic_name: str
    practitioner: str | None
    start: datetime
    end: datetime
    appointment_type: str
    location: str
    status: str
    booking_id: str | None = None
    video_url: str | None = None
    summary: str | None = None


_UPSERT_APPOINTMENT = text(
    """
    INSERT INTO appointments (uid, booking_id, patient_fnr, clinic_her_id, clinic_name,
        practitioner, start, "end", appointment_type, location, status, video_url, summary,
        updated_at)
    VALUES (:uid, :booking_id, :patient_fnr, :clinic_her_id, :clinic_name, :practitioner,
        :start, :end, :appointment_type, :location, :status, :video_url, :summary, :updated_at)
    ON CONFLICT (uid) DO UPDATE SET
        booking_id = coalesce(excluded.booking_id, appointments.booking_id),
        patient_fnr = excluded.patient_fnr, clinic_her_id = excluded.clinic_her_id,
        clinic_name = excluded.clinic_name, practitioner = excluded.practitioner,
        start = excluded.start, "end" = excluded."end",
        appointment_type = excluded.appointment_type, location = excluded.location,
        status = excluded.status, video_url = excluded.video_url, summary = excluded.summary,
        updated_at = excluded.updated_at
    """
).bindparams(*(bindparam(c, type_=UtcDateTime()) for c in ("start", "end", "updated_at")))


def upsert_appointment(s: Session, view: AppointmentView) -> None:
    """Create or update the appointment with this uid, in one statement.

    A clinic update carries no booking id: the stored one is kept, never forgotten.
    """
    later(s, _UPSERT_APPOINTMENT, {**vars(view), "updated_at": utcnow()})


_SET_APPOINTMENT_STATUS = text(
    "UPDATE appointments SET status = :status, updated_at = :updated_at WHERE uid = :uid"
).bindparams(bindparam("updated_at", type_=UtcDateTime()))


def set_appointment_status(s: Session, uid: str, status: str) -> None:
    """Change an appointment's status (e.g. Avbestilt); nothing when the uid is unknown.

    Queued after any upsert of the same appointment in this unit of work (`later`).
    """
    later(s, _SET_APPOINTMENT_STATUS, {"uid": uid, "status": status, "updated_at": utcnow()})


def inbox(s: Session, fnr: str) -> list[NotificationRow]:
    """A patient's notifications, newest first."""
    stmt = (
        select(NotificationRow)
        .where(NotificationRow.patient_fnr == fnr)
        .order_by(NotificationRow.id.desc())
    )
    return list(s.scalars(stmt))


def appointments(s: Session, fnr: str) -> list[AppointmentRow]:
    """A patient's appointments, soonest first."""
    stmt = (
        select(AppointmentRow)
        .where(AppointmentRow.patient_fnr == fnr)
        .order_by(AppointmentRow.start)
    )
    return list(s.scalars(stmt))
