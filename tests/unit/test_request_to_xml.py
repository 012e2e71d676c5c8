"""Nothing a patient enters is dropped silently: every field of the request's JSON Schema either
changes the XML the clinic receives, is refused for an action it does not apply to, or is listed
below with the reason it is not sent.

The walk reads schemas/booking-request.schema.json itself, so a new field fails here until it
is mapped (or listed)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mappers import incoming
from mappers import message as dialog_message
from mappers.codes import AppointmentType, RequestCode, Urgency
from mappers.model import DialogMessage, Party
from worker.adapters.registry import Clinic, Unit
from worker.adapters.store.tables import AppointmentRow
from worker.flows.compose import Target, build_dialog, function_for
from worker.request import InvalidRequest, parse_request

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "booking-request.schema.json"
NOW = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
SENDER = Party("8093244", "Helsenorge.no")
PROCESSES = frozenset({"timereservasjon", "timeonske", "avtaleavbestilling", "avtaleutsending"})
UNITS = (Unit("8090002", "Fastlege August September"), Unit("8090003", "Laboratoriet"))
CLINICS = {
    "8090001": Clinic("8090001", "Testlegekontoret", "81569069", PROCESSES, UNITS),
    "8090005": Clinic("8090005", "Andre legekontor", None, PROCESSES, UNITS),
}
ACTIONS = ("reserve", "wish", "change_wish", "cancel")

# A request with every field filled, in values that occur nowhere else.
FULL: dict[str, Any] = {
    "request_id": "6a0b3c2d-1e4f-4a5b-8c7d-9e0f1a2b3c4d",
    "patient": {
        "fnr": "12858010053",
        "given_name": "Pgivenname",
        "family_name": "Pfamilyname",
        "phone": "99775533",
    },
    "requester": {
        "fnr": "03918810047",
        "given_name": "Rgivenname",
        "family_name": "Rfamilyname",
        "relation": "power_of_attorney",
    },
    "clinic": {"her_id": "8090001", "name": "Portalens klinikknavn", "unit_her_id": "8090002"},
    "practitioner": {"name": "Prgiven Prfamily", "her_id": "7777001", "hpr": "9144889"},
    "service": "consultation",
    "appointment_type": "in_person",
    "slot": {
        "id": "slot-walk-1",
        "start": "2026-12-01T10:00:00+01:00",
        "end": "2026-12-01T10:20:00+01:00",
    },
    "subject": "Subjecttext",
    "message": "Messagetext",
    "questionnaire": [{"question": "Questiontext", "answer": "Answertext"}],
    "booking_ref": "appointment-ref-1",
}

# Another valid value for each leaf: the XML must change when the field does.
OTHER: dict[str, object] = {
    "request_id": "7b1c4d3e-2f50-4b6c-9d8e-0f1a2b3c4d5e",
    "patient.fnr": "43858010005",
    "patient.given_name": "Pgivenother",
    "patient.family_name": "Pfamilyother",
    "patient.phone": "41234567",
    "requester.fnr": "07904550099",
    "requester.given_name": "Rgivenother",
    "requester.family_name": "Rfamilyother",
    "requester.relation": ["guardian", "parental_responsibility"],
    "clinic.her_id": "8090005",
    "clinic.name": "Annet portalnavn",
    "clinic.unit_her_id": "8090003",
    "practitioner.name": "Prother Prfamilyother",
    "practitioner.her_id": "7777002",
    "practitioner.hpr": "9144890",
    "service": ["lab_test", "vaccination", "other"],
    "appointment_type": ["video", "phone", "urgent"],
    "slot.id": "slot-walk-2",
    "slot.start": "2026-12-01T09:40:00+01:00",
    "slot.end": "2026-12-01T10:30:00+01:00",
    "subject": "Subjectother",
    "message": "Messageother",
    "questionnaire[0].question": "Questionother",
    "questionnaire[0].answer": "Answerother",
    "booking_ref": "appointment-ref-2",
}

# (action, field) -> why it does not reach the clinic; anything else must.
NOT_SENT: dict[tuple[str, str], str] = {
    **{
        (action, "request_id"): "the idempotency key and booking id; only a reservation's "
        "vevent carries it (as uid)"
        for action in ("wish", "change_wish", "cancel")
    },
    **{
        (action, "clinic.name"): "the address registry's name is sent (authoritative); "
        "the portal's is only shown to the patient"
        for action in ACTIONS
    },
    ("cancel", "service"): "a cancellation names the appointment (booking_ref / its vevent); "
    "what it was for is already the clinic's",
    ("cancel", "appointment_type"): "likewise: the appointment's type is the clinic's own",
}

# Fields an action refuses instead of dropping (ONLY_FOR in worker/request.py).
REFUSED = {
    **{(action, "slot"): "slot" for action in ("wish", "change_wish", "cancel")},
    **{(action, "booking_ref"): "booking_ref" for action in ("reserve", "wish")},
}


def _leaves(schema: dict[str, Any], node: dict[str, Any], path: str) -> Iterator[str]:
    """Every scalar field of the schema, as dotted paths (`questionnaire[0].answer`)."""
    if "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    branches = [b for b in node.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        yield from _leaves(schema, branches[0], path)
    elif node.get("type") == "object" or "properties" in node:
        for name, child in node["properties"].items():
            yield from _leaves(schema, child, f"{path}.{name}" if path else name)
    elif node.get("type") == "array":
        yield from _leaves(schema, node["items"], f"{path}[0]")
    else:
        yield path


def leaves() -> list[str]:
    """The scalar fields of schemas/booking-request.schema.json."""
    schema = json.loads(SCHEMA.read_text())
    return sorted(_leaves(schema, schema, ""))


def _set(data: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A deep copy of `data` with one dotted path set."""
    out = copy.deepcopy(data)
    node: Any = out
    parts = [p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    node[int(last) if last.isdigit() else last] = value
    return out


def _request(action: str) -> dict[str, Any]:
    """FULL, less what the action refuses."""
    data = {**copy.deepcopy(FULL), "action": action}
    for (refused_in, field), _name in REFUSED.items():
        if refused_in == action:
            data.pop(field)
    return data


def _target(req: Any) -> Target | None:
    """What outbound resolves booking_ref to: here an appointment with that uid."""
    if req.booking_ref is None:
        return None
    appointment = AppointmentRow(
        uid=req.booking_ref,
        start=NOW + timedelta(days=3),
        end=NOW + timedelta(days=3, minutes=20),
        clinic_her_id=req.clinic.her_id,
        summary="Time",
        location="Storgata 1",
    )
    return Target(None, appointment)


def produced(data: dict[str, Any]) -> str:
    """The XML the clinic receives for a request, with MsgId fixed so runs compare."""
    req = parse_request(data, now=NOW)
    target = _target(req)
    process, code = function_for(req, target)
    msg = build_dialog(SENDER, req, CLINICS[req.clinic.her_id], process, code, target, NOW)
    text = dialog_message.build(msg).decode("utf-8")
    return text.replace(msg.envelope.msg_id, "MSGID")


def _values(path: str) -> list[object]:
    other = OTHER[path]
    return other if isinstance(other, list) else [other]


def test_every_schema_field_is_walked() -> None:
    assert set(leaves()) == {"action", *OTHER}


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("path", [p for p in leaves() if p != "action"])
def test_field_reaches_the_clinic(action: str, path: str) -> None:
    field = path.split(".")[0].split("[")[0]
    if (action, field) in REFUSED:
        with pytest.raises(InvalidRequest, match=rf"{field}: only allowed when action is"):
            parse_request({**_request(action), field: FULL[field]}, now=NOW)
        return
    base = produced(_request(action))
    for value in _values(path):
        changed = produced(_set(_request(action), path, value))
        if (action, path) in NOT_SENT:
            assert changed == base, f"{path} is sent after all: update NOT_SENT"
            continue
        assert changed != base, f"{action}: {path} = {value!r} does not reach the XML"
        if isinstance(value, str) and path.endswith(_TEXTS):
            # free text travels as entered (a practitioner's name split into its parts)
            assert all(word in changed for word in value.split())


_TEXTS = ("name", "subject", "message", "answer", "question", ".id")


def test_each_action_has_its_own_function() -> None:
    codes = set()
    for action in ACTIONS:
        doc = incoming.parse_any(produced(_request(action)).replace("MSGID", "m-1").encode())
        assert isinstance(doc, DialogMessage) and doc.request is not None
        codes.add(doc.request.code)
    assert codes == {
        RequestCode.RESERVE,
        RequestCode.WISH,
        RequestCode.WISH_CHANGE,
        RequestCode.CANCEL,
    }


@pytest.mark.parametrize(
    ("kind", "code", "urgency"),
    [
        ("in_person", AppointmentType.ORDINARY, Urgency.NORMAL),
        ("video", AppointmentType.VIDEO, Urgency.NORMAL),
        ("phone", AppointmentType.PHONE, Urgency.NORMAL),
        ("urgent", AppointmentType.URGENT, Urgency.URGENT),
    ],
)
@pytest.mark.parametrize("action", ["wish", "change_wish"])
@pytest.mark.parametrize("service", ["consultation", "lab_test", "vaccination", "other"])
def test_a_wish_carries_its_type_urgency_and_service(
    action: str, kind: str, code: AppointmentType, urgency: Urgency, service: str
) -> None:
    data = {**_request(action), "appointment_type": kind, "service": service}
    doc = incoming.parse_any(produced(data).replace("MSGID", "m-1").encode())
    assert isinstance(doc, DialogMessage) and doc.request is not None
    assert doc.request.appointment_type is code
    assert doc.request.urgency is urgency
    assert doc.request.service == service
