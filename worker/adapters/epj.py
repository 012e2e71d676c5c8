"""EPJ transport: raw XML documents on per-party kombu queues (Redis or AMQP)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from amqp.exceptions import ChannelError
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.exceptions import KombuError, OperationalError

from mappers.model import DialogMessage
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


class KombuTransport:
    """EpjTransport over one kombu connection (pooled producer, declared queues cached)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Connection | None = None
        self._declared: set[str] = set()

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = Connection(self.url, transport_options={"visibility_timeout": 3600})
        return self._conn

    def publish(self, item: Envelope) -> None:
        """Publish with the default exchange, routing key = queue name, persistent."""
        conn = self._connection()
        queue = Queue(item.queue, durable=True)
        declare = [] if item.queue in self._declared else [queue]
        try:
            with conn.Producer() as producer:
                producer.publish(
                    item.body,
                    exchange="",
                    routing_key=item.queue,
                    declare=declare,
                    headers=dict(item.headers),
                    content_type=XML_CONTENT_TYPE,
                    content_encoding="utf-8",
                    delivery_mode=2,
                    retry=True,
                    retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
                )
        except (KombuError, OperationalError, OSError) as exc:
            self.close()
            raise EpjUnavailable(f"cannot publish to {item.queue}: {exc}") from exc
        self._declared.add(item.queue)

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
        if self._conn is not None:
            self._conn.release()
            self._conn = None
        self._declared.clear()
