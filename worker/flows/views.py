"""Read-side views for the CLI: plain dicts, stable keys (the --json contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mappers import incoming, xmlsafe
from mappers.codes import AppointmentType, RequestCode, Urgency
from mappers.errors import MapperError
from mappers.model import DialogMessage
from worker.adapters.store import db as st
from worker.adapters.store.tables import AppointmentRow, DeadLetterRow, MessageRow
from worker.bootstrap import Deps
from worker.errors import NotFound
from worker.flows import inbox as inbox_store
from worker.request import appointment_kind

__all__ = ["NotFound"]  # raised here; defined with the other errors (the CLI catches it)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def booking(deps: Deps, booking_id: str) -> dict[str, Any]:
    """A booking with its state history and every message in and out."""
    with deps.store.transaction() as s:
        row = st.get_booking(s, booking_id)
        if row is None:
            raise NotFound(f"no booking with id {booking_id}")
        messages = st.messages_for(s, row.id)
        return {
            "id": row.id,
            "action": row.action,
            "state": row.state,
            "reason": row.reason,
            "clinic_her_id": row.clinic_her_id,
            "appointment_uid": row.appointment_uid,
            "booking_ref": row.target_id,
            "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at),
            "errors": (row.request or {}).get("errors", []),
            **_asked(messages),
            "history": [
                {"from": h.source, "to": h.target, "reason": h.reason, "at": _iso(h.at)}
                for h in st.history(s, row.id)
            ],
            "messages": [
                {
                    "direction": m.direction,
                    "msg_id": m.msg_id,
                    "type": m.msg_type,
                    "function": m.function,
                    "status": m.status,
                    "error_code": m.error_code,
                    "ref_to_parent": m.ref_to_parent,
                    "created_at": _iso(m.created_at),
                    "sent_at": _iso(m.sent_at),
                }
                for m in messages
            ],
        }


def _asked(messages: list[MessageRow]) -> dict[str, Any]:
    """Type, service and urgency as the clinic received them: read back from what was sent."""
    sent = next((m for m in messages if m.direction == "out"), None)
    try:
        doc = incoming.parse_any(sent.xml) if sent is not None else None
    except MapperError:
        doc = None
    request = doc.request if isinstance(doc, DialogMessage) else None
    event = doc.event if isinstance(doc, DialogMessage) else None
    if request is None or request.code not in _ASKING:
        return {"appointment_type": None, "service": None, "urgent": None}
    kind = request.appointment_type or (event.appointment_type if event else None)
    return {
        "appointment_type": appointment_kind(kind).value if kind is not None else None,
        "service": request.service or (event.service if event else None),
        # a reservation says "urgent" through its 7617 type (Hastetime) alone
        "urgent": kind is AppointmentType.URGENT
        if request.urgency is None
        else request.urgency is Urgency.URGENT,
    }


_ASKING = frozenset({RequestCode.RESERVE, RequestCode.WISH, RequestCode.WISH_CHANGE})


def inbox(deps: Deps, fnr: str) -> list[dict[str, Any]]:
    """A patient's notifications, newest first."""
    with deps.store.transaction() as s:
        return [
            {
                "event": n.event,
                "title": n.title,
                "body": n.body,
                "appointment_uid": n.appointment_uid,
                "booking_id": n.booking_id,
                "repliable": n.repliable,
                "created_at": _iso(n.created_at),
            }
            for n in inbox_store.inbox(s, fnr)
        ]


def appointment_dict(a: AppointmentRow) -> dict[str, Any]:
    """One appointment as Timeavtaler shows it."""
    return {
        "uid": a.uid,
        "status": a.status,
        "start": _iso(a.start),
        "end": _iso(a.end),
        "duration_minutes": int((a.end - a.start).total_seconds() // 60),
        "practitioner": a.practitioner,
        "location": a.location,
        "appointment_type": a.appointment_type,
        "clinic_her_id": a.clinic_her_id,
        "clinic_name": a.clinic_name,
        "video_url": a.video_url,
        "booking_id": a.booking_id,
    }


def appointments(deps: Deps, fnr: str) -> list[dict[str, Any]]:
    """A patient's appointments, soonest first."""
    with deps.store.transaction() as s:
        return [appointment_dict(a) for a in inbox_store.appointments(s, fnr)]


def appointment(deps: Deps, uid: str) -> AppointmentRow:
    """One appointment row by uid."""
    with deps.store.transaction() as s:
        row = s.get(AppointmentRow, uid)
        if row is None:
            raise NotFound(f"no appointment with uid {uid}")
        s.expunge(row)
        return row


def dead_letter_dict(d: DeadLetterRow, *, payload: bool = False) -> dict[str, Any]:
    """One dead letter; the raw payload only when asked (it may hold patient data)."""
    out: dict[str, Any] = {
        "id": d.id,
        "kind": d.kind,
        "reason": d.reason,
        "error_code": d.error_code,
        "source_queue": d.source_queue,
        "attempts": d.attempts,
        "booking_id": d.booking_id,
        "msg_id": d.msg_id,
        "created_at": _iso(d.created_at),
        "replayed_at": _iso(d.replayed_at),
        "size": len(d.payload),
    }
    if payload:
        out["headers"] = d.headers
        # A clinic may send ISO-8859-1 or UTF-16: show the text, the bytes stay as received.
        out["payload"] = xmlsafe.document_text(d.payload)
    return out
