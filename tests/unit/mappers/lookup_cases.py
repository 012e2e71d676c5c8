"""Sample lookups and answers with fixed ids and dates: inputs of the lookup golden, round-trip
and conformance tests (identities as in mappers_cases)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

from mappers import lookup
from mappers.codes import AppointmentType, ReplyCode
from mappers.model import Lookup, LookupAnswer, Party, Practitioner, Slot, SlotQuery
from tests.unit.mappers.mappers_cases import ANSWERED, CLINIC, GP, PATIENT, PORTAL, SENT, START

LAB = Party("8140002", "Kattskinnet laboratorium")
GP_UNIT = Party("258521", "Rita Lin")  # the GP's list: the level-2 party owning her slots
SUBSTITUTE = Practitioner("Ola Vikar Nordmann", her_id="258522")
TWENTY = timedelta(minutes=20)


def _msg_id(n: int) -> str:
    """A fixed UUID-shaped message id (70.. for lookups)."""
    return f"00000000-0000-4000-8000-{n:012d}"


def _slot(n: int, kind: AppointmentType | None, **fields: object) -> Slot:
    """The n-th twenty-minute slot of the GP's list from START."""
    base = Slot(
        id=f"ledig-{n}",
        start=START + n * TWENTY,
        end=START + (n + 1) * TWENTY,
        appointment_type=kind,
        service="consultation",
        practitioner=GP,
        unit_her_id=GP_UNIT.her_id,
        location="Kattskinnet legesenter, Storgata 1",
        summary="Konsultasjon hos fastlege",
    )
    return replace(base, **fields)


FREE_SLOTS = (
    _slot(0, AppointmentType.ORDINARY),
    _slot(1, AppointmentType.VIDEO, location="Videotime"),
    _slot(2, AppointmentType.PHONE, location="Telefon"),
    _slot(3, AppointmentType.URGENT),
    _slot(
        4,
        AppointmentType.ORDINARY,
        id="lab-1",
        service="lab_test",
        practitioner=None,
        unit_her_id=LAB.her_id,
        location="Laboratoriet, 1. etasje",
        summary="Blodprøve",
    ),
    _slot(5, AppointmentType.ORDINARY, practitioner=SUBSTITUTE, unit_her_id="258522"),
)

PLANNED = (
    _slot(0, AppointmentType.ORDINARY, id="avtale-1"),
    _slot(
        40,
        AppointmentType.VIDEO,
        id="avtale-2",
        location="Videotime",
        url="https://video.example/r/2",
    ),
)


def _free(n: int, query: SlotQuery, receiver: Party = CLINIC, with_patient: bool = True) -> Lookup:
    """A HentLedigeTimer from the portal."""
    return lookup.free_slots_request(
        msg_id=_msg_id(n),
        gen_date=SENT,
        sender=PORTAL,
        receiver=receiver,
        query=query,
        patient=PATIENT if with_patient else None,
    )


def _lookups() -> dict[str, Lookup]:
    """Both lookups, with every filter and with none."""
    december = SlotQuery(start=date(2026, 12, 1), end=date(2026, 12, 14))
    wanted = replace(
        december, appointment_type=AppointmentType.VIDEO, service="consultation", practitioner=GP
    )
    gp_list = replace(CLINIC, unit=GP_UNIT)
    planned = lookup.planned_request(
        msg_id=_msg_id(72), gen_date=SENT, sender=PORTAL, receiver=CLINIC, patient=PATIENT
    )
    return {
        "timereservasjon/hent_ledige_timer": _free(70, wanted, gp_list),
        "timereservasjon/hent_ledige_timer_uten_filter": _free(71, december, with_patient=False),
        "timereservasjon/hent_planlagte_timer": planned,
    }


def _answers(asked: dict[str, Lookup]) -> dict[str, LookupAnswer]:
    """The clinic's answers: slots found, nothing free, the planned appointments, a refusal."""
    broad = asked["timereservasjon/hent_ledige_timer_uten_filter"]
    narrow = asked["timereservasjon/hent_ledige_timer"]
    planned = asked["timereservasjon/hent_planlagte_timer"]
    return {
        "timereservasjon/svar_ledige_timer": lookup.answer_to(
            broad, FREE_SLOTS, msg_id=_msg_id(80), gen_date=ANSWERED
        ),
        "timereservasjon/svar_ledige_timer_tom": lookup.answer_to(
            narrow, (), msg_id=_msg_id(81), gen_date=ANSWERED
        ),
        "timereservasjon/svar_planlagte_timer": lookup.answer_to(
            planned, PLANNED, msg_id=_msg_id(82), gen_date=ANSWERED
        ),
        "timereservasjon/svar_ledige_timer_33": lookup.answer_to(
            broad,
            (),
            msg_id=_msg_id(83),
            gen_date=ANSWERED,
            code=ReplyCode.NOT_OFFERED,
            text="Legekontoret tilbyr ikke timebestilling på nett.",
        ),
    }


LOOKUPS = _lookups()
ANSWERS = _answers(LOOKUPS)
LOOKUP_CASES: dict[str, Lookup | LookupAnswer] = {**LOOKUPS, **ANSWERS}


def build_case(case: Lookup | LookupAnswer) -> bytes:
    """Build a lookup or an answer."""
    return lookup.build_lookup(case) if isinstance(case, Lookup) else lookup.build_answer(case)


def parse_case(data: bytes, like: Lookup | LookupAnswer) -> Lookup | LookupAnswer:
    """Parse with the parser of the case's kind."""
    return lookup.parse_lookup(data) if isinstance(like, Lookup) else lookup.parse_answer(data)
