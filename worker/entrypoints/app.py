"""Celery app factory, the thin tasks, and the inbound EPJ consumer step."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from celery import Celery, Task, bootsteps
from celery.exceptions import Reject
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutdown
from celery.worker.request import Request
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Consumer
from kombu.mixins import ConsumerMixin

from worker.adapters.broker import (
    dead_letter_queue,
    is_amqp,
    redelivery_options,
    task_queues,
    transport_for,
)
from worker.adapters.store.marks import Marks
from worker.bootstrap import Deps, bootstrap
from worker.constants import (
    DEAD_LETTER_QUEUE,
    MAINTENANCE_QUEUE,
    RELAY_TASK,
    REQUESTS_QUEUE,
    SUBMIT_TASK,
    TIMEOUTS_TASK,
)
from worker.errors import TransientError
from worker.observability import scope, tag
from worker.settings import Settings

log = logging.getLogger("timebok.app")
HIDDEN = "[hidden]"  # what task events and log lines show instead of a booking request

_deps: Deps | None = None
_settings: Settings | None = None


def deps() -> Deps:
    """This process's dependencies, built on first use (after any fork)."""
    global _deps
    if _deps is None:
        _deps = bootstrap(_settings)
        if (
            _deps.store.is_postgres
        ):  # see worker.adapters.store.marks; SQLite marks each row at once
            from worker.flows.relay import write_marks

            delay = _deps.settings.outbox_mark_delay
            _deps.marks = Marks(partial(write_marks, _deps.store), delay=delay)
    return _deps


@worker_process_init.connect
def _reset_after_fork(**_kwargs: Any) -> None:
    # A forked child must not reuse the parent's database or broker connections.
    global _deps
    if _deps is not None:
        _deps.store.dispose(close=False)
    _deps = None


@worker_process_shutdown.connect
@worker_shutdown.connect
def _write_marks_left(**_kwargs: Any) -> None:
    # Marks still waiting would otherwise cost a second publish once their lease ends.
    if _deps is not None and _deps.marks is not None:
        _deps.marks.close()


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from settings (no connection is opened here)."""
    global _settings
    cfg = settings or Settings()
    _settings = cfg
    app = Celery("timebok", broker=cfg.broker_url, set_as_current=True)
    app.conf.update(_celery_config(cfg))
    _register_tasks(app, cfg)
    app.steps["consumer"].add(InboundConsumer)
    if is_amqp(cfg.broker_url):
        app.steps["consumer"].add(DeadLetterConsumer)
    return app


def _celery_config(cfg: Settings) -> dict[str, Any]:
    return {
        # Ack only after the handler ran: a crash mid-task redelivers instead of losing it.
        "task_acks_late": True,
        # A child killed by the OOM killer or kill -9 requeues its task instead of acking it.
        "task_reject_on_worker_lost": True,
        # With late ack, each child holds few unacked messages: a dead worker strands at most
        # concurrency x 4 messages until the visibility timeout; 4 keeps the pipe full.
        "worker_prefetch_multiplier": 4,
        **_broker_config(cfg),
        "broker_connection_retry_on_startup": True,
        # On a lost broker connection, tasks already running finish (their ack fails and the
        # broker redelivers them, to be deduplicated by request_id) instead of being killed
        # mid-write; chosen here because Celery 6 changes the default to cancelling them.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_default_queue": REQUESTS_QUEUE,
        "task_routes": {
            SUBMIT_TASK: {"queue": REQUESTS_QUEUE},
            RELAY_TASK: {"queue": MAINTENANCE_QUEUE},
            TIMEOUTS_TASK: {"queue": MAINTENANCE_QUEUE},
        },
        # Flower and Celery exporters read task events.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "relay-outbox": {"task": RELAY_TASK, "schedule": cfg.relay_interval},
            "check-timeouts": {"task": TIMEOUTS_TASK, "schedule": cfg.timeout_check_interval},
        },
        # Beat-driven housekeeping is pointless once stale: never let it pile up.
        "task_annotations": {
            RELAY_TASK: {"expires": cfg.relay_interval * 5},
            TIMEOUTS_TASK: {"expires": cfg.timeout_check_interval * 5},
        },
    }


def _broker_config(cfg: Settings) -> dict[str, Any]:
    if is_amqp(cfg.broker_url):
        return {
            "task_queues": task_queues(
                (REQUESTS_QUEUE, MAINTENANCE_QUEUE), cfg.delivery_limit, DEAD_LETTER_QUEUE
            ),
            # Every publish (intake, retries, beat) waits for the broker's confirm: a task
            # the broker did not take raises at the sender instead of vanishing.
            "broker_transport_options": {"confirm_publish": True},
        }
    return {
        # Redis redelivers unacked messages after this; it must exceed the longest retry delay.
        "broker_transport_options": redelivery_options(cfg.visibility_timeout),
        # kombu's Redis transport, minus a crash on a broker restart (see adapters.broker).
        "broker_transport": transport_for(cfg.broker_url),
    }


def backoff(retries: int, cap: float) -> float:
    """Exponential backoff with full jitter, in seconds."""
    return float(random.uniform(0, min(cap, 2.0 ** (retries + 1))))  # noqa: S311


class PrivateRequest(Request):
    """A task request whose arguments never leave the process as text.

    A booking request holds fødselsnumre and free text. Celery would put the repr of the
    task arguments into the task-received event (what Flower shows) and into log lines;
    with this request class they get a placeholder instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr = self._kwargsrepr = HIDDEN


