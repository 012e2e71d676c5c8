"""A whole message: MsgHead + Dialogmelding (+ xCal, + Pasientrelasjon) <-> `DialogMessage`."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from lxml import etree

from mappers import dialog, envelope, relation, xcal, xmlsafe
from mappers.codes import (
    NS_DIALOG,
    NS_MSGHEAD,
    NS_RELATION,
    NS_XCAL,
    REPLY_NAMES,
    REQUEST_NAMES,
    ReplyCode,
)
from mappers.errors import InvalidInput, MissingData, UnsupportedMessage
from mappers.model import (
    ConversationRef,
    DialogMessage,
    Envelope,
    Event,
    Practitioner,
    Reply,
    Request,
)
from mappers.xmlsafe import clone, coded, first, guarded, sub

_DOCUMENT, _REFDOC, _CONTENT = envelope.q("Document"), envelope.q("RefDoc"), envelope.q("Content")
EVENT_DESCRIPTION = "Timeavtale"
RELATION_DESCRIPTION = "Pasientrelasjon"


# ---------------------------------------------------------------------------- build


def build(msg: DialogMessage) -> bytes:
    """The whole message as validated UTF-8 XML: Dialogmelding, then xCal and Pasientrelasjon."""
    return xmlsafe.serialise(build_element(msg))


@guarded
def build_element(msg: DialogMessage) -> etree._Element:
    """The validated MsgHead element tree of `msg`."""
    content = _dialog_content(msg)
    root = envelope.build(msg.envelope)
    issued = msg.envelope.gen_date
    add_document(root, dialog.build(content), _describe(content), issued)
    if msg.event is not None:
        event = xcal.build(msg.event, stamp=issued)
        add_document(root, event, EVENT_DESCRIPTION, issued)
    if msg.relation is not None:
        add_document(root, relation.build(msg.relation), RELATION_DESCRIPTION, issued)
    xmlsafe.validate(root)
    return root


def _dialog_content(msg: DialogMessage) -> Request | Reply:
    """The request or the reply; a message carries exactly one of them."""
    if msg.request is not None and msg.reply is None:
        return msg.request
    if msg.reply is not None and msg.request is None:
        return msg.reply
    raise InvalidInput("a DialogMessage carries exactly one of request and reply")


def _describe(content: Request | Reply) -> str:
    """ContentDescription of the Dialogmelding document: the function's display name."""
    if isinstance(content, Request):
        return REQUEST_NAMES[content.code]
    return REPLY_NAMES[content.code]


def add_document(
    root: etree._Element, content: etree._Element, description: str, issued: datetime
) -> None:
    """Document/RefDoc/Content holding one XML instance."""
    document = clone(_document(description))
    refdoc = document[1]
    refdoc[0].set("V", xmlsafe.format_datetime(issued, "IssueDate"))
    refdoc[2].append(content)
    root.append(document)


@lru_cache(maxsize=64)
def _document(description: str) -> etree._Element:
    """Document template (cloned per use): description, RefDoc with IssueDate, MsgType, Content."""
    document = xmlsafe.new_root(_DOCUMENT, NS_MSGHEAD)
    sub(document, envelope.q("ContentDescription"), description)
    refdoc = sub(document, _REFDOC)
    sub(refdoc, envelope.q("IssueDate"))
    coded(refdoc, envelope.q("MsgType"), "XML", "XML-instans")
    sub(refdoc, _CONTENT)
    return document


# ---------------------------------------------------------------------------- parse


def parse(data: bytes, *, max_bytes: int = xmlsafe.MAX_BYTES) -> DialogMessage:
    """Safely parse, validate and map a MsgHead business message."""
    root = xmlsafe.parse(data, max_bytes=max_bytes)
    if root.tag != envelope.MSG_HEAD:
        raise UnsupportedMessage(f"root {xmlsafe.short_names(str(root.tag))} is not a MsgHead")
    xmlsafe.validate(root)
    return parse_element(root)


def parse_element(root: etree._Element) -> DialogMessage:
    """A DialogMessage from a schema-valid MsgHead root; the patient is required."""
    env = envelope.parse(root)
    if env.patient is None:
        raise MissingData("MsgInfo/Patient is missing")
    found = contents(root)
    dialog_root = found.get(NS_DIALOG)
    if dialog_root is None:
        raise UnsupportedMessage("the message carries no Dialogmelding document")
    content = dialog.parse(dialog_root)
    event_root, relation_root = found.get(NS_XCAL), found.get(NS_RELATION)
    return DialogMessage(
        envelope=env,
        request=content if isinstance(content, Request) else None,
        reply=content if isinstance(content, Reply) else None,
        event=None if event_root is None else xcal.parse(event_root),
        relation=None if relation_root is None else relation.parse(relation_root),
    )


def contents(root: etree._Element) -> dict[str, etree._Element]:
    """Each Content instance by namespace; two of the same kind are more than timebok handles."""
    found: dict[str, etree._Element] = {}
    for document in root.iterchildren(_DOCUMENT):
        content = first(first(document, _REFDOC), _CONTENT)
        for instance in () if content is None else content:
            ns = etree.QName(instance).namespace or ""
            if ns in found:
                kind = xmlsafe.short_names(str(instance.tag))
                raise UnsupportedMessage(f"the message carries more than one {kind}")
            found[ns] = instance
    return found


# ---------------------------------------------------------------------------- compose


def reply_to(
    msg: DialogMessage,
    code: ReplyCode,
    *,
    msg_id: str,
    gen_date: datetime,
    text: str | None = None,
    event: Event | None = None,
    practitioner: Practitioner | None = None,
) -> DialogMessage:
    """The reply answering `msg` (as an EPJ sends it): parties swapped, conversation linked."""
    asked = msg.envelope
    opener = asked.msg_id if asked.conversation is None else asked.conversation.ref_to_conversation
    answer = Envelope(
        process=asked.process,
        msg_id=msg_id,
        gen_date=gen_date,
        sender=asked.receiver,
        receiver=asked.sender,
        patient=asked.patient,
        conversation=ConversationRef(ref_to_parent=asked.msg_id, ref_to_conversation=opener),
    )
    reply = Reply(code=code, text=text, request=msg.request, practitioner=practitioner)
    return DialogMessage(envelope=answer, reply=reply, event=event)
