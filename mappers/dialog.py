"""Dialogmelding 1.1: a `Request` as Foresporsel (7601) or a `Reply` as Notat (7602)."""

from __future__ import annotations

from functools import lru_cache
from typing import TypeVar

from lxml import etree

from mappers.codes import (
    APPOINTMENT_TYPE_NAMES,
    ID_HER,
    ID_HPR,
    ID_TYPE_NAMES,
    NS_DIALOG,
    NS_FK1,
    OID_APPOINTMENT_TYPE,
    OID_HER,
    OID_HPR,
    OID_REPLY,
    OID_REQUEST,
    REPLY_NAMES,
    REQUEST_NAMES,
    SERVICE_NAMES,
    URGENCY_NAMES,
    AppointmentType,
    ReplyCode,
    RequestCode,
    Urgency,
    appointment_type,
)
from mappers.errors import UnsupportedMessage
from mappers.model import Practitioner, Reply, Request
from mappers.xmlsafe import (
    all_text,
    attr,
    child,
    clone,
    coded,
    first,
    guarded,
    new_root,
    sub,
    text_of,
)


def q(name: str) -> str:
    """A qualified Dialogmelding element name."""
    return f"{{{NS_DIALOG}}}{name}"


DIALOGMELDING = q("Dialogmelding")
_FORESPORSEL, _NOTAT = q("Foresporsel"), q("Notat")
_TYPE_FORESP, _EMNE, _SPORSMAL = q("TypeForesp"), q("EmneSporsmal"), q("Sporsmal")
_FORMAAL, _HASTEGRAD, _KODET = q("Formål"), q("Hastegrad"), q("KodetOpplysning")
_TEMA_KODET, _TEKST = q("TemaKodet"), q("TekstNotatInnhold")
_ROLLER, _HCP = q("RollerRelatertNotat"), q("HealthcareProfessional")
_FAMILY, _GIVEN, _MIDDLE, _IDENT = q("FamilyName"), q("GivenName"), q("MiddleName"), q("Ident")
# Ident's children are declared in felleskomponent1, hence in its namespace.
_ID, _TYPE_ID = f"{{{NS_FK1}}}Id", f"{{{NS_FK1}}}TypeId"

C = TypeVar("C", RequestCode, ReplyCode)


# ---------------------------------------------------------------------------- build
# Speed: the coded Foresporsel / Notat heads are prebuilt templates, and a practitioner's
# RollerRelatertNotat is built once and cached (a clinic has few), then cloned per message.


def _coded_template(code: RequestCode | ReplyCode) -> etree._Element:
    """A Foresporsel or Notat holding only its code element."""
    if isinstance(code, RequestCode):
        element = new_root(_FORESPORSEL, NS_DIALOG)
        coded(element, _TYPE_FORESP, code.value, REQUEST_NAMES[code], OID_REQUEST)
    else:
        element = new_root(_NOTAT, NS_DIALOG)
        coded(element, _TEMA_KODET, code.value, REPLY_NAMES[code], OID_REPLY)
    return element


_REQUESTS = {code: _coded_template(code) for code in RequestCode}
_REPLIES = {code: _coded_template(code) for code in ReplyCode}


@guarded
def build(content: Request | Reply) -> etree._Element:
    """A Dialogmelding root carrying one Foresporsel (request) or one Notat (reply)."""
    root = new_root(DIALOGMELDING, NS_DIALOG, fk1=NS_FK1)
    if isinstance(content, Request):
        root.append(_build_foresporsel(content))
    else:
        root.append(_build_notat(content))
    return root


def _build_foresporsel(request: Request) -> etree._Element:
    """Foresporsel: TypeForesp (7601), subject, text and the practitioner asked for."""
    element = clone(_REQUESTS[request.code])
    if request.subject is not None:
        sub(element, _EMNE, request.subject)
    if request.text is not None:
        sub(element, _SPORSMAL, request.text)
    _build_wanted(element, request)
    if request.practitioner is not None:
        _build_practitioner(element, request.practitioner)
    return element


def _build_wanted(element: etree._Element, request: Request) -> None:
    """Formål (service), Hastegrad (urgency) and KodetOpplysning (7617 type), in schema order."""
    if request.service is not None:
        coded(element, _FORMAAL, request.service, SERVICE_NAMES.get(request.service))
    if request.urgency is not None:
        coded(element, _HASTEGRAD, request.urgency.value, URGENCY_NAMES[request.urgency])
    kind = request.appointment_type
    if kind is not None:
        coded(element, _KODET, kind.value, APPOINTMENT_TYPE_NAMES[kind], OID_APPOINTMENT_TYPE)


def _build_notat(reply: Reply) -> etree._Element:
    """Notat: TemaKodet (7602), reason text, the answered Foresporsel, the practitioner."""
    element = clone(_REPLIES[reply.code])
    if reply.text is not None:
        sub(element, _TEKST, reply.text)
    if reply.request is not None:
        element.append(_build_foresporsel(reply.request))
    if reply.practitioner is not None:
        _build_practitioner(element, reply.practitioner)
    return element


def _build_practitioner(parent: etree._Element, practitioner: Practitioner) -> None:
    """Append the practitioner's RollerRelatertNotat."""
    parent.append(clone(_practitioner(practitioner)))


