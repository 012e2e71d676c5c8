"""The operator's status: queues, in-flight, dead letters, bookings, oldest waiting."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from worker.adapters.store.db import bookings_by_state, outbox_backlog, utcnow
from worker.adapters.store.tables import BookingRow, DeadLetterRow, OutboxRow
from worker.adapters.transports.kombu import EpjTransport, KombuTransport
from worker.bootstrap import Deps, bootstrap
from worker.constants import MAINTENANCE_QUEUE, REQUESTS_QUEUE
from worker.domain.booking import State
from worker.errors import TransientError
from worker.flows import certs
from worker.settings import Settings, async_queue, error_queue

WAITING = (State.REQUESTED.value, State.SENT.value, State.DELIVERED.value)


def _queues(deps: Deps) -> dict[str, int | None]:
    own = deps.settings.own_her_id
    epj = [async_queue(own), error_queue(own)]
    for clinic in deps.registry.clinics:
        epj += [async_queue(clinic.her_id), error_queue(clinic.her_id)]
    celery = [REQUESTS_QUEUE, MAINTENANCE_QUEUE]
    if deps.settings.broker_url == deps.settings.epj_url:
        return _depths(deps.epj, celery + epj)
    # Celery's queues live on the Celery broker, the EPJ queues on the EPJ transport.
    broker = KombuTransport(deps.settings.broker_url)
    try:
        return _depths(broker, celery) | _depths(deps.epj, epj)
    finally:
        broker.close()


def _depths(transport: EpjTransport, names: list[str]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name in names:
        try:
            out[name] = transport.depth(name)
        except TransientError:
            out[name] = None
    return out


def _in_flight(deps: Deps) -> int | None:
    """Unacked Celery messages (Redis broker keeps them in the 'unacked' hash)."""
    if not deps.settings.broker_url.startswith("redis"):
        return None
    import redis

    try:
        with redis.Redis.from_url(deps.settings.broker_url, socket_timeout=2) as client:
            return int(client.hlen("unacked"))
    except redis.RedisError:
        return None


def _oldest_waiting(s: Any) -> dict[str, dict[str, Any]]:
    stmt = (
        select(BookingRow.clinic_her_id, func.min(BookingRow.created_at))
        .where(BookingRow.state.in_(WAITING))
        .group_by(BookingRow.clinic_her_id)
    )
    out: dict[str, dict[str, Any]] = {}
    for her_id, since in s.execute(stmt):
        first = s.scalars(
            select(BookingRow.id).where(
                BookingRow.clinic_her_id == her_id,
                BookingRow.state.in_(WAITING),
                BookingRow.created_at == since,
            )
        ).first()
        out[str(her_id)] = {"since": since.isoformat() if since else None, "booking_id": first}
    return out


def _outbox_oldest(s: Any) -> str | None:
    stmt = select(func.min(OutboxRow.created_at)).where(OutboxRow.published_at.is_(None))
    oldest = s.scalar(stmt)
    return oldest.isoformat() if oldest is not None else None


def collect(
    deps: Deps,
    stuck_after: timedelta = timedelta(hours=1),
    relay_late: timedelta = timedelta(minutes=5),
) -> dict[str, Any]:
    """Everything `timebok status` shows, with a list of things needing attention."""
    queues = _queues(deps)
    with deps.store.transaction() as s:
        by_state = bookings_by_state(s)
        dead = int(s.scalar(select(func.count()).where(DeadLetterRow.replayed_at.is_(None))) or 0)
        backlog = outbox_backlog(s)
        outbox_oldest = _outbox_oldest(s)
        waiting = _oldest_waiting(s)
    certificates, certificate_attention = certs.status(deps.settings, deps.registry, utcnow())
    data = {
        "queues": queues,
        "in_flight": _in_flight(deps),
        "outbox_backlog": backlog,
        "outbox_oldest": outbox_oldest,
        "dead_letters": dead,
        "bookings_by_state": by_state,
        "oldest_waiting": waiting,
        "certificates": certificates,
    }
    attention = _attention(data, stuck_after, relay_late) + certificate_attention
    return data | {"attention": attention}


def _attention(data: dict[str, Any], stuck_after: timedelta, relay_late: timedelta) -> list[str]:
    now = utcnow()
    attention = [f"queue {q} unreachable" for q, n in data["queues"].items() if n is None]
    if data["dead_letters"]:
        attention.append(f"{data['dead_letters']} dead letters waiting (timebok dlq list)")
    oldest = data["outbox_oldest"]
    if oldest and oldest < (now - relay_late).isoformat():
        attention.append(
            f"outbox: {data['outbox_backlog']} message(s) unpublished since {oldest} "
            "(is beat running? is the EPJ broker reachable?)"
        )
    cutoff = (now - stuck_after).isoformat()
    attention += [
        f"clinic {c}: booking {w['booking_id']} waiting since {w['since']}"
        for c, w in data["oldest_waiting"].items()
        if w["since"] and w["since"] < cutoff
    ]
    return attention


def source(settings: Settings) -> Callable[[], dict[str, Any]]:
    """`collect` over dependencies of its own, built on first call (for the metrics thread)."""
    lock = threading.Lock()
    built: list[Deps] = []

    def read() -> dict[str, Any]:
        with lock:
            if not built:
                built.append(bootstrap(settings))
            return collect(built[0])

    return read
