"""The EPJ transport interface every flow uses; kombu.py and nhn.py implement it."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from mappers.model import DialogMessage
from worker.errors import PermanentError


@dataclass(frozen=True)
class Envelope:
    """One document to put on a queue, with the transport headers of the contract.

    `headers` are the kombu contract headers (fromHerId, toHerId, msgId, type, ...); the
    nhn transport derives its AMQP 1.0 properties from them. `reply_to` and
    `correlation_id` are set for synchronous requests and their answers; `extra` carries
    further application properties (the error-queue fields); `protect` False sends the
    body as it is (an error message has an empty body and is never encrypted).
    """

    queue: str
    body: bytes
    headers: Mapping[str, str]
    reply_to: str | None = None
    correlation_id: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    protect: bool = True


class Outcome(enum.Enum):
    """How a received message is settled."""

    ACCEPT = "accepted"  # processed and committed: remove it from the queue
    RELEASE = "released"  # a passing failure: put it back, it is delivered again
    REJECT = "rejected"  # can never be processed: dead-letter it (nhn: into `_dl`)


@dataclass
class Delivery:
    """One message taken off a queue; `settle` it exactly once, from any thread.

    `headers` use the kombu contract names on both transports (fromHerId, toHerId, msgId,
    type); nhn adds its application properties as they came (applicationTimeStamp, cpaId,
    the error fields) and `content_type`, `reply_to`, `correlation_id` from its properties.
    """

    queue: str
    body: bytes
    headers: dict[str, str]
    settle: Callable[[Outcome], None]
    content_type: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    redelivered: bool = False
    _settled: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def finish(self, outcome: Outcome) -> None:
        """Settle once; a second call is ignored (a late callback after a timeout)."""
        with self._lock:
            if self._settled:
                return
            self._settled = True
        self.settle(outcome)


Handler = Callable[[Delivery], "Outcome | None"]
"""Called for each delivery; returns its outcome, or None when it calls `finish` later."""


class Subscription(Protocol):
    """Messages from a set of queues, handed to a handler in the thread that drains."""

    def drain(self, timeout: float) -> int:
        """Hand waiting messages to the handler for at most `timeout` seconds; how many."""
        ...

    def close(self) -> None:
        """Stop receiving; unsettled messages go back to their queues."""
        ...


class Transport(Protocol):
    """Publishes to and consumes from EPJ queues."""

    name: str

    def publish(self, item: Envelope) -> None:
        """Put one document on its queue; raise EpjUnavailable when the broker is down,
        Unsendable when it can never be sent (e.g. no certificates for the receiver)."""
        ...

    def depth(self, queue: str) -> int:
        """How many messages wait on a queue."""
        ...

    def subscribe(self, queues: Sequence[str], handler: Handler) -> Subscription:
        """Start receiving from `queues`; nothing is handled until `drain` is called."""
        ...

    def request(self, item: Envelope, reply_queue: str, timeout: float) -> Delivery | None:
        """Send a synchronous request and wait for the answer that correlates with it
        (on `reply_queue`); None when none came within `timeout` seconds. The answer is
        already settled."""
        ...

    def open(self, delivery: Delivery) -> bytes:
        """The XML document a delivery carries (nhn: decrypted and verified); raise
        BusRefusal for a message that must be refused on the transport level."""
        ...

    def close(self) -> None:
        """Drop connections (a fresh one is made on next use)."""
        ...


@runtime_checkable
class PublishesLater(Protocol):
    """A transport that can hand a message over without waiting for the broker's answer."""

    def publish_later(self, item: Envelope, done: Callable[[BaseException | None], None]) -> None:
        """Send `item`; `done(None)` once the broker accepted it, `done(error)` if not.

        Raises Unsendable at once (nothing sent); `done` runs in the transport's IO thread
        and must not block.
        """
        ...


class Unsendable(PermanentError):
    """A message that must never be sent as it is (nothing was sent)."""


class BusRefusal(PermanentError):
    """A received message refused on the transport level, with the library's errorCondition."""

    def __init__(self, condition: str, description: str) -> None:
        super().__init__(f"{condition}: {description}")
        self.condition = condition
        self.description = description


# errorCondition values of Helsenorge.Messaging (MessageListener / AmqpCore).
INVALID_CERTIFICATE = "transport:invalid-certificate"
NOT_WELL_FORMED_XML = "transport:not-well-formed-xml"
INVALID_FIELD_VALUE = "transport:invalid-field-value"
UNSUPPORTED_MESSAGE = "transport:unsupported-message"
SPOOFING = "abuse:spoofing-attack"
INTERNAL_ERROR = "transport:internal-error"


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


def wait_for_answer(
    transport: Transport, item: Envelope, reply_queue: str, timeout: float
) -> Delivery | None:
    """Publish a synchronous request and wait on `reply_queue` for its correlated answer.

    The correlation id is the request's message id unless the envelope names one. An
    answer to someone else's request is released (another process may wait for it; on the
    bus the delivery limit ends a stray answer in `_dl`).
    """
    correlation = item.correlation_id or item.headers["msgId"]
    answer: list[Delivery] = []

    def take(delivery: Delivery) -> Outcome:
        if answer or delivery.correlation_id != correlation:
            return Outcome.RELEASE
        answer.append(delivery)
        return Outcome.ACCEPT

    sub = transport.subscribe([reply_queue], take)
    try:
        request = Envelope(
            item.queue,
            item.body,
            item.headers,
            reply_to=reply_queue,
            correlation_id=correlation,
            extra=item.extra,
            protect=item.protect,
        )
        transport.publish(request)
        deadline = time.monotonic() + timeout
        while not answer and (left := deadline - time.monotonic()) > 0:
            sub.drain(min(left, 0.5))
    finally:
        sub.close()
    return answer[0] if answer else None
