"""The EPJ transport interface every flow uses; kombu.py and nhn.py implement it."""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from mappers.model import DialogMessage
from worker.errors import PermanentError, TransientError


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
    transport: Transport,
    item: Envelope,
    reply_queue: str,
    timeout: float,
    handoff: Handoff | None = None,
) -> Delivery | None:
    """Publish a synchronous request and wait for its correlated answer on `reply_queue`.

    The correlation id is the request's message id unless the envelope names one. Every
    request of a process shares one consumer of the reply queue (see ReplyRouter); with a
    `handoff`, an answer another process's consumer took is handed over through it.
    """
    return replies_for(transport, reply_queue, handoff).ask(item, timeout)


class HandoffUnavailable(TransientError):
    """The store that hands answers between processes cannot be reached now."""


class Handoff(Protocol):
    """Hands a synchronous answer to the process waiting for it, whichever process took it.

    Every process reading a reply queue has an inbox; a caller notes (`expect`) which inbox
    waits for its correlation id before it sends the request.
    """

    def expect(self, correlation_id: str, inbox: str, timeout: float) -> None:
        """Note that `inbox` waits for this answer for at most `timeout` seconds."""
        ...

    def forget(self, correlation_id: str) -> None:
        """The caller has its answer or gave up: an answer from now on is late."""
        ...

    def forward(self, delivery: Delivery) -> str | None:
        """Put the answer in the inbox waiting for it; that inbox, or None when nobody
        waits (a late answer). HandoffUnavailable when it cannot tell."""
        ...

    def receive(self, inbox: str, timeout: float) -> Delivery | None:
        """The next answer handed to `inbox` (None after `timeout` seconds)."""
        ...


STRAY_GRACE = 15.0  # seconds an answer nobody here waits for is left to other processes
ROUTER_RETRY = 1.0  # seconds before a lost reply consumer subscribes again
INBOX_WAIT = 1.0  # seconds one wait on the hand-off inbox blocks
DRAIN = 0.25  # seconds one drain of the reply queue blocks (how long a stop may wait)

log = logging.getLogger("timebok.sync")


