"""Character encodings: a correctly declared document is read in its own encoding (ISO-8859-1,
windows-1252, UTF-16 with its byte-order mark, UTF-8), with æøå intact; bytes that contradict
their declaration, or non-UTF-8 bytes without one, are refused with T01."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers import incoming, message, xmlsafe
from mappers.codes import AppRecError
from mappers.errors import BadEncoding, EmptyDocument, HostileXml, MapperError
from mappers.model import DialogMessage, Request
from tests.unit.mappers.mappers_cases import FIXTURES, OUTGOING, REPLIES

ENCODINGS = FIXTURES / "encodings"
UTF8_DECL = '<?xml version="1.0" encoding="UTF-8"?>'
NORWEGIAN = "Blåbær, rømme og ærfugl: ÆØÅ æøå"
_DECL = re.compile(r'\A<\?xml version="1\.0" encoding="UTF-8"\?>')


def _in(text: str, name: str, codec: str, *, bom: bytes = b"") -> bytes:
    """A UTF-8 document text re-declared as `name` and encoded with Python's `codec`."""
    declared, found = _DECL.subn(f'<?xml version="1.0" encoding="{name}"?>', text, count=1)
    assert found == 1
    return bom + declared.encode(codec)


def _sample() -> tuple[DialogMessage, str]:
    """A reply whose free text, names and vevent carry Norwegian letters, and its UTF-8 text."""
    base = REPLIES["timereservasjon/svar_avtale_reservasjon_05"]
    assert base.reply is not None and base.event is not None
    msg = replace(
        base,
        reply=replace(base.reply, text=f"Velkommen. {NORWEGIAN}"),
        event=replace(base.event, location="Kjøpmannsgata 5, Tromsø", summary="Årskontroll"),
    )
    return msg, message.build(msg).decode("utf-8")


# name in the declaration, Python codec, byte-order mark written before the text
ACCEPTED = [
    ("ISO-8859-1", "latin-1", b""),
    ("iso-8859-1", "latin-1", b""),
    ("windows-1252", "cp1252", b""),
    ("ISO-8859-15", "iso8859-15", b""),
    ("UTF-16", "utf-16-le", b"\xff\xfe"),
    ("UTF-16", "utf-16-be", b"\xfe\xff"),
    ("UTF-8", "utf-8", b"\xef\xbb\xbf"),
    ("UTF-8", "utf-8", b""),
]


@pytest.mark.parametrize(
    ("name", "codec", "bom"), ACCEPTED, ids=[f"{a[0]}-{a[1]}-{a[2].hex()}" for a in ACCEPTED]
)
def test_correctly_declared_document_is_read_with_its_text_intact(
    name: str, codec: str, bom: bytes
) -> None:
    msg, text = _sample()
    data = _in(text, name, codec, bom=bom)
    parsed = incoming.parse_any(data)
    assert parsed == msg
    assert isinstance(parsed, DialogMessage) and parsed.reply is not None
    assert NORWEGIAN in (parsed.reply.text or "")


def test_windows_1252_is_not_read_as_iso_8859_1() -> None:
    msg, text = _sample()
    assert msg.reply is not None
    dashed = text.replace(NORWEGIAN, f"{NORWEGIAN} – 50 €")
    parsed = incoming.parse_any(_in(dashed, "windows-1252", "cp1252"))
    assert isinstance(parsed, DialogMessage) and parsed.reply is not None
    # 0x96 and 0x80 are a dash and the euro sign in windows-1252, control codes in ISO-8859-1
    assert parsed.reply.text == f"{msg.reply.text} – 50 €"


@pytest.mark.parametrize(
    ("fixture", "subject"),
    [
        ("latin1_declared.xml", "Sår hals og øreverk, Æsop"),
        ("windows1252_declared.xml", "Vondt i kneet – 50 € for sent?"),
        ("utf16_bom.xml", "Blåbær og kløe i øyet"),
    ],
)
def test_encoding_fixtures_are_accepted(fixture: str, subject: str) -> None:
    parsed = incoming.parse_any((ENCODINGS / fixture).read_bytes())
    assert isinstance(parsed, DialogMessage) and parsed.request is not None
    assert parsed.request.subject == subject
    assert parsed.envelope.patient is not None
    assert parsed.envelope.patient.given_name == "Line"


