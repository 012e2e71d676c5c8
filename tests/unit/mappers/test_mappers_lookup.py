"""Lookup mappers: golden files, round trips, the 7617 words on the wire, practitioners linked
to their slots, and the builders' refusals.

After an intended change, regenerate the golden files:
`TIMEBOK_REGEN_GOLDEN=1 pytest tests/unit/mappers`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest
from lxml import etree

from mappers import incoming, lookup, message
from mappers.codes import (
    NS_DIALOG,
    NS_XCAL,
    AppointmentType,
    Function,
    Process,
    ReplyCode,
    RequestCode,
)
from mappers.errors import InvalidInput, SchemaInvalid, UnsupportedMessage
from mappers.model import Lookup, LookupAnswer, SlotQuery
from tests.unit.mappers.lookup_cases import (
    ANSWERS,
    FREE_SLOTS,
    LOOKUP_CASES,
    LOOKUPS,
    SUBSTITUTE,
    build_case,
    parse_case,
)
from tests.unit.mappers.mappers_cases import (
    GP,
    MESSAGES,
    REGEN,
    canonical,
    golden_path,
    pretty,
)

DIA, XC = f"{{{NS_DIALOG}}}", f"{{{NS_XCAL}}}"
FREE = "timereservasjon/svar_ledige_timer"
ASKED = "timereservasjon/hent_ledige_timer"


@pytest.mark.parametrize("name", sorted(LOOKUP_CASES))
def test_build_matches_golden_file(name: str) -> None:
    produced = build_case(LOOKUP_CASES[name])
    path = golden_path(name)
    if REGEN:
        path.write_bytes(pretty(produced))
    assert path.exists(), f"no golden file {path}; run with TIMEBOK_REGEN_GOLDEN=1"
    assert canonical(produced) == canonical(path.read_bytes())


@pytest.mark.parametrize("name", sorted(LOOKUP_CASES))
def test_parse_of_build_gives_back_the_input(name: str) -> None:
    case = LOOKUP_CASES[name]
    assert parse_case(build_case(case), case) == case


@pytest.mark.parametrize("name", sorted(LOOKUP_CASES))
def test_golden_file_parses_to_the_input(name: str) -> None:
    case = LOOKUP_CASES[name]
    assert parse_case(golden_path(name).read_bytes(), case) == case


def _tree(name: str) -> etree._Element:
    return etree.fromstring(golden_path(name).read_bytes())


def test_lookup_carries_the_choices_of_domain_section_7() -> None:
    foresporsel = _tree(ASKED).find(f".//{DIA}Foresporsel")
    assert foresporsel is not None
    assert [etree.QName(e).localname for e in foresporsel] == [
        "TypeForesp",
        "Formål",
        "FraDato",
        "TilDato",
        "KodetOpplysning",
        "RollerRelatertNotat",
    ]
    code = foresporsel.find(f"{DIA}TypeForesp")
    assert code is not None and code.get("V") == "HLT"
    assert code.get("S") == "2.16.578.1.12.4.1.1.7601"
    wanted = foresporsel.find(f"{DIA}KodetOpplysning")
    assert wanted is not None
    assert (wanted.get("V"), wanted.get("S")) == ("Video", "2.16.578.1.12.4.1.1.7617")
    assert foresporsel.findtext(f"{DIA}FraDato") == "2026-12-01"
    assert foresporsel.findtext(f"{DIA}TilDato") == "2026-12-14"
    hcp = foresporsel.find(f"{DIA}RollerRelatertNotat/{DIA}HealthcareProfessional")
    assert hcp is not None and hcp.findtext(f"{DIA}FamilyName") == "Lin"


def test_planned_lookup_is_hbt_with_the_patient_and_no_xcal() -> None:
    root = _tree("timereservasjon/hent_planlagte_timer")
    code = root.find(f".//{DIA}TypeForesp")
    assert code is not None and code.get("V") == "HBT"
    assert root.find(".//{http://www.kith.no/xmlstds/msghead/2006-05-24}Patient") is not None
    assert root.find(f".//{XC}icalendar") is None


def test_answer_is_notat_01_with_one_vevent_per_slot() -> None:
    root = _tree(FREE)
    tema = root.find(f".//{DIA}Notat/{DIA}TemaKodet")
    assert tema is not None
    assert (tema.get("V"), tema.get("S")) == ("01", "2.16.578.1.12.4.1.1.7602")
    vevents = root.findall(f".//{XC}vevent")
    assert len(vevents) == len(FREE_SLOTS)
    first = vevents[0].find(f"{XC}properties")
    assert first is not None
    assert first.findtext(f"{XC}uid/{XC}text") == "ledig-0"
    assert first.findtext(f"{XC}contact/{XC}text") == "258521"
    assert first.findtext(f"{XC}categories/{XC}text") == "7617:Ordinær"
    categories = [v.findtext(f".//{XC}categories/{XC}text") for v in vevents]
    assert categories[:4] == ["7617:Ordinær", "7617:Video", "7617:Telefon", "7617:Hastetime"]


def test_answer_lists_each_practitioner_once_and_links_them_by_her_id() -> None:
    notat = _tree(FREE).find(f".//{DIA}Notat")
    assert notat is not None
    own = notat.findall(f"{DIA}RollerRelatertNotat/{DIA}HealthcareProfessional")
    assert [hcp.findtext(f"{DIA}FamilyName") for hcp in own] == ["Lin", "Nordmann"]
    parsed = lookup.parse_answer(golden_path(FREE).read_bytes())
    by_id = {slot.id: slot.practitioner for slot in parsed.slots}
    assert by_id["ledig-0"] == GP
    assert by_id["ledig-5"] == SUBSTITUTE
    assert by_id["lab-1"] is None  # the lab's unit has no practitioner


def test_nothing_free_is_an_answer_without_xcal() -> None:
    data = golden_path("timereservasjon/svar_ledige_timer_tom").read_bytes()
    assert b"icalendar" not in data
    parsed = lookup.parse_answer(data)
    assert parsed.code is ReplyCode.LISTING
    assert parsed.slots == ()
    assert parsed.asked is RequestCode.LIST_FREE
    assert parsed.query == LOOKUPS[ASKED].query


def test_answer_links_the_conversation_and_swaps_the_parties() -> None:
    asked, answer = LOOKUPS[ASKED], ANSWERS["timereservasjon/svar_ledige_timer_tom"]
    assert answer.envelope.sender == asked.envelope.receiver
    assert answer.envelope.receiver == asked.envelope.sender
    assert answer.envelope.conversation is not None
    assert answer.envelope.conversation.ref_to_parent == asked.envelope.msg_id


def test_function_names() -> None:
    assert lookup.function_of(LOOKUPS[ASKED]) is Function.LIST_FREE
    assert lookup.function_of(LOOKUPS["timereservasjon/hent_planlagte_timer"]) is (
        Function.LIST_PLANNED
    )
    assert lookup.function_of(ANSWERS[FREE]) is Function.LIST_FREE_REPLY
    assert lookup.function_of(ANSWERS["timereservasjon/svar_planlagte_timer"]) is (
        Function.LIST_PLANNED_REPLY
    )


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("Ordinær", AppointmentType.ORDINARY),
        ("Hastetime", AppointmentType.URGENT),
        ("Video", AppointmentType.VIDEO),
        ("Telefon", AppointmentType.PHONE),
        (" Video ", AppointmentType.VIDEO),
        ("3", AppointmentType.VIDEO),  # a numeric stand-in of earlier releases is still read
        ("Lab", None),
        ("Vaksine", None),
        ("", None),
    ],
)
def test_7617_codes_read(code: str, kind: AppointmentType | None) -> None:
    assert lookup.type_of(code) is kind


def test_7617_codes_written_are_the_published_words() -> None:
    assert [lookup.type_code(kind) for kind in AppointmentType] == [
        "Ordinær",
        "Hastetime",
        "Video",
        "Telefon",
    ]


def test_answer_reads_a_published_type_outside_the_subset_as_no_type() -> None:
    data = golden_path(FREE).read_bytes().replace(b"7617:Telefon", b"7617:Lab")
    parsed = lookup.parse_answer(data)
    assert parsed.slots[2].appointment_type is None
    assert parsed.slots[2].id == "ledig-2"


def test_a_zoned_xs_date_is_the_day_asked_about() -> None:
    data = golden_path(ASKED).read_bytes()
    data = data.replace(b"<FraDato>2026-12-01<", b"<FraDato>2026-12-01+01:00<")
    data = data.replace(b"<TilDato>2026-12-14<", b"<TilDato>2026-12-14Z<")
    query = lookup.parse_lookup(data).query
    assert (query.start, query.end) == (date(2026, 12, 1), date(2026, 12, 14))


def test_lookups_are_not_booking_messages() -> None:
    with pytest.raises(UnsupportedMessage, match="not handled in"):
        incoming.parse_any(golden_path(ASKED).read_bytes())


def test_a_booking_message_still_carries_exactly_one_vevent() -> None:
    reserve = MESSAGES["timereservasjon/reserver_avtale_ordinaer"]
    root = message.build_element(reserve)
    components = root.find(f".//{XC}components")
    assert components is not None
    vevent = components[0]
    twin = etree.fromstring(etree.tostring(vevent))
    uid = twin.find(f".//{XC}uid/{XC}text")
    assert uid is not None
    uid.text = "another"
    components.append(twin)
    with pytest.raises(SchemaInvalid, match="carries 2 vevents"):
        incoming.parse_any(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


# ---------------------------------------------------------------------------- build refusals

_LOOKUP = LOOKUPS[ASKED]
_ANSWER = ANSWERS[FREE]
_SLOT = FREE_SLOTS[0]


@pytest.mark.parametrize(
    ("case", "match"),
    [
        (replace(_LOOKUP, code=RequestCode.RESERVE), "not a lookup"),
        (replace(_LOOKUP, envelope=replace(_LOOKUP.envelope, process=Process.WISH)), "travels in"),
        (
            replace(
                LOOKUPS["timereservasjon/hent_planlagte_timer"],
                envelope=replace(_LOOKUP.envelope, patient=None),
            ),
            "names the patient",
        ),
        (
            replace(_LOOKUP, query=SlotQuery(start=date(2026, 12, 2), end=date(2026, 12, 1))),
            "ends .* before it starts",
        ),
        (replace(_ANSWER, envelope=replace(_ANSWER.envelope, process=Process.WISH)), "travels"),
        (replace(_ANSWER, asked=RequestCode.RESERVE), "not a lookup"),
        (replace(_ANSWER, code=ReplyCode.REJECTED), "carries no slots"),
        (replace(_ANSWER, slots=(_SLOT, _SLOT)), "appears twice"),
        (replace(_ANSWER, slots=(replace(_SLOT, end=_SLOT.start),)), "ends before it starts"),
        (
            replace(_ANSWER, slots=(replace(_SLOT, practitioner=SUBSTITUTE),)),
            "practitioner's HER-id must be its unit_her_id",
        ),
        (
            replace(_ANSWER, slots=(_SLOT, replace(_SLOT, id="x", practitioner=None))),
            "name different practitioners",
        ),
        (
            replace(_ANSWER, slots=(replace(_SLOT, start=_SLOT.start.replace(tzinfo=None)),)),
            "timezone-aware",
        ),
        (replace(_ANSWER, slots=(replace(_SLOT, summary="\x00"),)), "cannot be carried"),
    ],
)
def test_builders_refuse_what_cannot_be_carried(case: Lookup | LookupAnswer, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        build_case(case)


def test_xcal_build_all_needs_an_event() -> None:
    from mappers import xcal

    with pytest.raises(InvalidInput, match="at least one vevent"):
        xcal.build_all(())


def test_slots_keep_their_order_and_times() -> None:
    parsed = lookup.parse_answer(build_case(_ANSWER))
    assert [s.id for s in parsed.slots] == [s.id for s in FREE_SLOTS]
    assert all(s.end - s.start == timedelta(minutes=20) for s in parsed.slots)
