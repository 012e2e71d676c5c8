"""Every error path: a malformed fixture (or a generated one, for the big ones) raises its specific
error class, carrying the AppRec 8221 code the receiver answers with."""

from __future__ import annotations

import pytest

from mappers import apprec, incoming, message, xmlsafe
from mappers.codes import AppRecError
from mappers.errors import (
    BadEncoding,
    DataError,
    EmptyDocument,
    HostileXml,
    InvalidData,
    MapperError,
    MissingData,
    NotWellFormed,
    SchemaInvalid,
    TooDeep,
    TooLarge,
    UnsupportedMessage,
)
from tests.unit.mappers.mappers_cases import FIXTURES, SENT, golden_path

MALFORMED = FIXTURES / "malformed"
T01, T02, T10 = AppRecError.NOT_XML, AppRecError.NOT_VALID, AppRecError.UNSUPPORTED

CASES = [
    ("not_well_formed.xml", NotWellFormed, T01),
    ("schema_invalid.xml", SchemaInvalid, T02),
    ("unknown_root.xml", UnsupportedMessage, T10),
    ("no_namespace_root.xml", UnsupportedMessage, T10),
    ("billion_laughs.xml", HostileXml, T01),
    ("external_entity.xml", HostileXml, T01),
    ("external_dtd.xml", HostileXml, T01),
    ("parameter_entity.xml", HostileXml, T01),
    ("latin1_undeclared.xml", BadEncoding, T01),
    ("latin1_no_declaration.xml", BadEncoding, T01),
    ("utf8_declared_latin1.xml", BadEncoding, T01),
    ("utf16_bom_declared_latin1.xml", BadEncoding, T01),
    ("windows1252_undefined_byte.xml", BadEncoding, T01),
    ("unknown_encoding.xml", BadEncoding, T01),
    ("empty.xml", EmptyDocument, T01),
    ("whitespace_only.xml", EmptyDocument, T01),
    ("unsupported_process.xml", UnsupportedMessage, T10),
    ("unknown_function.xml", UnsupportedMessage, T10),
    ("wrong_process_for_function.xml", UnsupportedMessage, T10),
    ("missing_fnr.xml", MissingData, AppRecError.PATIENT_FNR_MISSING),
    ("wrong_fnr.xml", InvalidData, AppRecError.PATIENT_FNR_WRONG),
    ("reply_without_patient.xml", MissingData, AppRecError.PATIENT_FNR_MISSING),
    ("avtale_without_event.xml", MissingData, AppRecError.FORMAT_OTHER),
    ("naive_xcal_time.xml", SchemaInvalid, T02),
    ("impossible_gendate.xml", SchemaInvalid, T02),
]


@pytest.mark.parametrize(("fixture", "error", "code"), CASES, ids=[c[0] for c in CASES])
def test_malformed_fixture_raises_its_error_and_code(
    fixture: str, error: type[MapperError], code: AppRecError
) -> None:
    with pytest.raises(error) as caught:
        incoming.parse_any((MALFORMED / fixture).read_bytes())
    assert type(caught.value) is error
    assert caught.value.code is code


def test_every_malformed_fixture_is_covered() -> None:
    assert {p.name for p in MALFORMED.glob("*.xml")} == {c[0] for c in CASES}


def test_hostile_inputs_never_reach_the_file_system() -> None:
    with pytest.raises(HostileXml) as caught:
        incoming.parse_any((MALFORMED / "external_entity.xml").read_bytes())
    assert "root:" not in str(caught.value)  # nothing of /etc/passwd leaks into the message


def test_encoding_errors_name_the_offending_byte() -> None:
    with pytest.raises(BadEncoding, match=r"byte 0x(c3|f8|e6|c5|d8) at offset \d+"):
        incoming.parse_any((MALFORMED / "latin1_undeclared.xml").read_bytes())
    with pytest.raises(BadEncoding, match=r"not valid windows-1252: byte 0x81 at offset \d+"):
        incoming.parse_any((MALFORMED / "windows1252_undefined_byte.xml").read_bytes())
    with pytest.raises(
        BadEncoding, match="declared encoding 'ISO-8859-1', but the bytes are UTF-8"
    ):
        incoming.parse_any((MALFORMED / "utf8_declared_latin1.xml").read_bytes())


