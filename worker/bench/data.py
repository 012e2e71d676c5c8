"""What `timebok bench` sends: booking requests, a ReserverAvtale, the clinic's replies (pure)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

from mappers.codes import AppointmentType, Process, RequestCode
from mappers.model import DialogMessage, Envelope, Event, Party, Person, Practitioner, Request
from worker import fnr
from worker.adapters.transports.kombu import Envelope as Outgoing
from worker.adapters.transports.kombu import dialog_headers
from worker.settings import async_queue

NOOP_TASK = "timebok.bench.noop"
CLINIC = Party("8090001", "Testlegekontoret")  # the sample registry's clinic taking reservations
UNIT = Party("8090002", "Fastlege August September")
PORTAL = Party("8093244", "Helsenorge.no")  # the default own party (TIMEBOK_OWN_HER_ID)
PATIENTS = 50  # distinct patients the requests rotate through


@cache
def _fnr(day: int) -> str:
    born = date(1970, 1, 1) + timedelta(days=day)
    for individual in range(100, 500):
        try:
            return fnr.make(born, individual)
        except ValueError:
            continue
    raise AssertionError("no valid individual number")  # never: some number always fits


def patient_fnr(i: int) -> str:
    """A valid fødselsnummer, one of PATIENTS distinct ones."""
    return _fnr(i % PATIENTS)


def _slot(i: int) -> tuple[datetime, datetime]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=30, minutes=i)
    return start, start + timedelta(minutes=20)


def booking_request(i: int) -> dict[str, Any]:
    """A valid `reserve` request as the portal sends it (the intake contract's JSON)."""
    start, end = _slot(i)
    return {
        "request_id": str(uuid.uuid4()),
        "action": "reserve",
        "patient": {"fnr": patient_fnr(i), "given_name": "Line", "family_name": "Danser"},
        "clinic": {"her_id": CLINIC.her_id, "name": CLINIC.name},
        "practitioner": {"name": UNIT.name.removeprefix("Fastlege "), "her_id": UNIT.her_id},
        "service": "consultation",
        "slot": {"id": f"slot-{uuid.uuid4()}", "start": start.isoformat(), "end": end.isoformat()},
        "subject": "Magesmerter",
    }


def reservation(i: int, sender: Party = PORTAL) -> DialogMessage:
    """The ReserverAvtale the worker maps a `booking_request` to."""
    start, end = _slot(i)
    request_id = str(uuid.uuid4())
    envelope = Envelope(
        process=Process.RESERVATION,
        msg_id=str(uuid.uuid4()),
        gen_date=datetime.now(UTC),
        sender=sender,
        receiver=Party(CLINIC.her_id, CLINIC.name, UNIT),
        patient=Person(patient_fnr(i), "Line", "Danser"),
    )
    event = Event(
        uid=request_id,
        start=start,
        end=end,
        contact=CLINIC.her_id,
        related_to=f"slot-{request_id}",
        summary="Magesmerter",
        location=CLINIC.name,
        appointment_type=AppointmentType.ORDINARY,
        service="consultation",
    )
    practitioner = Practitioner("August September", UNIT.her_id)
    request = Request(RequestCode.RESERVE, "Magesmerter", None, practitioner)
    return DialogMessage(envelope=envelope, request=request, event=event)


def confirmation(doc: DialogMessage, now: datetime) -> Outgoing:
    """The clinic's SvarAvtaleReservasjon 05 to `doc`, ready for our inbound queue."""
    from mappers import message as dialog_message
    from worker import sim

    decision = sim.decide(doc, CLINIC, policy="confirm", rng=random.Random(0), now=now)  # noqa: S311
    if decision is None:
        raise ValueError("not a request the clinic answers")
    reply = sim.reply_message(doc, CLINIC, decision, msg_id=str(uuid.uuid4()), now=now)
    queue = async_queue(reply.envelope.receiver.her_id)
    return Outgoing(queue, dialog_message.build(reply), dialog_headers(reply))
