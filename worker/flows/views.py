"""Read-side views for the CLI: plain dicts, stable keys (the --json contract).

The views read with plain SQL on the driver's connection (`worker.adapters.store.read`), not
through the ORM: a read-only command imports this module and what it needs, never SQLAlchemy,
Celery, kombu or a transport. They take a worker's `Deps` (whose store reads on a pooled
connection) or `open_store(...)`, the database alone.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from worker.adapters.store.read import Reader, ReadStore, Row, utc
from worker.errors import NotFound

if TYPE_CHECKING:
    from mappers.model import DialogMessage

__all__ = ["NotFound"]  # raised here; defined with the other errors (the CLI catches it)


class Readable(Protocol):
    """A store the views can read: the worker's `Store` or a `ReadStore`."""

    def reader(self) -> AbstractContextManager[Reader]:
        """One read transaction."""
        ...


class Source(Protocol):
    """What the views take: anything with a readable store (`Deps`, `ReadDeps`)."""

    @property
    def store(self) -> Readable:
        """The store to read."""
        ...


class ReadDeps(NamedTuple):
    """The database alone, opened per view: what a read-only command needs."""

    store: ReadStore


def open_store(url: str, schema: str | None = None) -> ReadDeps:
    """The views' source for a database URL, without the worker's dependencies."""
    return ReadDeps(ReadStore(url, schema))


def _iso(value: Any) -> str | None:
    moment = utc(value)
    return moment.isoformat() if moment is not None else None


_BOOKING = "SELECT * FROM bookings WHERE id = :id"
_MESSAGES = "SELECT * FROM messages WHERE booking_id = :id ORDER BY id"
_HISTORY = "SELECT * FROM booking_history WHERE booking_id = :id ORDER BY id"


