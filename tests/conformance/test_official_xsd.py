"""Conformance: every message timebok produces validates against the OFFICIAL KITH schemas, and
the published example documents parse as they should.

The official schemas live outside the project (../shared/standards/kith, read-only reference).
They have no xCal or Pasientrelasjon schema, so the wrapper imports the project's profiles for
those two namespaces. Without the folder the tests skip, saying why.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from mappers import dialog, envelope, incoming, xmlsafe
from mappers.codes import (
    NS_DIALOG,
    NS_MSGHEAD,
    AppRecError,
    AppRecStatus,
)
from mappers.errors import UnsupportedMessage
from mappers.model import AppRec, OriginalMsgRef, Party, Person, ReceiptError
from tests import official as official_xsd
from tests.official import EXAMPLES
from tests.unit.mappers.mappers_cases import ALL, build

OSLO = ZoneInfo("Europe/Oslo")

pytestmark = pytest.mark.skipif(not official_xsd.AVAILABLE, reason=official_xsd.SKIP_REASON)


@pytest.fixture(scope="module")
def official() -> etree.XMLSchema:
    """The official MsgHead, Dialogmelding and AppRec 1.0/1.1 plus our xCal / Pasientrelasjon."""
    return official_xsd.schema()


@pytest.mark.parametrize("name", sorted(ALL))
def test_produced_message_validates_against_official_schemas(
    official: etree.XMLSchema, name: str
) -> None:
    document = etree.fromstring(build(ALL[name]))
    assert official.validate(document), [str(e) for e in official.error_log]


@pytest.mark.parametrize(
    "example",
    ["msghead-dialogmelding-ekontakt.xml", "apprec-1.0-ok.xml", "apprec-1.1-avvist.xml"],
)
def test_published_examples_are_valid_for_both_schema_sets(
    official: etree.XMLSchema, example: str
) -> None:
    root = xmlsafe.parse((EXAMPLES / example).read_bytes())
    assert official.validate(root), [str(e) for e in official.error_log]
    xmlsafe.validate(root)  # the project profile accepts it too


def test_apprec_1_0_ok_example_parses() -> None:
    rec = incoming.parse_any((EXAMPLES / "apprec-1.0-ok.xml").read_bytes())
    assert rec == AppRec(
        msg_id="1d6b0e00-33a1-11de-9255-0002a5d5c51b",
        gen_date=datetime(2020, 6, 19, 18, 5, 23, tzinfo=OSLO),
        sender=Party("56704", "Kattskinnet legesenter", unit=Party("258521", "Rita Lin")),
        receiver=Party("123459", "Testsykehuset HF", unit=Party("91126", "Medisinsk mikrobiologi")),
        status=AppRecStatus.OK,
        original=OriginalMsgRef(
            "EPIKRISE",
            datetime(2020, 6, 19, 17, 2, 15, tzinfo=OSLO),
            "a6967e6a-8c0a-4be4-a647-c921d3086423",
        ),
        errors=(),
        version="1.0",
    )


def test_apprec_1_1_avvist_example_parses() -> None:
    rec = incoming.parse_any((EXAMPLES / "apprec-1.1-avvist.xml").read_bytes())
    assert isinstance(rec, AppRec)
    assert rec.version == "1.1"
    assert rec.status is AppRecStatus.REJECTED
    assert rec.errors == (ReceiptError(AppRecError.RECEIVER_UNKNOWN, "Mottaker finnes ikke"),)
    assert rec.msg_id == "8d018d60-336b-11de-8bd7-0002a5d5c51b"
    assert rec.gen_date == datetime(2012, 2, 17, 9, 30, 47, tzinfo=OSLO)
    assert rec.receiver == Party("69", "SYKEHUSET I VESTFOLD HF", unit=Party("89583", "Kirurgi"))
    assert rec.original == OriginalMsgRef(
        "EPIKRISE",
        datetime(2012, 2, 17, 8, 32, 15, tzinfo=OSLO),
        "e0e21a90-5ec8-11e1-b86c-0800200c9a66",
    )


def test_ekontakt_example_is_read_then_refused_as_unsupported_process() -> None:
    data = (EXAMPLES / "msghead-dialogmelding-ekontakt.xml").read_bytes()
    with pytest.raises(UnsupportedMessage) as caught:
        incoming.parse_any(data)
    exc = caught.value
    assert exc.code is AppRecError.UNSUPPORTED
    # what an Avvist AppRec needs was still read from the MsgHead
    assert exc.original == OriginalMsgRef(
        "DIALOG_INNBYGGER_EKONTAKT",
        datetime(2022, 10, 22, 14, 15, tzinfo=UTC),
        "0d77d041-f010-4ec8-9105-f3dda92fc320",
    )
    assert exc.sender == Party(
        "115851", "Direktoratet for e-helse", unit=Party("8141333", "Kenneths kommunikasjonspart 4")
    )
    assert exc.receiver == Party(
        "115851", "Direktoratet for e-helse", unit=Party("8093244", "Helsenorge.no")
    )


def test_ekontakt_example_parts_parse_with_the_family_mappers() -> None:
    root = xmlsafe.parse((EXAMPLES / "msghead-dialogmelding-ekontakt.xml").read_bytes())
    info = root[0]
    patient = envelope.parse_patient(info.find(f"{{{NS_MSGHEAD}}}Patient"))
    assert patient == Person("13116900216", "Line", "Danser", phone="99775533")
    content = root.find(f".//{{{NS_DIALOG}}}Dialogmelding")
    assert content is not None
    with pytest.raises(UnsupportedMessage, match="'BA'"):
        dialog.parse(content)  # "Bestille attest" is not a booking function
