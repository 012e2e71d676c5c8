"""AppRec: build 1.1 (or 1.0 on request) from `AppRec`; parse 1.0 and 1.1 into `AppRec`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from lxml import etree

from mappers import xmlsafe
from mappers.codes import (
    APPREC_ERROR_NAMES,
    APPREC_STATUS_NAMES,
    ID_HER,
    ID_TYPE_NAMES,
    MIG_APPREC_10,
    MIG_APPREC_11,
    NS_APPREC_10,
    NS_APPREC_11,
    OID_APPREC_ERROR,
    PROCESS_NAMES,
    AppRecError,
    AppRecStatus,
    Process,
)
from mappers.errors import InvalidInput, MapperError, UnsupportedMessage
from mappers.model import AppRec, Envelope, OriginalMsgRef, Party, ReceiptError
from mappers.xmlsafe import (
    attr,
    child,
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

MSG_TYPE = "APPREC"
_NAMESPACES = {"1.1": NS_APPREC_11, "1.0": NS_APPREC_10}
_VERSIONS = {ns: version for version, ns in _NAMESPACES.items()}
_MIG = {"1.1": MIG_APPREC_11, "1.0": MIG_APPREC_10}
_Q = Callable[[str], str]  # qualifies a local name with one version's namespace
_PROCESS_NAMES = {process.value: name for process, name in PROCESS_NAMES.items()}
ROOTS = frozenset(f"{{{ns}}}AppRec" for ns in _NAMESPACES.values())


# ---------------------------------------------------------------------------- build


def build(rec: AppRec) -> bytes:
    """A validated AppRec document (version from `rec.version`, normally 1.1) as UTF-8 bytes."""
    root = build_element(rec)
    xmlsafe.validate(root)
    return xmlsafe.serialise(root)


@guarded
def build_element(rec: AppRec) -> etree._Element:
    """The AppRec element tree, not yet validated."""
    ns = _NAMESPACES.get(rec.version)
    if ns is None:
        raise InvalidInput(f"AppRec version {rec.version!r}; timebok writes 1.0 and 1.1")
    q = _qualifier(ns)
    root = new_root(q("AppRec"), ns)
    coded(root, q("MsgType"), MSG_TYPE, PROCESS_NAMES[Process.APPREC])
    sub(root, q("MIGversion"), _MIG[rec.version])
    sub(root, q("GenDate"), format_datetime(rec.gen_date, "GenDate"))
    sub(root, q("Id"), rec.msg_id)
    _build_party(sub(root, q("Sender")), rec.sender, q)
    _build_party(sub(root, q("Receiver")), rec.receiver, q)
    coded(root, q("Status"), rec.status.value, APPREC_STATUS_NAMES[rec.status])
    for error in rec.errors:
        _build_error(root, error, q)
    _build_original(sub(root, q("OriginalMsgId")), rec.original, q)
    return root


def _qualifier(ns: str) -> _Q:
    """A function qualifying local names with the AppRec namespace of one version."""
    return lambda name: f"{{{ns}}}{name}"


def _build_party(parent: etree._Element, party: Party, q: _Q) -> None:
    """HCP/Inst with HER-id; the unit becomes a Dept (AppRec has only one level below Inst)."""
    inst = sub(sub(parent, q("HCP")), q("Inst"))
    _build_named(inst, party, q)
    if party.unit is not None:
        _build_named(sub(inst, q("Dept")), party.unit, q)


def _build_named(element: etree._Element, party: Party, q: _Q) -> None:
    """Name, Id and TypeId HER of an Inst or Dept."""
    sub(element, q("Name"), party.name)
    sub(element, q("Id"), party.her_id)
    coded(element, q("TypeId"), ID_HER, ID_TYPE_NAMES[ID_HER])


def _build_error(root: etree._Element, error: ReceiptError, q: _Q) -> None:
    """Error (8221): V the code, DN its text (the code list's name when empty), OT details."""
    code = str(error.code)
    text = error.text or (APPREC_ERROR_NAMES[AppRecError(code)] if _known(code) else "")
    element = coded(root, q("Error"), code, text or None, OID_APPREC_ERROR)
    if error.details:
        element.set("OT", error.details)


def _known(code: str) -> bool:
    """True for a code of timebok's 8221 selection."""
    return code in APPREC_ERROR_NAMES


def _build_original(element: etree._Element, original: OriginalMsgRef, q: _Q) -> None:
    """OriginalMsgId: the type, issue date and id of the message this receipt is about."""
    coded(element, q("MsgType"), original.msg_type, _PROCESS_NAMES.get(original.msg_type))
    sub(element, q("IssueDate"), format_datetime(original.issue_date, "IssueDate"))
    sub(element, q("Id"), original.msg_id)


# ---------------------------------------------------------------------------- parse


def parse(data: bytes, *, max_bytes: int = xmlsafe.MAX_BYTES) -> AppRec:
    """Safely parse, validate and map an AppRec 1.0 / 1.1 document."""
    root = xmlsafe.parse(data, max_bytes=max_bytes)
    if root.tag not in ROOTS:
        raise UnsupportedMessage(f"root {xmlsafe.short_names(str(root.tag))} is not an AppRec")
    xmlsafe.validate(root)
    return parse_element(root)


def parse_element(root: etree._Element) -> AppRec:
    """An AppRec from a schema-valid AppRec root of either version."""
    ns = etree.QName(root).namespace or ""
    q = _qualifier(ns)
    if attr(first(root, q("MsgType")), "V") != MSG_TYPE:
        raise UnsupportedMessage("AppRec MsgType is not APPREC")
    return AppRec(
        msg_id=required_text(root, q("Id")),
        gen_date=parse_datetime(required_text(root, q("GenDate")), "AppRec/GenDate"),
        sender=_parse_party(child(root, q("Sender")), q),
        receiver=_parse_party(child(root, q("Receiver")), q),
        status=_parse_status(child(root, q("Status"))),
        original=_parse_original(child(root, q("OriginalMsgId")), q),
        errors=tuple(_parse_error(e) for e in root.iterchildren(q("Error"))),
        version=_VERSIONS.get(ns, "1.1"),
    )


def _parse_party(parent: etree._Element, q: _Q) -> Party:
    """Party from HCP: Inst with its first Dept (or HCPerson) as unit, or a lone HCProf."""
    hcp = child(parent, q("HCP"))
    inst = first(hcp, q("Inst"))
    if inst is None:
        return _named(child(hcp, q("HCProf")), q)
    unit = first(inst, q("Dept"))
    if unit is None:
        unit = first(inst, q("HCPerson"))
    party = _named(inst, q)
    if unit is None:
        return party
    return Party(her_id=party.her_id, name=party.name, unit=_named(unit, q))


def _named(element: etree._Element, q: _Q) -> Party:
    """Name and id; the HER-id when the element says which id is HER, else its Id as given."""
    her_id = text_of(element, q("Id")) or ""
    if attr(first(element, q("TypeId")), "V") not in (None, ID_HER):
        for extra in element.iterchildren(q("AdditionalId")):
            if attr(first(extra, q("Type")), "V") == ID_HER:
                her_id = text_of(extra, q("Id")) or her_id
                break
    return Party(her_id=her_id.strip(), name=(text_of(element, q("Name")) or "").strip())


def _parse_status(element: etree._Element) -> AppRecStatus:
    """Status (8258)."""
    value = element.get("V") or ""
    try:
        return AppRecStatus(value)
    except ValueError as exc:
        raise UnsupportedMessage(f"AppRec Status {value!r} is not in code list 8258") from exc


def _parse_error(element: etree._Element) -> ReceiptError:
    """Error (8221); a code outside timebok's selection is kept as its string."""
    value = element.get("V") or ""
    code: AppRecError | str = AppRecError(value) if _known(value) else value
    return ReceiptError(code=code, text=element.get("DN") or "", details=element.get("OT"))


def _parse_original(element: etree._Element, q: _Q) -> OriginalMsgRef:
    """OriginalMsgId."""
    return OriginalMsgRef(
        msg_type=attr(first(element, q("MsgType")), "V") or "",
        issue_date=parse_datetime(required_text(element, q("IssueDate")), "OriginalMsgId"),
        msg_id=required_text(element, q("Id")),
    )


# ---------------------------------------------------------------------------- compose


def receipt_for(
    envelope: Envelope,
    *,
    msg_id: str,
    gen_date: datetime,
    errors: tuple[ReceiptError, ...] = (),
) -> AppRec:
    """The AppRec answering a received message: OK without errors, Avvist with them."""
    return AppRec(
        msg_id=msg_id,
        gen_date=gen_date,
        sender=envelope.receiver,
        receiver=envelope.sender,
        status=AppRecStatus.REJECTED if errors else AppRecStatus.OK,
        original=OriginalMsgRef(envelope.process.value, envelope.gen_date, envelope.msg_id),
        errors=errors,
    )


def rejection(exc: MapperError, *, msg_id: str, gen_date: datetime) -> AppRec | None:
    """An Avvist AppRec for a message that failed mapping; None when its MsgHead was unreadable."""
    if exc.original is None or exc.sender is None or exc.receiver is None:
        return None
    error = ReceiptError(code=exc.code, text=APPREC_ERROR_NAMES[exc.code], details=str(exc))
    return AppRec(
        msg_id=msg_id,
        gen_date=gen_date,
        sender=exc.receiver,
        receiver=exc.sender,
        status=AppRecStatus.REJECTED,
        original=exc.original,
        errors=(error,),
    )
