"""The synchronous lookups of the timereservasjon process (domain.md section 7).

HentLedigeTimer (7601 HLT) asks a clinic's calendar for free slots, HentPlanlagteTimer (HBT)
for a patient's planned appointments. SvarLedigeTimer / SvarPlanlagteTimer answer with a
Notat (7602 01) nesting the question, one RollerRelatertNotat per practitioner and one xCal
vevent per slot or appointment; an answer without an xCal document found nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, datetime

from lxml import etree

from mappers import dialog, envelope, message, xcal, xmlsafe
from mappers.codes import (
    APPOINTMENT_TYPE_NAMES,
    NS_DIALOG,
    NS_XCAL,
    OID_APPOINTMENT_TYPE,
    REPLY_NAMES,
    REQUEST_NAMES,
    AppointmentType,
    AppRecError,
    Function,
    Process,
    ReplyCode,
    RequestCode,
)
from mappers.errors import (
    InvalidData,
    InvalidInput,
    MissingData,
    SchemaInvalid,
    UnsupportedMessage,
)
from mappers.model import (
    ConversationRef,
    Envelope,
    Event,
    Lookup,
    LookupAnswer,
    Party,
    Person,
    Practitioner,
    Reply,
    Request,
    Slot,
    SlotQuery,
)
from mappers.xmlsafe import attr, first, guarded, text_of

# The lookup functions and their answers, by the 7601 code that asks.
FUNCTIONS: dict[RequestCode, tuple[Function, Function]] = {
    RequestCode.LIST_FREE: (Function.LIST_FREE, Function.LIST_FREE_REPLY),
    RequestCode.LIST_BOOKED: (Function.LIST_PLANNED, Function.LIST_PLANNED_REPLY),
}
SLOTS_DESCRIPTION: dict[RequestCode | None, str] = {
    RequestCode.LIST_FREE: "Ledige timer",
    RequestCode.LIST_BOOKED: "Planlagte timer",
    None: "Timer",
}
# Foresporsel/Formål [our choice]: the contract's service codes, with Norwegian names as DN.
SERVICE_NAMES: dict[str, str] = {
    "consultation": "Konsultasjon",
    "lab_test": "Laboratorieprøve",
    "vaccination": "Vaksinasjon",
    "other": "Annet",
}

_FORESPORSEL, _NOTAT = dialog.q("Foresporsel"), dialog.q("Notat")
_FORMAAL, _KODET = dialog.q("Formål"), dialog.q("KodetOpplysning")
_FRA, _TIL, _ROLLER = dialog.q("FraDato"), dialog.q("TilDato"), dialog.q("RollerRelatertNotat")
_XS_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:Z|[+-]\d{2}:\d{2})?")
_BY_WORD = {word: kind for kind, word in APPOINTMENT_TYPE_NAMES.items()}
# The numeric stand-ins earlier releases sent (not the code list), still read.
_NUMERIC = {
    "1": AppointmentType.ORDINARY,
    "2": AppointmentType.URGENT,
    "3": AppointmentType.VIDEO,
    "4": AppointmentType.PHONE,
}


# ---------------------------------------------------------------------------- code list 7617


def type_code(kind: AppointmentType) -> str:
    """The 7617 code as published: the word itself (`Ordinær`, `Video`, ...)."""
    return APPOINTMENT_TYPE_NAMES[kind]


def type_of(code: str) -> AppointmentType | None:
    """The appointment type of a 7617 code (a word, or a numeric stand-in); None outside
    timebok's subset (Lab, Vaksine, ... are real types timebok does not book)."""
    code = code.strip()
    return _BY_WORD.get(code) or _NUMERIC.get(code)


# ---------------------------------------------------------------------------- compose


def free_slots_request(
    *,
    msg_id: str,
    gen_date: datetime,
    sender: Party,
    receiver: Party,
    query: SlotQuery,
    patient: Person | None = None,
) -> Lookup:
    """A HentLedigeTimer to `receiver` (a unit as its level-2 party narrows it to that unit)."""
    env = Envelope(Process.RESERVATION, msg_id, gen_date, sender, receiver, patient)
    return Lookup(env, RequestCode.LIST_FREE, query)


def planned_request(
    *,
    msg_id: str,
    gen_date: datetime,
    sender: Party,
    receiver: Party,
    patient: Person,
    query: SlotQuery | None = None,
) -> Lookup:
    """A HentPlanlagteTimer: the patient's planned appointments at `receiver`."""
    env = Envelope(Process.RESERVATION, msg_id, gen_date, sender, receiver, patient)
    return Lookup(env, RequestCode.LIST_BOOKED, query or SlotQuery())