def booking(deps: Source, booking_id: str) -> dict[str, Any]:
    """A booking with its state history and every message in and out."""
    with deps.store.reader() as r:
        row = r.row(_BOOKING, id=booking_id)
        if row is None:
            raise NotFound(f"no booking with id {booking_id}")
        messages = r.rows(_MESSAGES, id=booking_id)
        history = r.rows(_HISTORY, id=booking_id)
    return {
        "id": row["id"],
        "action": row["action"],
        "state": row["state"],
        "reason": row["reason"],
        "clinic_her_id": row["clinic_her_id"],
        "appointment_uid": row["appointment_uid"],
        "booking_ref": row["target_id"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "errors": (r.json(row["request"]) or {}).get("errors", []),
        **_asked(messages),
        "history": [
            {"from": h["source"], "to": h["target"], "reason": h["reason"], "at": _iso(h["at"])}
            for h in history
        ],
        "messages": [
            {
                "direction": m["direction"],
                "msg_id": m["msg_id"],
                "type": m["msg_type"],
                "function": m["function"],
                "status": m["status"],
                "error_code": m["error_code"],
                "ref_to_parent": m["ref_to_parent"],
                "created_at": _iso(m["created_at"]),
                "sent_at": _iso(m["sent_at"]),
            }
            for m in messages
        ],
    }


_NOT_ASKED: dict[str, Any] = {"appointment_type": None, "service": None, "urgent": None}


def _asked(messages: list[Row]) -> dict[str, Any]:
    """Type, service and urgency as the clinic received them: read back from what was sent."""
    sent = next((m for m in messages if m["direction"] == "out"), None)
    if sent is None:
        return dict(_NOT_ASKED)
    # The mappers (lxml, the schemas) only for a booking that sent something.
    from mappers import incoming
    from mappers.errors import MapperError
    from mappers.model import DialogMessage

    try:
        doc = incoming.parse_any(bytes(sent["xml"]))
    except MapperError:
        return dict(_NOT_ASKED)
    return _asking(doc) if isinstance(doc, DialogMessage) else dict(_NOT_ASKED)


def _asking(doc: DialogMessage) -> dict[str, Any]:
    from mappers.codes import AppointmentType, RequestCode, Urgency
    from worker.kinds import appointment_kind

    request, event = doc.request, doc.event
    asking = (RequestCode.RESERVE, RequestCode.WISH, RequestCode.WISH_CHANGE)
    if request is None or request.code not in asking:
        return dict(_NOT_ASKED)
    kind = request.appointment_type or (event.appointment_type if event else None)
    return {
        "appointment_type": appointment_kind(kind).value if kind is not None else None,
        "service": request.service or (event.service if event else None),
        # a reservation says "urgent" through its 7617 type (Hastetime) alone
        "urgent": kind is AppointmentType.URGENT
        if request.urgency is None
        else request.urgency is Urgency.URGENT,
    }


_INBOX = "SELECT * FROM notifications WHERE patient_fnr = :fnr ORDER BY id DESC"


def inbox(deps: Source, fnr: str) -> list[dict[str, Any]]:
    """A patient's notifications, newest first."""
    with deps.store.reader() as r:
        rows = r.rows(_INBOX, fnr=fnr)
    return [
        {
            "event": n["event"],
            "title": n["title"],
            "body": n["body"],
            "appointment_uid": n["appointment_uid"],
            "booking_id": n["booking_id"],
            "repliable": bool(n["repliable"]),
            "created_at": _iso(n["created_at"]),
        }
        for n in rows
    ]


class Appointment(NamedTuple):
    """One stored appointment (the columns of `appointments`)."""

    uid: str
    booking_id: str | None
    patient_fnr: str
    clinic_her_id: str
    clinic_name: str
    practitioner: str | None
    start: datetime
    end: datetime
    appointment_type: str
    location: str
    status: str
    video_url: str | None
    summary: str | None
    updated_at: datetime

    @classmethod
    def of(cls, row: Row) -> Appointment:
        """From a row of `appointments`."""
        columns = {name: row[name] for name in cls._fields}
        return cls(**(columns | {k: utc(row[k]) for k in ("start", "end", "updated_at")}))


def appointment_dict(a: Appointment) -> dict[str, Any]:
    """One appointment as Timeavtaler shows it."""
    return {
        "uid": a.uid,
        "status": a.status,
        "start": a.start.isoformat(),
        "end": a.end.isoformat(),
        "duration_minutes": int((a.end - a.start).total_seconds() // 60),
        "practitioner": a.practitioner,
        "location": a.location,
        "appointment_type": a.appointment_type,
        "clinic_her_id": a.clinic_her_id,
        "clinic_name": a.clinic_name,
        "video_url": a.video_url,
        "booking_id": a.booking_id,
    }


_APPOINTMENTS = "SELECT * FROM appointments WHERE patient_fnr = :fnr ORDER BY start"


def appointments(deps: Source, fnr: str) -> list[dict[str, Any]]:
    """A patient's appointments, soonest first."""
    with deps.store.reader() as r:
        rows = r.rows(_APPOINTMENTS, fnr=fnr)
    return [appointment_dict(Appointment.of(a)) for a in rows]


def appointment(deps: Source, uid: str) -> Appointment:
    """One appointment by uid."""
    with deps.store.reader() as r:
        row = r.row("SELECT * FROM appointments WHERE uid = :uid", uid=uid)
    if row is None:
        raise NotFound(f"no appointment with uid {uid}")
    return Appointment.of(row)


_DEAD_LETTERS = "SELECT * FROM dead_letters {where} ORDER BY id DESC"


def dead_letters(deps: Source, *, include_replayed: bool = False) -> list[dict[str, Any]]:
    """Dead letters, newest first (the replayed ones only when asked)."""
    where = "" if include_replayed else "WHERE replayed_at IS NULL"
    with deps.store.reader() as r:
        return [dead_letter_dict(r, d) for d in r.rows(_DEAD_LETTERS.format(where=where))]


def dead_letter(deps: Source, dl_id: int) -> dict[str, Any]:
    """One dead letter with its headers and raw payload."""
    with deps.store.reader() as r:
        row = r.row("SELECT * FROM dead_letters WHERE id = :id", id=dl_id)
    if row is None:
        raise NotFound(f"no dead letter {dl_id}")
    return dead_letter_dict(r, row, payload=True)


def dead_letter_dict(r: Reader, d: Row, *, payload: bool = False) -> dict[str, Any]:
    """One dead letter; the raw payload only when asked (it may hold patient data)."""
    raw = bytes(d["payload"])
    out: dict[str, Any] = {
        "id": d["id"],
        "kind": d["kind"],
        "reason": d["reason"],
        "error_code": d["error_code"],
        "source_queue": d["source_queue"],
        "attempts": d["attempts"],
        "booking_id": d["booking_id"],
        "msg_id": d["msg_id"],
        "created_at": _iso(d["created_at"]),
        "replayed_at": _iso(d["replayed_at"]),
        "size": len(raw),
    }
    if payload:
        from mappers import xmlsafe

        out["headers"] = r.json(d["headers"])
        # A clinic may send ISO-8859-1 or UTF-16: show the text, the bytes stay as received.
        out["payload"] = xmlsafe.document_text(raw)
    return out
