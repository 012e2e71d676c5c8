"""Property tests: whatever bytes arrive, parse_any answers with a mapping or a MapperError."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappers import incoming, message
from mappers.errors import InvalidInput, MapperError, SchemaInvalid
from mappers.model import AppRec, DialogMessage
from tests.unit.mappers.mappers_cases import MESSAGES

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis folder in the tree
    suppress_health_check=[HealthCheck.too_slow],
)


def parse_any_or_mapper_error(data: bytes) -> None:
    """The contract: a mapping, or an error of the mapper's own tree (nothing else escapes)."""
    try:
        result = incoming.parse_any(data)
    except MapperError:
        return
    assert isinstance(result, DialogMessage | AppRec)


@SETTINGS
@given(st.text(alphabet="<>/=\"' &;!?-[]abcMsgHead:xmlns", max_size=300))
def test_random_xml_like_text(text: str) -> None:
    parse_any_or_mapper_error(text.encode())


@SETTINGS
@given(
    name=st.sampled_from(sorted(MESSAGES)),
    subject=st.none() | st.text(max_size=60),
    text=st.none() | st.text(max_size=200),
)
def test_build_then_parse_round_trips_any_text(
    name: str, subject: str | None, text: str | None
) -> None:
    msg = MESSAGES[name]
    if msg.request is not None:
        msg = replace(msg, request=replace(msg.request, subject=subject, text=text))
    else:
        assert msg.reply is not None
        msg = replace(msg, reply=replace(msg.reply, text=text))
    try:
        data = message.build(msg)
    except (InvalidInput, SchemaInvalid):
        return  # text XML cannot carry, or a subject over 50 characters
    assert incoming.parse_any(data) == msg
