"""The intake contract: every rule of the request table, and the helpers around it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from mappers.codes import AppointmentType, Process, RelationCode
from worker import fnr
from worker.domain.booking import Action
from worker.errors import RejectedRequest
from worker.kinds import AppointmentKind, appointment_type_code
from worker.request import (
    BookingRequest,
    FieldError,
    InvalidRequest,
    RelationKind,
    Service,
    cancel_process,
    parse_request,
    process_for,
    relation_code,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SAMPLES = Path(__file__).resolve().parents[2] / "worker" / "sample"
PATIENT_FNR = fnr.make(date(1985, 3, 14), 100, synthetic=True)
PARENT_FNR = fnr.make(date(1983, 6, 2), 201, synthetic=True)
CHILD_FNR = fnr.make(date(2019, 9, 21), 500, synthetic=True)
BAD_CHECK_1 = PATIENT_FNR[:8] + str((int(PATIENT_FNR[8]) + 1) % 10) + PATIENT_FNR[9:]
BAD_CHECK_2 = PATIENT_FNR[:10] + str((int(PATIENT_FNR[10]) + 1) % 10)
NOT_A_DATE = "32019000035"  # 32.01.90 with both check digits right

Data = dict[str, Any]


def reserve() -> Data:
    """A valid reserve request; tests break one rule at a time."""
    return {
        "request_id": "3f2b8c1e-5d4a-4e8b-9c2f-1a7d6e0b4c51",
        "action": "reserve",
        "patient": {"fnr": PATIENT_FNR, "given_name": "Kari", "family_name": "Nordmann"},
        "clinic": {"her_id": 8090001, "name": "Testlegekontoret", "unit_her_id": 8090002},
        "practitioner": {"name": "August September", "her_id": "8090002"},
        "service": "consultation",
        "slot": {"start": "2030-12-03T10:00:00+01:00", "end": "2030-12-03T10:20:00+01:00"},
        "subject": "Vondt i halsen",
    }


def wish() -> Data:
    """A valid appointment wish."""
    data = reserve()
    del data["practitioner"], data["slot"]
    return data | {"action": "wish", "message": "Helst tirsdag formiddag."}


def change_wish() -> Data:
    """A valid change of an earlier wish."""
    data = wish()
    del data["subject"]
    return data | {"action": "change_wish", "booking_ref": "b-1"}


def cancel() -> Data:
    """A valid cancellation."""
    data = reserve()
    for key in ("practitioner", "slot", "subject", "service"):
        del data[key]
    return data | {"action": "cancel", "booking_ref": "3f2b8c1e-5d4a-4e8b-9c2f-1a7d6e0b4c51"}


def errors_of(data: object) -> tuple[FieldError, ...]:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(data, now=NOW)
    return caught.value.errors


def set_path(path: str, value: object) -> Callable[[Data], None]:
    """A mutation that sets a dotted path (creating nothing: parents must exist)."""

    def mutate(data: Data) -> None:
        *parents, last = path.split(".")
        target = data
        for part in parents:
            target = target[part]
        target[last] = value

    return mutate


def drop(path: str) -> Callable[[Data], None]:
    """A mutation that removes a dotted path."""

    def mutate(data: Data) -> None:
        *parents, last = path.split(".")
        target = data
        for part in parents:
            target = target[part]
        del target[last]

    return mutate


@pytest.mark.parametrize("build", [reserve, wish, change_wish, cancel])
def test_valid_request_for_each_action(build: Callable[[], Data]) -> None:
    request = parse_request(build(), now=NOW)
    assert request.action == build()["action"]
    assert request.patient.fnr == PATIENT_FNR


@pytest.mark.parametrize(
    "name", ["reserve.json", "wish.json", "cancel.json", "reserve-parent.json"]
)
def test_sample_requests_are_valid(name: str) -> None:
    request = parse_request((SAMPLES / name).read_bytes(), now=NOW)
    assert request.request_id


def test_parent_sample_maps_to_foreldreansvar() -> None:
    request = parse_request((SAMPLES / "reserve-parent.json").read_text("utf-8"), now=NOW)
    assert request.requester is not None
    assert relation_code(request.requester.relation) is RelationCode.PARENT
    assert request.acting_person is request.requester


def test_values_are_normalised() -> None:
    data = reserve()
    data["request_id"] = "3F2B8C1E5D4A4E8B9C2F1A7D6E0B4C51"
    data["patient"] |= {"given_name": "  Kari ", "phone": "  "}
    data["clinic"]["unit_her_id"] = ""
    data["practitioner"]["hpr"] = 9144900
    data["slot"] = {"start": "2030-12-03T09:00:00Z", "end": "2030-12-03T09:20:00+00:00"}
    request = parse_request(data, now=NOW)
    assert request.request_id == "3f2b8c1e-5d4a-4e8b-9c2f-1a7d6e0b4c51"
    assert request.patient.given_name == "Kari"
    assert request.patient.phone is None
    assert request.clinic.her_id == "8090001"
    assert request.clinic.unit_her_id is None
    assert request.practitioner is not None
    assert request.practitioner.hpr == "9144900"
    assert request.appointment_type is AppointmentKind.IN_PERSON
    assert request.service is Service.CONSULTATION
    assert request.acting_person is request.patient
    assert request.questionnaire == ()


def test_boundaries_are_inclusive() -> None:
    data = wish() | {"subject": "s" * 50, "message": "m" * 250}
    request = parse_request(data, now=NOW)
    assert request.subject is not None
    assert len(request.subject) == 50


def test_slot_starting_now_is_not_in_the_past() -> None:
    data = reserve()
    data["slot"] = {"start": NOW.isoformat(), "end": "2030-01-01T00:00:00+00:00"}
    assert parse_request(data, now=NOW).slot is not None


def test_requester_acting_for_self_is_accepted() -> None:
    data = reserve()
    data["requester"] = {**data["patient"], "relation": "self"}
    request = parse_request(data, now=NOW)
    assert request.requester is not None
    assert relation_code(request.requester.relation) is None


Mutation = Callable[[Data], None]

RULES: list[tuple[str, Callable[[], Data], Mutation, str, str]] = [
    # id, valid request, mutation, field, message
    (
        "bad check digit 1",
        reserve,
        set_path("patient.fnr", BAD_CHECK_1),
        "patient.fnr",
        "check digit 1 does not match",
    ),
    (
        "bad check digit 2",
        reserve,
        set_path("patient.fnr", BAD_CHECK_2),
        "patient.fnr",
        "check digit 2 does not match",
    ),
    (
        "short fnr",
        reserve,
        set_path("patient.fnr", "1234567890"),
        "patient.fnr",
        "must be 11 digits (got 10 characters)",
    ),
    (
        "fnr as number",
        reserve,
        set_path("patient.fnr", 13116900054),
        "patient.fnr",
        "must be a string",
    ),
    (
        "fnr not a date",
        reserve,
        set_path("patient.fnr", NOT_A_DATE),
        "patient.fnr",
        "date part 320190 is not a valid date",
    ),
    (
        "requester fnr",
        reserve,
        set_path(
            "requester",
            {"fnr": BAD_CHECK_2, "given_name": "A", "family_name": "B", "relation": "guardian"},
        ),
        "requester.fnr",
        "check digit 2 does not match",
    ),
    (
        "51-char subject",
        reserve,
        set_path("subject", "x" * 51),
        "subject",
        "at most 50 characters (got 51)",
    ),
    (
        "51-char subject, padded",
        reserve,
        set_path("subject", "x" * 51 + "   "),
        "subject",
        "at most 50 characters (got 51)",
    ),
    (
        "251-char message",
        wish,
        set_path("message", "x" * 251),
        "message",
        "at most 250 characters (got 251)",
    ),
    ("reserve without slot", reserve, drop("slot"), "slot", "required when action is 'reserve'"),
    (
        "reserve with null slot",
        reserve,
        set_path("slot", None),
        "slot",
        "required when action is 'reserve'",
    ),
    (
        "reserve without practitioner",
        reserve,
        drop("practitioner"),
        "practitioner",
        "required when action is 'reserve'",
    ),
    (
        "reserve without subject",
        reserve,
        drop("subject"),
        "subject",
        "required when action is 'reserve'",
    ),
    (
        "reserve with blank subject",
        reserve,
        set_path("subject", "   "),
        "subject",
        "must not be empty",
    ),
    (
        "reserve without service",
        reserve,
        drop("service"),
        "service",
        "required when action is 'reserve'",
    ),
    ("wish without message", wish, drop("message"), "message", "required when action is 'wish'"),
    ("wish without subject", wish, drop("subject"), "subject", "required when action is 'wish'"),
    ("wish without service", wish, drop("service"), "service", "required when action is 'wish'"),
    (
        "change_wish without booking_ref",
        change_wish,
        drop("booking_ref"),
        "booking_ref",
        "required when action is 'change_wish'",
    ),
    (
        "change_wish without message",
        change_wish,
        drop("message"),
        "message",
        "required when action is 'change_wish'",
    ),
    (
        "cancel without booking_ref",
        cancel,
        drop("booking_ref"),
        "booking_ref",
        "required when action is 'cancel'",
    ),
    (
        "cancel with empty booking_ref",
        cancel,
        set_path("booking_ref", ""),
        "booking_ref",
        "must not be empty",
    ),
    (
        "long booking_ref",
        cancel,
        set_path("booking_ref", "r" * 65),
        "booking_ref",
        "at most 64 characters (got 65)",
    ),
    (
        "slot in the past",
        reserve,
        set_path("slot.start", "2026-06-01T13:59:59+02:00"),
        "slot.start",
        "is in the past",
    ),
    (
        "start equals end",
        reserve,
        set_path("slot.end", "2030-12-03T10:00:00+01:00"),
        "slot.start",
        "must be before slot.end",
    ),
    (
        "start after end",
        reserve,
        set_path("slot.end", "2030-12-03T08:00:00+00:00"),
        "slot.start",
        "must be before slot.end",
    ),
    (
        "naive start",
        reserve,
        set_path("slot.start", "2030-12-03T10:00:00"),
        "slot.start",
        "must include a UTC offset",
    ),
    (
        "naive end",
        reserve,
        set_path("slot.end", "2030-12-03T10:20:00"),
        "slot.end",
        "must include a UTC offset",
    ),
    (
        "date, not date-time",
        reserve,
        set_path("slot.end", "2030-12-03"),
        "slot.end",
        "must include a UTC offset",
    ),
    (
        "not a date-time",
        reserve,
        set_path("slot.start", "next tuesday"),
        "slot.start",
        "must be an ISO 8601 date-time string with a UTC offset",
    ),
    (
        "unix timestamp",
        reserve,
        set_path("slot.start", 1922432400),
        "slot.start",
        "must be an ISO 8601 date-time string with a UTC offset",
    ),
    (
        "unknown relation",
        reserve,
        set_path(
            "requester",
            {"fnr": PARENT_FNR, "given_name": "A", "family_name": "B", "relation": "neighbour"},
        ),
        "requester.relation",
        "must be one of 'self', 'power_of_attorney', 'guardian' or 'parental_responsibility'",
    ),
    (
        "self with other fnr",
        reserve,
        set_path(
            "requester",
            {"fnr": PARENT_FNR, "given_name": "A", "family_name": "B", "relation": "self"},
        ),
        "requester.fnr",
        "must equal patient.fnr when relation is 'self'",
    ),
    (
        "guardian with own fnr",
        reserve,
        set_path(
            "requester",
            {"fnr": PATIENT_FNR, "given_name": "A", "family_name": "B", "relation": "guardian"},
        ),
        "requester.fnr",
        "must differ from patient.fnr when relation is 'guardian'",
    ),
    (
        "unknown action",
        reserve,
        set_path("action", "book"),
        "action",
        "must be one of 'reserve', 'wish', 'change_wish' or 'cancel'",
    ),
    (
        "unknown service",
        reserve,
        set_path("service", "massage"),
        "service",
        "must be one of 'consultation', 'lab_test', 'vaccination' or 'other'",
    ),
    (
        "unknown appointment type",
        reserve,
        set_path("appointment_type", "chat"),
        "appointment_type",
        "must be one of 'in_person', 'video', 'phone' or 'urgent'",
    ),
    (
        "unknown top-level field",
        reserve,
        set_path("priority", "high"),
        "priority",
        "is not an allowed field",
    ),
    (
        "unknown nested field",
        reserve,
        set_path("patient.email", "kari@example.no"),
        "patient.email",
        "is not an allowed field",
    ),
    ("missing request_id", reserve, drop("request_id"), "request_id", "is required"),
    ("bad request_id", reserve, set_path("request_id", "42"), "request_id", "must be a UUID"),
    (
        "missing patient name",
        reserve,
        drop("patient.family_name"),
        "patient.family_name",
        "is required",
    ),
    (
        "empty given name",
        reserve,
        set_path("patient.given_name", " "),
        "patient.given_name",
        "must not be empty",
    ),
    (
        "bad phone",
        reserve,
        set_path("patient.phone", "call me"),
        "patient.phone",
        "must be a phone number (digits and spaces, optionally a leading +)",
    ),
    (
        "her_id with letters",
        reserve,
        set_path("clinic.her_id", "80900O1"),
        "clinic.her_id",
        "must be digits (a positive number or a string of digits)",
    ),
    (
        "her_id zero",
        reserve,
        set_path("clinic.her_id", 0),
        "clinic.her_id",
        "must be digits (a positive number or a string of digits)",
    ),
    (
        "her_id boolean",
        reserve,
        set_path("clinic.her_id", True),
        "clinic.her_id",
        "must be digits (a positive number or a string of digits)",
    ),
    (
        "her_id too long",
        reserve,
        set_path("clinic.her_id", "1" * 21),
        "clinic.her_id",
        "at most 20 digits (got 21)",
    ),
    ("patient not an object", reserve, set_path("patient", "Kari"), "patient", "must be an object"),
    (
        "questionnaire answer missing",
        reserve,
        set_path("questionnaire", [{"question": "Hva gjelder det?"}]),
        "questionnaire[0].answer",
        "is required",
    ),
    (
        "questionnaire not a list",
        reserve,
        set_path("questionnaire", "ja"),
        "questionnaire",
        "must be a list",
    ),
]


@pytest.mark.parametrize(
    ("build", "mutate", "field", "message"),
    [pytest.param(*rule[1:], id=rule[0]) for rule in RULES],
)
def test_each_rule_reports_field_and_reason(
    build: Callable[[], Data], mutate: Mutation, field: str, message: str
) -> None:
    data = build()
    mutate(data)
    assert FieldError(field, message) in errors_of(data)


@pytest.mark.parametrize(
    ("build", "mutate"),
    [pytest.param(*rule[1:3], id=rule[0]) for rule in RULES],
)
def test_no_error_message_contains_a_whole_fnr(build: Callable[[], Data], mutate: Mutation) -> None:
    data = build()
    data["requester"] = {
        "fnr": PARENT_FNR,
        "given_name": "A",
        "family_name": "B",
        "relation": "guardian",
    }
    mutate(data)
    caught = errors_of(data)
    text = str(InvalidRequest(caught)) + repr(caught)
    for number in (PATIENT_FNR, PARENT_FNR, BAD_CHECK_1, BAD_CHECK_2, "13116900054"):
        assert number not in text


def test_all_errors_are_reported_together() -> None:
    data = reserve()
    data["patient"]["fnr"] = BAD_CHECK_1
    del data["slot"]
    data["subject"] = "x" * 51
    data["extra"] = 1
    fields = [e.field for e in errors_of(data)]
    assert fields == ["patient.fnr", "slot", "subject", "extra"]


def test_invalid_request_str_joins_errors() -> None:
    error = InvalidRequest(
        (FieldError("subject", "at most 50 characters (got 51)"), FieldError("slot", "is required"))
    )
    assert str(error) == "subject: at most 50 characters (got 51); slot: is required"
    assert isinstance(error, RejectedRequest)


def test_invalid_request_carries_no_pydantic_context() -> None:
    data = reserve()
    data["patient"]["fnr"] = BAD_CHECK_1
    with pytest.raises(InvalidRequest) as caught:
        parse_request(data, now=NOW)
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"action": ', "malformed JSON: Expecting value at line 1 column 12"),
        ("", "malformed JSON: Expecting value at line 1 column 1"),
        (b"\xff\xfe{", "malformed JSON: not UTF-8 text"),
        ('{"action": "wish", "action": "cancel"}', "malformed JSON: duplicate key 'action'"),
        ("[" * 100_000, "malformed JSON: nested too deeply"),
    ],
)
def test_malformed_json_is_reported_on_root(text: str | bytes, message: str) -> None:
    (error,) = errors_of(text)
    assert error.field == "$"
    assert error.message.startswith(message)


@pytest.mark.parametrize("data", [[], "[]", 42, None, '"text"'])
def test_non_object_is_reported_on_root(data: object) -> None:
    assert errors_of(data) == (FieldError("$", "must be an object"),)


def test_json_text_and_bytes_are_accepted() -> None:
    text = json.dumps(reserve())
    assert parse_request(text, now=NOW) == parse_request(text.encode(), now=NOW)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_request(reserve(), now=datetime(2026, 1, 1))


def test_stored_request_reloads_without_a_clock() -> None:
    data = reserve()
    data["slot"] = {"start": "2020-01-01T10:00:00+01:00", "end": "2020-01-01T10:20:00+01:00"}
    assert BookingRequest.model_validate(data).slot is not None
    with pytest.raises(InvalidRequest, match=r"slot\.start: is in the past"):
        parse_request(data, now=NOW)


def test_round_trip_through_json() -> None:
    request = parse_request(reserve(), now=NOW)
    again = parse_request(request.model_dump_json(), now=NOW)
    assert again == request


def test_repr_hides_fnr() -> None:
    data = reserve()
    data["requester"] = {
        "fnr": PARENT_FNR,
        "given_name": "A",
        "family_name": "B",
        "relation": "guardian",
    }
    text = repr(parse_request(data, now=NOW))
    assert PATIENT_FNR not in text
    assert PARENT_FNR not in text


def test_request_is_immutable() -> None:
    request = parse_request(reserve(), now=NOW)
    with pytest.raises(ValueError, match="frozen"):
        request.subject = "x"  # type: ignore[misc]


def test_input_is_not_modified() -> None:
    data = reserve()
    before = copy.deepcopy(data)
    parse_request(data, now=NOW)
    assert data == before


@pytest.mark.parametrize(
    ("relation", "code"),
    [
        ("self", None),
        ("power_of_attorney", RelationCode.POWER_OF_ATTORNEY),
        ("guardian", RelationCode.GUARDIAN),
        ("parental_responsibility", RelationCode.PARENT),
        (RelationKind.GUARDIAN, RelationCode.GUARDIAN),
    ],
)
def test_relation_code(relation: str, code: RelationCode | None) -> None:
    assert relation_code(relation) is code


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("in_person", AppointmentType.ORDINARY),
        ("urgent", AppointmentType.URGENT),
        ("video", AppointmentType.VIDEO),
        ("phone", AppointmentType.PHONE),
    ],
)
def test_appointment_type_code(kind: str, code: AppointmentType) -> None:
    assert appointment_type_code(kind) is code


@pytest.mark.parametrize(
    ("action", "process"),
    [
        ("reserve", Process.RESERVATION),
        ("wish", Process.WISH),
        ("change_wish", Process.WISH),
        ("cancel", Process.RESERVATION),
    ],
)
def test_process_for(action: str, process: Process) -> None:
    assert process_for(action) is process


@pytest.mark.parametrize(
    ("original", "process"),
    [
        (Action.RESERVE, Process.RESERVATION),
        ("wish", Process.WISH),
        ("change_wish", Process.WISH),
        (None, Process.CANCELLATION),
    ],
)
def test_cancel_process(original: Action | str | None, process: Process) -> None:
    assert cancel_process(original) is process


def test_cancel_of_a_cancel_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot itself be cancelled"):
        cancel_process("cancel")


@pytest.mark.parametrize(
    "helper", [relation_code, appointment_type_code, process_for, cancel_process]
)
def test_helpers_refuse_unknown_values(helper: Callable[[str], object]) -> None:
    with pytest.raises(ValueError, match="is not a valid"):
        helper("nonsense")
