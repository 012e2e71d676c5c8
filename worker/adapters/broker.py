"""kombu's Redis transport, adapted: the Celery broker survives a restart, publishing is cheap."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from kombu.entity import Exchange, Queue
from kombu.transport import redis
from redis.exceptions import ConnectionError as BrokerConnectionError

log = logging.getLogger("timebok.broker")

TRANSPORT = "worker.adapters.broker:Transport"
PUBLISH_TRANSPORT = "worker.adapters.broker:PublishTransport"


class QoS(redis.QoS):
    """Redis ack emulation that a lost connection cannot turn into a worker crash."""

    def ack(self, delivery_tag: str) -> None:
        """Ack; on a channel closed with its connection, raise a connection error."""
        self._usable()
        super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Reject; on a channel closed with its connection, raise a connection error."""
        self._usable()
        super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]

    def _usable(self) -> None:
        # A task finishing after a reconnect acks on its old, closed channel. kombu then fails
        # with AttributeError, which Celery does not expect and dies of; a connection error
        # it logs ("failed to acknowledge") and the message comes back after the visibility
        # timeout, to be deduplicated.
        connection = self.channel.connection
        if connection is None or connection.client is None:
            raise BrokerConnectionError("channel closed with its broker connection")

    def restore_unacked(self, client: Any = None) -> None:
        """Put this channel's unacked messages back; with the broker gone, leave them.

        On a lost connection kombu closes the channel and gives its unacked messages back
        over that same dead connection; the attempt can fail with an error that is not a
        connection error (AttributeError in `_connparams`), which Celery treats as
        unrecoverable: the worker shut down (exit code 0) on every other Redis restart. The
        messages are safe in Redis' unacked hash and the visibility-timeout sweep requeues them.
        """
        try:
            super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except Exception as exc:  # any failure here: the sweep brings the messages back
            log.warning("unacked messages left for the visibility timeout: %r", exc)
            self._delivered.clear()


class Channel(redis.Channel):
    """kombu's Redis channel with the QoS above."""

    QoS = QoS


class Transport(redis.Transport):
    """kombu's Redis transport with the channel above (selected by `broker_transport`)."""

    Channel = Channel


def redelivery_options(visibility_timeout: int) -> dict[str, int]:
    """kombu Redis transport options: unacked messages come back after the visibility timeout.

    kombu looks for the unacked messages of dead consumers only every interval x throttle
    seconds (10 x 10 by default): with a short visibility timeout a killed worker's messages
    would wait ~100 s. Sweep every quarter timeout (1-10 s), on every tick, and let a mutex
    left by a sweeper killed mid-sweep expire with the timeout instead of after 5 minutes.
    """
    return {
        "visibility_timeout": visibility_timeout,
        "unacked_restore_interval": max(1, min(10, visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": min(300, visibility_timeout),
    }


def is_amqp(url: str) -> bool:
    """Whether a broker URL is RabbitMQ (AMQP 0-9-1)."""
    return url.startswith(("amqp://", "amqps://", "pyamqp://"))


def task_queues(names: tuple[str, ...], delivery_limit: int, dead_letters: str) -> list[Queue]:
    """The Celery queues as RabbitMQ declares them: quorum, with a delivery limit.

    Quorum queues are replicated and confirm a publish once a majority has it on disk. A
    task delivered `delivery_limit` + 1 times without an ack (a pool process it kills each
    time, a retry that cannot be published) is dead-lettered into `dead_letters`, at least
    once: RabbitMQ keeps it until that queue has it. Topic exchanges, so that Celery's
    native delayed delivery holds retries with a countdown in the broker, not the worker.
    """
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letters,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",  # what at-least-once dead-lettering requires
    }
    # kombu is unannotated, hence the ignores on its constructors.
    return [
        Queue(  # type: ignore[no-untyped-call]
            name,
            Exchange(name, type="topic"),  # type: ignore[no-untyped-call]
            routing_key=name,
            queue_arguments=arguments,
        )
        for name in names
    ]


def dead_letter_queue(name: str) -> Queue:
    """The queue dead-lettered tasks go to (quorum, no limit: nothing leaves it unread)."""
    arguments = {"x-queue-type": "quorum"}
    return Queue(name, durable=True, queue_arguments=arguments)  # type: ignore[no-untyped-call]


def transport_for(url: str) -> str | None:
    """The transport for a broker URL: ours for redis://, kombu's choice otherwise."""
    return TRANSPORT if url.startswith("redis://") else None


class PublishChannel(redis.Channel):
    """A Redis channel that publishes through one long-lived client.

    kombu builds a new redis-py client (not a connection: those are pooled) for every
    message it publishes; that setup cost more CPU than the LPUSH itself. One client, over
    the same pool, is thread-safe and gives the same behaviour.
    """

    @cached_property
    def _one_client(self) -> Any:
        return self._create_client()  # type: ignore[no-untyped-call]

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """The given client, else the channel's one client."""
        yield client or self._one_client


class PublishTransport(redis.Transport):
    """kombu's Redis transport with the channel above (for the EPJ publisher)."""

    Channel = PublishChannel


def publish_transport_for(url: str) -> str | None:
    """The transport the EPJ publisher uses: ours for redis://, kombu's choice otherwise."""
    return PUBLISH_TRANSPORT if url.startswith("redis://") else None