def answer_to(
    asked: Lookup,
    slots: Iterable[Slot],
    *,
    msg_id: str,
    gen_date: datetime,
    code: ReplyCode = ReplyCode.LISTING,
    text: str | None = None,
) -> LookupAnswer:
    """The clinic's answer to `asked`: parties swapped, conversation linked, question nested."""
    question = asked.envelope
    env = Envelope(
        process=question.process,
        msg_id=msg_id,
        gen_date=gen_date,
        sender=question.receiver,
        receiver=question.sender,
        patient=question.patient,
        conversation=ConversationRef(question.msg_id, question.msg_id),
    )
    return LookupAnswer(env, code, tuple(slots), text, asked.code, asked.query)


def function_of(doc: Lookup | LookupAnswer) -> Function:
    """The function a lookup or answer carries (an answer that does not say: SvarLedigeTimer)."""
    if isinstance(doc, Lookup):
        return FUNCTIONS[doc.code][0]
    return FUNCTIONS[doc.asked or RequestCode.LIST_FREE][1]


# ---------------------------------------------------------------------------- build


def build_lookup(asked: Lookup) -> bytes:
    """A HentLedigeTimer / HentPlanlagteTimer as validated UTF-8 XML."""
    return xmlsafe.serialise(build_lookup_element(asked))


@guarded
def build_lookup_element(asked: Lookup) -> etree._Element:
    """The validated MsgHead element tree of a lookup (MsgHead + Dialogmelding only)."""
    _check_lookup(asked)
    root = envelope.build(asked.envelope)
    content = dialog.build(Request(asked.code, practitioner=asked.query.practitioner))
    _add_query(content[0], asked.query)
    message.add_document(root, content, REQUEST_NAMES[asked.code], asked.envelope.gen_date)
    xmlsafe.validate(root)
    return root


def build_answer(answer: LookupAnswer) -> bytes:
    """A SvarLedigeTimer / SvarPlanlagteTimer as validated UTF-8 XML."""
    return xmlsafe.serialise(build_answer_element(answer))


@guarded
def build_answer_element(answer: LookupAnswer) -> etree._Element:
    """The validated MsgHead element tree of an answer: Dialogmelding, then xCal when any slot."""
    _check_answer(answer)
    issued = answer.envelope.gen_date
    root = envelope.build(answer.envelope)
    message.add_document(root, _notat(answer), REPLY_NAMES[answer.code], issued)
    if answer.slots:
        events = [_event(slot) for slot in answer.slots]
        calendar = xcal.build_all(events, stamp=issued, type_code=type_code)
        message.add_document(root, calendar, SLOTS_DESCRIPTION[answer.asked], issued)
    xmlsafe.validate(root)
    return root


def _check_lookup(asked: Lookup) -> None:
    """Refuse a lookup that cannot become a valid message."""
    if asked.code not in FUNCTIONS:
        raise InvalidInput(f"TypeForesp {asked.code} is not a lookup (HLT or HBT)")
    if asked.envelope.process is not Process.RESERVATION:
        raise InvalidInput(f"a lookup travels in {Process.RESERVATION}")
    if asked.code is RequestCode.LIST_BOOKED and asked.envelope.patient is None:
        raise InvalidInput("a HentPlanlagteTimer names the patient")
    _check_period(asked.query, InvalidInput)


def _check_period(query: SlotQuery, error: type[InvalidInput | InvalidData]) -> None:
    """TilDato is not before FraDato."""
    if query.start is not None and query.end is not None and query.end < query.start:
        raise error(
            f"the period ends ({query.end}) before it starts ({query.start})",
            code=AppRecError.FORMAT_OTHER if error is InvalidData else None,
        )


def _check_answer(answer: LookupAnswer) -> None:
    """Refuse an answer whose slots cannot be carried unambiguously."""
    if answer.envelope.process is not Process.RESERVATION:
        raise InvalidInput(f"an answer travels in {Process.RESERVATION}")
    if answer.asked is not None and answer.asked not in FUNCTIONS:
        raise InvalidInput(f"TypeForesp {answer.asked} is not a lookup (HLT or HBT)")
    if answer.slots and answer.code is not ReplyCode.LISTING:
        raise InvalidInput(f"a 7602 {answer.code} answer carries no slots")
    _check_slots(answer.slots, InvalidInput)
    owners: dict[str, Practitioner | None] = {}
    for slot in answer.slots:
        # The practitioner is found again by the slot's contact, so each contact has one.
        who = slot.practitioner
        if who is not None and who.her_id != slot.unit_her_id:
            raise InvalidInput(
                f"slot {slot.id}: the practitioner's HER-id must be its unit_her_id "
                f"{slot.unit_her_id} (an answer links practitioners to slots by HER-id)"
            )
        if owners.setdefault(slot.unit_her_id, who) != who:
            raise InvalidInput(f"slots of unit {slot.unit_her_id} name different practitioners")


