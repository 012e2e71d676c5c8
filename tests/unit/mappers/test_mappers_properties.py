"""Property tests: whatever bytes arrive, parse_any answers with a mapping or a MapperError."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from mappers import incoming, message
from mappers.errors import InvalidInput, MapperError, SchemaInvalid
from mappers.model import AppRec, DialogMessage
from tests.unit.mappers.mappers_cases import ALL, MESSAGES, build

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no .hypothesis folder in the tree
    suppress_health_check=[HealthCheck.too_slow],
)
DOCUMENTS = [build(ALL[name]) for name in sorted(ALL)]
TOKENS = [b"<", b">", b"&", b"&amp;", b"<!DOCTYPE a>", b"]]>", b"\x00", b"\xff", b"\xc3", b"/"]


def parse_any_or_mapper_error(data: bytes) -> None:
    """The contract: a mapping, or an error of the mapper's own tree (nothing else escapes)."""
    try:
        result = incoming.parse_any(data)
    except MapperError:
        return
    assert isinstance(result, DialogMessage | AppRec)


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    parse_any_or_mapper_error(data)


@SETTINGS
@given(st.text(alphabet="<>/=\"' &;!?-[]abcMsgHead:xmlns", max_size=300))
def test_random_xml_like_text(text: str) -> None:
    parse_any_or_mapper_error(text.encode())


@st.composite
def byte_mutations(draw: st.DrawFn) -> bytes:
    """A valid document with a few bytes deleted, replaced or inserted."""
    data = bytearray(draw(st.sampled_from(DOCUMENTS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["delete", "replace", "insert"]))
        span = draw(st.integers(1, 16))
        if action == "delete":
            del data[at : at + span]
        elif action == "replace":
            data[at : at + 1] = draw(st.sampled_from(TOKENS))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=span))
        if not data:
            break
    return bytes(data)


@SETTINGS
@given(byte_mutations())
def test_byte_mutations_of_valid_documents(data: bytes) -> None:
    parse_any_or_mapper_error(data)


@st.composite
def tree_mutations(draw: st.DrawFn) -> bytes:
    """A valid document with an element dropped, duplicated, or a text / code value changed."""
    root = etree.fromstring(draw(st.sampled_from(DOCUMENTS)))
    elements = list(root.iter())[1:]
    target = draw(st.sampled_from(elements))
    parent = target.getparent()
    assert parent is not None
    action = draw(st.sampled_from(["drop", "duplicate", "text", "code"]))
    value = draw(st.text(max_size=30).filter(lambda s: all(c >= " " for c in s)))
    if action == "drop":
        parent.remove(target)
    elif action == "duplicate":
        parent.insert(parent.index(target), etree.fromstring(etree.tostring(target)))
    elif action == "text":
        target.text = value
    else:
        target.set("V", value)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@SETTINGS
@given(tree_mutations())
def test_tree_mutations_of_valid_documents(data: bytes) -> None:
    parse_any_or_mapper_error(data)


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
