"""The account pages: login, Timeavtaler, Innboks and the receipt."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from worker import texts
from worker.entrypoints.portal.common import (
    T,
    Who,
    go,
    instant,
    page,
    portal_of,
    receipt_url,
    session,
)
from worker.entrypoints.portal.people import USERS
from worker.entrypoints.portal.session import COOKIE, MAX_AGE

router = APIRouter()


@router.get("/", include_in_schema=False)
def home(request: Request) -> Response:
    """Timeavtaler when logged in, else the login."""
    target = "timeavtaler" if portal_of(request).current(request) else "logg-inn"
    return go(f"{request.scope.get('root_path', '')}/{target}")


@router.get("/logg-inn", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    """Pick a demo person (a real portal logs in with ID-porten)."""
    return portal_of(request).render(request, "login.html", users=USERS, user=None, errors=[])


@router.post("/logg-inn")
def login(request: Request, person: Annotated[str, Form()] = "") -> Response:
    """Set the signed session cookie for the chosen demo person."""
    portal = portal_of(request)
    chosen = next((u for u in USERS if u.key == person), None)
    if chosen is None:
        errors = [("person-" + USERS[0].key, T.login_missing)]
        return portal.render(
            request, "login.html", status=422, users=USERS, user=None, errors=errors
        )
    response = go(f"{request.scope.get('root_path', '')}/timeavtaler")
    response.set_cookie(
        COOKIE,
        portal.signer.session(chosen.key),
        max_age=MAX_AGE,
        httponly=True,
        samesite="lax",
        path="/",
    )
    return response


@router.post("/logg-ut")
def logout(request: Request) -> Response:
    """Forget the login."""
    response = go(f"{request.scope.get('root_path', '')}/logg-inn")
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/timeavtaler", response_class=HTMLResponse)
def appointments(request: Request, who: Who = 0) -> HTMLResponse:
    """The patient's appointments, soonest first."""
    _, u, api = session(request, who)
    found = sorted(api.appointments(), key=lambda a: str(a.get("start") or ""))
    return page(request, u, who, "appointments.html", appointments=[_appt(a) for a in found])


@router.get("/timeavtaler/{uid}", response_class=HTMLResponse)
def appointment(request: Request, uid: str, who: Who = 0) -> HTMLResponse:
    """One appointment: status, time, duration, place, practitioner, calendar, cancel, video."""
    _, u, api = session(request, who)
    found = next((a for a in api.appointments() if a.get("uid") == uid), None)
    if found is None:
        return page(request, u, who, "error.html", status=404, message=T.problem_not_found)
    return page(request, u, who, "appointment.html", a=_appt(found))


@router.get("/timeavtaler/{uid}/kalender.ics")
def appointment_ics(request: Request, uid: str, who: Who = 0) -> Response:
    """ "Legg i egen kalender": the API's iCalendar file, as a download."""
    _, _u, api = session(request, who)
    body = api.ics(uid)
    disposition = f'attachment; filename="timeavtale-{uid[:8]}.ics"'
    return Response(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": disposition},
    )


@router.post("/timeavtaler/{uid}/avbestill")
def cancel(request: Request, uid: str, who: Annotated[int, Form(alias="for")] = 0) -> Response:
    """ "Avbestill time": a cancel request through the API, then its receipt."""
    _, u, api = session(request, who)
    person = u.subject(who)
    answer = api.cancel(uid, person.given_name, person.family_name)
    return go(receipt_url(request, str(answer["id"]), who, "cancel"))


@router.get("/innboks", response_class=HTMLResponse)
def inbox(request: Request, who: Who = 0) -> HTMLResponse:
    """The non-repliable notifications, newest first, linked to their appointment."""
    _, u, api = session(request, who)
    messages = [_message(n) for n in api.inbox()]
    return page(request, u, who, "inbox.html", messages=messages)


def _appt(a: dict[str, Any]) -> dict[str, Any]:
    """An appointment as the pages show it."""
    start, end = instant(a.get("start")), instant(a.get("end"))
    kind = a.get("appointment_type")
    return a | {
        "when": texts.format_period(start, end) if start else T.appointment_unknown,
        "duration": texts.duration(int(a.get("duration_minutes") or 0)),
        "place": texts.place_of_attendance(kind, a.get("location"), a.get("clinic_name"))
        or T.appointment_unknown,
        "is_video": kind == "video",
        "cancellable": a.get("status") in (texts.STATUS_ASSIGNED, texts.STATUS_CHANGED),
    }


def _message(n: dict[str, Any]) -> dict[str, Any]:
    received = instant(n.get("created_at"))
    return n | {
        "paragraphs": str(n.get("body") or "").split("\n\n"),
        "received": texts.format_time(received) if received else "",
    }


@router.get("/kvittering/{booking_id}", response_class=HTMLResponse)
def receipt(request: Request, booking_id: str, kind: str = "reserve", who: Who = 0) -> Response:
    """ "Bestillingen er kun en forespørsel ...", with the booking's current state."""
    _, u, api = session(request, who)
    booking = api.booking(booking_id)
    titles = {
        "wish": (T.receipt_wish_title, T.receipt_wish_only),
        "cancel": (T.receipt_cancel_title, T.receipt_cancel_only),
    }
    title, lead = titles.get(kind, (T.receipt_title, T.receipt_request_only))
    return page(
        request,
        u,
        who,
        "receipt.html",
        title=title,
        lead=lead,
        booking=booking,
        state=texts.booking_state_label(str(booking.get("state") or "")),
    )