class ReplyRouter:
    """One consumer of a reply queue per process, shared by every request in flight.

    Answers are matched to their callers by correlation id. An answer to a request that
    already timed out here is logged and dropped. One nobody here asked for is handed to the
    process that waits for it through the `handoff` (shared Redis), or, when nobody waits
    anywhere, logged and dropped as late. Without a handoff (or while it is down) such an
    answer is released for another process reading the same queue, until STRAY_GRACE
    seconds after it was first seen.
    """

    def __init__(self, transport: Transport, queue: str, handoff: Handoff | None = None) -> None:
        self.transport, self.queue, self.handoff = transport, queue, handoff
        self._lock = threading.Lock()
        self._waiting: dict[str, Future[Delivery]] = {}
        self._late: dict[str, float] = {}  # correlation id -> when we gave up on it
        self._strays: dict[str, float] = {}  # correlation id -> first seen
        self._thread: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._pid = 0
        self.inbox = uuid.uuid4().hex  # this router's hand-off inbox (new in a forked child)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._generation = 0
        self.stats: dict[str, int] = {
            "answered": 0,  # by our own consumer
            "handed_in": 0,  # taken by another process's consumer, handed to us
            "handed_over": 0,  # taken by ours, handed to the process waiting for it
            "late": 0,
            "stray": 0,  # released for other processes (no handoff)
        }

    def ask(self, item: Envelope, timeout: float) -> Delivery | None:
        """Publish `item` with reply-to our queue and wait for its answer (None: none came)."""
        deadline = time.monotonic() + timeout  # the caller's whole wait, setting up included
        correlation = item.correlation_id or item.headers["msgId"]
        future: Future[Delivery] = Future()
        with self._lock:
            self._waiting[correlation] = future
        self._ensure(min(5.0, timeout))
        expected = self._expect(correlation, timeout)
        try:
            self.transport.publish(replace(item, reply_to=self.queue, correlation_id=correlation))
            return future.result(max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            return None
        finally:
            with self._lock:
                if self._waiting.pop(correlation, None) is not None:
                    self._late[correlation] = time.monotonic()
                self._forget_old(time.monotonic())
            if expected and self.handoff is not None:
                with contextlib.suppress(HandoffUnavailable):
                    self.handoff.forget(correlation)

    def in_flight(self) -> int:
        """How many requests wait for their answer now."""
        with self._lock:
            return len(self._waiting)

    def _expect(self, correlation: str, timeout: float) -> bool:
        """Tell the other processes which inbox waits for this answer (before sending)."""
        if self.handoff is None:
            return False
        try:
            self.handoff.expect(correlation, self.inbox, timeout)
        except HandoffUnavailable as exc:  # our own consumer may still get the answer
            log.warning("answers cannot be handed over now: %s", exc)
            return False
        return True

    def _ensure(self, wait: float = 5.0) -> None:
        """Start the consumer thread (again in a forked child, which has none)."""
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if alive and self._pid == os.getpid():
                return
            if self._pid and self._pid != os.getpid():
                self.inbox = uuid.uuid4().hex  # the parent's inbox is the parent's
            self._pid = os.getpid()
            self._ready.clear()
            self._stop.clear()
            self._generation += 1  # a listener of an earlier start ends
            self._thread = threading.Thread(
                target=self._run, name=f"timebok-replies-{self.queue}", daemon=True
            )
            self._thread.start()
            if self.handoff is not None:
                self._listener = threading.Thread(
                    target=self._listen, name=f"timebok-handoff-{self.queue}", daemon=True
                )
                self._listener.start()
        self._ready.wait(wait)  # an answer may come fast; it waits on the queue otherwise

    def stop(self, wait: float = 3.0) -> None:
        """Stop consuming (a process about to exit): the consumer is closed cleanly, so an
        answer it was taking goes back to the queue, not down with the process."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sub = self.transport.subscribe([self.queue], self._take)
            except Exception as exc:  # the broker is away: every caller times out meanwhile
                log.warning("cannot consume %s: %s", self.queue, exc)
                self._stop.wait(ROUTER_RETRY)
                continue
            self._ready.set()
            try:
                while not self._stop.is_set():
                    sub.drain(DRAIN)
            except Exception as exc:
                log.warning("reply consumer of %s lost: %s", self.queue, exc)
                self._stop.wait(ROUTER_RETRY)
            finally:
                with contextlib.suppress(Exception):
                    sub.close()

    def _listen(self) -> None:
        """Take the answers other processes' consumers handed to our inbox."""
        assert self.handoff is not None
        pid, inbox, generation = os.getpid(), self.inbox, self._generation
        while pid == os.getpid() and generation == self._generation and not self._stop.is_set():
            try:
                delivery = self.handoff.receive(inbox, INBOX_WAIT)
            except Exception as exc:  # Redis away: answers still come through our consumer
                log.warning("hand-off inbox unavailable: %s", exc)
                time.sleep(ROUTER_RETRY)
                continue
            if delivery is None:
                continue
            correlation = delivery.correlation_id or ""
            with self._lock:
                future = self._waiting.pop(correlation, None)
                self._late.pop(correlation, None)
            if future is None:
                self._drop_late(correlation)
                continue
            self.stats["handed_in"] += 1
            future.set_result(delivery)

    def _take(self, delivery: Delivery) -> Outcome:
        correlation = delivery.correlation_id or ""
        now = time.monotonic()
        with self._lock:
            future = self._waiting.pop(correlation, None)
            late = self._late.pop(correlation, None) is not None
        if future is not None:
            self.stats["answered"] += 1
            future.set_result(delivery)
            return Outcome.ACCEPT
        if late:
            self._drop_late(correlation)
            return Outcome.ACCEPT
        if self.handoff is not None:
            try:
                inbox = self.handoff.forward(delivery)
            except HandoffUnavailable as exc:
                log.warning("cannot hand over an answer: %s", exc)
            else:
                if inbox is None:
                    self._drop_late(correlation)
                else:
                    self.stats["handed_over"] += 1
                return Outcome.ACCEPT
        return self._release_stray(correlation, now)

    def _release_stray(self, correlation: str, now: float) -> Outcome:
        """Without a handoff: leave the answer to the other processes for a while."""
        with self._lock:
            first = self._strays.setdefault(correlation, now)
        if now - first > STRAY_GRACE:
            with self._lock:
                self._strays.pop(correlation, None)
            self._drop_late(correlation)
            return Outcome.ACCEPT
        self.stats["stray"] += 1
        return Outcome.RELEASE

    def _drop_late(self, correlation: str) -> None:
        self.stats["late"] += 1
        log.warning("late answer on %s dropped (correlation id %s)", self.queue, correlation)

    def _forget_old(self, now: float) -> None:
        """Drop bookkeeping older than the grace period (called with the lock held)."""
        for book in (self._late, self._strays):
            for key in [k for k, at in book.items() if now - at > 4 * STRAY_GRACE]:
                del book[key]


_routers: weakref.WeakKeyDictionary[Transport, dict[str, ReplyRouter]] = weakref.WeakKeyDictionary()
_routers_lock = threading.Lock()


def replies_for(transport: Transport, queue: str, handoff: Handoff | None = None) -> ReplyRouter:
    """The process's shared reply consumer of `queue` on `transport`."""
    with _routers_lock:
        per_queue = _routers.setdefault(transport, {})
        router = per_queue.get(queue)
        if router is None:
            router = per_queue[queue] = ReplyRouter(transport, queue, handoff)
        return router


def stop_replies(transport: Transport) -> None:
    """Stop this process's reply consumers on `transport` (the process is about to exit);
    a later request starts them again."""
    with _routers_lock:
        routers = list(_routers.get(transport, {}).values())
    for router in routers:
        router.stop()
