"""One citizen's view of bookings and appointments, and the cancel request built for them.

What the portal API uses so that a citizen never sees another's booking or appointment:
everything here answers NotFound for a thing that is not the citizen's (never "forbidden",
which would tell that it exists).
"""

from __future__ import annotations

import uuid
from typing import Any

from worker.adapters.store import db as st
from worker.adapters.store.tables import AppointmentRow, BookingRow
from worker.bootstrap import Deps
from worker.errors import NotFound
from worker.flows import views

# Derives the request_id of "cancel this appointment" when the caller names none, so that a
# repeated cancel (a retry after a lost answer, a double click) is the same request.
CANCEL_NAMESPACE = uuid.UUID("0b8f1d7e-5a43-4c8e-9f55-3c2d6a1e9b70")


def acting_fnr(payload: object) -> str | None:
    """Who sends a (possibly invalid) request: requester.fnr if given, else patient.fnr."""
    if not isinstance(payload, dict):
        return None
    for key in ("requester", "patient"):
        person = payload.get(key)
        if isinstance(person, dict) and isinstance(person.get("fnr"), str):
            return str(person["fnr"]).strip()
    return None


def _people(row: BookingRow) -> set[str]:
    """The patient and the requester of a stored booking."""
    found = {row.patient_fnr} if row.patient_fnr else set()
    requester = (row.request or {}).get("requester")
    if isinstance(requester, dict) and isinstance(requester.get("fnr"), str):
        found.add(requester["fnr"])
    return found


def may_see(deps: Deps, booking_id: str, fnr: str) -> bool:
    """Whether the citizen may learn of this booking: theirs, or one naming nobody (malformed)."""
    with deps.store.transaction() as s:
        row = st.get_booking(s, booking_id)
        people = _people(row) if row is not None else set()
    return not people or fnr in people


def booking(deps: Deps, booking_id: str, fnr: str) -> dict[str, Any]:
    """`timebok booking ID --json` for the booking's patient or requester; else NotFound."""
    with deps.store.transaction() as s:
        row = st.get_booking(s, booking_id)
        if row is None or fnr not in _people(row):
            raise NotFound(f"no booking with id {booking_id}")
    return views.booking(deps, booking_id)


def appointment(deps: Deps, uid: str, fnr: str) -> AppointmentRow:
    """The citizen's appointment (as patient, or as requester of its booking); else NotFound."""
    with deps.store.transaction() as s:
        row = s.get(AppointmentRow, uid)
        if row is None or fnr not in _appointment_people(s, row):
            raise NotFound(f"no appointment with uid {uid}")
        s.expunge(row)
        return row


def _appointment_people(s: Any, row: AppointmentRow) -> set[str]:
    found = {row.patient_fnr}
    if row.booking_id:
        booked = st.get_booking(s, row.booking_id)
        if booked is not None:
            found |= _people(booked)
    return found


def cancel_request(
    deps: Deps,
    uid: str,
    fnr: str,
    *,
    request_id: str | None = None,
    names: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The `cancel` request (contract JSON) for the citizen's appointment `uid`.

    Names and the requester come from the booking that made the appointment; for an
    appointment the clinic booked itself, `names` (given, family) must be given, or the
    request fails validation on `patient.given_name`. Without `request_id` the id is derived
    from the appointment and the citizen: the same cancel twice is one request.
    """
    appt = appointment(deps, uid, fnr)
    stored = _booked_request(deps, appt)
    patient = dict(stored.get("patient") or {"fnr": appt.patient_fnr})
    patient["fnr"] = appt.patient_fnr
    if names is not None:
        patient["given_name"], patient["family_name"] = names
    request: dict[str, Any] = {
        "request_id": request_id or str(uuid.uuid5(CANCEL_NAMESPACE, f"{uid}:{fnr}")),
        "action": "cancel",
        "patient": patient,
        "clinic": {"her_id": appt.clinic_her_id, "name": appt.clinic_name},
        "booking_ref": uid,
    }
    requester = stored.get("requester")
    if fnr != appt.patient_fnr and isinstance(requester, dict):
        request["requester"] = requester
    return request


def _booked_request(deps: Deps, appt: AppointmentRow) -> dict[str, Any]:
    if not appt.booking_id:
        return {}
    with deps.store.transaction() as s:
        row = st.get_booking(s, appt.booking_id)
        return dict(row.request or {}) if row is not None else {}
