"""Sample messages with fixed ids and dates: inputs of the golden, round-trip and conformance tests.

All identity numbers are synthetic (month + 80, the Norwegian test-number convention) with valid
check digits; HER-ids are made up.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from lxml import etree

from mappers import apprec, message, outgoing
from mappers.codes import (
    AppointmentType,
    AppRecError,
    AppRecStatus,
    Function,
    Process,
    RelationCode,
    ReplyCode,
    RequestCode,
    Urgency,
)
from mappers.model import (
    AppRec,
    DialogMessage,
    Envelope,
    Event,
    OriginalMsgRef,
    Party,
    Person,
    Practitioner,
    ReceiptError,
    Relation,
    Request,
)
from mappers.outgoing import Wanted

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
REGEN = os.environ.get("TIMEBOK_REGEN_GOLDEN") == "1"
OSLO = ZoneInfo("Europe/Oslo")

PORTAL = Party("115851", "Direktoratet for e-helse", unit=Party("8093244", "Helsenorge.no"))
CLINIC = Party("56704", "Kattskinnet legesenter", unit=Party("8140001", "Kattskinnet timebok"))
PATIENT = Person("12858010053", "Line", "Danser", phone="99775533")
CHILD = Person("21851650064", "Lille", "Danser")
DNR_PATIENT = Person("43858010005", "Jonas", "Berg", phone="22334455")
PARENT = Person("03918810047", "Kari", "Danser", phone="41234567")
GUARDIAN = Person("07904550099", "Per", "Verge")
GP = Practitioner("Rita Lin", her_id="258521", hpr="9144889")
SUBSTITUTE = Practitioner("Ola Vikar Nordmann", her_id="258522")

SENT = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)
ANSWERED = datetime(2026, 11, 20, 9, 15, 30, tzinfo=UTC)
START = datetime(2026, 12, 1, 10, 0, tzinfo=OSLO)
END = datetime(2026, 12, 1, 10, 20, tzinfo=OSLO)


def _msg_id(n: int) -> str:
    """A fixed UUID-shaped message id."""
    return f"00000000-0000-4000-8000-{n:012d}"


def _slot(kind: AppointmentType, **extra: str) -> Event:
    """A requested slot of the given appointment type."""
    return Event(
        uid=f"slot-{kind.name.lower()}",
        start=START,
        end=END,
        contact=CLINIC.address,
        summary="Konsultasjon hos fastlege",
        appointment_type=kind,
        service="Konsultasjon",
        **extra,
    )


SLOTS = {
    "ordinaer": _slot(AppointmentType.ORDINARY, location="Kattskinnet legesenter, Storgata 1"),
    "video": _slot(AppointmentType.VIDEO, location="Videotime", url="https://video.example/r/1"),
    "telefon": _slot(AppointmentType.PHONE, location="Telefon"),
    "hastetime": _slot(AppointmentType.URGENT, location="Kattskinnet legesenter, Storgata 1"),
}
RELATIONS = {
    "fullmakt": Relation(PARENT, RelationCode.POWER_OF_ATTORNEY),
    "verge": Relation(GUARDIAN, RelationCode.GUARDIAN),
    "foreldreansvar": Relation(PARENT, RelationCode.PARENT),
}


def _request(function: Function, n: int, **fields: object) -> DialogMessage:
    """A portal -> EPJ message composed the way the worker does."""
    base: dict[str, object] = {
        "msg_id": _msg_id(n),
        "gen_date": SENT,
        "sender": PORTAL,
        "receiver": CLINIC,
        "patient": PATIENT,
    }
    base.update(fields)
    return outgoing.compose(function, **base)


def _outgoing() -> dict[str, DialogMessage]:
    """Every portal -> EPJ function, appointment type and relation."""
    cases: dict[str, DialogMessage] = {}
    for n, (kind, slot) in enumerate(SLOTS.items(), start=1):
        cases[f"timereservasjon/reserver_avtale_{kind}"] = _request(
            Function.RESERVE, n, subject="magesmerter", practitioner=GP, event=slot
        )
    for n, (kind, relation) in enumerate(RELATIONS.items(), start=10):
        patient = CHILD if relation.code is RelationCode.PARENT else PATIENT
        cases[f"timereservasjon/reserver_avtale_{kind}"] = _request(
            Function.RESERVE,
            n,
            subject="kontroll",
            practitioner=GP,
            event=SLOTS["ordinaer"],
            relation=relation,
            patient=patient,
        )
    booked = replace(SLOTS["ordinaer"], uid="avtale-1", related_to="slot-ordinary")
    cases["avtaleavbestilling/avbestill_avtale"] = _request(
        Function.CANCEL, 20, text="Jeg er frisk igjen", event=booked
    )
    cases["timereservasjon/avbestill_avtale_reservasjon"] = _request(
        Function.CANCEL, 21, process=Process.RESERVATION, event=SLOTS["video"]
    )
    cases["timeonske/onske_reserver"] = _request(
        Function.WISH,
        30,
        subject="Vondt i kneet",
        text="Helst tirsdag eller torsdag formiddag. Kneet har verket i to uker.",
        patient=DNR_PATIENT,
        wanted=Wanted(AppointmentType.URGENT, Urgency.URGENT, "vaccination"),
    )
    cases["timeonske/onske_endring"] = _request(
        Function.WISH_CHANGE,
        31,
        subject="Flytte time",
        text="Kan timen flyttes til fredag?",
        wanted=Wanted(AppointmentType.VIDEO, Urgency.NORMAL, "consultation"),
        event=booked,
    )
    cases["timeonske/onske_avbestill"] = _request(
        Function.WISH_CANCEL, 32, subject="Avbestille", text="Kan ikke komme.", event=booked
    )
    return cases


def _reply(
    asked: DialogMessage, code: ReplyCode, n: int, text: str | None, event: Event | None
) -> DialogMessage:
    """The EPJ's reply to `asked`."""
    return message.reply_to(
        asked, code, msg_id=_msg_id(n), gen_date=ANSWERED, text=text, event=event, practitioner=GP
    )


