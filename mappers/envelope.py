"""MsgHead MsgInfo <-> `Envelope`: process, parties, patient and correlation."""

from __future__ import annotations

from functools import lru_cache

from lxml import etree

from mappers.codes import (
    ID_DNR,
    ID_FNR,
    ID_HER,
    ID_TYPE_NAMES,
    MIG_MSGHEAD,
    NS_MSGHEAD,
    OID_FNR,
    OID_HER,
    PROCESS_NAMES,
    AppRecError,
    Process,
)
from mappers.errors import InvalidData, InvalidInput, MissingData, UnsupportedMessage
from mappers.model import ConversationRef, Envelope, Party, Person
from mappers.xmlsafe import (
    attr,
    clone,
    coded,
    first,
    format_datetime,
    guarded,
    new_root,
    parse_datetime,
    required_text,
    sub,
    text_of,
)


def q(name: str) -> str:
    """A qualified MsgHead element name."""
    return f"{{{NS_MSGHEAD}}}{name}"


MSG_HEAD = q("MsgHead")
MSG_INFO = q("MsgInfo")
_TYPE, _GEN_DATE, _MSG_ID = q("Type"), q("GenDate"), q("MsgId")
_SENDER, _RECEIVER, _ORG = q("Sender"), q("Receiver"), q("Organisation")
_ORG_NAME, _IDENT, _ID, _TYPE_ID = q("OrganisationName"), q("Ident"), q("Id"), q("TypeId")
_PATIENT, _GIVEN, _FAMILY = q("Patient"), q("GivenName"), q("FamilyName")
_TELECOM, _TELE_ADDRESS = q("TeleCom"), q("TeleAddress")
_CONVERSATION, _PARENT, _OPENER = q("ConversationRef"), q("RefToParent"), q("RefToConversation")

# The process names timebok handles; APPREC is a root of its own, never a MsgHead Type.
_HANDLED = frozenset(p.value for p in Process if p is not Process.APPREC)
_PHONE_SCHEMES = ("tel:", "mob:")
_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


# ---------------------------------------------------------------------------- build
# Speed: builders clone prebuilt templates instead of creating every element (a clone costs
# about what creating one element does). The fixed head of MsgInfo is one template per
# process, a Patient one per shape, and each Sender / Receiver is built once per Party and
# cached (a deployment talks to a handful of parties). Templates are never modified.


def _head_template(process: Process) -> etree._Element:
    """MsgHead/MsgInfo with the fixed leading children; GenDate and MsgId are filled per copy."""
    root = new_root(MSG_HEAD, NS_MSGHEAD)
    info = sub(root, MSG_INFO)
    coded(info, _TYPE, process.value, PROCESS_NAMES[process])
    sub(info, q("MIGversion"), MIG_MSGHEAD)
    sub(info, _GEN_DATE)
    sub(info, _MSG_ID)
    coded(info, q("Ack"), "J", "Ja")
    return root


_HEADS = {p: _head_template(p) for p in Process if p is not Process.APPREC}


@lru_cache(maxsize=512)
def _party(tag: str, party: Party) -> etree._Element:
    """Sender or Receiver holding the party's Organisation (cached; cloned per message)."""
    wrapper = new_root(tag, NS_MSGHEAD)
    wrapper.append(_organisation(party))
    return wrapper


def _organisation(party: Party) -> etree._Element:
    """Organisation with name and HER-id; a unit becomes the nested (level-2) Organisation."""
    org = new_root(_ORG, NS_MSGHEAD)
    sub(org, _ORG_NAME, party.name)
    ident = sub(org, _IDENT)
    sub(ident, _ID, party.her_id)
    coded(ident, _TYPE_ID, ID_HER, ID_TYPE_NAMES[ID_HER], OID_HER)
    if party.unit is not None:
        org.append(_organisation(party.unit))
    return org


@lru_cache(maxsize=32)
def _patient_template(family: bool, given: bool, kind: str, phone: bool) -> etree._Element:
    """Patient of one shape (which names, FNR or DNR, phone or not) with empty values."""
    patient = new_root(_PATIENT, NS_MSGHEAD)
    for present, tag in ((family, _FAMILY), (given, _GIVEN)):
        if present:
            sub(patient, tag)
    ident = sub(patient, _IDENT)
    sub(ident, _ID)
    coded(ident, _TYPE_ID, kind, ID_TYPE_NAMES[kind], OID_FNR)
    if phone:
        sub(sub(patient, _TELECOM), _TELE_ADDRESS)
    return patient


@guarded
def build(env: Envelope) -> etree._Element:
    """A MsgHead root holding the MsgInfo of `env` (message.py appends the Documents)."""
    if env.process not in _HEADS:
        raise InvalidInput(f"{env.process} is not a MsgHead process")
    root = clone(_HEADS[env.process])
    info = root[0]
    info[2].text = format_datetime(env.gen_date, "GenDate")
    info[3].text = env.msg_id
    if env.conversation is not None:
        _build_conversation(info, env.conversation)
    info.append(clone(_party(_SENDER, env.sender)))
    info.append(clone(_party(_RECEIVER, env.receiver)))
    if env.patient is not None:
        _build_patient(info, env.patient)
    return root


def _build_conversation(info: etree._Element, ref: ConversationRef) -> None:
    """ConversationRef: the message answered and the one that opened the dialogue."""
    conversation = sub(info, _CONVERSATION)
    sub(conversation, _PARENT, ref.ref_to_parent)
    sub(conversation, _OPENER, ref.ref_to_conversation)