@lru_cache(maxsize=512)
def _practitioner(practitioner: Practitioner) -> etree._Element:
    """RollerRelatertNotat/HealthcareProfessional with names and HER / HPR idents."""
    roles = new_root(_ROLLER, NS_DIALOG, fk1=NS_FK1)
    hcp = sub(roles, _HCP)
    # Practitioner carries one display name; the family name is taken to be its last word.
    given, _, family = practitioner.name.strip().rpartition(" ")
    if family:
        sub(hcp, _FAMILY, family)
    if given.strip():
        sub(hcp, _GIVEN, given.strip())
    for kind, system, value in (
        (ID_HER, OID_HER, practitioner.her_id),
        (ID_HPR, OID_HPR, practitioner.hpr),
    ):
        if value is not None:
            ident = sub(hcp, _IDENT)
            sub(ident, _ID, value)
            coded(ident, _TYPE_ID, kind, ID_TYPE_NAMES[kind], system)
    return roles


def practitioner_roles(practitioner: Practitioner) -> etree._Element:
    """A fresh RollerRelatertNotat/HealthcareProfessional for `practitioner`."""
    return clone(_practitioner(practitioner))


# ---------------------------------------------------------------------------- parse


def parse(root: etree._Element) -> Request | Reply:
    """The one Foresporsel or Notat of a schema-valid Dialogmelding."""
    requests = list(root.iterchildren(_FORESPORSEL))
    replies = list(root.iterchildren(_NOTAT))
    found = requests + replies
    if len(found) != 1:
        raise UnsupportedMessage(
            f"Dialogmelding carries {len(found)} Foresporsel/Notat; timebok handles exactly one"
        )
    return _parse_request(requests[0]) if requests else _parse_reply(replies[0])


def _parse_request(element: etree._Element) -> Request:
    """Request from Foresporsel."""
    return Request(
        code=_code(element, _TYPE_FORESP, OID_REQUEST, RequestCode),
        subject=text_of(element, _EMNE),
        text=_free_text(element, _SPORSMAL),
        practitioner=_parse_practitioner(element),
        appointment_type=_wanted_type(first(element, _KODET)),
        urgency=_urgency(attr(first(element, _HASTEGRAD), "V")),
        service=attr(first(element, _FORMAAL), "V") or None,
    )


def _wanted_type(coded_element: etree._Element | None) -> AppointmentType | None:
    """The 7617 type of KodetOpplysning; a fact from another code list is not a type."""
    if coded_element is None or coded_element.get("S") not in (None, OID_APPOINTMENT_TYPE):
        return None
    return appointment_type(coded_element.get("V") or "")


def _urgency(value: str | None) -> Urgency | None:
    """Hastegrad as timebok codes it; another sender's value is read as unknown."""
    try:
        return None if value is None else Urgency(value)
    except ValueError:
        return None


def _parse_reply(element: etree._Element) -> Reply:
    """Reply from Notat, with the nested Foresporsel it answers."""
    nested = first(element, _FORESPORSEL)
    return Reply(
        code=_code(element, _TEMA_KODET, OID_REPLY, ReplyCode),
        text=_free_text(element, _TEKST),
        request=None if nested is None else _parse_request(nested),
        practitioner=_parse_practitioner(element),
    )


def _code(element: etree._Element, tag: str, system: str, codes: type[C]) -> C:
    """A code of the expected list; another list or an unknown code is UnsupportedMessage."""
    coded_element = child(element, tag)
    value, used = coded_element.get("V") or "", coded_element.get("S")
    name = etree.QName(tag).localname
    if used is not None and used != system:
        raise UnsupportedMessage(f"{name} uses code system {used}, expected {system}")
    try:
        return codes(value)
    except ValueError as exc:
        raise UnsupportedMessage(f"{name} {value!r} is not a function timebok handles") from exc


def _free_text(element: etree._Element, tag: str) -> str | None:
    """Free text, flattened when the sender formatted it with markup."""
    found = first(element, tag)
    return None if found is None else all_text(found)


def _parse_practitioner(element: etree._Element) -> Practitioner | None:
    """The first HealthcareProfessional among the element's own RollerRelatertNotat."""
    hcp = first(first(element, _ROLLER), _HCP)
    return None if hcp is None else _practitioner_of(hcp)


def practitioners(element: etree._Element) -> tuple[Practitioner, ...]:
    """Every HealthcareProfessional among the element's own RollerRelatertNotat, in order."""
    found = (first(roles, _HCP) for roles in element.iterchildren(_ROLLER))
    return tuple(_practitioner_of(hcp) for hcp in found if hcp is not None)


def _practitioner_of(hcp: etree._Element) -> Practitioner:
    """A Practitioner from one HealthcareProfessional."""
    names = (text_of(hcp, _GIVEN), text_of(hcp, _MIDDLE), text_of(hcp, _FAMILY))
    return Practitioner(
        name=" ".join(n.strip() for n in names if n and n.strip()),
        her_id=_ident_of(hcp, ID_HER),
        hpr=_ident_of(hcp, ID_HPR),
    )


def _ident_of(hcp: etree._Element, kind: str) -> str | None:
    """The Id of the first Ident of the given kind."""
    for ident in hcp.iterchildren(_IDENT):
        if attr(first(ident, _TYPE_ID), "V") == kind:
            return text_of(ident, _ID) or None
    return None