def _check_slots(slots: tuple[Slot, ...], error: type[InvalidInput | InvalidData]) -> None:
    """Slot ids are unique and every slot ends after it starts."""
    code = AppRecError.FORMAT_OTHER if error is InvalidData else None
    seen: set[str] = set()
    for slot in slots:
        if slot.id in seen:
            raise error(f"slot id {slot.id} appears twice", code=code)
        seen.add(slot.id)
        if slot.start.utcoffset() is None or slot.end.utcoffset() is None:
            raise error(f"slot {slot.id}: datetime must be timezone-aware", code=code)
        if slot.end <= slot.start:
            raise error(f"slot {slot.id} ends before it starts", code=code)


def _notat(answer: LookupAnswer) -> etree._Element:
    """Dialogmelding/Notat: TemaKodet, text, the nested question, then the practitioners."""
    question = None
    if answer.asked is not None:
        practitioner = answer.query.practitioner if answer.query is not None else None
        question = Request(answer.asked, practitioner=practitioner)
    content = dialog.build(Reply(answer.code, answer.text, question))
    notat = content[0]
    if answer.query is not None and question is not None:
        _add_query(notat.find(_FORESPORSEL), answer.query)
    for practitioner in _practitioners(answer.slots):
        notat.append(dialog.practitioner_roles(practitioner))
    return content


def _practitioners(slots: tuple[Slot, ...]) -> list[Practitioner]:
    """Each practitioner of the slots once, in order of first appearance."""
    found: dict[Practitioner, None] = {}
    for slot in slots:
        if slot.practitioner is not None:
            found.setdefault(slot.practitioner)
    return list(found)


def _add_query(foresporsel: etree._Element | None, query: SlotQuery) -> None:
    """Formål, FraDato, TilDato and KodetOpplysning, in schema order before the practitioner."""
    if foresporsel is None:
        return
    added: list[etree._Element] = []
    if query.service is not None:
        added.append(_coded(_FORMAAL, query.service, SERVICE_NAMES.get(query.service), None))
    for tag, day in ((_FRA, query.start), (_TIL, query.end)):
        if day is not None:
            element = etree.Element(tag)
            element.text = day.isoformat()
            added.append(element)
    kind = query.appointment_type
    if kind is not None:
        added.append(_coded(_KODET, type_code(kind), type_code(kind), OID_APPOINTMENT_TYPE))
    roles = first(foresporsel, _ROLLER)
    at = len(foresporsel) if roles is None else foresporsel.index(roles)
    for offset, element in enumerate(added):
        foresporsel.insert(at + offset, element)


def _coded(tag: str, v: str, dn: str | None, s: str | None) -> etree._Element:
    """A detached KITH CV element."""
    attrib = {"V": v}
    if s is not None:
        attrib["S"] = s
    if dn is not None:
        attrib["DN"] = dn
    return etree.Element(tag, attrib)


def _event(slot: Slot) -> Event:
    """The vevent of a slot: uid = slot id, contact = the owning unit."""
    return Event(
        uid=slot.id,
        start=slot.start,
        end=slot.end,
        contact=slot.unit_her_id,
        summary=slot.summary,
        location=slot.location,
        appointment_type=slot.appointment_type,
        service=slot.service,
        url=slot.url,
    )


# ---------------------------------------------------------------------------- parse


def parse_lookup(data: bytes, *, max_bytes: int = xmlsafe.MAX_BYTES) -> Lookup:
    """Safely parse, validate and map a HentLedigeTimer / HentPlanlagteTimer."""
    return parse_lookup_element(_validated(data, max_bytes))


def parse_lookup_element(root: etree._Element) -> Lookup:
    """A Lookup from a schema-valid MsgHead root."""
    env = _envelope(root)
    dialog_root = _dialog(root)
    content = dialog.parse(dialog_root)
    if not isinstance(content, Request):
        raise UnsupportedMessage("the message is an answer (Notat), not a lookup")
    if content.code not in FUNCTIONS:
        raise UnsupportedMessage(f"TypeForesp {content.code} is not a lookup (HLT or HBT)")
    if content.code is RequestCode.LIST_BOOKED and env.patient is None:
        raise MissingData("a HentPlanlagteTimer names no patient (MsgInfo/Patient)")
    query = _parse_query(_only(dialog_root, _FORESPORSEL), content.practitioner)
    return Lookup(env, content.code, query)


def parse_answer(data: bytes, *, max_bytes: int = xmlsafe.MAX_BYTES) -> LookupAnswer:
    """Safely parse, validate and map a SvarLedigeTimer / SvarPlanlagteTimer."""
    return parse_answer_element(_validated(data, max_bytes))


