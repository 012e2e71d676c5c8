"""RFC 5545 export of one appointment ("Legg i egen kalender")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event

from worker.texts import STATUS_CANCELLED

OSLO = ZoneInfo("Europe/Oslo")


class CalendarEntry(Protocol):
    """What an appointment shows in a calendar (a stored row or the read side's view)."""

    @property
    def uid(self) -> str: ...
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def clinic_name(self) -> str: ...
    @property
    def location(self) -> str: ...
    @property
    def practitioner(self) -> str | None: ...
    @property
    def video_url(self) -> str | None: ...
    @property
    def status(self) -> str: ...


def to_ics(appt: CalendarEntry, now: datetime | None = None) -> bytes:
    """A calendar file with one VEVENT and its VTIMEZONE, importable by calendar apps."""
    cal = Calendar()
    cal.add("prodid", "-//timebok//Timeavtaler//NB")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    ev = Event()
    ev.add("uid", appt.uid)
    ev.add("dtstamp", now or datetime.now(UTC))
    ev.add("dtstart", appt.start.astimezone(OSLO))
    ev.add("dtend", appt.end.astimezone(OSLO))
    ev.add("summary", f"Time hos {appt.clinic_name}")
    ev.add("location", appt.location)
    if appt.practitioner:
        ev.add("description", f"Behandler: {appt.practitioner}")
    if appt.video_url:
        ev.add("url", appt.video_url)
    ev.add("status", "CANCELLED" if appt.status == STATUS_CANCELLED else "CONFIRMED")
    cal.add_component(ev)
    # Only the transitions around the appointment, not every one since 1970.
    start = appt.start.astimezone(OSLO).date()
    cal.add_missing_timezones(
        first_date=start - timedelta(days=366), last_date=start + timedelta(days=366)
    )
    return bytes(cal.to_ical())