def test_oversized_document_is_refused_before_parsing() -> None:
    valid = golden_path("timereservasjon/reserver_avtale_ordinaer").read_bytes()
    with pytest.raises(TooLarge, match="over the cap of 1000 bytes"):
        incoming.parse_any(valid, max_bytes=1000)
    huge = valid + b" " * (xmlsafe.MAX_BYTES - len(valid) + 1)  # whitespace after the root
    with pytest.raises(TooLarge) as caught:
        incoming.parse_any(huge)
    assert caught.value.code is T01


def test_ten_thousand_deep_nesting_is_refused_without_recursion_errors() -> None:
    deep = b"<a>" * 10_000 + b"</a>" * 10_000
    with pytest.raises(TooDeep) as caught:
        incoming.parse_any(deep)
    assert caught.value.code is T01


@pytest.mark.parametrize(("depth", "refused"), [(100, False), (101, True)])
def test_depth_cap_is_exact(depth: int, refused: bool) -> None:
    nested = b"<a>" * depth + b"</a>" * depth
    if refused:
        with pytest.raises(TooDeep):
            xmlsafe.parse(nested)
    else:
        assert xmlsafe.parse(nested).tag == "a"


def test_depth_cap_is_a_parameter() -> None:
    with pytest.raises(TooDeep, match="deeper than 3"):
        xmlsafe.parse(b"<a><b><c><d/></c></b></a>", max_depth=3)


def test_schema_errors_are_readable_lines_with_paths() -> None:
    with pytest.raises(SchemaInvalid) as caught:
        incoming.parse_any((MALFORMED / "schema_invalid.xml").read_bytes())
    assert caught.value.errors == [
        "line 7, /MsgHead/MsgInfo/Ack: Element 'mh:Ack': This element is not expected. "
        "Expected is ( mh:MsgId )."
    ]


def test_unmappable_message_carries_what_an_avvist_receipt_needs() -> None:
    with pytest.raises(InvalidData) as caught:
        incoming.parse_any((MALFORMED / "wrong_fnr.xml").read_bytes())
    exc = caught.value
    assert exc.original is not None
    assert exc.original.msg_id == "00000000-0000-4000-8000-000000000001"
    assert exc.sender is not None
    assert exc.sender.her_id == "115851"
    assert "12858010054" not in str(exc)  # an FNR never goes into error texts


def test_not_well_formed_input_carries_no_origin() -> None:
    with pytest.raises(NotWellFormed) as caught:
        incoming.parse_any((MALFORMED / "not_well_formed.xml").read_bytes())
    assert caught.value.original is None
    assert apprec.rejection(caught.value, msg_id="x", gen_date=SENT) is None


def test_message_parse_refuses_an_apprec_root() -> None:
    data = golden_path("apprec/apprec_1_1_ok").read_bytes()
    with pytest.raises(UnsupportedMessage, match="not a MsgHead"):
        message.parse(data)


def test_apprec_parse_refuses_a_msghead_root() -> None:
    data = golden_path("timereservasjon/reserver_avtale_ordinaer").read_bytes()
    with pytest.raises(UnsupportedMessage, match="not an AppRec"):
        apprec.parse(data)


def test_error_tree() -> None:
    for hostile in (EmptyDocument, BadEncoding, HostileXml, TooLarge, TooDeep):
        assert issubclass(hostile, NotWellFormed)
    for error in (NotWellFormed, SchemaInvalid, UnsupportedMessage, DataError):
        assert issubclass(error, MapperError)
    assert issubclass(MissingData, DataError)
    assert issubclass(InvalidData, DataError)
    assert MissingData("x", code=AppRecError.PATIENT_UNKNOWN).code is AppRecError.PATIENT_UNKNOWN
