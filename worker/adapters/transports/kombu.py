"""EPJ transport: raw XML documents on per-party kombu queues (Redis or AMQP)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from amqp.exceptions import ChannelError
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.exceptions import KombuError, OperationalError
from kombu.messaging import Producer

from mappers.model import DialogMessage
from worker.adapters.broker import is_amqp, publish_transport_for
from worker.constants import XML_CONTENT_TYPE
from worker.errors import EpjUnavailable


@dataclass(frozen=True)
class Envelope:
    """One document to put on a queue, with the transport headers of the contract."""

    queue: str
    body: bytes
    headers: Mapping[str, str]


class EpjTransport(Protocol):
    """Publishes raw XML to EPJ queues."""

    def publish(self, item: Envelope) -> None:
        """Put one document on its queue; raise EpjUnavailable when the broker is down."""

    def depth(self, queue: str) -> int:
        """How many messages wait on a queue."""


def transport_headers(
    *,
    from_her_id: str,
    to_her_id: str,
    msg_id: str,
    msg_type: str,
    ref_to_parent: str | None = None,
    ref_to_conversation: str | None = None,
) -> dict[str, str]:
    """The header set every EPJ message carries (empty string when a ref is absent)."""
    return {
        "fromHerId": from_her_id,
        "toHerId": to_her_id,
        "msgId": msg_id,
        "type": msg_type,
        "refToParent": ref_to_parent or "",
        "refToConversation": ref_to_conversation or "",
    }


def dialog_headers(msg: DialogMessage) -> dict[str, str]:
    """The transport headers of a business message, read off its MsgHead."""
    env = msg.envelope
    conv = env.conversation
    return transport_headers(
        from_her_id=env.sender.her_id,
        to_her_id=env.receiver.her_id,
        msg_id=env.msg_id,
        msg_type=env.process.value,
        ref_to_parent=conv.ref_to_parent if conv else None,
        ref_to_conversation=conv.ref_to_conversation if conv else None,
    )


RETRY_DELAYS = (0.2, 0.7)  # seconds before the second and third publish attempt


class KombuTransport:
    """EpjTransport over one kombu connection (one producer, declared queues cached).

    On Redis the channel publishes through one long-lived client (see
    `worker.adapters.broker.PublishTransport`): kombu would build a new one per message.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Connection | None = None
        self._producer: Producer | None = None
        self._declared: set[str] = set()

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
                self._publish(item)
                return
            except Exception as exc:
                if not self._is_transport_error(exc):
                    raise
                self.close()
                if delay is None:
                    raise EpjUnavailable(f"cannot publish to {item.queue}: {exc}") from exc
                time.sleep(delay)

    def _publish(self, item: Envelope) -> None:
        conn = self._connection()
        if self._producer is None:
            self._producer = conn.Producer()
        queue = Queue(item.queue, durable=True)
        self._producer.publish(
            item.body,
            exchange="",
            routing_key=item.queue,
            declare=[] if item.queue in self._declared else [queue],
            headers=dict(item.headers),
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
