"""EPJ transport on the national message bus: AMQP 1.0 (python-qpid-proton), CMS bodies.

One proton container per process runs in its own IO thread and owns the one connection
(proton objects are not thread-safe): publish, settle and subscribe from other threads are
handed to it as calls (an EventInjector wakes it). The wire format follows
Helsenorge.Messaging (see README "The national message bus").
"""

from __future__ import annotations

import logging
import queue as queue_mod
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from amqp.exceptions import ChannelError
from kombu.connection import Connection
from kombu.exceptions import KombuError
from proton import Delivery as ProtonDelivery
from proton import Message, SSLDomain
from proton.handlers import MessagingHandler
from proton.reactor import ApplicationEvent, Container, EventInjector

from worker.adapters.transports.base import (
    INVALID_FIELD_VALUE,
    UNSUPPORTED_MESSAGE,
    BusRefusal,
    Delivery,
    Envelope,
    Handler,
    Handoff,
    Outcome,
    Subscription,
    wait_for_answer,
)
from worker.errors import EpjUnavailable

log = logging.getLogger("timebok.nhn")

CMS_CONTENT_TYPE = "application/pkcs7-mime; smime-type=signed-and-enveloped-data"
# Each receiving link holds at most this many unsettled messages: enough to keep a worker's
# pool busy, few enough that a killed worker strands little (RabbitMQ returns them to the
# queue as soon as the connection drops). One more credit is granted per settlement.
# The worker's is TIMEBOK_NHN_CREDIT (same default).
LINK_CREDIT = 8
PUBLISH_TIMEOUT = 10.0  # seconds to wait for the broker's `accepted` before giving up
BACKOFF_MAX = 10.0  # seconds between reconnect attempts, at most
_SETTLE_STATES = {
    Outcome.ACCEPT: ProtonDelivery.ACCEPTED,
    Outcome.RELEASE: ProtonDelivery.RELEASED,
    Outcome.REJECT: ProtonDelivery.REJECTED,
}


class Protection(Protocol):
    """CMS for one or more own parties (see worker.adapters.transports.cms)."""

    def seal(self, xml: bytes, from_her_id: str, to_her_id: str) -> bytes:
        """Sign as `from_her_id`, encrypt for `to_her_id`; Unsendable when impossible."""
        ...

    def unseal(self, blob: bytes, from_her_id: str, to_her_id: str) -> bytes:
        """Decrypt as `to_her_id`, verify `from_her_id` signed it; BusRefusal otherwise."""
        ...

    def cpa_id(self, her_id: str) -> str | None:
        """The collaboration agreement id with a party, when one is registered."""
        ...


@dataclass(frozen=True)
class BusAddress:
    """Where the bus is: host, credentials, namespace (exchange) and RabbitMQ vhost."""

    scheme: str
    host: str
    port: int
    user: str
    password: str
    namespace: str
    vhost: str | None

    @classmethod
    def parse(cls, url: str) -> BusAddress:
        """`amqp[s]://user:pw@host:port/<namespace>[?vhost=NAME]`."""
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError(f"the nhn transport needs an amqp:// or amqps:// URL, not {url!r}")
        namespace = unquote(parts.path.strip("/"))
        if not namespace:
            raise ValueError("the nhn broker URL needs the namespace as its path")
        vhost = parse_qs(parts.query).get("vhost", [None])[0]
        return cls(
            parts.scheme,
            parts.hostname or "localhost",
            parts.port or (5671 if parts.scheme == "amqps" else 5672),
            unquote(parts.username or "guest"),
            unquote(parts.password or "guest"),
            namespace,
            vhost,
        )

    def amqp091_url(self) -> str:
        """The same broker over AMQP 0-9-1 (queue depth and topology): the same port, since
        RabbitMQ's AMQP 1.0 plugin answers on the 0-9-1 listener."""
        vhost = (self.vhost or "/").replace("/", "%2F")
        scheme = "amqps" if self.scheme == "amqps" else "amqp"
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{vhost}"


@dataclass
class _Got:
    queue: str
    message: Any
    delivery: Any
    epoch: int


