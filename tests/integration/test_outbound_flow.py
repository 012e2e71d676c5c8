"""Submit via Celery -> real worker -> XML on the clinic queue, valid against the official XSDs."""

from __future__ import annotations

import json

import pytest

from mappers import incoming
from mappers.codes import Process, RequestCode
from mappers.model import DialogMessage
from tests.conftest import wait_for
from tests.integration.conftest import Stack
from tests.official import AVAILABLE as STANDARDS_AVAILABLE
from tests.official import validate_official
from tests.support import CLINIC, request
from worker.constants import REQUESTS_QUEUE, SUBMIT_TASK
from worker.entrypoints.app import create_app
from worker.flows import views

pytestmark = pytest.mark.integration
CLINIC_QUEUE = f"{CLINIC}_async"


def send(stack: Stack, payload: object) -> None:
    app = create_app(stack.settings)
    app.send_task(SUBMIT_TASK, args=[payload], queue=REQUESTS_QUEUE)


def booking_state(stack: Stack, booking_id: str) -> str | None:
    try:
        return str(views.booking(stack.deps, booking_id)["state"])
    except views.NotFound:
        return None


@pytest.mark.parametrize(
    ("action", "extra", "process", "code"),
    [
        ("reserve", {}, Process.RESERVATION, RequestCode.RESERVE),
        ("reserve", {"appointment_type": "video"}, Process.RESERVATION, RequestCode.RESERVE),
        (
            "reserve",
            {
                "requester": {
                    "fnr": None,
                    "given_name": "Mor",
                    "family_name": "Danser",
                    "relation": "parental_responsibility",
                }
            },
            Process.RESERVATION,
            RequestCode.RESERVE,
        ),
        ("wish", {}, Process.WISH, RequestCode.WISH),
    ],
)
def test_request_becomes_valid_xml_on_clinic_queue(
    stack: Stack, action: str, extra: dict[str, object], process: Process, code: RequestCode
) -> None:
    from tests.support import fnr

    if "requester" in extra:
        extra = {"requester": {**extra["requester"], "fnr": fnr(40)}}  # type: ignore[dict-item]
    req = request(action, **extra)
    send(stack, req)
    [(body, headers)] = stack.drain(CLINIC_QUEUE, 1)
    doc = incoming.parse_any(body)
    assert isinstance(doc, DialogMessage)
    assert doc.envelope.process is process
    assert doc.request is not None and doc.request.code is code
    assert headers["msgId"] == doc.envelope.msg_id
    assert headers["toHerId"] == CLINIC and headers["fromHerId"] == stack.settings.own_her_id
    assert headers["type"] == process.value
    if STANDARDS_AVAILABLE:
        validate_official(body)
    if "requester" in extra:
        assert doc.relation is not None and doc.relation.code.value == "FO"
    wait_for(lambda: booking_state(stack, req["request_id"]) == "SENT", what="SENT")
    view = views.booking(stack.deps, req["request_id"])
    assert [m["msg_id"] for m in view["messages"]] == [doc.envelope.msg_id]
    assert [h["to"] for h in view["history"]] == ["REQUESTED", "SENT"]


def test_same_request_twice_gives_one_booking_and_one_message(stack: Stack) -> None:
    req = request("reserve")
    send(stack, req)
    send(stack, req)
    [(body, _h)] = stack.drain(CLINIC_QUEUE, 1)
    wait_for(lambda: booking_state(stack, req["request_id"]) == "SENT", what="SENT")
    # the second task has run once nothing is left on the intake queue
    wait_for(lambda: stack.depth(REQUESTS_QUEUE) == 0, what="intake drained")
    import time

    time.sleep(1.0)
    assert stack.depth(CLINIC_QUEUE) == 0
    view = views.booking(stack.deps, req["request_id"])
    out = [m["msg_id"] for m in view["messages"] if m["direction"] == "out"]
    doc = incoming.parse_any(body)
    assert isinstance(doc, DialogMessage)
    assert out == [doc.envelope.msg_id]


def _bad_check_digit(req: dict) -> dict:  # type: ignore[type-arg]
    good = req["patient"]["fnr"]
    bad = good[:10] + str((int(good[10]) + 1) % 10)
    return req | {"patient": req["patient"] | {"fnr": bad}}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_bad_check_digit, "patient.fnr"),
        (lambda r: r | {"subject": "x" * 51}, "subject"),
        (lambda r: r | {"clinic": {"her_id": "999999", "name": "Ukjent"}}, "clinic.her_id"),
        (lambda r: {k: v for k, v in r.items() if k != "slot"}, "slot"),
        (
            lambda r: (
                r
                | {
                    "slot": r["slot"]
                    | {"start": "2020-01-01T10:00:00+01:00", "end": "2020-01-01T10:20:00+01:00"}
                }
            ),
            "slot",
        ),
        (
            lambda r: r | {"clinic": {"her_id": "8090030", "name": "Frakoblet legekontor"}},
            "clinic.her_id",
        ),
    ],
    ids=["check-digit", "subject-51", "unknown-clinic", "no-slot", "slot-in-past", "not-connected"],
)
def test_bad_request_is_invalid_and_never_sent(stack: Stack, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    req = mutate(request("reserve"))
    send(stack, req)
    wait_for(lambda: booking_state(stack, req["request_id"]) == "INVALID", what="INVALID")
    view = views.booking(stack.deps, req["request_id"])
    assert view["reason"] and view["reason"].startswith(field)
    assert view["messages"] == []
    assert stack.depth(CLINIC_QUEUE) == 0


def test_malformed_json_is_invalid(stack: Stack) -> None:
    from worker.flows.outbound import payload_id

    raw = '{"request_id": "oops", "action": '
    send(stack, raw)
    booking_id = payload_id(raw)
    wait_for(lambda: booking_state(stack, booking_id) == "INVALID", what="INVALID")
    view = views.booking(stack.deps, booking_id)
    assert view["reason"].startswith("$")
    assert view["messages"] == []
    json.dumps(view)  # the --json view serialises
