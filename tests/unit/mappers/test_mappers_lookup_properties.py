"""Property tests of the lookup mappers: any query and any list of slots round-trips, and any
bytes give a mapping or a MapperError."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappers import lookup
from mappers.codes import AppointmentType
from mappers.errors import InvalidInput, MapperError
from mappers.model import Lookup, LookupAnswer, Practitioner, Slot, SlotQuery
from tests.unit.mappers.lookup_cases import ANSWERS, LOOKUPS, SUBSTITUTE
from tests.unit.mappers.mappers_cases import GP

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis folder in the tree
    suppress_health_check=[HealthCheck.too_slow],
)
# Each unit has one practitioner (or none): the answer links them by HER-id.
UNITS: dict[str, Practitioner | None] = {"258521": GP, "258522": SUBSTITUTE, "8140002": None}
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-3))])
TEXT = st.none() | st.text(min_size=1, max_size=40)
KINDS = st.none() | st.sampled_from(list(AppointmentType))
SERVICES = st.none() | st.sampled_from(sorted(lookup.SERVICE_NAMES))


@st.composite
def queries(draw: st.DrawFn) -> SlotQuery:
    """A period (open at either end or not) and optional filters."""
    start = draw(st.none() | st.dates(date(2020, 1, 1), date(2040, 12, 31)))
    length = draw(st.none() | st.integers(0, 90))
    end = None if length is None else (start or date(2030, 1, 1)) + timedelta(days=length)
    return SlotQuery(
        start=start,
        end=end,
        appointment_type=draw(KINDS),
        service=draw(SERVICES),
        practitioner=draw(st.none() | st.sampled_from([GP, SUBSTITUTE])),
    )


@st.composite
def slot_lists(draw: st.DrawFn) -> tuple[Slot, ...]:
    """Up to eight slots with distinct ids."""
    ids = draw(st.lists(st.uuids().map(str), max_size=8, unique=True))
    slots = []
    for slot_id in ids:
        start = draw(st.datetimes(datetime(2026, 1, 1), datetime(2035, 12, 31), timezones=ZONES))
        unit = draw(st.sampled_from(sorted(UNITS)))
        minutes = draw(st.integers(1, 240))
        slots.append(
            Slot(
                id=slot_id,
                start=start,
                end=start + timedelta(minutes=minutes),
                appointment_type=draw(KINDS),
                service=draw(SERVICES),
                practitioner=UNITS[unit],
                unit_her_id=unit,
                location=draw(TEXT),
                summary=draw(TEXT),
                url=draw(st.none() | st.just("https://video.example/r/1")),
            )
        )
    return tuple(slots)


@SETTINGS
@given(query=queries())
def test_any_lookup_round_trips(query: SlotQuery) -> None:
    for asked in LOOKUPS.values():
        case: Lookup = replace(asked, query=query)
        assert lookup.parse_lookup(lookup.build_lookup(case)) == case


@SETTINGS
@given(query=queries(), slots=slot_lists(), text=st.none() | st.text(max_size=80))
def test_any_answer_round_trips(
    query: SlotQuery, slots: tuple[Slot, ...], text: str | None
) -> None:
    answer: LookupAnswer = replace(
        ANSWERS["timereservasjon/svar_ledige_timer"], query=query, slots=slots, text=text
    )
    try:
        data = lookup.build_answer(answer)
    except InvalidInput:
        return  # a text XML cannot carry (a control character)
    assert lookup.parse_answer(data) == answer


def _mapping_or_mapper_error(data: bytes) -> None:
    """The contract of both parsers: a mapping, or an error of the mapper's own tree."""
    for parse in (lookup.parse_lookup, lookup.parse_answer):
        try:
            result = parse(data)
        except MapperError:
            continue
        assert isinstance(result, Lookup | LookupAnswer)


@SETTINGS
@given(st.text(alphabet="<>/=\"' &;!?-[]abcMsgHead:xmlnsFraDato", max_size=300))
def test_random_xml_like_text(text: str) -> None:
    _mapping_or_mapper_error(text.encode())


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _mapping_or_mapper_error(data)


GOLDEN = [lookup.build_lookup(LOOKUPS["timereservasjon/hent_ledige_timer"])]
GOLDEN.append(lookup.build_answer(ANSWERS["timereservasjon/svar_ledige_timer"]))


@SETTINGS
@given(
    which=st.sampled_from([0, 1]),
    at=st.integers(0, 10_000),
    cut=st.integers(1, 40),
    insert=st.binary(max_size=8),
)
def test_damaged_documents(which: int, at: int, cut: int, insert: bytes) -> None:
    data = GOLDEN[which]
    at %= len(data)
    _mapping_or_mapper_error(data[:at] + insert + data[at + cut :])
