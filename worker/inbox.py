"""The patient's inbox and Timeavtaler: written in the same transaction as the state change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from worker import metrics, texts
from worker.adapters.store import after_commit, utcnow
from worker.adapters.tables import AppointmentRow, BookingRow, NotificationRow


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


def notify(s: Session, notice: Notice) -> bool:
    """Write the notification unless one with the same key exists; True when written."""
    key = notice.dedupe_key
    exists = s.scalar(select(NotificationRow.id).where(NotificationRow.dedupe_key == key))
    if exists is not None:
        return False
    title, body = texts.notification(notice.event, notice.ctx)
    s.add(
        NotificationRow(
            dedupe_key=key,
            patient_fnr=notice.patient_fnr,
            booking_id=notice.booking_id,
            event=notice.event,
            title=title,
            body=body,
            appointment_uid=notice.appointment_uid,
            repliable=False,
            created_at=utcnow(),
        )
    )
    s.flush()
    _time_it(s, notice)
    return True


def _time_it(s: Session, notice: Notice) -> None:
    """Observe request -> notification once committed (for notices about a booking)."""
    booking = s.get(BookingRow, notice.booking_id) if notice.booking_id else None
    if booking is not None:
        waited = metrics.since(booking.created_at) or 0.0
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


def upsert_appointment(s: Session, view: AppointmentView) -> AppointmentRow:
    """Create or update the appointment with this uid."""
    row = s.get(AppointmentRow, view.uid)
    if row is None:
        row = AppointmentRow(uid=view.uid)
        s.add(row)
    for name, value in vars(view).items():
        if name == "booking_id" and value is None and row.booking_id is not None:
            continue  # a clinic update does not forget which booking made the appointment
        setattr(row, name, value)
    row.updated_at = utcnow()
    s.flush()
    return row


def set_appointment_status(s: Session, uid: str, status: str) -> AppointmentRow | None:
    """Change an appointment's status (e.g. Avbestilt); None when unknown."""
    row = s.get(AppointmentRow, uid)
    if row is not None:
        row.status = status
        row.updated_at = utcnow()
    return row


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
