"""Patient-facing Norwegian texts: every event renders, says the right things, leaks no English."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mappers.codes import Process
from worker.texts import (
    NO_REPLY,
    SLOT_TAKEN,
    STATUS_ASSIGNED,
    STATUS_CANCELLED,
    STATUS_CHANGED,
    STATUS_PENDING,
    Notice,
    NoticeContext,
    appointment_status_label,
    clinic_not_connected,
    clinic_unknown,
    clinic_unsupported,
    contact_clinic,
    format_date,
    format_period,
    format_time,
    notification,
    place_of_attendance,
)

START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # 10:00 in Oslo (winter time)
FULL = NoticeContext(
    clinic_name="Testlegekontoret",
    clinic_phone="81569069",
    start=START,
    end=START + timedelta(minutes=20),
    practitioner="August September",
    location="Storgata 1, 0155 Oslo",
    appointment_type="in_person",
    reason="Legen er syk denne dagen.",
)
BARE = NoticeContext(clinic_name="Testlegekontoret")

ENGLISH = {
    "the", "and", "your", "you", "is", "are", "not", "please", "appointment", "booking",
    "clinic", "cancelled", "confirmed", "rejected", "request", "none", "null", "phone",
    "contact", "message", "reply", "expired", "invalid", "undeliverable", "changed",
    "in_person", "urgent", "slot", "reason", "error",
}  # fmt: skip

EVENTS = list(Notice)


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("ctx", [FULL, BARE], ids=["full", "bare"])
def test_every_event_renders_norwegian_and_is_non_repliable(
    event: Notice, ctx: NoticeContext
) -> None:
    title, body = notification(event.value, ctx)
    assert title
    assert title[0].isupper()
    assert body.endswith("\n\n" + NO_REPLY)
    assert body.count(NO_REPLY) == 1
    assert "Testlegekontoret" in body
    assert "{" not in body + title
    assert "\n\n\n" not in body
    assert "  " not in body
    words = {w.lower() for w in re.findall(r"[A-Za-z_]+", title + " " + body)}
    assert not words & ENGLISH


@pytest.mark.parametrize("event", EVENTS)
def test_time_is_shown_in_oslo_when_known(event: Notice) -> None:
    _, body = notification(event, FULL)
    if event is not Notice.INVALID:
        assert "tirsdag 1. desember 2026 kl. 10:00–10:20" in body


def test_confirmed_in_person() -> None:
    title, body = notification("confirmed", FULL)
    assert title == "Du har fått en ny timeavtale"
    assert body.startswith("Din timereservasjon er bekreftet.")
    assert "Behandler: August September" in body
    assert "Oppmøtested: Storgata 1, 0155 Oslo" in body
    assert "Start video" not in body


def test_confirmed_video_gives_preparation_advice() -> None:
    ctx = NoticeContext(
        clinic_name="Video Legesenter",
        start=START,
        appointment_type="video",
        location="Storgata 1",
        video_url="https://video.example/abc",
    )
    _, body = notification("confirmed", ctx)
    assert "Oppmøtested: Videotime" in body
    assert "Storgata 1" not in body
    assert "«Start video»" in body
    assert "Timeavtaler" in body
    assert "nettforbindelse" in body
    assert "https://video.example/abc" in body


def test_confirmed_phone() -> None:
    ctx = NoticeContext(clinic_name="Testlegekontoret", start=START, appointment_type="phone")
    _, body = notification("confirmed", ctx)
    assert "Oppmøtested: Telefontime" in body
    assert "ringer deg" in body


def test_place_falls_back_to_clinic_name() -> None:
    _, body = notification(
        "new_appointment", NoticeContext(clinic_name="Laboratoriet", start=START)
    )
    assert "Oppmøtested: Laboratoriet" in body


@pytest.mark.parametrize(
    ("event", "label"),
    [
        ("rejected", "Begrunnelse fra klinikken: Legen er syk denne dagen."),
        ("cancelled_by_clinic", "Begrunnelse fra klinikken: Legen er syk denne dagen."),
        ("cancel_refused", "Begrunnelse fra klinikken: Legen er syk denne dagen."),
        ("changed", "Melding fra klinikken: Legen er syk denne dagen."),
        ("invalid", "Årsak: Legen er syk denne dagen."),
    ],
)
def test_reason_is_shown_when_given(event: str, label: str) -> None:
    assert label in notification(event, FULL)[1]


def test_rejected_without_reason_has_no_empty_label() -> None:
    _, body = notification("rejected", BARE)
    assert "Begrunnelse" not in body


@pytest.mark.parametrize(
    "event",
    ["rejected", "cancelled_by_clinic", "cancel_refused", "undeliverable", "expired", "invalid"],
)
def test_contact_the_clinic_with_phone_when_known(event: str) -> None:
    assert "Kontakt klinikken direkte på telefon 81569069." in notification(event, FULL)[1]
    bare = notification(event, BARE)[1]
    assert "Kontakt klinikken direkte." in bare
    assert "telefon" not in bare


def test_cancel_refused_says_the_appointment_stands() -> None:
    assert "gjelder fortsatt" in notification("cancel_refused", FULL)[1]


def test_registry_reason_is_not_followed_by_a_second_contact_sentence() -> None:
    reason = clinic_not_connected("Frakoblet legekontor", "22334455")
    ctx = NoticeContext(clinic_name="Frakoblet legekontor", clinic_phone="22334455", reason=reason)
    _, body = notification("invalid", ctx)
    assert body.count("Kontakt klinikken") == 1
    assert "Årsak: Klinikken Frakoblet legekontor kan ikke motta" in body


def test_unknown_event() -> None:
    with pytest.raises(ValueError, match="is not a valid Notice"):
        notification("lost", BARE)


def test_registry_rejection_reasons() -> None:
    assert clinic_not_connected("Testlegekontoret", "81569069") == (
        "Klinikken Testlegekontoret kan ikke motta digitale timebestillinger. "
        "Kontakt klinikken direkte på telefon 81569069."
    )
    assert clinic_not_connected("X", None).endswith("Kontakt klinikken direkte.")
    assert clinic_unknown("X") == (
        "Klinikken X er ikke registrert for digitale timebestillinger. Kontakt klinikken direkte."
    )
    assert clinic_unsupported("Helsestasjonen Nord", None, Process.RESERVATION) == (
        "Klinikken Helsestasjonen Nord tar ikke imot timereservasjoner digitalt. "
        "Kontakt klinikken direkte."
    )
    assert "timeønsker" in clinic_unsupported("X", "1", Process.WISH)
    assert "denne typen henvendelser" in clinic_unsupported("X", "1", Process.APPREC)


def test_contact_clinic() -> None:
    assert contact_clinic("81569069") == "Kontakt klinikken direkte på telefon 81569069."
    assert contact_clinic(None) == contact_clinic("") == "Kontakt klinikken direkte."


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (START, "tirsdag 1. desember 2026 kl. 10:00"),
        (datetime(2026, 6, 15, 8, 5, tzinfo=UTC), "mandag 15. juni 2026 kl. 10:05"),  # summer time
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "søndag 29. mars 2026 kl. 03:30"),  # DST switch
        (datetime(2026, 1, 3, 23, 30, tzinfo=UTC), "søndag 4. januar 2026 kl. 00:30"),  # next day
        (
            datetime(2030, 5, 17, 12, 0, tzinfo=timezone(timedelta(hours=-5))),
            "fredag 17. mai 2030 kl. 19:00",
        ),
        (datetime(2026, 10, 8, 7, 0, tzinfo=UTC), "torsdag 8. oktober 2026 kl. 09:00"),
        (datetime(2026, 8, 12, 7, 0, tzinfo=UTC), "onsdag 12. august 2026 kl. 09:00"),
        (datetime(2026, 2, 7, 7, 0, tzinfo=UTC), "lørdag 7. februar 2026 kl. 08:00"),
    ],
)
def test_format_time(moment: datetime, text: str) -> None:
    assert format_time(moment) == text


def test_format_period_across_midnight() -> None:
    start = datetime(2026, 12, 1, 22, 30, tzinfo=UTC)
    assert format_period(start, start + timedelta(hours=1)) == (
        "tirsdag 1. desember 2026 kl. 23:30 til onsdag 2. desember 2026 kl. 00:30"
    )
    assert format_period(start, None) == "tirsdag 1. desember 2026 kl. 23:30"
    assert format_date(start) == "tirsdag 1. desember 2026"


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2026, 12, 1, 10, 0))


@pytest.mark.parametrize(
    ("kind", "location", "place"),
    [
        ("video", "Storgata 1", "Videotime"),
        ("phone", "Storgata 1", "Telefontime"),
        ("in_person", "Storgata 1", "Storgata 1"),
        ("urgent", None, "Testlegekontoret"),
        (None, "", "Testlegekontoret"),
    ],
)
def test_place_of_attendance(kind: str | None, location: str | None, place: str) -> None:
    assert place_of_attendance(kind, location, "Testlegekontoret") == place


def test_place_of_attendance_with_location_or_name_only() -> None:
    assert place_of_attendance("in_person", "Testlegekontoret") == "Testlegekontoret"
    assert place_of_attendance("video", "Testlegekontoret") == "Videotime"
    assert place_of_attendance(None, None) == ""


@pytest.mark.parametrize(
    ("status", "label"),
    [
        ("CONFIRMED", "Tildelt"),
        ("confirmed", "Tildelt"),
        ("CANCELLED", "Avbestilt"),
        ("changed", "Endret"),
        ("REQUESTED", "Venter på bekreftelse"),
        ("SENT", "Venter på bekreftelse"),
        ("DELIVERED", "Venter på bekreftelse"),
        ("TENTATIVE", "Venter på bekreftelse"),
        ("CANCEL_REQUESTED", "Avbestilling sendt"),
        ("REJECTED", "Avvist"),
        ("FAILED", "Ikke levert"),
        ("EXPIRED", "Ikke besvart"),
        ("INVALID", "Ikke sendt"),
    ],
)
def test_appointment_status_label(status: str, label: str) -> None:
    assert appointment_status_label(status) == label


def test_every_booking_state_has_a_label() -> None:
    from worker.domain.booking import State

    for state in State:
        assert appointment_status_label(state)


def test_status_constants_are_the_labels() -> None:
    assert appointment_status_label("CONFIRMED") == STATUS_ASSIGNED == "Tildelt"
    assert appointment_status_label("CANCELLED") == STATUS_CANCELLED == "Avbestilt"
    assert appointment_status_label("changed") == STATUS_CHANGED == "Endret"
    assert appointment_status_label("SENT") == STATUS_PENDING == "Venter på bekreftelse"


def test_unknown_status_label() -> None:
    with pytest.raises(ValueError, match="no label for status 'LOST'"):
        appointment_status_label("LOST")


def test_confirmed_wish_says_the_wish_was_answered() -> None:
    from worker.texts import NoticeContext, notification

    _title, wish = notification(
        "confirmed", NoticeContext(clinic_name="Testlegekontoret", action="wish")
    )
    _title, slot = notification(
        "confirmed", NoticeContext(clinic_name="Testlegekontoret", action="reserve")
    )
    assert "timeønsket ditt" in wish and "timereservasjon" not in wish
    assert "Din timereservasjon er bekreftet." in slot


def test_a_slot_taken_by_another_patient_says_so() -> None:
    ctx = NoticeContext(
        clinic_name="Testlegekontoret",
        clinic_phone="81569069",
        reason="Timen er allerede reservert.",
        action="reserve",
        slot_taken=True,
    )
    title, body = notification(Notice.REJECTED.value, ctx)
    assert title == "Timen er ikke lenger ledig"
    assert body.startswith(SLOT_TAKEN)
    assert "Timen er allerede reservert." in body and "81569069" in body
    assert "ut fra bestillingen din" not in body  # not the generic refusal
    generic_title, generic = notification(Notice.REJECTED.value, replace(ctx, slot_taken=False))
    assert SLOT_TAKEN not in generic and generic_title != title
