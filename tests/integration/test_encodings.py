"""Clinic documents in ISO-8859-1, windows-1252 and UTF-16: accepted, æøå intact everywhere the
patient sees them, the original bytes stored, and everything timebok answers in UTF-8."""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mappers import incoming
from mappers.codes import AppRecStatus, ReplyCode
from mappers.model import AppRec, DialogMessage, Person
from tests.conftest import wait_for
from tests.integration.conftest import Stack
from tests.integration.test_inbound_flow import deliver, submitted, wait_state
from tests.official import AVAILABLE as STANDARDS_AVAILABLE
from tests.official import validate_official
from tests.support import CLINIC, avtale, confirmed_event, fnr, headers, reply
from worker.adapters.store.db import dead_letters, get_message
from worker.flows import views

pytestmark = pytest.mark.integration
# Patients 81-88: the PostgreSQL schema is shared by every integration module of a run.
CLINIC_QUEUE = f"{CLINIC}_async"
UTF8_DECL = b'<?xml version="1.0" encoding="UTF-8"?>'
_DECL = re.compile(rb'\A<\?xml version="1\.0" encoding="UTF-8"\?>')


def _encoded(body: bytes, name: str, codec: str) -> bytes:
    """A document timebok's mappers built (UTF-8), re-declared and re-encoded as a clinic might."""
    text = _DECL.sub(b"", body, count=1).decode("utf-8")
    data = f'<?xml version="1.0" encoding="{name}"?>{text}'.encode(codec)
    assert data != body
    return data


def _receipt(stack: Stack) -> tuple[AppRec, bytes]:
    """Our one AppRec back to the clinic, with its raw bytes."""
    [(body, _hdrs)] = stack.drain(CLINIC_QUEUE, 1)
    rec = incoming.parse_any(body)
    assert isinstance(rec, AppRec)
    if STANDARDS_AVAILABLE:
        validate_official(body)
    return rec, body


def _stored(stack: Stack, msg_id: str) -> bytes:
    with stack.deps.store.transaction() as s:
        row = get_message(s, msg_id)
        assert row is not None and row.direction == "in"
        return bytes(row.xml)


def _msg_id(data: bytes) -> str:
    doc = incoming.parse_any(data)
    assert isinstance(doc, DialogMessage)
    return doc.envelope.msg_id


def test_iso_8859_1_rejection_reaches_booking_and_inbox_intact(stack: Stack) -> None:
    req, doc = submitted(stack, patient_n=81)
    reason = "Timen er tatt. Ring oss på 81569069, så får du en ny time før påske (Ærø, Å)."
    data = _encoded(reply(doc, ReplyCode.NOT_AVAILABLE, text=reason), "ISO-8859-1", "latin-1")
    deliver(stack, data, doc.envelope.process.value)
    wait_state(stack, req["request_id"], "REJECTED")
    rec, raw = _receipt(stack)
    assert rec.status is AppRecStatus.OK and not rec.errors
    assert raw.startswith(UTF8_DECL)  # what we send stays UTF-8
    assert reason in (views.booking(stack.deps, req["request_id"])["reason"] or "")
    [notice] = views.inbox(stack.deps, req["patient"]["fnr"])
    assert notice["event"] == "rejected" and reason in notice["body"]
    assert _stored(stack, _msg_id(data)) == data  # the original bytes, not a UTF-8 copy


def test_windows_1252_confirmation_keeps_the_appointment_texts(stack: Stack) -> None:
    req, doc = submitted(stack, patient_n=82)
    event = replace(
        confirmed_event(doc),
        summary="Årskontroll – blodtrykk",
        location="Kjøpmannsgata 5, 2. etasje, Tromsø",
    )
    body = reply(doc, ReplyCode.CONFIRMED, event=event, text="Møt opp før – ta med legitimasjon.")
    data = _encoded(body, "windows-1252", "cp1252")
    assert b"\x96" in data  # the dash is windows-1252's own byte, not in ISO-8859-1
    deliver(stack, data, doc.envelope.process.value)
    wait_state(stack, req["request_id"], "CONFIRMED")
    rec, raw = _receipt(stack)
    assert rec.status is AppRecStatus.OK and raw.startswith(UTF8_DECL)
    [appt] = views.appointments(stack.deps, req["patient"]["fnr"])
    assert appt["location"] == "Kjøpmannsgata 5, 2. etasje, Tromsø"
    [notice] = views.inbox(stack.deps, req["patient"]["fnr"])
    assert notice["event"] == "confirmed"
    assert "Oppmøtested: Kjøpmannsgata 5, 2. etasje, Tromsø" in notice["body"]
    assert _stored(stack, _msg_id(data)) == data


