"""A reply may carry documents timebok has no schema for (a Helsepersonell document)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from mappers import incoming
from mappers import message as dialog_message
from mappers.codes import NS_MSGHEAD, Process, ReplyCode, RequestCode
from mappers.errors import SchemaInvalid
from mappers.model import DialogMessage, Envelope, Event, Party, Person, Reply, Request

NS_HP = "http://www.kith.no/xmlstds/helsepersonell/2008-06-26"


def _reply() -> bytes:
    start = datetime(2030, 1, 7, 9, tzinfo=UTC)
    msg = DialogMessage(
        envelope=Envelope(
            process=Process.RESERVATION,
            msg_id=str(uuid.uuid4()),
            gen_date=datetime(2030, 1, 1, tzinfo=UTC),
            sender=Party("8090001", "Testlegekontoret"),
            receiver=Party("8093244", "Helsenorge.no"),
            patient=Person("14838510036", "Kari", "Nordmann"),
        ),
        reply=Reply(ReplyCode.CONFIRMED, None, Request(RequestCode.RESERVE, "Vondt i halsen")),
        event=Event("appt-1", start, start + timedelta(minutes=20), "8090001"),
    )
    return dialog_message.build(msg)


def _with_extra_document(body: bytes, extra: etree._Element) -> bytes:
    root = etree.fromstring(body)
    document = etree.SubElement(root, f"{{{NS_MSGHEAD}}}Document")
    refdoc = etree.SubElement(document, f"{{{NS_MSGHEAD}}}RefDoc")
    etree.SubElement(refdoc, f"{{{NS_MSGHEAD}}}MsgType", V="XML", DN="XML-instans")
    etree.SubElement(refdoc, f"{{{NS_MSGHEAD}}}Content").append(extra)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def test_unknown_document_is_carried_not_refused() -> None:
    extra = etree.Element(f"{{{NS_HP}}}Helsepersonell")
    etree.SubElement(extra, f"{{{NS_HP}}}Navn").text = "Rita Lin"
    doc = incoming.parse_any(_with_extra_document(_reply(), extra))
    assert isinstance(doc, DialogMessage)
    assert doc.reply is not None and doc.reply.code is ReplyCode.CONFIRMED
    assert doc.event is not None and doc.event.uid == "appt-1"


def test_known_documents_are_still_validated_strictly() -> None:
    body = _reply().replace(b"<uid>", b"<uidx>").replace(b"</uid>", b"</uidx>")
    with pytest.raises(SchemaInvalid):
        incoming.parse_any(body)
