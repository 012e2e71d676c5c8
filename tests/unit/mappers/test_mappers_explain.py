"""explain(): what `timebok validate FILE.xml` prints."""

from __future__ import annotations

import pytest

from mappers.explain import explain
from tests.unit.mappers.mappers_cases import ALL, FIXTURES, golden_path

MALFORMED = FIXTURES / "malformed"


@pytest.mark.parametrize("name", sorted(ALL))
def test_valid_documents_have_no_problems(name: str) -> None:
    assert explain(golden_path(name).read_bytes()) == []


def test_schema_problems_name_line_and_path() -> None:
    assert explain((MALFORMED / "schema_invalid.xml").read_bytes()) == [
        "line 7, /MsgHead/MsgInfo/Ack: unexpected element mh:Ack; expected mh:MsgId"
    ]


def test_all_schema_problems_are_listed_not_just_the_first() -> None:
    data = golden_path("timereservasjon/reserver_avtale_video").read_bytes()
    broken = data.replace(b"<MsgId>", b"<MsgID>").replace(b"</MsgId>", b"</MsgID>")
    broken = broken.replace(b"<GenDate>2026-11-20T08:30:00Z", b"<GenDate>i morgen")
    problems = explain(broken)
    assert len(problems) == 2
    assert problems[0].startswith("line 6, /MsgHead/MsgInfo/GenDate: ")
    assert "i morgen" in problems[0]
    assert (
        problems[1]
        == "line 7, /MsgHead/MsgInfo/MsgID: unexpected element mh:MsgID; expected mh:MsgId"
    )


def test_missing_element_at_the_end_is_named() -> None:
    data = golden_path("apprec/apprec_1_1_ok").read_bytes()
    start = data.index(b"  <OriginalMsgId>")
    end = data.index(b"</OriginalMsgId>") + len(b"</OriginalMsgId>\n")
    problems = explain(data[:start] + data[end:])
    assert problems == ["line 2, /AppRec: missing required element ar:OriginalMsgId"]


@pytest.mark.parametrize(
    ("fixture", "start"),
    [
        ("not_well_formed.xml", "T01: not well-formed XML: "),
        ("billion_laughs.xml", "T01: document has a DOCTYPE"),
        ("unknown_encoding.xml", "T01: declared encoding 'x-klingon' is not one"),
        ("empty.xml", "T01: empty document"),
        ("unknown_root.xml", "T10: root element dia:Dialogmelding is neither"),
        ("unsupported_process.xml", "T10: MsgHead process 'DIALOG_INNBYGGER_EKONTAKT'"),
        ("wrong_fnr.xml", "E31: Patient FNR/DNR is not a valid 11-digit number"),
    ],
)
def test_refused_documents_give_one_line_with_their_code(fixture: str, start: str) -> None:
    problems = explain((MALFORMED / fixture).read_bytes())
    assert len(problems) == 1
    assert problems[0].startswith(start)


def test_semantic_checks_can_be_switched_off() -> None:
    assert explain((MALFORMED / "wrong_fnr.xml").read_bytes(), semantic=False) == []