def _build_patient(info: etree._Element, person: Person) -> None:
    """Patient with names, FNR/DNR ident and phone, filled into a template of its shape."""
    shape = (bool(person.family_name), bool(person.given_name), bool(person.phone))
    patient = clone(_patient_template(shape[0], shape[1], person_id_type(person.fnr), shape[2]))
    children = iter(patient)
    if person.family_name:
        next(children).text = person.family_name
    if person.given_name:
        next(children).text = person.given_name
    next(children)[0].text = person.fnr
    if person.phone:
        next(children)[0].set("V", tele_address(person.phone))
    info.append(patient)


def person_id_type(fnr: str) -> str:
    """FNR, or DNR when the first digit is 4 or more (D-numbers add 4 to the day's first digit)."""
    return ID_DNR if fnr[:1].isdigit() and int(fnr[0]) >= 4 else ID_FNR


def tele_address(phone: str) -> str:
    """A TeleAddress URL: 'mob:' for Norwegian mobile numbers (4xx / 9xx), else 'tel:'.

    Spaces are dropped: a URL cannot carry them (RFC 3966 has no visual separators of that kind).
    """
    number = "".join(phone.split())
    return f"mob:{number}" if number.removeprefix("+47")[:1] in ("4", "9") else f"tel:{number}"


def valid_fnr(fnr: str) -> bool:
    """True when an 11-digit FNR/DNR has both mod-11 check digits right."""
    if len(fnr) != 11 or not (fnr.isascii() and fnr.isdigit()):
        return False
    digits = [int(c) for c in fnr]
    return _check_digit(digits, _W1) == digits[9] and _check_digit(digits, _W2) == digits[10]


def _check_digit(digits: list[int], weights: tuple[int, ...]) -> int:
    """One mod-11 check digit; -1 when the number cannot have one (remainder 1)."""
    rest = 11 - sum(d * w for d, w in zip(digits, weights, strict=False)) % 11
    return 0 if rest == 11 else (-1 if rest == 10 else rest)


# ---------------------------------------------------------------------------- parse


def parse(root: etree._Element) -> Envelope:
    """An Envelope from a schema-valid MsgHead root."""
    info = first(root, MSG_INFO)
    if info is None:
        raise MissingData("MsgHead/MsgInfo is missing", code=AppRecError.FORMAT_OTHER)
    patient = first(info, _PATIENT)
    return Envelope(
        process=parse_process(info),
        msg_id=required_text(info, _MSG_ID),
        gen_date=parse_datetime(required_text(info, _GEN_DATE), "MsgInfo/GenDate"),
        sender=parse_party(first(info, _SENDER), "Sender"),
        receiver=parse_party(first(info, _RECEIVER), "Receiver"),
        patient=None if patient is None else parse_patient(patient),
        conversation=_parse_conversation(first(info, _CONVERSATION)),
    )


def parse_process(info: etree._Element) -> Process:
    """MsgInfo/Type V as a Process timebok handles, else UnsupportedMessage."""
    value = attr(first(info, _TYPE), "V") or ""
    if value not in _HANDLED:
        raise UnsupportedMessage(f"MsgHead process {value!r} is not one timebok handles")
    return Process(value)


def parse_party(parent: etree._Element | None, where: str) -> Party:
    """Party from Sender/Receiver: the Organisation and its nested unit."""
    org = None if parent is None else first(parent, _ORG)
    if org is None:
        raise MissingData(f"{where}/Organisation is missing", code=AppRecError.FORMAT_OTHER)
    return _parse_organisation(org, f"{where}/Organisation")


def _parse_organisation(org: etree._Element, where: str) -> Party:
    """One Organisation level; its HER-id is required to address the party."""
    her_id = _ident_of(org, (ID_HER,))
    if her_id is None:
        raise MissingData(f"{where} has no HER-id", code=AppRecError.FORMAT_OTHER)
    nested = first(org, _ORG)
    return Party(
        her_id=her_id,
        name=text_of(org, _ORG_NAME) or "",
        unit=None if nested is None else _parse_organisation(nested, f"{where}/Organisation"),
    )


def parse_patient(patient: etree._Element) -> Person:
    """Person from MsgInfo/Patient; the FNR/DNR must be present and have right check digits."""
    fnr = _ident_of(patient, (ID_FNR, ID_DNR))
    if fnr is None:
        raise MissingData("Patient has no FNR/DNR ident", code=AppRecError.PATIENT_FNR_MISSING)
    if not valid_fnr(fnr):
        # never echo the number itself: error texts end up in logs and receipts
        raise InvalidData("Patient FNR/DNR is not a valid 11-digit number")
    return Person(
        fnr=fnr,
        given_name=text_of(patient, _GIVEN) or "",
        family_name=text_of(patient, _FAMILY) or "",
        phone=_phone_of(patient),
    )


def _ident_of(parent: etree._Element, kinds: tuple[str, ...]) -> str | None:
    """The Id of the first Ident whose TypeId V is one of `kinds`."""
    for ident in parent.iterchildren(_IDENT):
        if attr(first(ident, _TYPE_ID), "V") in kinds:
            return (text_of(ident, _ID) or "").strip() or None
    return None


def _phone_of(patient: etree._Element) -> str | None:
    """The first tel:/mob: TeleAddress, without its scheme."""
    for telecom in patient.iterchildren(_TELECOM):
        value = attr(first(telecom, _TELE_ADDRESS), "V") or ""
        if value.startswith(_PHONE_SCHEMES):
            return phone_from(value)
    return None


def phone_from(address: str) -> str:
    """The phone number of a 'tel:' / 'mob:' TeleAddress."""
    return address.split(":", 1)[1]


def _parse_conversation(element: etree._Element | None) -> ConversationRef | None:
    """ConversationRef, when present."""
    if element is None:
        return None
    return ConversationRef(
        ref_to_parent=required_text(element, _PARENT),
        ref_to_conversation=required_text(element, _OPENER),
    )
