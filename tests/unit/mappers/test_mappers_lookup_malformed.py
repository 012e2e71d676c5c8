"""Every error path of the lookup parsers has a malformed fixture (tests/fixtures/malformed/lookup)
and raises its own error class with its 8221 code (kept on dead letters; lookups get no AppRec)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mappers import lookup
from mappers.codes import AppRecError
from mappers.errors import (
    EmptyDocument,
    InvalidData,
    MapperError,
    MissingData,
    NotWellFormed,
    SchemaInvalid,
    UnsupportedMessage,
)
from tests.unit.mappers.mappers_cases import FIXTURES

MALFORMED = FIXTURES / "malformed" / "lookup"
T01, T02, T10, T99 = (
    AppRecError.NOT_XML,
    AppRecError.NOT_VALID,
    AppRecError.UNSUPPORTED,
    AppRecError.FORMAT_OTHER,
)
Parser = Callable[[bytes], object]

CASES: list[tuple[str, Parser, type[MapperError], AppRecError, str]] = [
    ("lookup_is_an_answer.xml", lookup.parse_lookup, UnsupportedMessage, T10, "not a lookup"),
    ("lookup_not_a_lookup.xml", lookup.parse_lookup, UnsupportedMessage, T10, "RT is not a"),
    ("lookup_wrong_process.xml", lookup.parse_lookup, UnsupportedMessage, T10, "travels in"),
    (
        "lookup_planned_without_patient.xml",
        lookup.parse_lookup,
        MissingData,
        AppRecError.PATIENT_FNR_MISSING,
        "names no patient",
    ),
    ("lookup_period_reversed.xml", lookup.parse_lookup, InvalidData, T99, "before it starts"),
    ("lookup_impossible_date.xml", lookup.parse_lookup, SchemaInvalid, T02, "FraDato"),
    ("lookup_dates_out_of_order.xml", lookup.parse_lookup, SchemaInvalid, T02, "FraDato"),
    ("lookup_unknown_type.xml", lookup.parse_lookup, UnsupportedMessage, T10, "'Lab'"),
    ("lookup_type_of_other_list.xml", lookup.parse_lookup, UnsupportedMessage, T10, "9999"),
    (
        "lookup_wrong_fnr.xml",
        lookup.parse_lookup,
        InvalidData,
        AppRecError.PATIENT_FNR_WRONG,
        "not a valid",
    ),
    ("lookup_not_msghead.xml", lookup.parse_lookup, UnsupportedMessage, T10, "not a MsgHead"),
    ("lookup_not_well_formed.xml", lookup.parse_lookup, NotWellFormed, T01, "not well-formed"),
    ("answer_is_a_lookup.xml", lookup.parse_answer, UnsupportedMessage, T10, "not an answer"),
    ("answer_duplicate_slot.xml", lookup.parse_answer, InvalidData, T99, "ledig-0 appears twice"),
    ("answer_slot_ends_before_start.xml", lookup.parse_answer, InvalidData, T99, "ends before"),
    ("answer_refusal_with_slots.xml", lookup.parse_answer, UnsupportedMessage, T10, "26 answer"),
    ("answer_to_a_reservation.xml", lookup.parse_answer, UnsupportedMessage, T10, "RT, not a"),
    ("answer_unknown_reply_code.xml", lookup.parse_answer, UnsupportedMessage, T10, "'99'"),
    ("answer_vevent_without_contact.xml", lookup.parse_answer, SchemaInvalid, T02, "contact"),
    ("answer_naive_time.xml", lookup.parse_answer, SchemaInvalid, T02, "date-time"),
    ("answer_wrong_process.xml", lookup.parse_answer, UnsupportedMessage, T10, "travels in"),
    ("answer_two_calendars.xml", lookup.parse_answer, UnsupportedMessage, T10, "more than one"),
    ("answer_empty.xml", lookup.parse_answer, EmptyDocument, T01, "empty"),
]


@pytest.mark.parametrize(
    ("fixture", "parse", "error", "code", "match"), CASES, ids=[c[0] for c in CASES]
)
def test_malformed_lookup_fixture_raises_its_error_and_code(
    fixture: str, parse: Parser, error: type[MapperError], code: AppRecError, match: str
) -> None:
    with pytest.raises(error, match=match) as caught:
        parse((MALFORMED / fixture).read_bytes())
    assert type(caught.value) is error
    assert caught.value.code is code


def test_every_malformed_lookup_fixture_is_covered() -> None:
    assert {p.name for p in MALFORMED.glob("*.xml")} == {c[0] for c in CASES}


def test_a_wrong_fnr_is_not_echoed() -> None:
    with pytest.raises(InvalidData) as caught:
        lookup.parse_lookup((MALFORMED / "lookup_wrong_fnr.xml").read_bytes())
    assert "12858010054" not in str(caught.value)


def test_size_cap_applies_to_lookups() -> None:
    data = (FIXTURES / "timereservasjon" / "svar_ledige_timer.xml").read_bytes()
    with pytest.raises(NotWellFormed, match="over the cap of 1000 bytes"):
        lookup.parse_answer(data, max_bytes=1000)
    with pytest.raises(NotWellFormed, match="over the cap of 1000 bytes"):
        lookup.parse_lookup(data, max_bytes=1000)