def test_latin1_fixture_reads_like_its_utf8_twin() -> None:
    data = (ENCODINGS / "latin1_declared.xml").read_bytes()
    twin = data.decode("latin-1").replace('encoding="ISO-8859-1"', 'encoding="UTF-8"', 1)
    assert incoming.parse_any(data) == incoming.parse_any(twin.encode("utf-8"))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            b'<?xml version="1.0" encoding="UTF-8"?><a>bl\xe5b\xe6r</a>',
            "not valid UTF-8: byte 0xe5",
        ),
        (b"<a>bl\xe5b\xe6r</a>", "not valid UTF-8: byte 0xe5"),
        ('<?xml version="1.0" encoding="ISO-8859-1"?><a>blåbær</a>'.encode(), "bytes are UTF-8"),
        (b'<?xml version="1.0" encoding="windows-1252"?><a>\x81</a>', "not valid windows-1252"),
        (b'<?xml version="1.0" encoding="US-ASCII"?><a>\xe5</a>', "not valid US-ASCII"),
        (b'<?xml version="1.0" encoding="x-klingon"?><a/>', "'x-klingon' is not one timebok"),
        (b'<?xml version="1.0" encoding="unicode_escape"?><a/>', "is not one timebok"),
        (b'<?xml version="1.0" encoding="rot13"?><a/>', "is not one timebok"),
        (b'<?xml version="1.0" encoding="ISO 8859"?><a/>', "is not an encoding name"),
        (b'<?xml version="1.0" encoding=""?><a/>', "is not an encoding name"),
        ('<?xml version="1.0" encoding="ISO-8859-1"?><a/>'.encode("utf-16"), "contradicts"),
        (b'\xef\xbb\xbf<?xml version="1.0" encoding="ISO-8859-1"?><a/>', "contradicts"),
        ('<?xml version="1.0" encoding="UTF-16"?><a/>'.encode("utf-16")[:-1], "not valid UTF-16"),
    ],
    ids=[
        "latin1-bytes-declared-utf8",
        "latin1-bytes-no-declaration",
        "utf8-bytes-declared-latin1",
        "undefined-windows-1252-byte",
        "non-ascii-declared-ascii",
        "unknown-encoding",
        "python-only-codec",
        "not-a-text-encoding",
        "not-an-encoding-name",
        "empty-encoding-name",
        "utf16-bom-declared-latin1",
        "utf8-bom-declared-latin1",
        "truncated-utf16",
    ],
)
def test_contradicting_or_unknown_encodings_are_refused_with_t01(data: bytes, match: str) -> None:
    with pytest.raises(BadEncoding, match=match) as caught:
        xmlsafe.parse(data)
    assert caught.value.code is AppRecError.NOT_XML


@pytest.mark.parametrize(("name", "codec"), [("ISO-8859-1", "latin-1"), ("UTF-16", "utf-16")])
def test_hostile_documents_are_refused_in_any_encoding(name: str, codec: str) -> None:
    for hostile in (
        '<!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>',
        '<!DOCTYPE a SYSTEM "file:///etc/passwd"><a>ø</a>',
        '<!-- å --><!DOCTYPE a [<!ENTITY % p "x">]><a/>',
    ):
        data = f'<?xml version="1.0" encoding="{name}"?>{hostile}'.encode(codec)
        with pytest.raises(HostileXml):
            xmlsafe.parse(data)


def test_whitespace_only_utf16_is_empty() -> None:
    with pytest.raises(EmptyDocument):
        xmlsafe.parse("  \n ".encode("utf-16"))


def test_size_cap_counts_the_bytes_received() -> None:
    _msg, text = _sample()
    data = _in(text, "UTF-16", "utf-16")
    with pytest.raises(MapperError, match="over the cap"):
        xmlsafe.parse(data, max_bytes=len(data) - 1)
    assert xmlsafe.parse(data, max_bytes=len(data)) is not None


def test_utf8_input_is_passed_on_unchanged() -> None:
    _msg, text = _sample()
    data = text.encode("utf-8")
    assert xmlsafe.as_utf8(data) is data


def test_what_timebok_builds_from_a_latin1_document_is_utf8() -> None:
    _msg, text = _sample()
    parsed = incoming.parse_any(_in(text, "ISO-8859-1", "latin-1"))
    assert isinstance(parsed, DialogMessage)
    out = message.build(parsed)
    assert out.startswith(UTF8_DECL.encode())
    assert NORWEGIAN.encode("utf-8") in out


def test_schema_errors_keep_their_line_numbers() -> None:
    wish = OUTGOING["timeonske/onske_reserver"]
    text = message.build(replace(wish, request=Request(wish.request.code))).decode()  # type: ignore[union-attr]
    broken = text.replace("<MsgId>", "<MsgID>", 1).replace("</MsgId>", "</MsgID>", 1)
    line = next(n for n, row in enumerate(broken.splitlines(), 1) if "<MsgID>" in row)
    with pytest.raises(MapperError, match=f"line {line}, "):
        incoming.parse_any(_in(broken, "ISO-8859-1", "latin-1"))


def test_document_text_reads_a_stored_document_in_its_own_encoding() -> None:
    _msg, text = _sample()
    assert NORWEGIAN in xmlsafe.document_text(_in(text, "ISO-8859-1", "latin-1"))
    assert NORWEGIAN in xmlsafe.document_text(_in(text, "UTF-16", "utf-16"))
    assert xmlsafe.document_text(b"\xff not xml \xe5") == "\ufffd not xml \ufffd"


@given(st.text(alphabet="abc æøåÆØÅ-_.,:;!?0123456789", min_size=1, max_size=60))
def test_any_norwegian_text_survives_every_accepted_encoding(words: str) -> None:
    words = words.strip() or "ø"
    for name, codec, bom in ACCEPTED:
        data = _in(f"{UTF8_DECL}<a>{words}</a>", name, codec, bom=bom)
        assert xmlsafe.parse(data).text == words