def test_utf16_appointment_published_by_the_clinic(stack: Stack) -> None:
    patient = Person(fnr(83), "Åse", "Ødegård")
    uid = str(uuid.uuid4())
    start = (datetime.now(UTC) + timedelta(days=9)).replace(microsecond=0)
    data = _encoded(avtale(patient, uid=uid, start=start), "UTF-16", "utf-16")
    assert data.startswith(b"\xff\xfe")
    deliver(stack, data, "DIALOG_INNBYGGER_AVTALEUTSENDING")
    wait_for(
        lambda: [n["event"] for n in views.inbox(stack.deps, patient.fnr)] == ["new_appointment"],
        what="new_appointment notice",
    )
    rec, raw = _receipt(stack)
    assert rec.status is AppRecStatus.OK and raw.startswith(UTF8_DECL)
    [appt] = views.appointments(stack.deps, patient.fnr)
    assert appt["uid"] == uid
    assert _stored(stack, _msg_id(data)) == data


@pytest.mark.parametrize(
    ("name", "codec", "mangle"),
    [
        ("ISO-8859-1", "utf-8", None),  # UTF-8 bytes under an ISO-8859-1 declaration
        ("windows-1252", "cp1252", (b"Kontroll", b"Kon\x81roll")),  # a byte 1252 does not have
        ("x-klingon", "latin-1", None),  # an encoding lxml does not know
    ],
    ids=["utf8-declared-latin1", "undefined-1252-byte", "unknown-encoding"],
)
def test_contradicting_declarations_are_answered_t01(
    stack: Stack, name: str, codec: str, mangle: tuple[bytes, bytes] | None
) -> None:
    patient = Person(fnr(84), "Åse", "Ødegård")
    uid = str(uuid.uuid4())
    body = avtale(patient, uid=uid, start=datetime.now(UTC) + timedelta(days=3))
    msg_id = _msg_id(body)
    text = _DECL.sub(b"", body, count=1).decode("utf-8").replace("Timeavtale", "Kontroll på Ås")
    data = f'<?xml version="1.0" encoding="{name}"?>{text}'.encode(codec)
    if mangle is not None:
        data = data.replace(*mangle)
    stack.publish_raw(data, headers(msg_id, "DIALOG_INNBYGGER_AVTALEUTSENDING"))
    rec, raw = _receipt(stack)
    assert rec.status is AppRecStatus.REJECTED and [str(e.code) for e in rec.errors] == ["T01"]
    assert raw.startswith(UTF8_DECL)

    def kept() -> bool:
        with stack.deps.store.transaction() as s:
            return any(d.msg_id == msg_id and d.payload == data for d in dead_letters(s))

    wait_for(kept, what="dead letter with the raw bytes")
    assert views.appointments(stack.deps, patient.fnr) == []


def _out_xml(stack: Stack, msg_id: str) -> bytes:
    with stack.deps.store.transaction() as s:
        row = get_message(s, msg_id)
        assert row is not None and row.direction == "out"
        return bytes(row.xml)


@pytest.mark.parametrize(
    ("n", "kind", "echoed", "shown"),
    [
        (85, "in_person", "7617:Video", "video"),  # a published code other than the one sent
        (86, "video", "7617:Ordinær", "in_person"),
        (87, "in_person", "7617:3", "video"),  # the numeric code of earlier releases
        (88, "urgent", "7617:4", "phone"),
    ],
)
def test_7617_codes_out_and_in(stack: Stack, n: int, kind: str, echoed: str, shown: str) -> None:
    req, doc = submitted(stack, patient_n=n, appointment_type=kind)
    sent = _out_xml(stack, doc.envelope.msg_id).decode("utf-8")
    published = {"in_person": "Ordinær", "video": "Video", "urgent": "Hastetime"}[kind]
    assert f"<text>7617:{published}</text>" in sent
    body = reply(doc, ReplyCode.CONFIRMED, event=confirmed_event(doc)).decode("utf-8")
    assert body.count(f"<text>7617:{published}</text>") == 1
    body = body.replace(f"<text>7617:{published}</text>", f"<text>{echoed}</text>")
    deliver(stack, body.encode("utf-8"), doc.envelope.process.value)
    wait_state(stack, req["request_id"], "CONFIRMED")
    rec, _raw = _receipt(stack)
    assert rec.status is AppRecStatus.OK
    [appt] = views.appointments(stack.deps, req["patient"]["fnr"])
    assert appt["appointment_type"] == shown
