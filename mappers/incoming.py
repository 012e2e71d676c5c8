"""Any received document -> `DialogMessage` or `AppRec`: safe parse, detect, validate, map."""

from __future__ import annotations

from lxml import etree

from mappers import apprec, envelope, message, outgoing, xmlsafe
from mappers.codes import AppRecError, Function, Process, RequestCode
from mappers.errors import InvalidInput, MapperError, MissingData, UnsupportedMessage
from mappers.model import AppRec, DialogMessage, OriginalMsgRef, Party

# The reply function answering each process (EPJ -> portal).
REPLY_FUNCTIONS: dict[Process, Function] = {
    Process.RESERVATION: Function.RESERVATION_REPLY,
    Process.WISH: Function.WISH_REPLY,
    Process.CANCELLATION: Function.CANCELLATION_REPLY,
}


def parse_any(data: bytes, *, max_bytes: int = xmlsafe.MAX_BYTES) -> DialogMessage | AppRec:
    """Map any received document; every failure is a MapperError carrying its 8221 code."""
    return map_root(xmlsafe.parse(data, max_bytes=max_bytes))


def check_root(root: etree._Element) -> None:
    """Raise UnsupportedMessage unless the root is a MsgHead or an AppRec 1.0 / 1.1."""
    if root.tag not in apprec.ROOTS and root.tag != envelope.MSG_HEAD:
        raise UnsupportedMessage(f"root element {_name(root)} is neither a MsgHead nor an AppRec")


def map_root(root: etree._Element) -> DialogMessage | AppRec:
    """Validate and map a safely parsed root (see parse_any)."""
    check_root(root)
    if root.tag in apprec.ROOTS:
        xmlsafe.validate(root)
        return apprec.parse_element(root)
    try:
        xmlsafe.validate(root)
        msg = message.parse_element(root)
        function_of(msg)
    except MapperError as exc:
        _attach_origin(exc, root)
        raise
    return msg


def function_of(msg: DialogMessage) -> Function:
    """The business function a message carries; a combination timebok does not handle is T10."""
    process = msg.envelope.process
    if msg.reply is not None:
        if process not in REPLY_FUNCTIONS:
            raise UnsupportedMessage(f"a reply (Notat) in process {process} is not handled")
        return REPLY_FUNCTIONS[process]
    if msg.request is None:
        raise InvalidInput("a DialogMessage carries a request or a reply")
    if process is Process.PUBLICATION and msg.request.code is RequestCode.APPOINTMENT:
        if msg.event is None:
            raise MissingData("an Avtale carries no vevent", code=AppRecError.FORMAT_OTHER)
        return Function.APPOINTMENT
    function = outgoing.function_for(process, msg.request.code)
    if function is None:
        raise UnsupportedMessage(f"TypeForesp {msg.request.code} is not handled in {process}")
    return function


def _name(root: etree._Element) -> str:
    """The root's name for a message, saying so when it has no namespace."""
    qname = etree.QName(root)
    if qname.namespace is None:
        return f"{qname.localname} (no namespace)"
    return xmlsafe.short_names(str(root.tag))


def _attach_origin(exc: MapperError, root: etree._Element) -> None:
    """Best effort: note what the failed message was and who sent it, for the Avvist AppRec."""
    info = xmlsafe.first(root, envelope.MSG_INFO)
    if info is None:
        return
    exc.sender = _try_party(info, "Sender")
    exc.receiver = _try_party(info, "Receiver")
    msg_type = xmlsafe.attr(xmlsafe.first(info, envelope.q("Type")), "V")
    msg_id = xmlsafe.text_of(info, envelope.q("MsgId"))
    gen_date = xmlsafe.text_of(info, envelope.q("GenDate"))
    if not (msg_type and msg_id and gen_date):
        return
    try:
        issued = xmlsafe.parse_datetime(gen_date, "GenDate")
    except MapperError:
        return
    exc.original = OriginalMsgRef(msg_type=msg_type, issue_date=issued, msg_id=msg_id)


def _try_party(info: etree._Element, where: str) -> Party | None:
    """A party, or None when it cannot be read."""
    try:
        return envelope.parse_party(xmlsafe.first(info, envelope.q(where)), where)
    except MapperError:
        return None
