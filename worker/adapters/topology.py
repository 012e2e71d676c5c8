"""The national bus topology on RabbitMQ: namespace exchange + quorum queues per party.

Declared over AMQP 0-9-1 (kombu / py-amqp): AMQP 1.0 cannot create queues with arguments.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from worker.constants import BUS_DELIVERY_LIMIT
from worker.settings import BUS_QUEUE_SUFFIXES

DEFAULT_DELIVERY_LIMIT = BUS_DELIVERY_LIMIT


@dataclass(frozen=True)
class Declared:
    """What `declare` created (or found already there)."""

    exchange: str
    queues: tuple[str, ...]


def queue_arguments(her_id: str, namespace: str, suffix: str, limit: int) -> dict[str, object]:
    """Quorum queue; all but `_dl` dead-letter into the party's `_dl` after `limit` deliveries."""
    args: dict[str, object] = {"x-queue-type": "quorum"}
    if suffix != "_dl":
        args.update(
            {
                "x-delivery-limit": limit,
                "x-dead-letter-exchange": namespace,
                "x-dead-letter-routing-key": f"{her_id}_dl",
            }
        )
    return args


def declare(
    url: str, namespace: str, her_ids: Iterable[str], limit: int = DEFAULT_DELIVERY_LIMIT
) -> Declared:
    """Declare the direct exchange `namespace` and every party's queues bound by name.

    Idempotent: declaring what exists with the same arguments changes nothing (RabbitMQ
    refuses other arguments for an existing queue: PRECONDITION_FAILED names it).
    """
    names: list[str] = []
    with Connection(url, connect_timeout=10) as conn:
        channel = conn.channel()
        exchange = Exchange(namespace, type="direct", durable=True)
        exchange(channel).declare()
        for her_id in dict.fromkeys(her_ids):
            for suffix in BUS_QUEUE_SUFFIXES:
                name = f"{her_id}{suffix}"
                args = queue_arguments(her_id, namespace, suffix, limit)
                queue = Queue(
                    name, exchange=exchange, routing_key=name, durable=True, queue_arguments=args
                )
                queue(channel).declare()
                names.append(name)
    return Declared(namespace, tuple(names))
