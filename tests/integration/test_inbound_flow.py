"""EPJ replies on our inbound queue -> state, AppRec back, exactly one inbox notification."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mappers import incoming
from mappers.codes import AppRecStatus, ReplyCode
from mappers.model import AppRec, DialogMessage, Person
from tests.conftest import wait_for
from tests.integration.conftest import Stack
from tests.integration.test_outbound_flow import booking_state, send
from tests.official import AVAILABLE as STANDARDS_AVAILABLE
from tests.official import validate_official
from tests.support import CLINIC, apprec_for, avtale, confirmed_event, fnr, headers, reply, request
from worker.flows import views

pytestmark = pytest.mark.integration
CLINIC_QUEUE = f"{CLINIC}_async"


def submitted(stack: Stack, action: str = "reserve", **kw: object) -> tuple[dict, DialogMessage]:  # type: ignore[type-arg]
    """Submit a request and take the XML the clinic receives."""
    req = request(action, **kw)
    send(stack, req)
    [(body, _h)] = stack.drain(CLINIC_QUEUE, 1)
    doc = incoming.parse_any(body)
    assert isinstance(doc, DialogMessage)
    wait_for(lambda: booking_state(stack, req["request_id"]) == "SENT", what="SENT")
    return req, doc


def deliver(stack: Stack, body: bytes, msg_type: str) -> None:
    doc = incoming.parse_any(body)
    msg_id = doc.msg_id if isinstance(doc, AppRec) else doc.envelope.msg_id
    stack.publish_raw(body, headers(msg_id, msg_type))


def receipts(stack: Stack, n: int) -> list[AppRec]:
    """Our AppRecs back to the clinic, parsed and checked against the official XSD."""
    out = []
    for body, hdrs in stack.drain(CLINIC_QUEUE, n):
        doc = incoming.parse_any(body)
        assert isinstance(doc, AppRec), body[:200]
        assert hdrs["type"] == "APPREC" and hdrs["toHerId"] == CLINIC
        if STANDARDS_AVAILABLE:
            validate_official(body)
        out.append(doc)
    return out


def events(stack: Stack, patient_fnr: str) -> list[str]:
    return sorted(n["event"] for n in views.inbox(stack.deps, patient_fnr))


def wait_state(stack: Stack, booking_id: str, state: str) -> None:
    wait_for(lambda: booking_state(stack, booking_id) == state, what=state)


def test_confirm_then_duplicate(stack: Stack) -> None:
    req, doc = submitted(stack, patient_n=64)  # fnr(1) is every other module's default patient
    deliver(stack, apprec_for(doc, AppRecStatus.OK), "APPREC")
    wait_state(stack, req["request_id"], "DELIVERED")
    event = confirmed_event(doc)
    body = reply(doc, ReplyCode.CONFIRMED, event=event)
    deliver(stack, body, doc.envelope.process.value)
    wait_state(stack, req["request_id"], "CONFIRMED")
    [rec] = receipts(stack, 1)
    assert rec.status is AppRecStatus.OK
    assert rec.original.msg_id == incoming.parse_any(body).envelope.msg_id  # type: ignore[union-attr]
    deliver(stack, body, doc.envelope.process.value)  # redelivered
    [again] = receipts(stack, 1)
    assert again.msg_id == rec.msg_id  # the same receipt, not a new one
    assert events(stack, req["patient"]["fnr"]) == ["confirmed"]
    [appt] = views.appointments(stack.deps, req["patient"]["fnr"])
    assert appt["uid"] == event.uid and appt["status"] == "Tildelt"
    assert appt["practitioner"] == "August September"


@pytest.mark.parametrize(
    ("code", "state", "event_name"),
    [
        (ReplyCode.NOT_AVAILABLE, "REJECTED", "rejected"),
        (ReplyCode.REJECTED, "REJECTED", "rejected"),
        (ReplyCode.CONFIRMED_OTHER, "CONFIRMED", "confirmed"),
    ],
)
def test_reply_codes(stack: Stack, code: ReplyCode, state: str, event_name: str) -> None:
    n = 10 + list(ReplyCode).index(code)
    req, doc = submitted(stack, patient_n=n)
    event = confirmed_event(doc) if state == "CONFIRMED" else None
    body = reply(doc, code, event=event, text="Legen er syk", practitioner="Rita Lin")
    for _ in range(2):  # duplicate delivery changes nothing
        deliver(stack, body, doc.envelope.process.value)
    wait_state(stack, req["request_id"], state)
    recs = receipts(stack, 2)
    assert {r.msg_id for r in recs} == {recs[0].msg_id}
    assert events(stack, req["patient"]["fnr"]) == [event_name]
    if code is ReplyCode.CONFIRMED_OTHER:
        [appt] = views.appointments(stack.deps, req["patient"]["fnr"])
        assert appt["practitioner"] == "Rita Lin"


def test_reply_before_apprec(stack: Stack) -> None:
    req, doc = submitted(stack, patient_n=30)
    deliver(
        stack,
        reply(doc, ReplyCode.CONFIRMED, event=confirmed_event(doc)),
        doc.envelope.process.value,
    )
    wait_state(stack, req["request_id"], "CONFIRMED")
    deliver(stack, apprec_for(doc, AppRecStatus.OK), "APPREC")
    receipts(stack, 1)
    view = views.booking(stack.deps, req["request_id"])
    wait_for(
        lambda: any(
            m["status"] == "delivered"
            for m in views.booking(stack.deps, req["request_id"])["messages"]
        ),
        what="delivered mark",
    )
    assert view["state"] == "CONFIRMED"
    assert events(stack, req["patient"]["fnr"]) == ["confirmed"]


def test_apprec_avvist_fails_and_tells_patient_once(stack: Stack) -> None:
    req, doc = submitted(stack, patient_n=31)
    body = apprec_for(doc, AppRecStatus.REJECTED, "E21")
    deliver(stack, body, "APPREC")
    deliver(stack, body, "APPREC")
    wait_state(stack, req["request_id"], "FAILED")
    view = views.booking(stack.deps, req["request_id"])
    assert "E21" in (view["reason"] or "")
    out = [m for m in view["messages"] if m["direction"] == "out"]
    assert out[0]["status"] == "failed" and out[0]["error_code"] == "E21"
    assert events(stack, req["patient"]["fnr"]) == ["undeliverable"]
    assert stack.depth(CLINIC_QUEUE) == 0  # never an AppRec for an AppRec


def _confirmed(stack: Stack, n: int) -> tuple[dict, DialogMessage, str]:  # type: ignore[type-arg]
    req, doc = submitted(stack, patient_n=n)
    event = confirmed_event(doc)
    deliver(stack, reply(doc, ReplyCode.CONFIRMED, event=event), doc.envelope.process.value)
    wait_state(stack, req["request_id"], "CONFIRMED")
    receipts(stack, 1)
    return req, doc, event.uid


def _patient(req: dict) -> Person:  # type: ignore[type-arg]
    p = req["patient"]
    return Person(p["fnr"], p["given_name"], p["family_name"])


def test_clinic_changes_then_cancels(stack: Stack) -> None:
    req, _doc, uid = _confirmed(stack, 32)
    new_start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=40)
    change = avtale(_patient(req), uid=uid, start=new_start)
    deliver(stack, change, "DIALOG_INNBYGGER_AVTALEUTSENDING")
    deliver(stack, change, "DIALOG_INNBYGGER_AVTALEUTSENDING")
    receipts(stack, 2)
    wait_for(lambda: "changed" in events(stack, req["patient"]["fnr"]), what="changed")
    [appt] = views.appointments(stack.deps, req["patient"]["fnr"])
    assert datetime.fromisoformat(appt["start"]) == new_start
    cancel = avtale(_patient(req), uid=uid, start=new_start, status="CANCELLED")
    deliver(stack, cancel, "DIALOG_INNBYGGER_AVTALEUTSENDING")
    deliver(stack, cancel, "DIALOG_INNBYGGER_AVTALEUTSENDING")
    receipts(stack, 2)
    wait_state(stack, req["request_id"], "CANCELLED")
    assert events(stack, req["patient"]["fnr"]) == ["cancelled_by_clinic", "changed", "confirmed"]
    [appt] = views.appointments(stack.deps, req["patient"]["fnr"])
    assert appt["status"] == "Avbestilt"


@pytest.mark.parametrize(
    ("code", "cancel_state", "target_state", "event_name"),
    [
        (ReplyCode.CANCEL_CONFIRMED, "CANCELLED", "CANCELLED", "cancel_confirmed"),
        (ReplyCode.CANCEL_REFUSED, "REJECTED", "CONFIRMED", "cancel_refused"),
    ],
)
def test_patient_cancellation(
    stack: Stack, code: ReplyCode, cancel_state: str, target_state: str, event_name: str
) -> None:
    n = 33 if code is ReplyCode.CANCEL_CONFIRMED else 34
    req, _doc, uid = _confirmed(stack, n)
    cancel = request("cancel", patient_n=n, booking_ref=req["request_id"])
    send(stack, cancel)
    [(body, _h)] = stack.drain(CLINIC_QUEUE, 1)
    cdoc = incoming.parse_any(body)
    assert isinstance(cdoc, DialogMessage) and cdoc.request is not None
    assert cdoc.request.code.value == "ART" and cdoc.event is not None and cdoc.event.uid == uid
    wait_state(stack, req["request_id"], "CANCEL_REQUESTED")
    answer = reply(cdoc, code, event=cdoc.event, text="Timen er for nær")
    deliver(stack, answer, cdoc.envelope.process.value)
    deliver(stack, answer, cdoc.envelope.process.value)
    receipts(stack, 2)
    wait_state(stack, cancel["request_id"], cancel_state)
    wait_state(stack, req["request_id"], target_state)
    assert events(stack, req["patient"]["fnr"]) == sorted(["confirmed", event_name])


def test_phone_booked_appointment_appears_once(stack: Stack) -> None:
    patient = Person(fnr(35), "Per", "Telefon")
    uid = str(uuid.uuid4())
    body = avtale(
        patient, uid=uid, start=datetime.now(UTC).replace(microsecond=0) + timedelta(days=9)
    )
    deliver(stack, body, "DIALOG_INNBYGGER_AVTALEUTSENDING")
    deliver(stack, body, "DIALOG_INNBYGGER_AVTALEUTSENDING")
    recs = receipts(stack, 2)
    assert recs[0].status is AppRecStatus.OK and recs[0].msg_id == recs[1].msg_id
    wait_for(lambda: events(stack, patient.fnr) == ["new_appointment"], what="new_appointment")
    [appt] = views.appointments(stack.deps, patient.fnr)
    assert appt["uid"] == uid and appt["status"] == "Tildelt"


def test_an_apprec_another_worker_stored_meanwhile_is_a_duplicate(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of one AppRec handled at once: both pass the MsgId check, one insert loses
    on the unique MsgId; that copy is a duplicate, not an internal error (no dead letter)."""
    from worker.flows import inbound

    req, doc = submitted(stack, patient_n=73)
    body = apprec_for(doc, AppRecStatus.OK)
    rec = incoming.parse_any(body)
    assert isinstance(rec, AppRec)
    first = inbound.receive(stack.deps, body, headers(rec.msg_id, "APPREC"))
    assert first.outcome == "processed"
    real, raced = inbound.get_message, []

    def not_yet_visible(s: object, msg_id: str, **kw: bool) -> object:
        if msg_id == rec.msg_id and not raced:  # the other worker's row, not seen in time
            raced.append(msg_id)
            return None
        return real(s, msg_id, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(inbound, "get_message", not_yet_visible)
    dead = len(views.dead_letters(stack.deps))
    again = inbound.receive(stack.deps, body, headers(rec.msg_id, "APPREC"))
    assert raced and again.outcome == "duplicate"
    assert len(views.dead_letters(stack.deps)) == dead
    wait_state(stack, req["request_id"], "DELIVERED")