class _Io(MessagingHandler):
    """The IO thread's handler: the connection, its links, and everything in flight."""

    def __init__(self, address: BusAddress, credit: int) -> None:
        super().__init__(prefetch=0, auto_accept=False, auto_settle=True)
        self.address = address
        self.credit = credit
        self.calls: deque[Callable[[], None]] = deque()
        # One wake-up in flight is enough for any number of calls: a burst of publishes or
        # settlements from other threads costs one pipe write and one IO-thread turn.
        self._wake_lock = threading.Lock()
        self._wake_sent = False
        self._reconnect_pending = False
        self.injector = EventInjector()
        self.container = Container(self)
        self.container.selectable(self.injector)
        self.conn: Any = None
        self.epoch = 0  # +1 per connection: settling a delivery of an old one is a no-op
        self.up = threading.Event()
        self.closing = False
        self.delay = 0.0
        self.last_error = "not connected yet"
        self.senders: dict[str, Any] = {}
        self.waiting: dict[str, deque[tuple[Any, Future[None]]]] = {}
        self.inflight: dict[Any, Future[None]] = {}
        self.subs: dict[str, queue_mod.Queue[_Got]] = {}
        self.receivers: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, name="timebok-nhn-io", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.container.run()
        except Exception:  # the IO thread must say why it died; callers then time out
            log.exception("nhn IO thread stopped")

    # -- from any thread ----------------------------------------------------------------

    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` in the IO thread soon."""
        with self._wake_lock:
            self.calls.append(fn)
            if self._wake_sent:
                return
            self._wake_sent = True
        self.injector.trigger(ApplicationEvent("wake"))

    def stop(self) -> None:
        """Close the connection and end the IO thread."""

        def go() -> None:
            self.closing = True
            self._fail_all(EpjUnavailable("transport closed"))
            if self.conn is not None:
                self.conn.close()
            self.injector.close()

        self.call(go)
        self.thread.join(timeout=5)

    # -- in the IO thread ---------------------------------------------------------------

    def on_wake(self, _event: Any) -> None:
        with self._wake_lock:
            self._wake_sent = False  # calls appended from now on wake the thread again
        while self.calls:
            self.calls.popleft()()

    def on_start(self, _event: Any) -> None:
        self._connect()

    def _connect(self) -> None:
        a = self.address
        ssl = SSLDomain(SSLDomain.MODE_CLIENT) if a.scheme == "amqps" else None
        self.conn = self.container.connect(
            url=f"{a.scheme}://{a.host}:{a.port}",
            user=a.user,
            password=a.password,
            allowed_mechs="PLAIN",
            ssl_domain=ssl,
            reconnect=False,  # ours: links re-made and in-flight publishes failed (below)
            heartbeat=30,
            # RabbitMQ's AMQP 1.0 plugin picks the vhost from the open frame's hostname.
            virtual_host=f"vhost:{a.vhost}" if a.vhost else None,
        )

    def on_connection_opened(self, _event: Any) -> None:
        self.delay = 0.0
        self.epoch += 1
        self.up.set()
        for name in self.subs:
            self._open_receiver(name)
        for address, items in self.waiting.items():
            if items:
                self._flush(self._sender(address), address)

    def _sender(self, address: str) -> Any:
        sender = self.senders.get(address)
        if sender is None:
            sender = self.container.create_sender(self.conn, address)
            self.senders[address] = sender
        return sender

    def send(self, address: str, message: Any, done: Future[None]) -> None:
        self.waiting.setdefault(address, deque()).append((message, done))
        if self.up.is_set():
            self._flush(self._sender(address), address)

    def on_sendable(self, event: Any) -> None:
        sender = event.sender
        self._flush(sender, sender.target.address)

    def _flush(self, sender: Any, address: str) -> None:
        items = self.waiting.get(address)
        while items and sender.credit > 0:
            message, done = items.popleft()
            self.inflight[sender.send(message)] = done

    def on_accepted(self, event: Any) -> None:
        done = self.inflight.pop(event.delivery, None)
        if done is not None:
            done.set_result(None)

    def on_rejected(self, event: Any) -> None:
        done = self.inflight.pop(event.delivery, None)
        if done is not None:
            done.set_exception(EpjUnavailable(f"broker refused the message: {event.type}"))

    on_released = on_rejected

    def subscribe(self, name: str, into: queue_mod.Queue[_Got]) -> None:
        self.subs[name] = into
        if self.up.is_set():
            self._open_receiver(name)

    def unsubscribe(self, name: str) -> None:
        self.subs.pop(name, None)
        receiver = self.receivers.pop(name, None)
        if receiver is not None:
            receiver.close()

    def _open_receiver(self, name: str) -> None:
        receiver = self.container.create_receiver(self.conn, f"/amq/queue/{name}")
        receiver.flow(self.credit)
        self.receivers[name] = receiver

    def on_message(self, event: Any) -> None:
        name = event.link.source.address.rsplit("/", 1)[-1]
        into = self.subs.get(name)
        if into is None:  # unsubscribed meanwhile: let another consumer have it
            event.delivery.update(ProtonDelivery.RELEASED)
            event.delivery.settle()
            return
        into.put(_Got(name, event.message, event.delivery, self.epoch))

    def finish(self, got: _Got, outcome: Outcome) -> None:
        if got.epoch != self.epoch or not self.up.is_set():
            return  # that connection is gone: the broker redelivers the message
        got.delivery.update(_SETTLE_STATES[outcome])
        got.delivery.settle()
        receiver = self.receivers.get(got.queue)
        if receiver is not None:
            receiver.flow(1)

    def on_link_error(self, event: Any) -> None:
        link = event.link
        self.last_error = str(link.remote_condition)
        log.warning("nhn link refused: %s", link.remote_condition)
        if link.is_sender:
            address = link.target.address
            self.senders.pop(address, None)
            for _message, done in self.waiting.pop(address, deque()):
                done.set_exception(EpjUnavailable(f"{address}: {link.remote_condition}"))
        link.close()

    def on_session_error(self, event: Any) -> None:
        # RabbitMQ ends the whole session on an unknown exchange or queue: start afresh.
        self.last_error = str(event.session.remote_condition)
        log.warning("nhn session ended: %s", self.last_error)
        self._fail_all(EpjUnavailable(self.last_error))
        event.connection.close()

    def on_connection_error(self, event: Any) -> None:
        self.last_error = str(event.connection.remote_condition)

    def on_transport_error(self, event: Any) -> None:
        self.last_error = str(event.transport.condition)

    def on_connection_closed(self, event: Any) -> None:
        self.on_disconnected(event)

    def on_disconnected(self, _event: Any) -> None:
        self.up.clear()
        self._fail_all(EpjUnavailable(f"connection to the bus lost: {self.last_error}"))
        self.senders.clear()
        self.receivers.clear()
        if self.closing or self._reconnect_pending:
            return  # proton tells a lost connection twice (closed, disconnected): one retry
        self._reconnect_pending = True
        self.delay = min(BACKOFF_MAX, max(0.2, self.delay * 2))
        jittered = random.uniform(self.delay / 2, self.delay)  # noqa: S311
        log.warning("nhn connection down (%s); reconnecting in %.1f s", self.last_error, jittered)
        self.container.schedule(jittered, self)

    def on_timer_task(self, _event: Any) -> None:
        self._reconnect_pending = False
        if not self.closing:
            self._connect()

    def _fail_all(self, exc: Exception) -> None:
        for done in self.inflight.values():
            done.set_exception(exc)
        self.inflight.clear()
        for items in self.waiting.values():
            for _message, done in items:
                done.set_exception(exc)
        self.waiting.clear()


class NhnTransport:
    """Transport on the national bus: AMQP 1.0 addresses, properties and CMS bodies."""

    name = "nhn"

    def __init__(
        self,
        url: str,
        protection: Protection,
        *,
        credit: int = LINK_CREDIT,
        handoff: Handoff | None = None,
    ) -> None:
        self.url = url
        self.handoff = handoff  # answers other processes' reply consumers took
        self._address: BusAddress | None = None
        self.protection = protection
        self.credit = credit
        self._io: _Io | None = None
        self._lock = threading.Lock()
        self._pid = 0

    @property
    def address(self) -> BusAddress:
        """The bus the URL names (EpjUnavailable for a URL that names none: `timebok status`
        and the worker say so instead of failing at start)."""
        if self._address is None:
            try:
                self._address = BusAddress.parse(self.url)
            except ValueError as exc:
                raise EpjUnavailable(f"TIMEBOK_EPJ_BROKER_URL: {exc}") from exc
        return self._address

    def _loop(self) -> _Io:
        import os

        with self._lock:
            if self._io is None or self._pid != os.getpid():
                # A forked child has no IO thread: it makes its own connection.
                self._io = _Io(self.address, self.credit)
                self._pid = os.getpid()
            return self._io

    def publish(self, item: Envelope) -> None:
        """Seal (unless told not to), send, and wait for the broker's `accepted`."""
        self.send(item.queue, self.message(item))

    def publish_later(self, item: Envelope, done: Callable[[BaseException | None], None]) -> None:
        """Seal and send without waiting: `done` runs in the IO thread with the outcome."""
        message = self.message(item)
        io = self._loop()
        answer: Future[None] = Future()
        answer.add_done_callback(lambda f: done(f.exception()))
        target = f"/exchange/{self.address.namespace}/{item.queue}"
        io.call(partial(io.send, target, message, answer))

    def send(self, queue: str, message: Any) -> None:
        """Send a prepared message to `/exchange/<namespace>/<queue>`, wait for `accepted`."""
        io = self._loop()
        done: Future[None] = Future()
        target = f"/exchange/{self.address.namespace}/{queue}"
        io.call(partial(io.send, target, message, done))
        try:
            done.result(PUBLISH_TIMEOUT)
        except FutureTimeout as exc:
            raise EpjUnavailable(f"cannot publish to {queue}: {io.last_error}") from exc

    def message(self, item: Envelope) -> Any:
        """The AMQP 1.0 message for an envelope (domain.md section 8)."""
        h = item.headers
        sender, receiver, msg_id = h.get("fromHerId", ""), h.get("toHerId", ""), h["msgId"]
        body = self.protection.seal(item.body, sender, receiver) if item.protect else item.body
        props: dict[str, str] = {
            "fromHerId": sender,
            "toHerId": receiver,
            "applicationTimeStamp": iso_now(),
        }
        cpa = self.protection.cpa_id(receiver) if item.protect else None
        if cpa:
            props["cpaId"] = cpa
        props.update(item.extra)
        message = Message(
            id=msg_id,
            address=item.queue,
            subject=h.get("type") or None,
            reply_to=item.reply_to or (f"{sender}_async" if item.protect else None),
            correlation_id=item.correlation_id or (msg_id if item.protect else None),
            content_type=CMS_CONTENT_TYPE if item.protect else None,
            durable=True,
            properties=props,
            body=body,
        )
        if item.reply_to and item.reply_to.endswith("_syncreply"):
            message.ttl = SYNC_TTL  # an unanswered lookup is worthless after the call's timeout
        message.inferred = True  # bytes as one binary data section, not an AMQP value
        return message

    def depth(self, queue: str) -> int:
        """Queue length over AMQP 0-9-1 (AMQP 1.0 has no way to ask); 0 when undeclared."""
        try:
            with Connection(self.address.amqp091_url(), connect_timeout=5) as conn:
                channel = conn.channel()
                try:
                    _name, count, _consumers = channel.queue_declare(queue, passive=True)
                finally:
                    with suppress(Exception):
                        channel.close()
                return int(count)
        except ChannelError:
            return 0  # a queue nobody declared (yet)
        except (KombuError, OSError) as exc:
            raise EpjUnavailable(f"cannot read depth of {queue}: {exc}") from exc

    def subscribe(self, queues: Sequence[str], handler: Handler) -> Subscription:
        """Receivers on `/amq/queue/<queue>` for each queue, `credit` each."""
        return NhnSubscription(self._loop(), queues, handler)

    def request(self, item: Envelope, reply_queue: str, timeout: float) -> Delivery | None:
        """Send to the clinic's `_sync` queue, reply-to our `_syncreply`, and wait."""
        return wait_for_answer(self, item, reply_queue, timeout, self.handoff)

    def open(self, delivery: Delivery) -> bytes:
        """Check the header fields, then decrypt and verify the body (BusRefusal if not)."""
        h = delivery.headers
        missing = [k for k in ("toHerId", "fromHerId", "applicationTimeStamp") if not h.get(k)]
        if not h.get("type"):
            missing.append("Label")
        if not delivery.content_type:
            missing.append("ContentType")
        if missing:
            raise BusRefusal(INVALID_FIELD_VALUE, f"missing header fields: {', '.join(missing)}")
        if not _is_cms(delivery.content_type):
            raise BusRefusal(
                UNSUPPORTED_MESSAGE,
                f"content-type {delivery.content_type!r}: only signed-and-enveloped CMS is taken",
            )
        return self.protection.unseal(delivery.body, h["fromHerId"], h["toHerId"])

    def close(self) -> None:
        """Close the connection and stop the IO thread."""
        with self._lock:
            io, self._io = self._io, None
        if io is not None:
            io.stop()


SYNC_TTL = 15.0  # seconds; Helsenorge.Messaging's synchronous default


class NhnSubscription:
    """Messages of some queues, handed to the handler by the draining thread."""

    def __init__(self, io: _Io, queues: Sequence[str], handler: Handler) -> None:
        self.io = io
        self.queues = list(queues)
        self.handler = handler
        self.inbox: queue_mod.Queue[_Got] = queue_mod.Queue()
        for name in self.queues:
            io.call(partial(io.subscribe, name, self.inbox))

    def drain(self, timeout: float) -> int:
        """Handle the messages that arrive within `timeout` seconds."""
        count, deadline = 0, time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                got = self.inbox.get(timeout=left)
            except queue_mod.Empty:
                break
            count += 1
            self._handle(got)
        return count

    def _handle(self, got: _Got) -> None:
        delivery = delivery_of(got, partial(self._settle, got))
        try:
            outcome = self.handler(delivery)
        except Exception:
            log.exception("handler failed; message released")
            outcome = Outcome.RELEASE
        if outcome is not None:
            delivery.finish(outcome)

    def _settle(self, got: _Got, outcome: Outcome) -> None:
        self.io.call(partial(self.io.finish, got, outcome))

    def close(self) -> None:
        """Detach the receivers; what is not settled goes back to the queue."""
        for name in self.queues:
            self.io.call(partial(self.io.unsubscribe, name))


def delivery_of(got: _Got, settle: Callable[[Outcome], None]) -> Delivery:
    """A received AMQP 1.0 message as the interface's Delivery (kombu header names)."""
    m = got.message
    props = {str(k): "" if v is None else str(v) for k, v in (m.properties or {}).items()}
    headers = dict(props)
    headers["msgId"] = "" if m.id is None else str(m.id)
    headers["type"] = m.subject or ""
    body = m.body
    raw = bytes(body) if isinstance(body, bytes | bytearray | memoryview) else b""
    if isinstance(body, str):
        raw = body.encode("utf-8", "surrogateescape")
    return Delivery(
        queue=got.queue,
        body=raw,
        headers=headers,
        settle=settle,
        content_type=m.content_type or None,
        reply_to=m.reply_to or None,
        correlation_id=None if m.correlation_id is None else str(m.correlation_id),
        redelivered=not m.first_acquirer,
    )


def iso_now() -> str:
    """UTC now as `yyyy-MM-ddTHH:mm:ssZ` (the library's applicationTimeStamp format)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_cms(content_type: str | None) -> bool:
    return (
        (content_type or "")
        .replace(" ", "")
        .lower()
        .startswith("application/pkcs7-mime;smime-type=signed-and-enveloped-data")
    )
