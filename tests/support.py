"""Builders for test requests and EPJ replies (real mappers, real formats)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from mappers import apprec as apprec_mapper
from mappers import message as dialog_message
from mappers.codes import AppRecStatus, Process, ReplyCode, RequestCode
from mappers.model import (
    AppRec,
    ConversationRef,
    DialogMessage,
    Envelope,
    Event,
    OriginalMsgRef,
    Party,
    Person,
    Practitioner,
    ReceiptError,
    Reply,
    Request,
)
from worker import fnr as fnrs

CLINIC = "8090001"
CLINIC_NAME = "Testlegekontoret"
PORTAL = "8093244"


def fnr(n: int = 1) -> str:
    """A valid fødselsnummer, distinct per n (born on day n after 1970-01-01)."""
    born = date(1970, 1, 1) + timedelta(days=n)
    for individual in range(100, 500):
        try:
            return fnrs.make(born, individual)
        except ValueError:
            continue
    raise AssertionError("no valid individual number")


def slot(days: int = 30, minutes: int = 20) -> dict[str, str]:
    """A future slot in the contract's JSON form."""
    start = datetime.now(UTC).replace(microsecond=0, second=0) + timedelta(days=days)
    return {
        "id": f"slot-{uuid.uuid4()}",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(),
    }


def request(action: str = "reserve", *, patient_n: int = 1, **over: Any) -> dict[str, Any]:
    """A valid request of the given action; keyword overrides replace fields."""
    base: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "action": action,
        "patient": {"fnr": fnr(patient_n), "given_name": "Line", "family_name": "Danser"},
        "clinic": {"her_id": CLINIC, "name": CLINIC_NAME},
    }
    if action == "reserve":
        base |= {
            "practitioner": {"name": "August September", "her_id": "8090002"},
            "service": "consultation",
            "slot": slot(),
            "subject": "Magesmerter",
        }
    elif action in ("wish", "change_wish"):
        base |= {"service": "consultation", "subject": "Kontroll", "message": "Helst formiddag"}
    base |= over
    return {k: v for k, v in base.items() if v is not None}


def reply(
    original: DialogMessage,
    code: ReplyCode,
    *,
    event: Event | None = None,
    text: str | None = None,
    practitioner: str | None = None,
    msg_id: str | None = None,
) -> bytes:
    """The clinic's business reply (Notat) to one of our requests."""
    env = original.envelope
    conv = ConversationRef(
        env.msg_id, env.conversation.ref_to_conversation if env.conversation else env.msg_id
    )
    msg = DialogMessage(
        envelope=Envelope(
            process=env.process,
            msg_id=msg_id or str(uuid.uuid4()),
            gen_date=datetime.now(UTC),
            sender=Party(CLINIC, CLINIC_NAME),
            receiver=env.sender,
            patient=env.patient,
            conversation=conv,
        ),
        reply=Reply(
            code, text, original.request, Practitioner(practitioner) if practitioner else None
        ),
        event=event,
    )
    return dialog_message.build(msg)


def confirmed_event(original: DialogMessage, uid: str | None = None) -> Event:
    """The vevent of a confirmation: new appointment uid, related-to the requested slot."""
    ev = original.event
    assert ev is not None
    return Event(
        uid=uid or str(uuid.uuid4()),
        start=ev.start,
        end=ev.end,
        contact=CLINIC,
        related_to=ev.related_to,
        summary=ev.summary,
        location=ev.location,
        appointment_type=ev.appointment_type,
        status="CONFIRMED",
    )


def avtale(
    patient: Person,
    *,
    uid: str,
    start: datetime,
    status: str = "CONFIRMED",
    related_to: str | None = None,
    minutes: int = 30,
) -> bytes:
    """A clinic-originated Avtale (Melding om avtale)."""
    msg = DialogMessage(
        envelope=Envelope(
            process=Process.PUBLICATION,
            msg_id=str(uuid.uuid4()),
            gen_date=datetime.now(UTC),
            sender=Party(CLINIC, CLINIC_NAME),
            receiver=Party(PORTAL, "Helsenorge.no"),
            patient=patient,
        ),
        request=Request(RequestCode.APPOINTMENT, "Timeavtale", None, Practitioner("Rita Lin")),
        event=Event(
            uid=uid,
            start=start,
            end=start + timedelta(minutes=minutes),
            contact=CLINIC,
            related_to=related_to,
            location=CLINIC_NAME,
            status=status,
        ),
    )
    return dialog_message.build(msg)


def apprec_for(original: DialogMessage, status: AppRecStatus, error: str | None = None) -> bytes:
    """The clinic's AppRec 1.1 for one of our messages."""
    env = original.envelope
    errors = (ReceiptError(error, "Feil"),) if error else ()
    rec = AppRec(
        msg_id=str(uuid.uuid4()),
        gen_date=datetime.now(UTC),
        sender=Party(CLINIC, CLINIC_NAME),
        receiver=env.sender,
        status=status,
        original=OriginalMsgRef(env.process.value, env.gen_date, env.msg_id),
        errors=errors,
    )
    return apprec_mapper.build(rec)


def headers(body_msg_id: str, msg_type: str, *, sender: str = CLINIC) -> dict[str, str]:
    """Transport headers for a message the clinic sends us."""
    return {
        "fromHerId": sender,
        "toHerId": PORTAL,
        "msgId": body_msg_id,
        "type": msg_type,
        "refToParent": "",
        "refToConversation": "",
    }
