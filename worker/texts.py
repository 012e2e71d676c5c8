"""Every patient-facing text, in Norwegian bokmål, in one place for review."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo

from mappers.codes import Process

OSLO: Final = ZoneInfo("Europe/Oslo")
NO_REPLY: Final = "Denne meldingen kan ikke besvares."
# A reservation refused with Svar 06: another patient took the slot first.
SLOT_TAKEN: Final = "Timen du valgte er dessverre ikke lenger ledig. Velg en annen time."

# Written out here so the output never depends on the machine's locale.
_WEEKDAYS: Final = ("mandag", "tirsdag", "onsdag", "torsdag", "fredag", "lørdag", "søndag")
_MONTHS: Final = (
    "januar",
    "februar",
    "mars",
    "april",
    "mai",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "desember",
)


class Notice(StrEnum):
    """The inbox notifications timebok writes."""

    CONFIRMED = "confirmed"  # the clinic confirmed the booking
    REJECTED = "rejected"  # the clinic said no
    CHANGED = "changed"  # the clinic changed an appointment
    NEW_APPOINTMENT = "new_appointment"  # the clinic published an appointment (avtaleutsending)
    CANCELLED_BY_CLINIC = "cancelled_by_clinic"  # the clinic cancelled an appointment
    CANCEL_CONFIRMED = "cancel_confirmed"  # the patient's cancellation went through
    CANCEL_REFUSED = "cancel_refused"  # the clinic could not cancel; the appointment stands
    UNDELIVERABLE = "undeliverable"  # the message never reached the clinic
    EXPIRED = "expired"  # delivered, but no answer in time
    INVALID = "invalid"  # the request broke a rule and was never sent


@dataclass(frozen=True)
class NoticeContext:
    """What a notification may mention; `reason` must already be Norwegian and safe to show."""

    clinic_name: str
    clinic_phone: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    practitioner: str | None = None
    location: str | None = None
    appointment_type: str | None = None  # in_person | video | phone | urgent
    reason: str | None = None
    video_url: str | None = None
    action: str | None = None  # the request answered: reserve | wish | change_wish | cancel
    slot_taken: bool = False  # a reservation refused because the slot is no longer free


def notification(event: str, ctx: NoticeContext) -> tuple[str, str]:
    """(title, body) of the inbox notification for `event`; ValueError for an unknown event."""
    title, paragraphs = _BUILDERS[Notice(event)](ctx)
    body = "\n\n".join(p for p in (*paragraphs, NO_REPLY) if p)
    return title, body


def format_time(moment: datetime) -> str:
    """Like "tirsdag 1. desember 2026 kl. 10:00", in Oslo time."""
    local = _oslo(moment)
    return f"{format_date(local)} kl. {local:%H:%M}"


def format_date(moment: datetime) -> str:
    """Like "tirsdag 1. desember 2026", in Oslo time."""
    local = _oslo(moment)
    return f"{_WEEKDAYS[local.weekday()]} {local.day}. {_MONTHS[local.month - 1]} {local.year}"


def format_period(start: datetime, end: datetime | None) -> str:
    """Like "tirsdag 1. desember 2026 kl. 10:00–10:30" (the end date only when it differs)."""
    if end is None:
        return format_time(start)
    if _oslo(start).date() == _oslo(end).date():
        return f"{format_time(start)}–{_oslo(end):%H:%M}"
    return f"{format_time(start)} til {format_time(end)}"


def place_of_attendance(
    appointment_type: str | None, location: str | None, clinic_name: str | None = None
) -> str:
    """Where the patient attends: "Videotime", "Telefontime", else the location or the clinic."""
    if appointment_type == "video":
        return "Videotime"
    if appointment_type == "phone":
        return "Telefontime"
    return location or clinic_name or ""


# Appointment statuses as stored and shown under Timeavtaler.
STATUS_PENDING: Final = "Venter på bekreftelse"
STATUS_ASSIGNED: Final = "Tildelt"
STATUS_CHANGED: Final = "Endret"
STATUS_CANCELLED: Final = "Avbestilt"

_STATUS_LABELS: Final[Mapping[str, str]] = {
    "requested": STATUS_PENDING,
    "sent": STATUS_PENDING,
    "delivered": STATUS_PENDING,
    "pending": STATUS_PENDING,
    "tentative": STATUS_PENDING,
    "confirmed": STATUS_ASSIGNED,
    "assigned": STATUS_ASSIGNED,
    "changed": STATUS_CHANGED,
    "cancel_requested": "Avbestilling sendt",
    "cancelled": STATUS_CANCELLED,
    "rejected": "Avvist",
    "failed": "Ikke levert",
    "expired": "Ikke besvart",
    "invalid": "Ikke sendt",
}


def appointment_status_label(status: str) -> str:
    """The Timeavtaler label for a booking state or xCal status (case-insensitive)."""
    try:
        return _STATUS_LABELS[status.lower()]
    except KeyError:
        raise ValueError(f"no label for status {status!r}") from None


def contact_clinic(phone: str | None) -> str:
    """ "Kontakt klinikken direkte på telefon 81569069." (without the number when unknown)."""
    return (
        f"Kontakt klinikken direkte på telefon {phone}." if phone else "Kontakt klinikken direkte."
    )


def clinic_not_connected(clinic_name: str, phone: str | None) -> str:
    """Rejection reason: the clinic is listed but takes no digital bookings at all."""
    return f"Klinikken {clinic_name} kan ikke motta digitale timebestillinger. " + contact_clinic(
        phone
    )


def clinic_unknown(clinic_name: str) -> str:
    """Rejection reason: the clinic is not in the address registry."""
    return (
        f"Klinikken {clinic_name} er ikke registrert for digitale timebestillinger. "
        + contact_clinic(None)
    )


_PROCESS_NOUNS: Final[Mapping[Process, str]] = {
    Process.RESERVATION: "timereservasjoner",
    Process.WISH: "timeønsker",
    Process.CANCELLATION: "avbestillinger",
    Process.PUBLICATION: "timeavtaler",
}


def clinic_unsupported(clinic_name: str, phone: str | None, process: Process) -> str:
    """Rejection reason: the clinic is connected, but not for this kind of request."""
    noun = _PROCESS_NOUNS.get(process, "denne typen henvendelser")
    return f"Klinikken {clinic_name} tar ikke imot {noun} digitalt. " + contact_clinic(phone)


def _oslo(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime cannot be shown in Oslo time")
    return moment.astimezone(OSLO)


def _details(ctx: NoticeContext) -> str:
    """The appointment's time, clinic, practitioner and place, one per line (known ones only)."""
    lines = []
    if ctx.start is not None:
        lines.append(f"Tid: {format_period(ctx.start, ctx.end)}")
    place = place_of_attendance(ctx.appointment_type, ctx.location, ctx.clinic_name)
    if place != ctx.clinic_name:
        lines.append(f"Klinikk: {ctx.clinic_name}")
    if ctx.practitioner:
        lines.append(f"Behandler: {ctx.practitioner}")
    lines.append(f"Oppmøtested: {place}")
    return "\n".join(lines)


