"""The .ics export imports into a calendar: UID, zoned DTSTART/DTEND, SUMMARY, LOCATION."""

from __future__ import annotations

from datetime import UTC, datetime

from icalendar import Calendar

from worker.adapters.store.tables import AppointmentRow
from worker.flows.ics import OSLO, to_ics


def _appointment(status: str = "Tildelt") -> AppointmentRow:
    return AppointmentRow(
        uid="5b7d4764-34b0-4bc9-a305-2ffb1cd30714",
        patient_fnr="14838510036",
        clinic_her_id="8090020",
        clinic_name="Video Legesenter",
        practitioner="August September",
        start=datetime(2026, 12, 1, 14, 0, tzinfo=UTC),
        end=datetime(2026, 12, 1, 14, 20, tzinfo=UTC),
        appointment_type="video",
        location="Videotime",
        status=status,
        video_url="https://video.example/rom/1",
    )


def test_ics_round_trips_through_a_calendar_parser() -> None:
    data = to_ics(_appointment(), now=datetime(2026, 11, 26, tzinfo=UTC))
    cal = Calendar.from_ical(data)
    [event] = cal.walk("VEVENT")
    assert str(event["UID"]) == "5b7d4764-34b0-4bc9-a305-2ffb1cd30714"
    start = event["DTSTART"].dt
    assert start.tzinfo is not None and start.astimezone(OSLO).hour == 15
    assert event["DTEND"].dt - start == (
        datetime(2026, 12, 1, 14, 20, tzinfo=UTC) - datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    )
    assert b"DTSTART;TZID=Europe/Oslo:20261201T150000" in data
    assert str(event["SUMMARY"]) == "Time hos Video Legesenter"
    assert str(event["LOCATION"]) == "Videotime"
    assert str(event["URL"]) == "https://video.example/rom/1"
    assert str(event["STATUS"]) == "CONFIRMED"
    [tz] = cal.walk("VTIMEZONE")
    assert str(tz["TZID"]) == "Europe/Oslo"
    assert b"14838510036" not in data  # no fødselsnummer in a file meant for sharing


def test_cancelled_appointment_exports_as_cancelled() -> None:
    cal = Calendar.from_ical(to_ics(_appointment("Avbestilt")))
    [event] = cal.walk("VEVENT")
    assert str(event["STATUS"]) == "CANCELLED"
