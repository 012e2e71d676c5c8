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


# -- the patient pages (`/portal/`) ------------------------------------------------------------
# Every text the portal pages show. Templates only reference these (a test checks that the
# templates carry no words of their own).


@dataclass(frozen=True)
class PortalTexts:
    """The fixed texts of the patient pages."""

    site: str = "Helsenorge (demo)"
    skip_link: str = "Hopp til hovedinnholdet"
    main_nav: str = "Hovedmeny"
    nav_appointments: str = "Timeavtaler"
    nav_book: str = "Bestill time"
    nav_inbox: str = "Innboks"
    logged_in_as: str = "Logget inn som"
    log_out: str = "Logg ut"
    back: str = "Tilbake"
    next: str = "Neste"
    required: str = "må fylles ut"
    error_summary: str = "Det er noe som må rettes"
    error_heading: str = "Noe gikk galt"
    optional: str = "valgfritt"

    login_title: str = "Logg inn (demo)"
    login_intro: str = (
        "Dette er en demo. Velg hvem du vil logge inn som. Ekte innlogging skjer med ID-porten."
    )
    login_who: str = "Hvem vil du logge inn som?"
    login_button: str = "Logg inn"
    login_missing: str = "Velg en person å logge inn som."

    for_whom_title: str = "Hvem gjelder timen?"
    for_whom_intro: str = (
        "Du kan bestille time for deg selv, for barn du har foreldreansvar for, og for personer "
        "som har gitt deg fullmakt eller som du er verge for."
    )
    for_whom_self: str = "Meg selv"
    for_whom_missing: str = "Velg hvem timen gjelder."
    viewing_for: str = "Du ser på vegne av"
    show_for: str = "Vis for"
    show_button: str = "Vis"

    clinic_title: str = "Velg klinikk"
    clinic_intro: str = "Velg en av dine helsekontakter som tar imot digitale timebestillinger."
    clinic_missing: str = "Velg en klinikk."
    clinic_offline_heading: str = "Kan ikke bestilles digitalt"
    clinic_not_listed: str = (
        "Finner du ikke klinikken din? Da tar den ikke imot digitale timebestillinger. "
        "Kontakt klinikken direkte på telefon eller på klinikkens nettside."
    )

    service_title: str = "Hva vil du bestille?"
    service_missing: str = "Velg hva du vil bestille."
    practitioner_title: str = "Velg behandler"
    practitioner_missing: str = "Velg en behandler."

    calendar_title: str = "Velg time"
    calendar_intro: str = (
        "Velg en ledig time og trykk «Neste». Flere timer finner du under «Senere timer»."
    )
    calendar_none: str = "Det er ingen ledige timer i denne perioden."
    calendar_missing: str = "Velg en ledig time."
    calendar_video: str = "Videotime"
    calendar_phone: str = "Telefontime"
    calendar_urgent: str = "Hastetime"
    calendar_earlier: str = "Tidligere timer"
    calendar_later: str = "Senere timer"
    calendar_no_fit: str = "Finner du ikke ledig time?"
    calendar_wish_link: str = "Send et timeønske i stedet"

    questionnaire_title: str = "Spørsmål fra klinikken"
    questionnaire_intro: str = (
        "Klinikken vil gjerne vite litt mer før timen. Svarene sendes med bestillingen."
    )

    review_title: str = "Se over og send bestillingen"
    review_for: str = "Timen gjelder"
    review_clinic: str = "Klinikk"
    review_service: str = "Tjeneste"
    review_practitioner: str = "Behandler"
    review_time: str = "Tid"
    review_place: str = "Oppmøtested"
    review_answers: str = "Dine svar"
    review_subject: str = "Hva gjelder det?"
    review_subject_hint: str = "Skriv kort, for eksempel «magesmerter». Høyst 50 tegn."
    review_send: str = "Send bestilling"
    characters_left: str = "tegn igjen"

    wish_title: str = "Send timeønske"
    wish_intro: str = (
        "Skriv hva timen gjelder og når det passer for deg. Klinikken setter opp en time og gir "
        "deg beskjed i innboksen."
    )
    wish_subject: str = "Hva gjelder det?"
    wish_subject_hint: str = "Høyst 50 tegn."
    wish_message: str = "Når passer det, og hva gjelder henvendelsen?"
    wish_message_hint: str = "Foreslå gjerne dager og tidspunkt. Høyst 250 tegn."
    wish_type: str = "Hvordan vil du møte?"
    wish_send: str = "Send timeønske"
    wish_not_taken: str = "Klinikken tar ikke imot timeønsker digitalt."

    receipt_title: str = "Bestillingen er sendt"
    receipt_wish_title: str = "Timeønsket er sendt"
    receipt_cancel_title: str = "Avbestillingen er sendt"
    receipt_request_only: str = (
        "Bestillingen er kun en forespørsel. Timen er ikke tildelt før du får en bekreftelse."
    )
    receipt_wish_only: str = (
        "Timeønsket er kun en forespørsel. Du får svar fra klinikken i innboksen din."
    )
    receipt_cancel_only: str = (
        "Avbestillingen er sendt til klinikken. Du får en bekreftelse i innboksen din."
    )
    receipt_status: str = "Status"
    receipt_reference: str = "Referanse"
    receipt_to_inbox: str = "Gå til innboksen"
    receipt_to_appointments: str = "Gå til timeavtaler"

    inbox_title: str = "Innboks"
    inbox_empty: str = "Du har ingen meldinger."
    inbox_received: str = "Mottatt"
    inbox_to_appointment: str = "Se timeavtalen"

    appointments_title: str = "Timeavtaler"
    appointments_empty: str = "Du har ingen timeavtaler."
    appointments_details: str = "Se detaljer"
    appointment_title: str = "Timeavtale"
    appointment_status: str = "Status"
    appointment_time: str = "Tid"
    appointment_duration: str = "Varighet"
    appointment_place: str = "Oppmøtested"
    appointment_practitioner: str = "Behandler"
    appointment_clinic: str = "Klinikk"
    appointment_unknown: str = "Ikke oppgitt"
    add_to_calendar: str = "Legg i egen kalender"
    cancel_appointment: str = "Avbestill time"
    cancel_confirm: str = "Vil du avbestille timen? Klinikken får beskjed med en gang."
    start_video: str = "Start video"
    video_advice: str = (
        "Finn et rolig sted med god nettforbindelse, og test kamera, mikrofon og lyd på forhånd."
    )
    video_link_later: str = "Lenken til videotimen kommer når klinikken har sendt den."

    problem_unavailable: str = "Tjenesten er ikke tilgjengelig akkurat nå. Prøv igjen om litt."
    problem_timeout: str = "Klinikken svarte ikke i tide. Prøv igjen om litt."
    problem_busy: str = "Klinikken har mange henvendelser akkurat nå. Prøv igjen om litt."
    problem_not_found: str = "Vi fant ikke det du lette etter."
    problem_not_reservable: str = "Klinikken tar ikke imot timereservasjoner digitalt."
    problem_invalid: str = "Bestillingen inneholder feil og ble ikke sendt."
    problem_other: str = "Noe gikk galt. Prøv igjen senere."
    slot_tampered: str = "Den valgte timen kunne ikke leses. Velg timen på nytt."


