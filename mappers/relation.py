"""Pasientrelasjon: the person acting for the patient (`Relation`, code list 7611)."""

from __future__ import annotations

from functools import lru_cache

from lxml import etree

from mappers.codes import (
    ID_DNR,
    ID_FNR,
    ID_TYPE_NAMES,
    NS_RELATION,
    OID_FNR,
    OID_RELATION,
    RELATION_NAMES,
    RelationCode,
)
from mappers.envelope import person_id_type, phone_from, tele_address, valid_fnr
from mappers.errors import InvalidData, MissingData, UnsupportedMessage
from mappers.model import Person, Relation
from mappers.xmlsafe import attr, child, clone, coded, first, guarded, new_root, sub, text_of


def q(name: str) -> str:
    """A qualified Pasientrelasjon element name."""
    return f"{{{NS_RELATION}}}{name}"


PASIENTRELASJON = q("Pasientrelasjon")
_RELASJON, _PERSON, _IDENT, _ID, _TYPE_ID = (
    q("Relasjon"),
    q("Person"),
    q("Ident"),
    q("Id"),
    q("TypeId"),
)
_GIVEN, _FAMILY, _TELECOM, _TELE_ADDRESS = (
    q("GivenName"),
    q("FamilyName"),
    q("TeleCom"),
    q("TeleAddress"),
)


@guarded
def build(relation: Relation) -> etree._Element:
    """A Pasientrelasjon root: Relasjon (7611) and the acting Person (names, FNR/DNR, phone)."""
    person = relation.person
    shape = (bool(person.given_name), bool(person.family_name), bool(person.phone))
    root = clone(_template(relation.code, person_id_type(person.fnr), *shape))
    children = iter(root[1])
    if person.given_name:
        next(children).text = person.given_name
    if person.family_name:
        next(children).text = person.family_name
    next(children)[0].text = person.fnr
    if person.phone:
        next(children)[0].set("V", tele_address(person.phone))
    return root


@lru_cache(maxsize=64)
def _template(
    code: RelationCode, kind: str, given: bool, family: bool, phone: bool
) -> etree._Element:
    """A Pasientrelasjon of one shape with empty values; cloned per message (speed)."""
    root = new_root(PASIENTRELASJON, NS_RELATION)
    coded(root, _RELASJON, code.value, RELATION_NAMES[code], OID_RELATION)
    person = sub(root, _PERSON)
    for present, tag in ((given, _GIVEN), (family, _FAMILY)):
        if present:
            sub(person, tag)
    ident = sub(person, _IDENT)
    sub(ident, _ID)
    coded(ident, _TYPE_ID, kind, ID_TYPE_NAMES[kind], OID_FNR)
    if phone:
        sub(sub(person, _TELECOM), _TELE_ADDRESS)
    return root


def parse(root: etree._Element) -> Relation:
    """A Relation from a schema-valid Pasientrelasjon root."""
    code = attr(child(root, _RELASJON), "V") or ""
    try:
        relation_code = RelationCode(code)
    except ValueError as exc:
        raise UnsupportedMessage(f"Relasjon {code!r} (7611) is not one timebok handles") from exc
    return Relation(person=_parse_person(child(root, _PERSON)), code=relation_code)


def _parse_person(element: etree._Element) -> Person:
    """The acting Person; like the patient, it needs a valid FNR/DNR."""
    fnr = None
    for ident in element.iterchildren(_IDENT):
        if attr(first(ident, _TYPE_ID), "V") in (ID_FNR, ID_DNR):
            fnr = (text_of(ident, _ID) or "").strip()
            break
    if not fnr:
        raise MissingData("Pasientrelasjon/Person has no FNR/DNR ident")
    if not valid_fnr(fnr):
        raise InvalidData("Pasientrelasjon/Person FNR/DNR is not a valid 11-digit number")
    address = first(first(element, _TELECOM), _TELE_ADDRESS)
    phone = attr(address, "V")
    return Person(
        fnr=fnr,
        given_name=text_of(element, _GIVEN) or "",
        family_name=text_of(element, _FAMILY) or "",
        phone=phone_from(phone) if phone and ":" in phone else phone,
    )
