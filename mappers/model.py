"""Frozen dataclasses the mappers build XML from and parse XML into."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from mappers.codes import (
    AppointmentType,
    AppRecError,
    AppRecStatus,
    Process,
    RelationCode,
    ReplyCode,
    RequestCode,
    Urgency,
)


@dataclass(frozen=True)
class Party:
    """A communication party: an organisation with a HER-id, optionally a level-2 unit."""

    her_id: str
    name: str
    unit: Party | None = None

    @property
    def address(self) -> str:
        """The HER-id that addresses this party on the transport (the unit when present)."""
        return self.unit.her_id if self.unit is not None else self.her_id


@dataclass(frozen=True)
class Person:
    """A citizen: the patient, or someone acting on the patient's behalf."""

    fnr: str
    given_name: str
    family_name: str
    phone: str | None = None


@dataclass(frozen=True)
class Practitioner:
    """The health professional an appointment is with."""

    name: str
    her_id: str | None = None
    hpr: str | None = None


@dataclass(frozen=True)
class ConversationRef:
    """MsgHead ConversationRef: the message answered and the one that opened the dialogue."""

    ref_to_parent: str
    ref_to_conversation: str


@dataclass(frozen=True)
class Envelope:
    """MsgHead MsgInfo: who sends what to whom, about which patient."""

    process: Process
    msg_id: str
    gen_date: datetime
    sender: Party
    receiver: Party
    patient: Person | None = None
    conversation: ConversationRef | None = None


@dataclass(frozen=True)
class Event:
    """One xCal vevent: an appointment or a requested slot."""

    uid: str
    start: datetime
    end: datetime
    contact: str  # HER-id of the party owning the appointment
    related_to: str | None = None
    summary: str | None = None
    description: str | None = None
    location: str | None = None
    appointment_type: AppointmentType | None = None  # carried as categories "7617:<code>"
    service: str | None = None  # x-servicetype
    status: str | None = None  # RFC 5545 STATUS: CONFIRMED / CANCELLED / TENTATIVE
    url: str | None = None  # video link


@dataclass(frozen=True)
class Relation:
    """Pasientrelasjon: the person acting for the patient and how (code list 7611)."""

    person: Person
    code: RelationCode


@dataclass(frozen=True)
class Request:
    """Dialogmelding Foresporsel: a function of code list 7601 with its texts."""

    code: RequestCode
    subject: str | None = None  # EmneSporsmal, <= 50 characters
    text: str | None = None  # Sporsmal
    practitioner: Practitioner | None = None
    # What a wish asks for, since a wish has no vevent to carry it:
    appointment_type: AppointmentType | None = None  # KodetOpplysning, code list 7617
    urgency: Urgency | None = None  # Hastegrad
    service: str | None = None  # Formål (SERVICE_NAMES)


@dataclass(frozen=True)
class Reply:
    """Dialogmelding Notat: a code-list 7602 outcome, its reason text and the request answered."""

    code: ReplyCode
    text: str | None = None  # TekstNotatInnhold
    request: Request | None = None  # the original Foresporsel nested in the Notat
    practitioner: Practitioner | None = None


@dataclass(frozen=True)
class DialogMessage:
    """A whole MsgHead + Dialogmelding (+ xCal, + Pasientrelasjon) business message."""

    envelope: Envelope
    request: Request | None = None
    reply: Reply | None = None
    event: Event | None = None
    relation: Relation | None = None


@dataclass(frozen=True)
class OriginalMsgRef:
    """AppRec OriginalMsgId: the message a receipt is about."""

    msg_type: str
    issue_date: datetime
    msg_id: str


@dataclass(frozen=True)
class ReceiptError:
    """One AppRec Error: a code of list 8221 and its text."""

    code: AppRecError | str
    text: str = ""
    details: str | None = None


@dataclass(frozen=True)
class AppRec:
    """An application receipt (AppRec 1.0 or 1.1)."""

    msg_id: str
    gen_date: datetime
    sender: Party
    receiver: Party
    status: AppRecStatus
    original: OriginalMsgRef
    errors: tuple[ReceiptError, ...] = field(default_factory=tuple)
    version: str = "1.1"


@dataclass(frozen=True)
class SlotQuery:
    """What a lookup asks a clinic's calendar: a period and optional filters."""

    start: date | None = None  # Foresporsel/FraDato, the first day asked about
    end: date | None = None  # Foresporsel/TilDato, the last day asked about (inclusive)
    appointment_type: AppointmentType | None = None  # KodetOpplysning, code list 7617
    service: str | None = None  # Formål, the contract's service code (consultation, ...)
    practitioner: Practitioner | None = None  # RollerRelatertNotat/HealthcareProfessional


@dataclass(frozen=True)
class Slot:
    """One free slot or planned appointment of a lookup answer (one xCal vevent).

    The first eight fields are the slot object of `timebok slots --json`.
    """

    id: str  # vevent uid: what a ReserverAvtale puts in related-to
    start: datetime  # dtstart
    end: datetime  # dtend
    appointment_type: AppointmentType | None  # categories "7617:<code>"
    service: str | None  # x-servicetype
    practitioner: Practitioner | None  # the Notat's HealthcareProfessional with this HER-id
    unit_her_id: str  # vevent contact: the (level-2) party owning the slot
    location: str | None  # location
    summary: str | None = None  # summary, e.g. "Konsultasjon hos fastlege"
    url: str | None = None  # a planned video appointment's link


@dataclass(frozen=True)
class Lookup:
    """A whole HentLedigeTimer (7601 HLT) or HentPlanlagteTimer (HBT) message."""

    envelope: Envelope  # receiver: the clinic, with the unit asked about as its level-2 party
    code: RequestCode  # RequestCode.LIST_FREE or RequestCode.LIST_BOOKED
    query: SlotQuery


@dataclass(frozen=True)
class LookupAnswer:
    """A whole SvarLedigeTimer / SvarPlanlagteTimer: a Notat (7602) and its slots."""

    envelope: Envelope
    code: ReplyCode  # ReplyCode.LISTING, or why the clinic does not answer (26, 30, 31, 33)
    slots: tuple[Slot, ...] = ()  # empty: nothing free (or planned) in the period
    text: str | None = None  # TekstNotatInnhold
    asked: RequestCode | None = None  # the nested Foresporsel's TypeForesp (HLT / HBT)
    query: SlotQuery | None = None  # the nested Foresporsel's period and filters
