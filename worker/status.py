"""The operator's status: queues, in-flight, dead letters, bookings, oldest waiting."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from worker.adapters.store import bookings_by_state, outbox_backlog, utcnow
from worker.adapters.tables import BookingRow, DeadLetterRow
from worker.bootstrap import Deps
from worker.constants import REQUESTS_QUEUE
from worker.domain.booking import State
from worker.errors import TransientError
from worker.settings import async_queue, error_queue

WAITING = (State.REQUESTED.value, State.SENT.value, State.DELIVERED.value)


def _queues(deps: Deps) -> dict[str, int | None]:
    names = [REQUESTS_QUEUE, async_queue(deps.settings.own_her_id)]
    for clinic in deps.registry.clinics:
        names += [async_queue(clinic.her_id), error_queue(clinic.her_id)]
    out: dict[str, int | None] = {}
    for name in names:
        try:
            out[name] = deps.epj.depth(name)
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


def collect(deps: Deps, stuck_after: timedelta = timedelta(hours=1)) -> dict[str, Any]:
    """Everything `timebok status` shows, with a list of things needing attention."""
    queues = _queues(deps)
    with deps.store.transaction() as s:
        by_state = bookings_by_state(s)
        dead = int(s.scalar(select(func.count()).where(DeadLetterRow.replayed_at.is_(None))) or 0)
        backlog = outbox_backlog(s)
        waiting = _oldest_waiting(s)
    attention = [f"queue {q} unreachable" for q, n in queues.items() if n is None]
    if dead:
        attention.append(f"{dead} dead letters waiting (timebok dlq list)")
    cutoff = (utcnow() - stuck_after).isoformat()
    attention += [
        f"clinic {c}: booking {w['booking_id']} waiting since {w['since']}"
        for c, w in waiting.items()
        if w["since"] and w["since"] < cutoff
    ]
    return {
        "queues": queues,
        "in_flight": _in_flight(deps),
        "outbox_backlog": backlog,
        "dead_letters": dead,
        "bookings_by_state": by_state,
        "oldest_waiting": waiting,
        "attention": attention,
    }
