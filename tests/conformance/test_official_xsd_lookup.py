"""Conformance: every lookup and answer timebok produces validates against the OFFICIAL KITH
schemas (../shared/standards/kith; xCal through the project's profile, which has no official
counterpart). Without the folder the tests skip, saying why."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from lxml import etree

from mappers.errors import InvalidInput
from mappers.model import Slot, SlotQuery
from tests import official as official_xsd
from tests.unit.mappers.lookup_cases import ANSWERS, LOOKUP_CASES, build_case
from tests.unit.mappers.test_mappers_lookup_properties import queries, slot_lists

pytestmark = pytest.mark.skipif(not official_xsd.AVAILABLE, reason=official_xsd.SKIP_REASON)


@pytest.fixture(scope="module")
def official() -> etree.XMLSchema:
    """The official MsgHead, Dialogmelding and AppRec plus our xCal / Pasientrelasjon."""
    return official_xsd.schema()


@pytest.mark.parametrize("name", sorted(LOOKUP_CASES))
def test_produced_lookup_validates_against_official_schemas(
    official: etree.XMLSchema, name: str
) -> None:
    document = etree.fromstring(build_case(LOOKUP_CASES[name]))
    assert official.validate(document), [str(e) for e in official.error_log]


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(query=queries(), slots=slot_lists())
def test_any_produced_answer_validates_against_official_schemas(
    official: etree.XMLSchema, query: SlotQuery, slots: tuple[Slot, ...]
) -> None:
    answer = replace(ANSWERS["timereservasjon/svar_ledige_timer"], query=query, slots=slots)
    try:
        data = build_case(answer)
    except InvalidInput:
        return  # a text XML cannot carry
    assert official.validate(etree.fromstring(data)), [str(e) for e in official.error_log]
