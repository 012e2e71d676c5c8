"""Property tests for everything that reads untrusted input.

The intake contract (`parse_request` and the helpers the invalid path runs on the same payload)
answers any JSON-ish value with a request or `InvalidRequest`, and never echoes a fødselsnummer
in its error text. Every XML parser (`xmlsafe.parse`, `apprec.parse`, `message.parse`,
`incoming.parse_any`, `explain`) answers any bytes, and any mutation of a valid document, with
a result or a `MapperError`. The retry delay stays within its exponential, jittered bound.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree

from mappers import apprec, explain, incoming, message, xmlsafe
from mappers.errors import MapperError
from mappers.model import AppRec, DialogMessage
from tests.unit.mappers.mappers_cases import ALL, MESSAGES, RECEIPTS, build
from worker import fnr as fnrs
from worker.entrypoints.app import backoff
from worker.flows.outbound import _loose, payload_id
from worker.request import BookingRequest, InvalidRequest, parse_request

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis folder in the tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PATIENT_FNR = fnrs.make(date(1985, 3, 14), 100, synthetic=True)
OTHER_FNR = fnrs.make(date(1983, 6, 2), 201, synthetic=True)
ELEVEN_DIGITS = re.compile(r"(?<!\d)\d{11}(?!\d)")

# -- the intake contract ----------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=60)
    | st.sampled_from(["", " ", "reserve", "2026-06-02T10:00:00+02:00", PATIENT_FNR, "0" * 11])
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=25,
)


def valid_requests() -> list[dict[str, Any]]:
    """One valid request of each action (the base the mutations start from)."""
    who = {"fnr": PATIENT_FNR, "given_name": "Kari", "family_name": "Nordmann"}
    base = {
        "request_id": "3f2b8c1e-5d4a-4e8b-9c2f-1a7d6e0b4c51",
        "patient": who,
        "clinic": {"her_id": "8090001", "name": "Testlegekontoret"},
    }
    reserve = base | {
        "action": "reserve",
        "practitioner": {"name": "August September", "her_id": "8090002"},
        "service": "consultation",
        "slot": {"start": "2030-12-03T10:00:00+01:00", "end": "2030-12-03T10:20:00+01:00"},
        "subject": "Vondt i halsen",
        "requester": {
            "fnr": OTHER_FNR,
            "given_name": "Ola",
            "family_name": "Nordmann",
            "relation": "parental_responsibility",
        },
        "questionnaire": [{"question": "Feber?", "answer": "Nei"}],
    }
    wish = base | {
        "action": "wish",
        "service": "lab_test",
        "subject": "Blodprøve",
        "message": "Tirsdag",
    }
    change = wish | {"action": "change_wish", "booking_ref": "abc"}
    cancel = base | {"action": "cancel", "booking_ref": "abc"}
    return [reserve, wish, change, cancel]


VALID = valid_requests()


@st.composite
def mutated_requests(draw: st.DrawFn) -> Any:
    """A valid request with fields (top level or nested) replaced, dropped or added."""
    data: Any = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    for _ in range(draw(st.integers(1, 4))):
        node = data
        path = draw(st.lists(st.sampled_from(_keys(data)), min_size=1, max_size=3))
        for key in path[:-1]:
            if isinstance(node, dict) and isinstance(node.get(key), dict):
                node = node[key]
        if not isinstance(node, dict):
            continue
        key = path[-1] if path[-1] in node else draw(st.sampled_from(sorted(node) or ["x"]))
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "drop":
            node.pop(key, None)
        elif action == "add":
            node[draw(st.text(max_size=10))] = draw(JSONISH)
        else:
            node[key] = draw(JSONISH)
    return data


def _keys(data: dict[str, Any]) -> list[str]:
    keys = set(data)
    for value in data.values():
        if isinstance(value, dict):
            keys |= set(value)
    return sorted(keys)


def request_or_invalid(data: Any) -> None:
    """The contract: a BookingRequest, or InvalidRequest with field-level errors, no FNR."""
    error: InvalidRequest | None = None
    try:
        req = parse_request(data, now=NOW)
    except InvalidRequest as exc:
        error = exc
    if error is None:
        assert isinstance(req, BookingRequest)
        return
    assert error.errors and all(e.field and e.message for e in error.errors)
    for number in ELEVEN_DIGITS.findall(json.dumps(data, default=str)):
        assert number not in str(error), "an 11-digit number is echoed in the error"
    _invalid_path_helpers(data)


def _invalid_path_helpers(data: Any) -> None:
    """What `submit` runs on an invalid payload before storing it must not raise either."""
    assert isinstance(payload_id(data), str)
    fnr = _loose(data).get("fnr")
    assert fnr is None or fnrs.is_valid(fnr)


@SETTINGS
@given(JSONISH)
@example({"00000000000": None})  # an unknown field named like a fødselsnummer
def test_any_json_value_is_a_request_or_invalid(data: Any) -> None:
    request_or_invalid(data)


@SETTINGS
@given(st.dictionaries(st.sampled_from([*sorted(VALID[0]), "booking_ref", "message"]), JSONISH))
def test_the_right_keys_with_any_values(data: dict[str, Any]) -> None:
    request_or_invalid(data)


@SETTINGS
@given(mutated_requests())
def test_mutations_of_valid_requests(data: Any) -> None:
    request_or_invalid(data)


@SETTINGS
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), JSONISH.map(json.dumps)))
def test_any_text_or_bytes(data: str | bytes) -> None:
    request_or_invalid(data)


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000 + "]" * 100_000,  # deeper than the JSON parser's recursion limit
        '{"a": ' * 50_000 + "1" + "}" * 50_000,
        b"\xff\xfe\x00{",
        '{"request_id": 1, "request_id": 2}',
        "NaN",
    ],
    ids=["deep-list", "deep-object", "not-utf8", "duplicate-key", "nan"],
)
def test_hostile_json_text(raw: str | bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_request(raw, now=NOW)


# -- every XML parser -------------------------------------------------------------------------


class _Documents(list[bytes]):
    """Sample documents with a short repr: hypothesis warns when a strategy's repr is huge."""

    def __repr__(self) -> str:
        return f"<{len(self)} sample documents>"