def send_booking(app: Celery, payload: object, producer: Any = None) -> None:
    """Queue one booking request the way a portal should: its repr never in task events."""
    app.send_task(
        SUBMIT_TASK,
        args=[payload],
        queue=REQUESTS_QUEUE,
        producer=producer,
        argsrepr=HIDDEN,
        kwargsrepr=HIDDEN,
    )


def _register_tasks(app: Celery, cfg: Settings) -> None:
    @app.task(name=SUBMIT_TASK, bind=True, max_retries=cfg.task_max_retries, Request=PrivateRequest)
    def submit_booking(self: Task, request: object) -> dict[str, Any]:
        """Take one booking request off booking.requests."""
        from worker.flows.outbound import submit

        tag(booking_id=request.get("request_id") if isinstance(request, dict) else None)
        try:
            result = submit(deps(), request)
        except TransientError as exc:
            _retry_or_dead_letter(self, exc, request, cfg)
            raise  # unreachable: retry raises
        return {"booking_id": result.booking_id, "state": result.state}

    @app.task(name=RELAY_TASK)
    def relay_outbox() -> int:
        """Publish committed-but-unsent outbox rows."""
        from worker.flows.relay import relay

        try:
            return relay(deps())
        except TransientError as exc:
            log.warning("relay skipped: %s", exc)
            return 0

    @app.task(name=TIMEOUTS_TASK)
    def check_timeouts() -> int:
        """Resend unanswered messages (same MsgId) and give up on overdue bookings."""
        from worker.flows.timeouts import check

        try:
            return check(deps())
        except TransientError as exc:
            log.warning("timeout check skipped: %s", exc)
            return 0


def _retry_or_dead_letter(task: Task, exc: TransientError, request: object, cfg: Settings) -> None:
    retries = int(task.request.retries)
    if retries < cfg.task_max_retries:
        log.warning("transient error, retrying", extra={"attempt": retries + 1})
        try:
            # On RabbitMQ at least a second: a countdown goes to the broker's delayed
            # delivery, which counts in whole seconds and refuses less than one.
            floor = 1.0 if is_amqp(cfg.broker_url) else 0.0
            delay = max(floor, backoff(retries, cfg.retry_backoff_max))
            raise task.retry(exc=exc, countdown=delay)
        except Reject as refused:
            # Celery turns a retry it could not publish (broker away, publish refused) into
            # a reject WITHOUT requeue, and the broker drops the task. Hand it back instead:
            # it comes again, and on RabbitMQ the delivery limit dead-letters it into
            # timebok.dlq (timebok dlq) should that repeat.
            log.warning("retry not published, task requeued: %s", str(refused.reason)[:300])
            raise Reject(refused.reason, requeue=True) from None
    from worker.adapters.store.db import add_dead_letter

    with deps().store.transaction() as s:
        add_dead_letter(
            s,
            kind="task",
            reason=f"gave up after {retries} retries: {exc}",
            source_queue=REQUESTS_QUEUE,
            payload=json.dumps(request, default=str).encode(),
            attempts=retries + 1,
        )
    raise exc