def _replies(out: dict[str, DialogMessage]) -> dict[str, DialogMessage]:
    """Every reply function and outcome code."""
    reserve = out["timereservasjon/reserver_avtale_ordinaer"]
    wish = out["timeonske/onske_reserver"]
    change = out["timeonske/onske_endring"]
    cancel = out["avtaleavbestilling/avbestill_avtale"]
    confirmed = replace(
        SLOTS["ordinaer"], uid="avtale-1", related_to="slot-ordinary", status="CONFIRMED"
    )
    other = replace(confirmed, uid="avtale-2", description="Time hos vikar Ola Vikar Nordmann")
    moved = replace(confirmed, start=START.replace(day=4), end=END.replace(day=4))
    cancelled = replace(confirmed, status="CANCELLED")
    svar = "timereservasjon/svar_avtale_reservasjon"
    return {
        f"{svar}_05": _reply(reserve, ReplyCode.CONFIRMED, 40, "Velkommen.", confirmed),
        f"{svar}_06": _reply(reserve, ReplyCode.NOT_AVAILABLE, 41, "Timen er tatt.", None),
        f"{svar}_10": _reply(reserve, ReplyCode.CONFIRMED_OTHER, 42, None, other),
        f"{svar}_26": _reply(reserve, ReplyCode.REJECTED, 43, "Ring legekontoret.", None),
        "timeonske/svar_onske_05": _reply(wish, ReplyCode.CONFIRMED, 44, None, confirmed),
        "timeonske/svar_onske_07": _reply(
            change, ReplyCode.CHANGE_CONFIRMED, 45, "Flyttet.", moved
        ),
        "avtaleavbestilling/svar_avbestilling_08": _reply(
            cancel, ReplyCode.CANCEL_CONFIRMED, 46, None, cancelled
        ),
        "avtaleavbestilling/svar_avbestilling_09": _reply(
            cancel, ReplyCode.CANCEL_REFUSED, 47, "For sent å avbestille.", confirmed
        ),
    }


def _appointments() -> dict[str, DialogMessage]:
    """Clinic-originated Avtale messages (new/changed and cancelled)."""
    env = Envelope(
        process=Process.PUBLICATION,
        msg_id=_msg_id(50),
        gen_date=ANSWERED,
        sender=CLINIC,
        receiver=PORTAL,
        patient=PATIENT,
    )
    event = replace(SLOTS["ordinaer"], uid="avtale-9", status="CONFIRMED")
    request = Request(RequestCode.APPOINTMENT, text="Time bestilt over telefon.", practitioner=GP)
    confirmed = DialogMessage(envelope=env, request=request, event=event)
    cancelled = DialogMessage(
        envelope=replace(env, msg_id=_msg_id(51)),
        request=replace(request, text="Legen er syk."),
        event=replace(event, status="CANCELLED"),
    )
    return {
        "avtaleutsending/avtale_confirmed": confirmed,
        "avtaleutsending/avtale_cancelled": cancelled,
    }


def _receipts(out: dict[str, DialogMessage]) -> dict[str, AppRec]:
    """AppRec OK and Avvist (1.1), and a 1.0 OK for the read path."""
    asked = out["timereservasjon/reserver_avtale_ordinaer"].envelope
    ok = apprec.receipt_for(asked, msg_id=_msg_id(60), gen_date=ANSWERED)
    error = ReceiptError(AppRecError.PATIENT_UNKNOWN, "Pasienten finnes ikke i mottakersystemet")
    rejected = apprec.receipt_for(asked, msg_id=_msg_id(61), gen_date=ANSWERED, errors=(error,))
    ours = OriginalMsgRef("DIALOG_INNBYGGER_TIMERESERVASJON", ANSWERED, _msg_id(40))
    sent_by_us = AppRec(_msg_id(62), SENT, PORTAL, CLINIC, AppRecStatus.OK, ours)
    return {
        "apprec/apprec_1_1_ok": ok,
        "apprec/apprec_1_1_avvist": rejected,
        "apprec/apprec_1_1_portal_ok": sent_by_us,
        "apprec/apprec_1_0_ok": replace(ok, msg_id=_msg_id(63), version="1.0"),
    }


OUTGOING = _outgoing()
REPLIES = _replies(OUTGOING)
APPOINTMENTS = _appointments()
MESSAGES: dict[str, DialogMessage] = {**OUTGOING, **REPLIES, **APPOINTMENTS}
RECEIPTS = _receipts(OUTGOING)
ALL: dict[str, DialogMessage | AppRec] = {**MESSAGES, **RECEIPTS}


def build(case: DialogMessage | AppRec) -> bytes:
    """Build any sample."""
    return apprec.build(case) if isinstance(case, AppRec) else message.build(case)


def canonical(data: bytes) -> bytes:
    """C14N of a document, ignoring whitespace-only text between elements."""
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
    return etree.tostring(etree.fromstring(data, parser), method="c14n")


def pretty(data: bytes) -> bytes:
    """A readable, indented rendering for golden files."""
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
    root = etree.fromstring(data, parser)
    body = etree.tostring(root, encoding="UTF-8", pretty_print=True)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def golden_path(name: str) -> Path:
    """The golden file of a case."""
    return FIXTURES / f"{name}.xml"