DOCUMENTS = _Documents(build(ALL[name]) for name in sorted(ALL))
RECEIPT_DOCUMENTS = _Documents(build(RECEIPTS[name]) for name in sorted(RECEIPTS))
MESSAGE_DOCUMENTS = _Documents(build(MESSAGES[name]) for name in sorted(MESSAGES))
TOKENS = [b"<", b">", b"&", b"&amp;", b"<!DOCTYPE a>", b"]]>", b"\x00", b"\xff", b'"', b"/"]


def _all_parsers(data: bytes) -> None:
    """Each parser: its result type, or a MapperError; `explain` always a list of lines."""
    for parse, kind in (
        (xmlsafe.parse, etree._Element),
        (apprec.parse, AppRec),
        (message.parse, DialogMessage),
        (incoming.parse_any, DialogMessage | AppRec),
    ):
        try:
            result = parse(data)
        except MapperError:
            continue
        assert isinstance(result, kind)
    lines = explain.explain(data)
    assert isinstance(lines, list) and all(isinstance(line, str) for line in lines)


@st.composite
def byte_mutations(draw: st.DrawFn, documents: list[bytes]) -> bytes:
    """A valid document with a few bytes deleted, replaced or inserted."""
    data = bytearray(draw(st.sampled_from(documents)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["delete", "replace", "insert"]))
        if action == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif action == "replace":
            data[at : at + 1] = draw(st.sampled_from(TOKENS))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@st.composite
def tree_mutations(draw: st.DrawFn, documents: list[bytes]) -> bytes:
    """A valid document with an element dropped, duplicated, moved, or a value changed."""
    root = etree.fromstring(draw(st.sampled_from(documents)))
    elements = list(root.iter())[1:]
    target = draw(st.sampled_from(elements))
    parent = target.getparent()
    assert parent is not None
    action = draw(st.sampled_from(["drop", "duplicate", "text", "attr", "move"]))
    value = draw(st.text(max_size=30).filter(lambda s: all(c >= " " for c in s)))
    if action == "drop":
        parent.remove(target)
    elif action == "duplicate":
        parent.insert(parent.index(target), copy.deepcopy(target))
    elif action == "text":
        target.text = value
    elif action == "attr":
        target.set(draw(st.sampled_from(["V", "S", "DN", "U"])), value)
    else:
        draw(st.sampled_from(elements[: elements.index(target)] or [root])).append(target)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@SETTINGS
@given(st.binary(max_size=2048))
def test_parsers_on_random_bytes(data: bytes) -> None:
    _all_parsers(data)


@SETTINGS
@given(st.one_of(byte_mutations(RECEIPT_DOCUMENTS), tree_mutations(RECEIPT_DOCUMENTS)))
def test_parsers_on_mutated_receipts(data: bytes) -> None:
    _all_parsers(data)


@SETTINGS
@given(st.one_of(byte_mutations(MESSAGE_DOCUMENTS), tree_mutations(MESSAGE_DOCUMENTS)))
def test_parsers_on_mutated_messages(data: bytes) -> None:
    _all_parsers(data)


@settings(max_examples=50, deadline=None, database=None)
@given(st.sampled_from(DOCUMENTS), st.integers(1, 2000))
def test_size_cap_refuses_before_parsing(data: bytes, cap: int) -> None:
    if len(data) <= cap:
        return
    with pytest.raises(MapperError):
        incoming.parse_any(data, max_bytes=cap)


# -- retry delays -------------------------------------------------------------------------------


@SETTINGS
@given(st.integers(0, 60), st.floats(0.001, 10_000))
def test_backoff_stays_within_its_exponential_cap(retries: int, cap: float) -> None:
    assert 0 <= backoff(retries, cap) <= min(cap, 2.0 ** (retries + 1))


def test_backoff_grows_exponentially_with_full_jitter() -> None:
    means = [statistics.fmean(backoff(n, 10_000) for _ in range(4000)) for n in range(6)]
    for n, mean in enumerate(means):  # full jitter: uniform on [0, 2^(n+1)], mean 2^n
        assert 0.85 * 2**n < mean < 1.15 * 2**n
    spread = {round(backoff(3, 10_000), 6) for _ in range(50)}
    assert len(spread) > 40  # jittered, not a fixed schedule