PORTAL: Final = PortalTexts()

SERVICE_LABELS: Final[Mapping[str, str]] = {
    "consultation": "Konsultasjon",
    "lab_test": "Blodprøve og laboratorieprøver",
    "vaccination": "Vaksinasjon",
    "other": "Annet",
}

KIND_LABELS: Final[Mapping[str, str]] = {
    "in_person": "Oppmøte på klinikken",
    "video": "Videotime",
    "phone": "Telefontime",
    "urgent": "Hastetime",
}

RELATION_LABELS: Final[Mapping[str, str]] = {
    "self": "Meg selv",
    "parental_responsibility": "foreldreansvar",
    "guardian": "verge",
    "power_of_attorney": "fullmakt",
}

# Booking states as the receipt shows them (the API's `state`).
BOOKING_STATE_LABELS: Final[Mapping[str, str]] = {
    "REQUESTED": "Mottatt, sendes til klinikken",
    "SENT": "Sendt til klinikken",
    "DELIVERED": "Levert til klinikken, venter på svar",
    "CONFIRMED": "Bekreftet",
    "REJECTED": "Avvist",
    "CANCELLED": "Avbestilt",
    "FAILED": "Ikke levert",
    "EXPIRED": "Ikke besvart",
    "INVALID": "Ikke sendt",
}