def parse_answer_element(root: etree._Element) -> LookupAnswer:
    """A LookupAnswer from a schema-valid MsgHead root."""
    env = _envelope(root)
    found = message.contents(root)
    dialog_root = _dialog(root, found)
    content = dialog.parse(dialog_root)
    if not isinstance(content, Reply):
        raise UnsupportedMessage("the message is a request (Foresporsel), not an answer")
    notat = _only(dialog_root, _NOTAT)
    asked, query = _question(content, first(notat, _FORESPORSEL))
    calendar = found.get(NS_XCAL)
    events = () if calendar is None else xcal.parse_all(calendar, read_type=type_of)
    if events and content.code is not ReplyCode.LISTING:
        raise UnsupportedMessage(f"a 7602 {content.code} answer carries slots")
    owners = {p.her_id: p for p in dialog.practitioners(notat) if p.her_id is not None}
    slots = tuple(_slot(event, owners) for event in events)
    _check_slots(slots, InvalidData)
    return LookupAnswer(env, content.code, slots, content.text, asked, query)


def _validated(data: bytes, max_bytes: int) -> etree._Element:
    """Safely parsed, a MsgHead, and valid against the project schemas."""
    root = xmlsafe.parse(data, max_bytes=max_bytes)
    if root.tag != envelope.MSG_HEAD:
        raise UnsupportedMessage(f"root {xmlsafe.short_names(str(root.tag))} is not a MsgHead")
    xmlsafe.validate(root)
    return root


def _envelope(root: etree._Element) -> Envelope:
    """The envelope of a timereservasjon message (the lookups' process)."""
    env = envelope.parse(root)
    if env.process is not Process.RESERVATION:
        raise UnsupportedMessage(f"a lookup travels in {Process.RESERVATION}, not {env.process}")
    return env


def _dialog(root: etree._Element, found: dict[str, etree._Element] | None = None) -> etree._Element:
    """The Dialogmelding document."""
    dialog_root = (message.contents(root) if found is None else found).get(NS_DIALOG)
    if dialog_root is None:
        raise UnsupportedMessage("the message carries no Dialogmelding document")
    return dialog_root


def _only(dialog_root: etree._Element, tag: str) -> etree._Element:
    """The one Foresporsel / Notat (dialog.parse has checked there is exactly one)."""
    element = first(dialog_root, tag)
    if element is None:
        raise UnsupportedMessage("the Dialogmelding has no Foresporsel or Notat")
    return element


def _question(
    reply: Reply, nested: etree._Element | None
) -> tuple[RequestCode | None, SlotQuery | None]:
    """What the answer says it answers: the nested Foresporsel, when there is one."""
    if reply.request is None or nested is None:
        return None, None
    if reply.request.code not in FUNCTIONS:
        raise UnsupportedMessage(
            f"the answer's Foresporsel is TypeForesp {reply.request.code}, not a lookup"
        )
    return reply.request.code, _parse_query(nested, reply.request.practitioner)


def _parse_query(foresporsel: etree._Element, practitioner: Practitioner | None) -> SlotQuery:
    """Period, wanted type, service and practitioner of a lookup's Foresporsel."""
    query = SlotQuery(
        start=_date(text_of(foresporsel, _FRA), "FraDato"),
        end=_date(text_of(foresporsel, _TIL), "TilDato"),
        appointment_type=_wanted_type(first(foresporsel, _KODET)),
        service=attr(first(foresporsel, _FORMAAL), "V") or None,
        practitioner=practitioner,
    )
    _check_period(query, InvalidData)
    return query


def _date(text: str | None, where: str) -> date | None:
    """An xs:date (a zone, when given, does not change the day asked about)."""
    if text is None:
        return None
    found = _XS_DATE.fullmatch(text.strip())
    try:
        return date.fromisoformat(found.group(1)) if found else date.fromisoformat(text)
    except ValueError as exc:
        raise SchemaInvalid([f"Foresporsel/{where}: {text!r} is not a date"]) from exc


def _wanted_type(coded: etree._Element | None) -> AppointmentType | None:
    """The 7617 type of KodetOpplysning; a type timebok does not offer cannot be looked up."""
    if coded is None:
        return None
    system, value = coded.get("S"), coded.get("V") or ""
    if system not in (None, OID_APPOINTMENT_TYPE):
        raise UnsupportedMessage(f"KodetOpplysning uses code system {system}, not 7617")
    kind = type_of(value)
    if kind is None:
        raise UnsupportedMessage(f"appointment type {value!r} (7617) is not one timebok books")
    return kind


def _slot(event: Event, owners: dict[str, Practitioner]) -> Slot:
    """A Slot from one vevent; its practitioner is the one whose HER-id is the contact."""
    return Slot(
        id=event.uid,
        start=event.start,
        end=event.end,
        appointment_type=event.appointment_type,
        service=event.service,
        practitioner=owners.get(event.contact),
        unit_her_id=event.contact,
        location=event.location,
        summary=event.summary,
        url=event.url,
    )