class InboundConsumer(bootsteps.ConsumerStep):
    """Consumes raw XML from `<own HER-id>_async`, handled in the pool, acked after commit.

    The main process only takes messages off the queue; pool processes store them in
    parallel (as several workers would), and a message is acked once the handler's
    transaction has committed, or requeued when the store or transport was unavailable or
    the pool process died. Copies of one message (same MsgId) are handled one after another,
    so a redelivery always finds the first copy's receipt.
    """

    def start(self, c: Any) -> None:
        """Remember the worker's pool, then start consuming."""
        self.pool = c.pool
        self.busy: dict[object, list[Message]] = {}  # in flight: key -> copies waiting
        self.epj: EpjBrokerConsumer | BusConsumer | None = None
        settings = deps().settings
        if settings.epj_transport == "nhn":
            from worker.adapters.crypto import load_own_keys

            load_own_keys(settings)  # bad keys of our own stop the worker here, saying which
            # The national bus: our async and error queues over AMQP 1.0, in a thread.
            self.epj = BusConsumer(settings.nhn_handlers, c.pool, getattr(c, "hub", None))
            self.epj.start()
            return
        if settings.epj_url != settings.broker_url:
            # EPJ traffic lives on another broker (e.g. RabbitMQ): consume it there.
            self.epj = EpjBrokerConsumer(settings.epj_url, settings.inbound_queue)
            self.epj.start()
            return
        super().start(c)

    def stop(self, c: Any) -> None:
        """Stop the separate EPJ consumer too."""
        if self.epj is not None:
            self.epj.stop()
        super().stop(c)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        """One kombu consumer on our own async queue."""
        queue = Queue(deps().settings.inbound_queue, durable=True)
        return [Consumer(channel, queues=[queue], on_message=self.on_message, prefetch_count=8)]

    def on_message(self, message: Message) -> None:
        """Hand the raw bytes to a pool process, unless a copy of it is in flight already."""
        key = _copy_key(message)
        if key in self.busy:
            self.busy[key].append(message)
            return
        self.busy[key] = []
        self._dispatch(key, message)

    def _dispatch(self, key: object, message: Message) -> None:
        try:
            self.pool.apply_async(
                handle_inbound,
                args=(_raw_body(message), dict(message.headers or {})),
                callback=partial(self._settle, key, message),
                error_callback=partial(self._lost, key, message),
            )
        except Exception as exc:  # the pool is restarting (after a reconnect): not now
            log.warning("inbound message requeued, pool not ready: %r", exc)
            self._lost(key, message, exc)

    def _settle(self, key: object, message: Message, stored: bool) -> None:
        try:
            _settle_message(message, ack=stored)
        finally:
            self._next(key)

    def _lost(self, key: object, message: Message, einfo: Any) -> None:
        # The pool process died (or the handler failed outside its own error handling): the
        # message goes back to the queue; a redelivery is deduplicated by MsgId.
        log.warning("inbound message requeued: %s", getattr(einfo, "exception", einfo))
        try:
            _settle_message(message, ack=False)
        finally:
            self._next(key)

    def _next(self, key: object) -> None:
        waiting = self.busy.get(key)
        if waiting:
            self._dispatch(key, waiting.pop(0))
        else:
            self.busy.pop(key, None)


class DeadLetterConsumer(bootsteps.ConsumerStep):
    """Moves tasks RabbitMQ dead-lettered into timebok.dlq to the dead-letter store.

    There `timebok dlq list / show / replay` see them like any other dead letter. Each is
    stored by a pool process and acked after the commit, or requeued (after a pause) when
    the store is unavailable.
    """

    def start(self, c: Any) -> None:
        """Remember the worker's pool, then start consuming."""
        self.pool = c.pool
        super().start(c)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        """One consumer on timebok.dlq (declared here: it must exist before a dead letter)."""
        queue = dead_letter_queue(DEAD_LETTER_QUEUE)
        return [Consumer(channel, queues=[queue], on_message=self.on_message, prefetch_count=4)]

    def on_message(self, message: Message) -> None:
        """Hand the dead task to a pool process; ack once stored."""
        headers = dict(message.headers or {})
        try:
            args = message.decode()[0]
        except Exception:  # not a Celery task body: keep what there is
            args = [_raw_body(message).decode("utf-8", "replace")]
        try:
            self.pool.apply_async(
                store_dead_task,
                args=(str(headers.get("task") or ""), list(args), _death(headers)),
                callback=lambda stored: _settle_message(message, ack=stored),
                error_callback=lambda _einfo: _settle_message(message, ack=False),
            )
        except Exception as exc:  # the pool is restarting (after a reconnect): not now
            log.warning("dead-lettered task requeued, pool not ready: %r", exc)
            _settle_message(message, ack=False)


def _death(headers: dict[str, Any]) -> dict[str, str]:
    """Why and where from RabbitMQ dead-lettered a message (its first x-death entry)."""
    deaths = headers.get("x-death") or [{}]
    first = deaths[0] if isinstance(deaths, list) and deaths else {}
    return {
        "reason": str(headers.get("x-first-death-reason") or first.get("reason") or "-"),
        "queue": str(headers.get("x-first-death-queue") or first.get("queue") or "-"),
    }