def _when(ctx: NoticeContext) -> str:
    """Just the time line, for notices about a booking that did not go through."""
    return f"Tid: {format_period(ctx.start, ctx.end)}" if ctx.start is not None else ""


def _advice(ctx: NoticeContext) -> str:
    """Preparation advice for video and phone appointments."""
    if ctx.appointment_type == "video":
        advice = (
            "Dette er en videotime. Finn et rolig sted med god nettforbindelse, og test kamera, "
            "mikrofon og lyd på forhånd. Knappen «Start video» vises under Timeavtaler når det "
            "nærmer seg timen."
        )
        return advice + (f"\nLenke til videotimen: {ctx.video_url}" if ctx.video_url else "")
    if ctx.appointment_type == "phone":
        return "Dette er en telefontime. Behandleren ringer deg, så ha telefonen tilgjengelig."
    return ""


def _join(*sentences: str) -> str:
    return " ".join(s for s in sentences if s)


def _reason(label: str, ctx: NoticeContext) -> str:
    return f"{label}: {ctx.reason}" if ctx.reason else ""


def _contact(ctx: NoticeContext) -> str:
    """The contact sentence, unless the reason already says it."""
    sentence = contact_clinic(ctx.clinic_phone)
    return "" if ctx.reason and sentence in ctx.reason else sentence


_KEEP = (
    "Du finner timen under Timeavtaler. Der kan du legge den i egen kalender eller avbestille den."
)

Paragraphs = tuple[str, tuple[str, ...]]


