"""A scripted clinic EPJ for the crash tests: read what timebok put on the clinic's queue and
answer it (AppRec, business reply) with the real mappers, as the simulator does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import redis
from kombu import Connection, Queue

from mappers import apprec as apprec_mapper
from mappers import incoming
from mappers import message as dialog_message
from mappers.codes import Process, ReplyCode, RequestCode
from mappers.model import AppRec, DialogMessage, Envelope, Event, Request
from tests.chaos.harness import poll
from worker.adapters.transports.kombu import dialog_headers, transport_headers


@dataclass(frozen=True)
class Delivery:
    """One document as it arrived on a queue."""

    body: bytes
    headers: dict[str, str]

    @property
    def msg_id(self) -> str:
        """The transport header msgId."""
        return self.headers["msgId"]

    def parsed(self) -> DialogMessage:
        """The business message inside."""
        doc = incoming.parse_any(self.body)
        assert isinstance(doc, DialogMessage), self.body[:200]
        return doc


def take(url: str, queue: str, expect: int, timeout: float = 15.0) -> list[Delivery]:
    """Take exactly `expect` documents off `queue` (fails on timeout), acking each."""
    got: list[Delivery] = []
    with Connection(url) as conn:
        simple = conn.SimpleQueue(Queue(queue, durable=True), no_ack=False)

        def more() -> bool:
            try:
                m = simple.get(block=True, timeout=0.2)
            except simple.Empty:
                return len(got) >= expect
            body = m.body if isinstance(m.body, bytes) else m.body.encode()
            got.append(Delivery(body, {str(k): str(v) for k, v in m.headers.items()}))
            m.ack()
            return len(got) >= expect

        poll(more, timeout, f"{expect} message(s) on {queue}", interval=0)
        simple.close()
    return got


def depth(url: str, queue: str) -> int:
    """Messages waiting on a kombu queue in Redis (a list under the queue's name)."""
    with redis.Redis.from_url(url) as client:
        return int(client.llen(queue))


def apprec_ok(request: DialogMessage) -> tuple[bytes, dict[str, str]]:
    """The clinic's AppRec OK for one of our messages, with its transport headers."""
    rec = apprec_mapper.receipt_for(request.envelope, msg_id=str(uuid.uuid4()), gen_date=_now())
    return apprec_mapper.build(rec), _headers(rec)


def answer(
    request: DialogMessage, code: ReplyCode, *, event: Event | None = None, text: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """The clinic's business reply (always a new MsgId), with its transport headers."""
    reply = dialog_message.reply_to(
        request, code, msg_id=str(uuid.uuid4()), gen_date=_now(), event=event, text=text
    )
    return dialog_message.build(reply), dialog_headers(reply)


def booked(request: DialogMessage, uid: str | None = None) -> Event:
    """The vevent confirming a requested slot (a new appointment uid)."""
    slot = request.event
    assert slot is not None
    return Event(
        uid=uid or str(uuid.uuid4()),
        start=slot.start,
        end=slot.end,
        contact=request.envelope.receiver.her_id,
        related_to=slot.related_to or slot.uid,
        summary=slot.summary,
        location=slot.location,
        status="CONFIRMED",
    )


def booked_wish(request: DialogMessage, days: int = 7) -> Event:
    """The vevent a clinic proposes for a wish (no slot was asked for)."""
    start = _now().replace(microsecond=0, second=0) + timedelta(days=days)
    return Event(
        uid=str(uuid.uuid4()),
        start=start,
        end=start + timedelta(minutes=20),
        contact=request.envelope.receiver.her_id,
        summary=request.request.subject if request.request else None,
        location="Krasjklinikken",
        status="CONFIRMED",
    )


def moved(event: Event, days: int) -> Event:
    """The same appointment (same uid) `days` later."""
    return replace(
        event,
        start=event.start + timedelta(days=days),
        end=event.end + timedelta(days=days),
        status="CONFIRMED",
    )


def clinic_cancels(request: DialogMessage, event: Event) -> tuple[bytes, dict[str, str]]:
    """An Avtale with the vevent CANCELLED: the clinic cancels the appointment (new MsgId)."""
    asked = request.envelope
    msg = DialogMessage(
        envelope=Envelope(
            process=Process.PUBLICATION,
            msg_id=str(uuid.uuid4()),
            gen_date=_now(),
            sender=asked.receiver,
            receiver=asked.sender,
            patient=asked.patient,
        ),
        request=Request(RequestCode.APPOINTMENT, "Timeavtale", "Avlyst time", None),
        event=replace(event, status="CANCELLED"),
    )
    headers = transport_headers(
        from_her_id=asked.receiver.her_id,
        to_her_id=asked.sender.her_id,
        msg_id=msg.envelope.msg_id,
        msg_type=Process.PUBLICATION.value,
    )
    return dialog_message.build(msg), headers


def _headers(rec: AppRec) -> dict[str, str]:
    return transport_headers(
        from_her_id=rec.sender.her_id,
        to_her_id=rec.receiver.her_id,
        msg_id=rec.msg_id,
        msg_type=Process.APPREC.value,
        ref_to_parent=rec.original.msg_id,
    )


def _now() -> datetime:
    return datetime.now(UTC)
