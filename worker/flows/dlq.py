"""Dead-letter operations: replay through the normal path, purge old records."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from worker.adapters.store.db import add_dead_letter, get_dead_letter, get_message, utcnow
from worker.adapters.store.tables import DeadLetterRow
from worker.bootstrap import Deps
from worker.constants import SUBMIT_TASK
from worker.flows.views import NotFound

log = logging.getLogger("timebok.dlq")


def replay(deps: Deps, dl_id: int) -> dict[str, Any]:
    """Run a dead letter again: requests through intake, messages through the consumer.

    Idempotent like the normal path (request_id, MsgId). A replay that fails the same way
    again keeps this dead letter open (one more attempt, the new reason) instead of adding a
    second one; a transient error (store, broker) leaves it untouched and propagates.
    """
    with deps.store.transaction() as s:
        row = get_dead_letter(s, dl_id)
        if row is None:
            raise NotFound(f"no dead letter {dl_id}")
        kind, payload, headers, msg_id = row.kind, row.payload, row.headers or {}, row.msg_id
        source = row.source_queue
        if kind in ("message", "bus") and msg_id:
            _forget_rejection(s, msg_id)
    result = _run(deps, kind, payload, headers, source)
    with deps.store.transaction() as s:
        row = get_dead_letter(s, dl_id)
        again = _failed_again(s, row) if row is not None else None
        if row is not None:
            row.attempts += 1
            if again is None:
                row.replayed_at = utcnow()
            else:
                row.reason, row.error_code = again.reason, again.error_code
                s.delete(again)
    return {"id": dl_id, "kind": kind, "result": result, "replayed": again is None}


def _failed_again(s: Session, row: DeadLetterRow) -> DeadLetterRow | None:
    """The dead letter this replay just wrote for the same message, if it failed again."""
    if row.kind not in ("message", "bus") or not row.msg_id:
        return None
    stmt = (
        select(DeadLetterRow)
        .where(DeadLetterRow.id > row.id, DeadLetterRow.msg_id == row.msg_id)
        .where(DeadLetterRow.kind == row.kind, DeadLetterRow.replayed_at.is_(None))
        .order_by(DeadLetterRow.id.desc())
    )
    return s.scalars(stmt).first()


def _forget_rejection(s: Any, msg_id: str) -> None:
    """Let a rejected inbound message be processed again (accepted ones stay deduplicated)."""
    seen = get_message(s, msg_id)
    if seen is not None and seen.direction == "in" and seen.status == "rejected":
        s.delete(seen)


def _run(deps: Deps, kind: str, payload: bytes, headers: dict[str, Any], source: str) -> str:
    if kind == "bus":  # refused on the national bus: decrypt and verify again
        from worker.flows.bus import replay as replay_bus

        return replay_bus(deps, payload, {str(k): str(v) for k, v in headers.items()}, source)
    if kind == "lookup":  # the caller of a synchronous lookup has long given up
        return "not replayed: a lookup answer is only worth something to the caller that waited"
    if kind == "message":
        from worker.flows.inbound import receive

        received = receive(deps, payload, headers)
        return f"{received.outcome} {received.detail}".strip()
    from worker.flows.outbound import submit

    try:
        data: Any = json.loads(payload)
    except ValueError:
        data = payload.decode("utf-8", "replace")
    result = submit(deps, data)
    return f"booking {result.booking_id} {result.state}"


def record_dead_task(deps: Deps, name: str, args: list[Any], death: dict[str, str]) -> None:
    """Keep a task RabbitMQ dead-lettered (over the delivery limit) as a dead letter.

    A booking request becomes a `task` dead letter whose replay runs the intake again. A
    housekeeping task is dropped: beat sends the next one on its own schedule, and one that
    merely expired (workers were away) is not a failure.
    """
    if name != SUBMIT_TASK:
        log.warning("dead-lettered housekeeping task dropped", extra={"task": name, **death})
        return
    request = args[0] if args else None
    booking_id = request.get("request_id") if isinstance(request, dict) else None
    limit = deps.settings.delivery_limit
    with deps.store.transaction() as s:
        add_dead_letter(
            s,
            kind="task",
            reason=f"dead-lettered by the broker ({death['reason']}, limit {limit} redeliveries)",
            source_queue=death["queue"],
            payload=json.dumps(request, default=str).encode(),
            booking_id=str(booking_id) if booking_id is not None else None,
            attempts=limit + 1,
        )
    log.warning("dead-lettered task stored", extra={"booking_id": booking_id, **death})


def purge(deps: Deps, older_than: timedelta) -> int:
    """Delete dead letters created before now - older_than."""
    cutoff = utcnow() - older_than
    with deps.store.transaction() as s:
        res = s.execute(delete(DeadLetterRow).where(DeadLetterRow.created_at < cutoff))
        return int(getattr(res, "rowcount", 0) or 0)
