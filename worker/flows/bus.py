"""Messages from the national bus: open, refuse on the transport level, or hand to inbound.

A refusal follows Helsenorge.Messaging: an empty message with the error fields goes to the
sender's `_error` queue, the original is kept as a dead letter (kind `bus`) and removed from
the queue. An error message on our own `_error` queue fails the message of ours it names.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from worker.adapters.store.db import add_dead_letter, get_message
from worker.adapters.transports.base import (
    INVALID_FIELD_VALUE,
    BusRefusal,
    Delivery,
    Envelope,
    Outcome,
    transport_headers,
)
from worker.bootstrap import Deps
from worker.errors import EpjUnavailable, TransientError
from worker.flows.inbound import receive
from worker.flows.replies import fail_undelivered
from worker.settings import error_queue

log = logging.getLogger("timebok.bus")

BUS_KIND = "bus"  # dead-letter kind of a message refused on the transport level
ERROR_FIELDS = ("originalMessageId", "receiverTimeStamp", "errorCondition", "errorDescription")


def take(deps: Deps, delivery: Delivery) -> Outcome:
    """Settle-outcome of one message from our `_async` or `_error` queue."""
    if delivery.queue == error_queue(deps.settings.own_her_id):
        return error_in(deps, delivery)
    try:
        open_and_receive(deps, delivery.body, delivery_headers(delivery))
    except BusRefusal as refusal:
        return refuse(deps, delivery, refusal)
    except TransientError as exc:
        log.warning("bus message released: %s", exc)
        return Outcome.RELEASE
    return Outcome.ACCEPT


def delivery_headers(delivery: Delivery) -> dict[str, str]:
    """The headers a dead letter keeps (and a replay needs): contract names + content type."""
    headers = dict(delivery.headers)
    if delivery.content_type:
        headers["contentType"] = delivery.content_type
    return headers


def open_and_receive(deps: Deps, blob: bytes, headers: dict[str, str]) -> str:
    """Decrypt and verify, then the normal inbound path with the bus checks; the outcome."""
    delivery = Delivery(
        queue=deps.settings.inbound_queue,
        body=blob,
        headers=headers,
        settle=lambda _outcome: None,
        content_type=headers.get("contentType"),
    )
    xml = deps.epj.open(delivery)
    sender = headers.get("fromHerId", "")
    received = receive(deps, xml, dict(headers), bus_sender=sender)
    return f"{received.outcome} {received.detail}".strip()


def refuse(deps: Deps, delivery: Delivery, refusal: BusRefusal, *, report: bool = True) -> Outcome:
    """Keep the original as a dead letter, tell the sender on its `_error` queue, accept."""
    headers = delivery_headers(delivery)
    msg_id = headers.get("msgId") or None
    log.warning(
        "bus message refused",
        extra={"msg_id": msg_id, "her_id": headers.get("fromHerId"), "code": refusal.condition},
    )
    with deps.store.transaction() as s:
        add_dead_letter(
            s,
            kind=BUS_KIND,
            reason=str(refusal)[:2000],
            source_queue=delivery.queue,
            payload=delivery.body,
            headers=dict(headers),
            msg_id=msg_id[:64] if msg_id else None,
        )
    if report:
        report_error(deps, headers, refusal)
    return Outcome.ACCEPT


def report_error(deps: Deps, headers: dict[str, str], refusal: BusRefusal) -> None:
    """The library's error message to the sender's `_error` queue (best effort: logged)."""
    sender = headers.get("fromHerId", "")
    if not sender.isdigit():
        log.warning("refused message names no fromHerId: no error message sent")
        return
    envelope = error_envelope(deps.settings.own_her_id, headers, refusal)
    try:
        deps.epj.publish(envelope)
    except EpjUnavailable as exc:
        log.warning("error message to %s not sent: %s", envelope.queue, exc)


def error_envelope(own_her_id: str, headers: dict[str, str], refusal: BusRefusal) -> Envelope:
    """Empty body, HER-ids swapped, subject = the original's, the four error fields."""
    sender = headers.get("fromHerId", "")
    return Envelope(
        queue=error_queue(sender),
        body=b"",
        headers=transport_headers(
            # The error travels back: from whoever the original was for (us), to its sender.
            from_her_id=headers.get("toHerId") or own_her_id,
            to_her_id=sender,
            msg_id=uuid.uuid4().hex,
            msg_type=headers.get("type", ""),
        ),
        extra={
            "originalMessageId": headers.get("msgId", ""),
            "receiverTimeStamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "errorCondition": refusal.condition,
            "errorDescription": refusal.description[:1000],
        },
        protect=False,
    )


def error_in(deps: Deps, delivery: Delivery) -> Outcome:
    """An error message about one of ours: that message failed, like an AppRec Avvist."""
    h = delivery.headers
    original_id = h.get("originalMessageId", "")
    condition = h.get("errorCondition", "") or INVALID_FIELD_VALUE
    reason = f"bus error {condition}: {h.get('errorDescription', '')}".strip()
    try:
        with deps.store.transaction() as s:
            original = get_message(s, original_id) if original_id else None
            if original is None or original.direction != "out":
                log.warning("bus error for a message that is not ours: %s", original_id)
                return Outcome.ACCEPT
            detail = fail_undelivered(deps, s, original, reason)
    except TransientError as exc:
        log.warning("bus error message released: %s", exc)
        return Outcome.RELEASE
    log.warning(
        "bus error received",
        extra={"msg_id": original_id, "code": condition, "booking_id": original.booking_id},
    )
    log.info("bus error applied: %s", detail)
    return Outcome.ACCEPT


def replay(deps: Deps, blob: bytes, headers: dict[str, str], source_queue: str) -> str:
    """Run a `bus` dead letter again; refused again: a new dead letter, no second error sent."""
    try:
        return open_and_receive(deps, blob, headers)
    except BusRefusal as refusal:
        delivery = Delivery(
            source_queue, blob, headers, lambda _o: None, headers.get("contentType")
        )
        refuse(deps, delivery, refusal, report=False)
        return f"refused again: {refusal}"