# Field names of the request contract, as the patient knows them (for error messages).
FIELD_LABELS: Final[Mapping[str, str]] = {
    "subject": "Hva gjelder det?",
    "message": "Når passer det, og hva gjelder henvendelsen?",
    "slot": "Tid",
    "clinic": "Klinikk",
    "practitioner": "Behandler",
    "service": "Tjeneste",
    "patient": "Pasient",
    "requester": "Den som bestiller",
    "questionnaire": "Dine svar",
}

# Questionnaires (kartleggingsskjema) a clinic can ask for before a reservation, by the id the
# address registry names in a clinic's optional `questionnaire` key.
QUESTIONNAIRES: Final[Mapping[str, tuple[str, ...]]] = {
    "luftveier": (
        "Har du feber?",
        "Hvor lenge har du hatt plagene?",
    ),
}


def service_label(service: str) -> str:
    """The patient's word for a service code ("Konsultasjon")."""
    return SERVICE_LABELS.get(service, SERVICE_LABELS["other"])


def booking_state_label(state: str) -> str:
    """The receipt's word for a booking state."""
    return BOOKING_STATE_LABELS.get(state.upper(), state)


def relation_label(relation: str) -> str:
    """The kind of representation, in words ("foreldreansvar")."""
    return RELATION_LABELS.get(relation, relation)


def acting_for(name: str, relation: str) -> str:
    """Like "Emma Nordmann (foreldreansvar)"."""
    return f"{name} ({relation_label(relation)})"


def day_heading(moment: datetime) -> str:
    """Like "Ledige timer 12. des. 2025", in Oslo time."""
    local = _oslo(moment)
    month = _MONTHS[local.month - 1]
    short = month if len(month) <= 4 else f"{month[:3]}."
    return f"Ledige timer {local.day}. {short} {local.year}"


def slot_line(start: datetime, end: datetime, service: str, practitioner: str | None) -> str:
    """Like "14:00 - 14:30 Konsultasjon hos August September"."""
    who = f" hos {practitioner}" if practitioner else ""
    return f"{_oslo(start):%H:%M} - {_oslo(end):%H:%M} {service_label(service)}{who}"


def duration(minutes: int) -> str:
    """Like "20 minutter" or "1 time 30 minutter"."""
    hours, rest = divmod(minutes, 60)
    parts = ([f"{hours} time" if hours == 1 else f"{hours} timer"] if hours else []) + (
        [f"{rest} minutter"] if rest or not hours else []
    )
    return " ".join(parts)


def urgent_call(phone: str | None) -> str:
    """ "Hvis det haster, ring 81569069." (the clinic's number when known)."""
    return f"Hvis det haster, ring {phone}." if phone else "Hvis det haster, ring klinikken."


def wish_only(clinic_name: str, phone: str | None) -> str:
    """A clinic that takes wishes but no reservations, as the clinic list explains it."""
    return (
        clinic_unsupported(clinic_name, phone, Process.RESERVATION)
        + " Du kan sende et timeønske, så setter klinikken opp en time."
    )


def too_long(label: str, limit: int, got: int) -> str:
    """ "Hva gjelder det? kan ha høyst 50 tegn (du skrev 51)."."""
    return f"«{label}» kan ha høyst {limit} tegn (du skrev {got})."


def missing(label: str) -> str:
    """ "«Hva gjelder det?» må fylles ut."."""
    return f"«{label}» må fylles ut."


def field_problem(field: str, message: str) -> str:
    """An API field error, with the field named as the patient knows it."""
    top = field.split(".")[0]
    return f"{FIELD_LABELS.get(top, top)}: {message}"
