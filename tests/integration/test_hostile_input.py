"""Hostile and broken input: the worker keeps running, answers AppRec Avvist, keeps the bytes."""

from __future__ import annotations

import uuid

import pytest

from mappers import incoming
from mappers.codes import AppRecStatus
from mappers.model import AppRec
from tests.conftest import wait_for
from tests.integration.conftest import Stack
from tests.integration.test_inbound_flow import deliver, submitted, wait_state
from tests.official import AVAILABLE as STANDARDS_AVAILABLE
from tests.official import validate_official
from tests.support import CLINIC, apprec_for, headers
from worker.adapters.store.db import dead_letters

pytestmark = pytest.mark.integration
CLINIC_QUEUE = f"{CLINIC}_async"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">&lol3;</MsgHead>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">&xxe;</MsgHead>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE MsgHead SYSTEM "http://127.0.0.1:1/evil.dtd">
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24"/>"""
HUGE = b"<MsgHead>" + b"a" * (50 * 1024 * 1024) + b"</MsgHead>"
DEEP = b"<a>" * 10_000 + b"</a>" * 10_000
LATIN1 = '<?xml version="1.0"?><MsgHead>bl\u00e5b\u00e6r</MsgHead>'.encode("latin-1")
INVALID = b'<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24"><Nope/></MsgHead>'

CASES = {
    "billion-laughs": (BILLION_LAUGHS, "T01"),
    "external-entity": (XXE, "T01"),
    "external-dtd": (EXTERNAL_DTD, "T01"),
    "50-mb": (HUGE, "T01"),
    "10000-deep": (DEEP, "T01"),
    "not-utf8": (LATIN1, "T01"),
    "empty": (b"", "T01"),
    "not-xml": (b"this is not xml", "T01"),
    "schema-invalid": (INVALID, "T02"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_answered_and_kept(stack: Stack, name: str) -> None:
    body, code = CASES[name]
    msg_id = str(uuid.uuid4())
    stack.publish_raw(body, headers(msg_id, "DIALOG_INNBYGGER_TIMERESERVASJON"))
    [(reply, _hdrs)] = stack.drain(CLINIC_QUEUE, 1, timeout=60)
    rec = incoming.parse_any(reply)
    assert isinstance(rec, AppRec)
    assert rec.status is AppRecStatus.REJECTED
    assert [str(e.code) for e in rec.errors] == [code]
    assert rec.original.msg_id == msg_id
    if STANDARDS_AVAILABLE:
        validate_official(reply)

    def kept() -> bool:
        with stack.deps.store.transaction() as s:
            return any(d.msg_id == msg_id and d.payload == body for d in dead_letters(s))

    wait_for(kept, what="dead letter with the raw bytes")
    assert stack.worker.proc is not None and stack.worker.proc.poll() is None
    assert b"root:" not in reply  # nothing of /etc/passwd leaked into the receipt


def test_worker_still_works_after_the_hostile_set(stack: Stack) -> None:
    req, doc = submitted(stack, patient_n=60)
    deliver(stack, apprec_for(doc, AppRecStatus.OK), "APPREC")
    wait_state(stack, req["request_id"], "DELIVERED")
    assert stack.worker.proc is not None and stack.worker.proc.poll() is None


def test_apprec_that_does_not_validate_gets_no_apprec(stack: Stack) -> None:
    body = b'<AppRec xmlns="http://www.kith.no/xmlstds/apprec/2012-02-15"><Bad/></AppRec>'
    msg_id = str(uuid.uuid4())
    stack.publish_raw(body, headers(msg_id, "APPREC"))

    def kept() -> bool:
        with stack.deps.store.transaction() as s:
            return any(d.msg_id == msg_id for d in dead_letters(s))

    wait_for(kept, what="dead letter")
    assert stack.depth(CLINIC_QUEUE) == 0  # never an AppRec for an AppRec
