"""EPJ transport: raw XML documents on per-party kombu queues (Redis or AMQP)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

from amqp.exceptions import ChannelError
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.exceptions import KombuError, OperationalError
from kombu.message import Message
from kombu.messaging import Producer

from worker.adapters.broker import is_amqp, publish_transport_for
from worker.adapters.transports.base import (
    Delivery,
    Envelope,
    Handler,
    Handoff,
    Outcome,
    Subscription,
    Transport,
    dialog_headers,
    transport_headers,
    wait_for_answer,
)
from worker.constants import XML_CONTENT_TYPE
from worker.errors import EpjUnavailable

EpjTransport = Transport  # the name callers used before the interface moved to base.py
__all__ = [
    "Delivery",
    "Envelope",
    "EpjTransport",
    "KombuTransport",
    "Outcome",
    "dialog_headers",
    "transport_headers",
]

log = logging.getLogger("timebok.epj")


RETRY_DELAYS = (0.2, 0.7)  # seconds before the second and third publish attempt


class KombuTransport:
    """Transport over one kombu connection (one producer, declared queues cached).

    On Redis the channel publishes through one long-lived client (see
    `worker.adapters.broker.PublishTransport`): kombu would build a new one per message.
    """

    name = "kombu"

    def __init__(self, url: str, handoff: Handoff | None = None) -> None:
        self.url = url
        self.handoff = handoff  # answers other processes' reply consumers took
        self._conn: Connection | None = None
        self._producer: Producer | None = None
        self._declared: set[str] = set()
        # One connection and producer: threads publishing at once (concurrent lookups) take
        # turns, as kombu's channels are not safe to share between threads.
        self._lock = threading.RLock()

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = Connection(
                self.url,
                transport=publish_transport_for(self.url),
                # One connection attempt per publish attempt: publish() does the retrying.
                # On RabbitMQ each publish waits for the broker's confirm (persisted), so a
                # message (booking or receipt) is marked published only once the broker has it.
                transport_options={
                    "visibility_timeout": 3600,
                    "max_retries": 0,
                    "confirm_publish": is_amqp(self.url),
                },
            )
        return self._conn

    def publish(self, item: Envelope) -> None:
        """Publish with the default exchange, routing key = queue name, persistent.

        A failed attempt drops the connection and tries again on a new one, twice; then
        EpjUnavailable.
        """
        for delay in (*RETRY_DELAYS, None):
            try:
                with self._lock:
                    self._publish(item)
                return
            except Exception as exc:
                if not self._is_transport_error(exc):
                    raise
                with self._lock:
                    self.close()
                if delay is None:
                    raise EpjUnavailable(f"cannot publish to {item.queue}: {exc}") from exc
                time.sleep(delay)

    def _publish(self, item: Envelope) -> None:
        conn = self._connection()
        if self._producer is None:
            self._producer = conn.Producer()
        queue = Queue(item.queue, durable=True)
        headers = dict(item.headers)
        headers.update(item.extra)
        if item.correlation_id:  # synchronous request / answer (architecture.md)
            headers["correlationId"] = item.correlation_id
        if item.reply_to:
            headers["replyTo"] = item.reply_to
        self._producer.publish(
            item.body,
            exchange="",
            routing_key=item.queue,
            declare=[] if item.queue in self._declared else [queue],
            headers=headers,
            content_type=XML_CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2,
        )
        self._declared.add(item.queue)

    def _is_transport_error(self, exc: Exception) -> bool:
        if isinstance(exc, KombuError | OperationalError | OSError):
            return True
        conn = self._conn
        return conn is not None and isinstance(exc, (*conn.connection_errors, *conn.channel_errors))

    def depth(self, queue: str) -> int:
        """Queue length (passive declare; 0 when the queue does not exist yet)."""
        try:
            with self._connection().channel() as channel:
                _name, count, _consumers = Queue(queue, durable=True)(channel).queue_declare(
                    passive=True
                )
                return int(count)
        except ChannelError:
            return 0  # a queue nobody declared yet (or Redis removed it when empty)
        except (KombuError, OperationalError, OSError) as exc:
            self.close()
            raise EpjUnavailable(f"cannot read depth of {queue}: {exc}") from exc

    def close(self) -> None:
        """Drop the connection (a fresh one is made on next use)."""
        self._producer = None
        if self._conn is not None:
            self._conn.release()
            self._conn = None
        self._declared.clear()

    def subscribe(self, queues: Sequence[str], handler: Handler) -> Subscription:
        """A kombu consumer on `queues` over its own connection (settle in the draining thread)."""
        return KombuSubscription(self.url, queues, handler)

    def request(self, item: Envelope, reply_queue: str, timeout: float) -> Delivery | None:
        """Publish with the headers correlationId / replyTo, then wait on `reply_queue`."""
        return wait_for_answer(self, item, reply_queue, timeout, self.handoff)

    def open(self, delivery: Delivery) -> bytes:
        """On kombu the body is the XML document itself."""
        return delivery.body


class KombuSubscription:
    """Consumers on a few queues of one kombu connection, drained by the caller's thread."""

    def __init__(self, url: str, queues: Sequence[str], handler: Handler) -> None:
        self.handler = handler
        self.conn = Connection(url, heartbeat=30)
        self.stack = ExitStack()
        self.count = 0
        for name in queues:
            queue = Queue(name, durable=True)
            consumer = self.conn.Consumer([queue], on_message=self._on_message, prefetch_count=8)
            self.stack.enter_context(consumer)

    def drain(self, timeout: float) -> int:
        """Handle what arrives within `timeout` seconds."""
        self.count = 0
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                self.conn.drain_events(timeout=left)
        except TimeoutError:
            pass
        except (KombuError, OperationalError, OSError) as exc:
            raise EpjUnavailable(f"cannot consume: {exc}") from exc
        return self.count

    def _on_message(self, message: Message) -> None:
        delivery = _delivery(message)
        self.count += 1
        try:
            outcome = self.handler(delivery)
        except Exception:
            log.exception("handler failed; message requeued")
            outcome = Outcome.RELEASE
        if outcome is not None:
            delivery.finish(outcome)

    def close(self) -> None:
        """Cancel the consumers and drop the connection."""
        try:
            self.stack.close()
        finally:
            self.conn.release()


def _delivery(message: Message) -> Delivery:
    headers = {str(k): "" if v is None else str(v) for k, v in (message.headers or {}).items()}
    return Delivery(
        queue=str(message.delivery_info.get("routing_key", "")),
        body=raw_body(message),
        headers=headers,
        settle=lambda outcome: _settle(message, outcome),
        content_type=message.content_type,
        reply_to=headers.get("replyTo") or None,
        correlation_id=headers.get("correlationId") or None,
        redelivered=bool(message.delivery_info.get("redelivered")),
    )


def _settle(message: Message, outcome: Outcome) -> None:
    if outcome is Outcome.ACCEPT:
        message.ack()
    elif outcome is Outcome.RELEASE:
        message.requeue()
    else:
        message.reject(requeue=False)


def raw_body(message: Any) -> bytes:
    """The message body as bytes (kombu hands text bodies over as str)."""
    body = message.body
    return body.encode("utf-8", "surrogateescape") if isinstance(body, str) else bytes(body)
