"""Family mappers one by one: the rules that golden files alone would not explain."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from lxml import etree

from mappers import apprec, dialog, envelope, incoming, message, outgoing, relation, xcal, xmlsafe
from mappers.codes import (
    APPOINTMENT_TYPE_NAMES,
    NS_MSGHEAD,
    NS_XCAL,
    OTHER_APPOINTMENT_TYPES,
    AppointmentType,
    AppRecError,
    AppRecStatus,
    Function,
    Process,
    RelationCode,
    ReplyCode,
    RequestCode,
)
from mappers.errors import InvalidInput, SchemaInvalid, UnsupportedMessage
from mappers.model import (
    AppRec,
    DialogMessage,
    Event,
    OriginalMsgRef,
    Person,
    Practitioner,
    ReceiptError,
    Relation,
    Reply,
    Request,
)
from tests.unit.mappers.mappers_cases import (
    ALL,
    CLINIC,
    DNR_PATIENT,
    MESSAGES,
    OUTGOING,
    PATIENT,
    PORTAL,
    RECEIPTS,
    SENT,
    golden_path,
)

RESERVE = OUTGOING["timereservasjon/reserver_avtale_ordinaer"]


# ---------------------------------------------------------------------------- envelope


@pytest.mark.parametrize(
    ("fnr", "valid"),
    [
        ("12858010053", True),
        ("43858010005", True),  # D-number
        ("12858010054", False),  # second check digit wrong
        ("12858010063", False),  # first check digit wrong
        ("1285801005", False),
        ("1285801005a", False),
        ("１２８５８０１００５３", False),  # full-width digits are not digits here
    ],
)
def test_fnr_check_digits(fnr: str, valid: bool) -> None:
    assert envelope.valid_fnr(fnr) is valid


def test_dnr_gets_its_own_ident_type() -> None:
    assert envelope.person_id_type(PATIENT.fnr) == "FNR"
    assert envelope.person_id_type(DNR_PATIENT.fnr) == "DNR"
    root = envelope.build(replace(RESERVE.envelope, patient=DNR_PATIENT))
    type_id = root.find(f".//{{{NS_MSGHEAD}}}Patient/{{{NS_MSGHEAD}}}Ident/{{{NS_MSGHEAD}}}TypeId")
    assert type_id is not None
    assert (type_id.get("V"), type_id.get("DN")) == ("DNR", "D-nummer")


@pytest.mark.parametrize(
    ("phone", "address"),
    [
        ("99775533", "mob:99775533"),
        ("41234567", "mob:41234567"),
        ("22334455", "tel:22334455"),
        ("+4791234567", "mob:+4791234567"),
    ],
)
def test_phone_scheme(phone: str, address: str) -> None:
    assert envelope.tele_address(phone) == address
    assert envelope.phone_from(address) == phone


def test_spaces_are_dropped_from_phone_urls() -> None:
    assert envelope.tele_address("+47 22 33 44 55") == "tel:+4722334455"
    msg = replace(
        RESERVE,
        envelope=replace(RESERVE.envelope, patient=replace(PATIENT, phone="+47 912 34 567")),
    )
    parsed = incoming.parse_any(message.build(msg))
    assert isinstance(parsed, DialogMessage)
    assert parsed.envelope.patient is not None
    assert parsed.envelope.patient.phone == "+4791234567"


def test_naive_datetime_is_refused_on_build() -> None:
    with pytest.raises(InvalidInput, match="timezone-aware"):
        envelope.build(replace(RESERVE.envelope, gen_date=datetime(2026, 1, 1)))


def test_apprec_is_not_a_msghead_process() -> None:
    with pytest.raises(InvalidInput):
        envelope.build(replace(RESERVE.envelope, process=Process.APPREC))


def test_gen_date_is_written_in_utc() -> None:
    oslo_morning = datetime(2026, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    root = envelope.build(replace(RESERVE.envelope, gen_date=oslo_morning))
    assert root[0][2].text == "2026-06-01T07:00:00Z"


def test_control_characters_are_refused_with_invalid_input() -> None:
    bad = replace(RESERVE, request=replace(RESERVE.request, text="bell \x07"))  # type: ignore[type-var]
    with pytest.raises(InvalidInput, match="cannot be carried in XML"):
        message.build(bad)


# ---------------------------------------------------------------------------- dialog


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Rita Lin", "Rita Lin"), ("Lin", "Lin"), ("Ola Vikar  Nordmann ", "Ola Vikar Nordmann")],
)
def test_practitioner_names_split_on_the_last_space(name: str, expected: str) -> None:
    built = dialog.build(Request(RequestCode.RESERVE, practitioner=Practitioner(name, hpr="1")))
    parsed = dialog.parse(built)
    assert isinstance(parsed, Request)
    assert parsed.practitioner == Practitioner(expected, hpr="1")


def test_xhtml_free_text_is_read_as_plain_text() -> None:
    root = dialog.build(Reply(ReplyCode.REJECTED, text="x"))
    notat = root[0]
    tekst = notat[1]
    tekst.text = "Ring "
    bold = etree.SubElement(tekst, "{http://www.w3.org/1999/xhtml}b")
    bold.text = "legekontoret"
    bold.tail = " i dag."
    xmlsafe.validate(root)
    parsed = dialog.parse(root)
    assert isinstance(parsed, Reply)
    assert parsed.text == "Ring legekontoret i dag."


def test_two_requests_in_one_dialogmelding_are_unsupported() -> None:
    root = dialog.build(Request(RequestCode.RESERVE))
    root.append(etree.fromstring(etree.tostring(root[0])))
    with pytest.raises(UnsupportedMessage, match="2 Foresporsel"):
        dialog.parse(root)


def test_a_code_from_another_code_system_is_unsupported() -> None:
    root = dialog.build(Request(RequestCode.RESERVE))
    root[0][0].set("S", "2.16.578.1.12.4.1.1.8129")
    with pytest.raises(UnsupportedMessage, match="code system"):
        dialog.parse(root)


def test_subject_over_fifty_characters_does_not_validate() -> None:
    long = replace(RESERVE, request=replace(RESERVE.request, subject="x" * 51))  # type: ignore[type-var]
    with pytest.raises(SchemaInvalid, match="EmneSporsmal"):
        message.build(long)


# ---------------------------------------------------------------------------- xcal


def test_event_times_are_sent_in_utc_and_read_back_aware() -> None:
    event = RESERVE.event
    assert event is not None
    root = xcal.build(event)
    parsed = xcal.parse(root)
    assert parsed.start == event.start
    assert parsed.start.tzinfo is not None
    assert parsed.start.utcoffset() == timedelta(0)


def test_offsets_and_any_property_order_are_accepted_when_parsing() -> None:
    event = Event(
        "u1", datetime(2026, 1, 1, 9, tzinfo=UTC), datetime(2026, 1, 1, 10, tzinfo=UTC), "1"
    )
    root = xcal.build(event)
    props = root[0][1][0][0]
    props[1][0].text = "2026-01-01T10:00:00+01:00"
    props.append(props[0])  # uid last
    xmlsafe.validate(root)
    assert xcal.parse(root) == event


def test_floating_local_time_is_refused_by_the_profile() -> None:
    root = xcal.build(RESERVE.event)  # type: ignore[arg-type]
    root[0][1][0][0][1][0].text = "2026-12-01T10:00:00"
    with pytest.raises(SchemaInvalid, match="dtstart"):
        xmlsafe.validate(root)


def test_unknown_appointment_type_is_read_as_none() -> None:
    root = xcal.build(RESERVE.event)  # type: ignore[arg-type]
    category = root.find(f".//{{{NS_XCAL}}}categories/{{{NS_XCAL}}}text")
    assert category is not None
    for code in [*sorted(OTHER_APPOINTMENT_TYPES), "9", "ordinær", "x"]:
        category.text = f"7617:{code}"  # e.g. Vaksine: published, outside timebok's subset
        assert xcal.parse(root).appointment_type is None


def test_empty_optional_texts_are_left_out() -> None:
    event = Event("u", SENT, SENT, "1", summary="", location=None)
    root = xcal.build(event)
    names = [etree.QName(p).localname for p in root[0][1][0][0]]
    assert names == ["uid", "dtstart", "dtend", "contact"]
    assert xcal.parse(root) == replace(event, summary=None)


def test_categories_carry_code_list_7617() -> None:
    for kind in AppointmentType:
        event = Event("u", SENT, SENT, "1", appointment_type=kind)
        assert xcal.parse(xcal.build(event)).appointment_type is kind


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (AppointmentType.ORDINARY, "Ordinær"),
        (AppointmentType.URGENT, "Hastetime"),
        (AppointmentType.VIDEO, "Video"),
        (AppointmentType.PHONE, "Telefon"),  # our choice: the published list has no phone code
    ],
)
def test_categories_use_the_published_7617_codes(kind: AppointmentType, code: str) -> None:
    root = xcal.build(Event("u", SENT, SENT, "1", appointment_type=kind))
    category = root.find(f".//{{{NS_XCAL}}}categories/{{{NS_XCAL}}}text")
    assert category is not None and category.text == f"7617:{code}"
    assert APPOINTMENT_TYPE_NAMES[kind] == code


@pytest.mark.parametrize(
    ("old", "kind"),
    [
        ("1", AppointmentType.ORDINARY),
        ("2", AppointmentType.URGENT),
        ("3", AppointmentType.VIDEO),
        ("4", AppointmentType.PHONE),
    ],
)
def test_legacy_numeric_7617_codes_are_still_read(old: str, kind: AppointmentType) -> None:
    root = xcal.build(Event("u", SENT, SENT, "1", appointment_type=kind))
    category = root.find(f".//{{{NS_XCAL}}}categories/{{{NS_XCAL}}}text")
    assert category is not None
    category.text = f"7617:{old}"
    assert xcal.parse(root).appointment_type is kind


# ---------------------------------------------------------------------------- relation


@pytest.mark.parametrize("code", list(RelationCode))
def test_relation_round_trip(code: RelationCode) -> None:
    rel = Relation(Person("43858010005", "Jonas", "Berg", phone="99887766"), code)
    assert relation.parse(relation.build(rel)) == rel


def test_unknown_relation_code_is_unsupported() -> None:
    root = relation.build(Relation(PATIENT, RelationCode.PARENT))
    root[0].set("V", "XX")
    with pytest.raises(UnsupportedMessage, match="Relasjon"):
        relation.parse(root)


# ---------------------------------------------------------------------------- apprec


def test_receipt_for_answers_the_sender() -> None:
    rec = apprec.receipt_for(RESERVE.envelope, msg_id="r1", gen_date=SENT)
    assert (rec.sender, rec.receiver) == (CLINIC, PORTAL)
    assert rec.status is AppRecStatus.OK
    assert rec.original == OriginalMsgRef(
        "DIALOG_INNBYGGER_TIMERESERVASJON", RESERVE.envelope.gen_date, RESERVE.envelope.msg_id
    )


def test_rejection_of_a_mapper_error_is_an_avvist_receipt() -> None:
    data = golden_path("timereservasjon/reserver_avtale_ordinaer").read_bytes()
    with pytest.raises(SchemaInvalid) as caught:
        incoming.parse_any(data.replace(b"<MsgType", b"<MsgTyp").replace(b"</MsgType", b"</MsgTyp"))
    rec = apprec.rejection(caught.value, msg_id="r2", gen_date=SENT)
    assert rec is not None
    assert rec.status is AppRecStatus.REJECTED
    assert rec.receiver == PORTAL
    assert rec.errors[0].code is AppRecError.NOT_VALID
    assert rec.errors[0].text == "XML validerer ikke"
    assert incoming.parse_any(apprec.build(rec)) == rec


def test_error_text_defaults_to_the_code_list_name() -> None:
    rec = replace(RECEIPTS["apprec/apprec_1_1_ok"], errors=(ReceiptError(AppRecError.NOT_XML),))
    parsed = incoming.parse_any(apprec.build(rec))
    assert isinstance(parsed, AppRec)
    assert parsed.errors == (ReceiptError(AppRecError.NOT_XML, 'Ikke XML / ikke "well formed"'),)


def test_error_code_outside_the_selection_is_kept_as_text() -> None:
    rec = replace(RECEIPTS["apprec/apprec_1_1_ok"], errors=(ReceiptError("S01", "Feil signatur"),))
    parsed = incoming.parse_any(apprec.build(rec))
    assert isinstance(parsed, AppRec)
    assert parsed.errors == (ReceiptError("S01", "Feil signatur"),)


def test_unknown_apprec_version_cannot_be_built() -> None:
    with pytest.raises(InvalidInput):
        apprec.build(replace(RECEIPTS["apprec/apprec_1_1_ok"], version="2.0"))


# ---------------------------------------------------------------------------- outgoing / incoming


def test_function_table() -> None:
    assert outgoing.FUNCTIONS == {
        Function.RESERVE: (Process.RESERVATION, RequestCode.RESERVE),
        Function.CANCEL: (Process.CANCELLATION, RequestCode.CANCEL),
        Function.WISH: (Process.WISH, RequestCode.WISH),
        Function.WISH_CHANGE: (Process.WISH, RequestCode.WISH_CHANGE),
        Function.WISH_CANCEL: (Process.WISH, RequestCode.WISH_CANCEL),
    }
    assert outgoing.processes(Function.CANCEL) == (Process.CANCELLATION, Process.RESERVATION)
    assert outgoing.function_for(Process.RESERVATION, RequestCode.CANCEL) is Function.CANCEL
    assert outgoing.function_for(Process.WISH, RequestCode.RESERVE) is None


def test_compose_refuses_unknown_functions_and_processes() -> None:
    common = {
        "msg_id": "m",
        "gen_date": SENT,
        "sender": PORTAL,
        "receiver": CLINIC,
        "patient": PATIENT,
    }
    with pytest.raises(InvalidInput, match="unknown function"):
        outgoing.compose("BestillPizza", **common)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="not a portal -> EPJ function"):
        outgoing.compose(Function.WISH_REPLY, **common)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="does not travel in"):
        outgoing.compose(Function.RESERVE, process=Process.WISH, **common)  # type: ignore[arg-type]


EXPECTED_FUNCTIONS = {
    "reserver_avtale": Function.RESERVE,
    "avbestill_avtale": Function.CANCEL,
    "onske_reserver": Function.WISH,
    "onske_endring": Function.WISH_CHANGE,
    "onske_avbestill": Function.WISH_CANCEL,
    "svar_avtale_reservasjon": Function.RESERVATION_REPLY,
    "svar_onske": Function.WISH_REPLY,
    "svar_avbestilling": Function.CANCELLATION_REPLY,
    "avtale": Function.APPOINTMENT,
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_function_of_every_sample(name: str) -> None:
    stem = name.split("/")[1]
    expected = next(f for prefix, f in EXPECTED_FUNCTIONS.items() if stem.startswith(prefix))
    assert incoming.function_of(MESSAGES[name]) is expected


def test_a_reply_in_the_publication_process_is_unsupported() -> None:
    reply = MESSAGES["timereservasjon/svar_avtale_reservasjon_05"]
    odd = replace(reply, envelope=replace(reply.envelope, process=Process.PUBLICATION))
    with pytest.raises(UnsupportedMessage):
        incoming.function_of(odd)


# ---------------------------------------------------------------------------- message / xmlsafe


def test_a_message_carries_exactly_one_of_request_and_reply() -> None:
    both = replace(RESERVE, reply=Reply(ReplyCode.CONFIRMED))
    with pytest.raises(InvalidInput):
        message.build(both)
    with pytest.raises(InvalidInput):
        message.build(DialogMessage(envelope=RESERVE.envelope))


def test_output_is_utf8_with_a_declaration() -> None:
    data = message.build(RESERVE)
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<MsgHead')
    assert "Fødselsnummer".encode() in data


def test_two_calendars_in_one_message_are_unsupported() -> None:
    root = message.build_element(RESERVE)
    root.append(etree.fromstring(etree.tostring(root[2])))
    with pytest.raises(UnsupportedMessage, match="more than one xcal:icalendar"):
        message.parse_element(root)


def test_utf8_byte_order_mark_is_accepted() -> None:
    data = b"\xef\xbb\xbf" + message.build(RESERVE)
    assert incoming.parse_any(data) == RESERVE


def test_leading_comments_and_processing_instructions_are_fine() -> None:
    data = message.build(RESERVE).replace(b"?>\n", b"?>\n<!-- sent by timebok -->\n<?pi x?>\n", 1)
    assert incoming.parse_any(data) == RESERVE


def test_schema_is_compiled_once_per_thread() -> None:
    assert xmlsafe.schema() is xmlsafe.schema()
    other: list[etree.XMLSchema] = []
    thread = threading.Thread(target=lambda: other.append(xmlsafe.schema()))
    thread.start()
    thread.join()
    assert other[0] is not xmlsafe.schema()


def test_schemas_are_found_next_to_the_package() -> None:
    assert xmlsafe.SCHEMA_FILE.is_file()
    assert {p.name for p in xmlsafe.SCHEMA_DIR.glob("*.xsd")} >= {
        "timebok.xsd",
        "msghead.xsd",
        "dialogmelding.xsd",
        "felleskomponent1.xsd",
        "xcal.xsd",
        "pasientrelasjon.xsd",
        "apprec-1.0.xsd",
        "apprec-1.1.xsd",
    }


def test_every_sample_is_valid_for_the_project_schema() -> None:
    for name, case in ALL.items():
        root = (
            apprec.build_element(case) if isinstance(case, AppRec) else message.build_element(case)
        )
        xmlsafe.validate(root)
        assert name