def store_dead_task(name: str, args: list[Any], death: dict[str, str]) -> bool:
    """In a pool process: keep one dead-lettered task; True to ack it, False to requeue it."""
    from worker.flows.dlq import record_dead_task

    try:
        record_dead_task(deps(), name, args, death)
    except TransientError:
        log.warning("dead-lettered task requeued: store unavailable")
        time.sleep(1.0)  # timebok.dlq has no delivery limit: do not spin while the store is down
        return False
    return True


class EpjBrokerConsumer(ConsumerMixin):
    """Our async queue on a separate EPJ broker, consumed in a thread of the worker.

    kombu's ConsumerMixin reconnects on its own; each message is stored in this thread and
    acked after the commit, exactly as on the Celery broker.
    """

    def __init__(self, url: str, queue: str) -> None:
        self.connection = Connection(url, heartbeat=30)
        self.queue = Queue(queue, durable=True)
        self.thread: threading.Thread | None = None

    def get_consumers(self, consumer: Any, channel: Any) -> list[Consumer]:
        """One consumer on our async queue, a few messages in flight."""
        return [consumer(queues=[self.queue], on_message=self.on_message, prefetch_count=8)]

    def on_message(self, message: Message) -> None:
        """Store, then ack; requeue when the store or transport is down."""
        if handle_inbound(_raw_body(message), dict(message.headers or {})):
            message.ack()
        else:
            message.requeue()

    def start(self) -> None:
        """Consume in a daemon thread."""
        self.thread = threading.Thread(target=self.run, name="timebok-epj", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Ask the loop to stop and wait briefly for it."""
        self.should_stop = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.connection.release()


class BusConsumer:
    """Our `_async` and `_error` queues on the national bus, handed to threads or the pool.

    By default (TIMEBOK_NHN_HANDLERS=4) four threads of the main process open and store each
    message: one IO thread receives and publishes for all of them, which costs the least CPU
    per message. With TIMEBOK_NHN_HANDLERS=0 the pool processes do it, as they do kombu's
    inbound: decrypting, parsing and the database work then use every core, not the one the
    main process's interpreter lock allows, at the price of the pool's hand-over and an IO
    thread per pool process; the main process receives, passes each message to the event
    loop and settles it when the pool's answer comes (a worker without a pool event loop
    uses 4 threads).

    Copies of one message (same MsgId) are handled one after another, as on kombu. Each
    message is settled `accepted` after its transaction committed (or after a refused
    one's dead letter was stored), `released` when the store or bus was unavailable or the
    pool process died, `rejected` only for what can never be processed.
    """

    def __init__(self, handlers: int = 4, pool: Any = None, hub: Any = None) -> None:
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.busy: dict[str, list[Any]] = {}  # MsgId in hand -> copies waiting behind it
        in_pool = handlers == 0 and pool is not None and hub is not None
        self.pool: Any = pool if in_pool else None
        self.hub: Any = hub if in_pool else None
        self.threads = (
            None if in_pool else ThreadPoolExecutor(handlers or 4, thread_name_prefix="timebok-bus")
        )
        # Messages for the event loop, and the pipe that wakes it (one byte per batch).
        self.handed: list[tuple[str, Any]] = []
        self.wake_pending = False
        self.wake_r, self.wake_w = os.pipe() if in_pool else (-1, -1)

    def start(self) -> None:
        """Consume in a daemon thread (the event loop hands messages to the pool)."""
        if self.hub is not None:
            os.set_blocking(self.wake_r, False)
            self.hub.add_reader(self.wake_r, self._on_wake)
        self.thread = threading.Thread(target=self.run, name="timebok-bus", daemon=True)
        self.thread.start()

    def run(self) -> None:
        """Drain until stopped; the transport reconnects on its own."""
        d = deps()
        own = d.settings.own_her_id
        sub = d.epj.subscribe([f"{own}_async", f"{own}_error"], self.on_delivery)
        try:
            while not self.stopping.is_set():
                sub.drain(0.5)
        finally:
            sub.close()

    def on_delivery(self, delivery: Any) -> None:
        """Hand it on, unless a copy of it is in hand already."""
        key = f"{delivery.queue}:{delivery.headers.get('msgId') or id(delivery)}"
        with self.lock:
            if key in self.busy:
                self.busy[key].append(delivery)
                return
            self.busy[key] = []
        if self.threads is not None:
            self.threads.submit(self._handle, key, delivery)
            return
        with self.lock:
            self.handed.append((key, delivery))
            if self.wake_pending:
                return
            self.wake_pending = True
        os.write(self.wake_w, b"!")

    # -- in the pool (the event loop's thread) ----------------------------------------------

    def _on_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_r, 4096)
        with self.lock:
            self.wake_pending = False
            handed, self.handed = self.handed, []
        for key, delivery in handed:
            self._apply(key, delivery)

    def _apply(self, key: str, delivery: Any) -> None:
        try:
            self.pool.apply_async(
                handle_bus,
                args=(_wire(delivery),),
                callback=partial(self._done, key, delivery),
                error_callback=partial(self._lost, key, delivery),
            )
        except Exception as exc:  # the pool is restarting (after a reconnect): not now
            log.warning("bus message released, pool not ready: %r", exc)
            self._done(key, delivery, "released")

    def _done(self, key: str, delivery: Any, outcome: str) -> None:
        from worker.adapters.transports.base import Outcome

        try:
            delivery.finish(Outcome(outcome))
        finally:
            with self.lock:
                waiting = self.busy.get(key)
                following = waiting.pop(0) if waiting else None
                if following is None:
                    self.busy.pop(key, None)
            if following is not None:
                self._apply(key, following)

    def _lost(self, key: str, delivery: Any, einfo: Any) -> None:
        # The pool process died (or failed outside the handler's own error handling): the
        # message goes back to the queue; a redelivery is deduplicated by MsgId.
        log.warning("bus message released: %s", getattr(einfo, "exception", einfo))
        self._done(key, delivery, "released")

    # -- in threads of the main process -----------------------------------------------------

    def _handle(self, key: str, delivery: Any) -> None:
        from worker.adapters.transports.base import Outcome
        from worker.flows.bus import take

        while delivery is not None:
            try:
                with scope(msg_id=str(delivery.headers.get("msgId") or "")):
                    outcome = take(deps(), delivery)
            except Exception:  # a bug must not leave the message in hand forever
                log.exception("bus message released")
                outcome = Outcome.RELEASE
            delivery.finish(outcome)
            with self.lock:
                waiting = self.busy.get(key)
                delivery = waiting.pop(0) if waiting else None
                if delivery is None:
                    self.busy.pop(key, None)

    def stop(self) -> None:
        """Ask the loop to stop and wait briefly for it and the handlers."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        if self.threads is not None:
            self.threads.shutdown(wait=True, cancel_futures=False)
        if self.hub is not None:
            with contextlib.suppress(Exception):
                self.hub.remove_reader(self.wake_r)
            for fd in (self.wake_r, self.wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)


def _wire(delivery: Any) -> dict[str, Any]:
    """What a pool process needs of a bus delivery (plain values: it is pickled)."""
    return {
        "queue": delivery.queue,
        "body": delivery.body,
        "headers": dict(delivery.headers),
        "content_type": delivery.content_type,
        "reply_to": delivery.reply_to,
        "correlation_id": delivery.correlation_id,
        "redelivered": delivery.redelivered,
    }


def handle_bus(wire: dict[str, Any]) -> str:
    """In a pool process: open and store one bus message; its settle outcome's value."""
    from worker.adapters.transports.base import Delivery, Outcome
    from worker.flows.bus import take

    delivery = Delivery(settle=lambda _outcome: None, **wire)
    try:
        with scope(msg_id=str(delivery.headers.get("msgId") or "")):
            return take(deps(), delivery).value
    except Exception:  # a bug must not leave the message in hand forever
        log.exception("bus message released")
        return Outcome.RELEASE.value


def _settle_message(message: Message, *, ack: bool) -> None:
    """Ack, or requeue; on a channel whose connection is gone, leave it to the broker.

    The broker puts every unacked message of a closed connection back on its queue (Redis:
    after the visibility timeout), so there is nothing left to do, and nothing to fail on.
    """
    try:
        message.ack() if ack else message.requeue()
    except Exception as exc:
        log.warning("message left to the broker to redeliver: %r", exc)


def _copy_key(message: Message) -> object:
    """The transport MsgId, or the bytes themselves when a sender left it out."""
    return (message.headers or {}).get("msgId") or hash(_raw_body(message))


def handle_inbound(body: bytes, headers: dict[str, Any]) -> bool:
    """In a pool process: store one inbound message; True to ack it, False to requeue it."""
    from worker.flows.inbound import receive

    try:
        with scope(msg_id=str(headers.get("msgId") or "")):
            receive(deps(), body, headers)
    except TransientError:
        log.warning("inbound message requeued: store or transport unavailable")
        return False
    return True


def _raw_body(message: Message) -> bytes:
    body = message.body
    return body.encode("utf-8", "surrogateescape") if isinstance(body, str) else bytes(body)
