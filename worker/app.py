"""Celery app factory, the thin tasks, and the inbound EPJ consumer step."""

from __future__ import annotations

import json
import logging
import random
from typing import Any

from celery import Celery, Task, bootsteps
from celery.signals import worker_process_init
from kombu.entity import Queue
from kombu.message import Message
from kombu.messaging import Consumer

from worker.bootstrap import Deps, bootstrap
from worker.constants import (
    MAINTENANCE_QUEUE,
    RELAY_TASK,
    REQUESTS_QUEUE,
    SUBMIT_TASK,
    TIMEOUTS_TASK,
)
from worker.errors import TransientError
from worker.settings import Settings

log = logging.getLogger("timebok.app")

_deps: Deps | None = None
_settings: Settings | None = None


def deps() -> Deps:
    """This process's dependencies, built on first use (after any fork)."""
    global _deps
    if _deps is None:
        _deps = bootstrap(_settings)
    return _deps


@worker_process_init.connect
def _reset_after_fork(**_kwargs: Any) -> None:
    # A forked child must not reuse the parent's database or broker connections.
    global _deps
    if _deps is not None:
        _deps.store.engine.dispose(close=False)
    _deps = None


def create_app(settings: Settings | None = None) -> Celery:
    """Build the Celery app from settings (no connection is opened here)."""
    global _settings
    cfg = settings or Settings()
    _settings = cfg
    app = Celery("timebok", broker=cfg.broker_url, set_as_current=True)
    app.conf.update(_celery_config(cfg))
    _register_tasks(app, cfg)
    app.steps["consumer"].add(InboundConsumer)
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
        # Redis redelivers unacked messages after this; it must exceed the longest retry delay.
        "broker_transport_options": {"visibility_timeout": cfg.visibility_timeout},
        "broker_connection_retry_on_startup": True,
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


def backoff(retries: int, cap: float) -> float:
    """Exponential backoff with full jitter, in seconds."""
    return float(random.uniform(0, min(cap, 2.0 ** (retries + 1))))  # noqa: S311


def _register_tasks(app: Celery, cfg: Settings) -> None:
    @app.task(name=SUBMIT_TASK, bind=True, max_retries=cfg.task_max_retries)
    def submit_booking(self: Task, request: object) -> dict[str, Any]:
        """Take one booking request off booking.requests."""
        from worker.outbound import submit

        try:
            result = submit(deps(), request)
        except TransientError as exc:
            _retry_or_dead_letter(self, exc, request, cfg)
            raise  # unreachable: retry raises
        return {"booking_id": result.booking_id, "state": result.state}

    @app.task(name=RELAY_TASK)
    def relay_outbox() -> int:
        """Publish committed-but-unsent outbox rows."""
        from worker.relay import relay

        try:
            return relay(deps())
        except TransientError as exc:
            log.warning("relay skipped: %s", exc)
            return 0

    @app.task(name=TIMEOUTS_TASK)
    def check_timeouts() -> int:
        """Resend unanswered messages (same MsgId) and give up on overdue bookings."""
        from worker.timeouts import check

        try:
            return check(deps())
        except TransientError as exc:
            log.warning("timeout check skipped: %s", exc)
            return 0


def _retry_or_dead_letter(task: Task, exc: TransientError, request: object, cfg: Settings) -> None:
    retries = int(task.request.retries)
    if retries < cfg.task_max_retries:
        log.warning("transient error, retrying", extra={"attempt": retries + 1})
        raise task.retry(exc=exc, countdown=backoff(retries, cfg.retry_backoff_max))
    from worker.adapters.store import add_dead_letter

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
    """Consumes raw XML from `<own HER-id>_async` inside the worker, acking after commit."""

    def get_consumers(self, channel: Any) -> list[Consumer]:
        """One kombu consumer on our own async queue."""
        queue = Queue(deps().settings.inbound_queue, durable=True)
        return [Consumer(channel, queues=[queue], on_message=self.on_message, prefetch_count=8)]

    def on_message(self, message: Message) -> None:
        """Hand the raw bytes to the inbound handler; ack only once it is stored."""
        from worker.inbound import receive

        try:
            receive(deps(), _raw_body(message), dict(message.headers or {}))
        except TransientError:
            log.warning("inbound message requeued: store or transport unavailable")
            message.requeue()
            return
        message.ack()


def _raw_body(message: Message) -> bytes:
    body = message.body
    return body.encode("utf-8", "surrogateescape") if isinstance(body, str) else bytes(body)