def _confirmed(ctx: NoticeContext) -> Paragraphs:
    lead = (
        "Klinikken har svart på timeønsket ditt og satt opp en time til deg."
        if ctx.action == "wish"
        else "Din timereservasjon er bekreftet."
    )
    return "Du har fått en ny timeavtale", (
        lead,
        _details(ctx),
        _advice(ctx),
        _reason("Melding fra klinikken", ctx),
        _KEEP,
    )


def _new_appointment(ctx: NoticeContext) -> Paragraphs:
    return "Du har fått en ny timeavtale", (
        f"{ctx.clinic_name} har satt opp en time til deg.",
        _details(ctx),
        _advice(ctx),
        _reason("Melding fra klinikken", ctx),
        _KEEP,
    )


def _changed(ctx: NoticeContext) -> Paragraphs:
    return "Timeavtalen din er endret", (
        f"{ctx.clinic_name} har endret timeavtalen din. Dette er den nye timen:",
        _details(ctx),
        _advice(ctx),
        _reason("Melding fra klinikken", ctx),
        "Passer ikke den nye timen, kan du avbestille den under Timeavtaler.",
    )


def _rejected(ctx: NoticeContext) -> Paragraphs:
    if ctx.slot_taken:
        return "Timen er ikke lenger ledig", (
            SLOT_TAKEN,
            _when(ctx),
            _reason("Melding fra klinikken", ctx),
            _contact(ctx),
        )
    return "Timebestillingen ble avvist", (
        f"{ctx.clinic_name} kunne ikke gi deg time ut fra bestillingen din.",
        _when(ctx),
        _reason("Begrunnelse fra klinikken", ctx),
        _join("Du kan sende en ny bestilling under Timeavtaler.", _contact(ctx)),
    )


def _cancelled_by_clinic(ctx: NoticeContext) -> Paragraphs:
    return "Timen din er avlyst", (
        f"{ctx.clinic_name} har avlyst timen din.",
        _details(ctx),
        _reason("Begrunnelse fra klinikken", ctx),
        _join("Trenger du en ny time, kan du bestille den under Timeavtaler.", _contact(ctx)),
    )


def _cancel_confirmed(ctx: NoticeContext) -> Paragraphs:
    return "Timen er avbestilt", (
        f"{ctx.clinic_name} har bekreftet avbestillingen din.",
        _when(ctx),
        _reason("Melding fra klinikken", ctx),
    )


def _cancel_refused(ctx: NoticeContext) -> Paragraphs:
    return "Timen kunne ikke avbestilles", (
        f"{ctx.clinic_name} kunne ikke avbestille timen din, så timen gjelder fortsatt.",
        _details(ctx),
        _reason("Begrunnelse fra klinikken", ctx),
        _join("Hvis du ikke kan komme, må du gi beskjed til klinikken.", _contact(ctx)),
    )


def _undeliverable(ctx: NoticeContext) -> Paragraphs:
    return "Henvendelsen din kom ikke fram", (
        f"Vi fikk ikke levert henvendelsen din til {ctx.clinic_name}, "
        "så klinikken har ikke mottatt den.",
        _when(ctx),
        _reason("Årsak", ctx),
        _contact(ctx),
    )


def _expired(ctx: NoticeContext) -> Paragraphs:
    return "Ingen svar fra klinikken", (
        f"{ctx.clinic_name} har ikke svart på henvendelsen din, så den er ikke bekreftet.",
        _when(ctx),
        _contact(ctx),
    )


def _invalid(ctx: NoticeContext) -> Paragraphs:
    return "Henvendelsen din kunne ikke sendes", (
        f"Henvendelsen din til {ctx.clinic_name} ble ikke sendt.",
        _reason("Årsak", ctx) or "Den inneholdt feil eller manglet opplysninger.",
        _contact(ctx),
    )


_BUILDERS: Final[Mapping[Notice, Callable[[NoticeContext], Paragraphs]]] = {
    Notice.CONFIRMED: _confirmed,
    Notice.REJECTED: _rejected,
    Notice.CHANGED: _changed,
    Notice.NEW_APPOINTMENT: _new_appointment,
    Notice.CANCELLED_BY_CLINIC: _cancelled_by_clinic,
    Notice.CANCEL_CONFIRMED: _cancel_confirmed,
    Notice.CANCEL_REFUSED: _cancel_refused,
    Notice.UNDELIVERABLE: _undeliverable,
    Notice.EXPIRED: _expired,
    Notice.INVALID: _invalid,
}
