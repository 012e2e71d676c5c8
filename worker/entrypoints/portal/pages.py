"""The pages: login, Timeavtaler, Innboks and the booking guide (domain.md section 1)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from itertools import groupby
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mappers.model import Person
from worker import texts
from worker.entrypoints.portal.client import PortalApi
from worker.entrypoints.portal.people import USERS, User
from worker.entrypoints.portal.session import COOKIE, MAX_AGE
from worker.entrypoints.portal.site import Portal

router = APIRouter()
T = texts.PORTAL
SUBJECT_MAX, MESSAGE_MAX = 50, 250
RESERVE, WISH, CANCEL = "timereservasjon", "timeonske", "avtaleavbestilling"
# Clinics whose booking guide asks the questionnaire (texts.QUESTIONNAIRES) before the review.
QUESTIONNAIRE_OF = {"8090001": "luftveier"}
CALENDAR_DAYS = 4  # days per calendar page ("Senere timer" shows the next ones)

Who = Annotated[int, Query(alias="for", ge=0)]


class LoginRequired(Exception):
    """No valid session cookie: the page sends the browser to the login."""


def _portal(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def _session(request: Request, who: int = 0) -> tuple[Portal, User, PortalApi]:
    """(portal, logged-in user, the API as person `who`); LoginRequired without a login."""
    portal = _portal(request)
    u = portal.current(request)
    if u is None or not u.valid(who):
        raise LoginRequired
    return portal, u, portal.api(u, who)


def _page(request: Request, u: User, who: int, name: str, **ctx: Any) -> HTMLResponse:
    """Render with the user, whom the page is about and the 'for' query."""
    status = int(ctx.pop("status", 200))
    return _portal(request).render(
        request,
        name,
        status=status,
        user=u,
        who=who,
        subject=_name(u.subject(who)),
        users=USERS,
        **ctx,
    )


def _name(p: Person) -> str:
    return f"{p.given_name} {p.family_name}"


def _go(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# -- login ---------------------------------------------------------------------------------------


@router.get("/", include_in_schema=False)
def home(request: Request) -> Response:
    """Timeavtaler when logged in, else the login."""
    target = "timeavtaler" if _portal(request).current(request) else "logg-inn"
    return _go(f"{request.scope.get('root_path', '')}/{target}")


@router.get("/logg-inn", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    """Pick a demo person (a real portal logs in with ID-porten)."""
    return _portal(request).render(request, "login.html", users=USERS, user=None, errors=[])


@router.post("/logg-inn")
def login(request: Request, person: Annotated[str, Form()] = "") -> Response:
    """Set the signed session cookie for the chosen demo person."""
    portal = _portal(request)
    chosen = next((u for u in USERS if u.key == person), None)
    if chosen is None:
        errors = [("person-" + USERS[0].key, T.login_missing)]
        return portal.render(
            request, "login.html", status=422, users=USERS, user=None, errors=errors
        )
    response = _go(f"{request.scope.get('root_path', '')}/timeavtaler")
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
    response = _go(f"{request.scope.get('root_path', '')}/logg-inn")
    response.delete_cookie(COOKIE, path="/")
    return response


# -- Timeavtaler and Innboks ---------------------------------------------------------------------


@router.get("/timeavtaler", response_class=HTMLResponse)
def appointments(request: Request, who: Who = 0) -> HTMLResponse:
    """The patient's appointments, soonest first."""
    _, u, api = _session(request, who)
    found = sorted(api.appointments(), key=lambda a: str(a.get("start") or ""))
    return _page(request, u, who, "appointments.html", appointments=[_appt(a) for a in found])


@router.get("/timeavtaler/{uid}", response_class=HTMLResponse)
def appointment(request: Request, uid: str, who: Who = 0) -> HTMLResponse:
    """One appointment: status, time, duration, place, practitioner, calendar, cancel, video."""
    _, u, api = _session(request, who)
    found = next((a for a in api.appointments() if a.get("uid") == uid), None)
    if found is None:
        return _page(request, u, who, "error.html", status=404, message=T.problem_not_found)
    return _page(request, u, who, "appointment.html", a=_appt(found))


@router.get("/timeavtaler/{uid}/kalender.ics")
def appointment_ics(request: Request, uid: str, who: Who = 0) -> Response:
    """ "Legg i egen kalender": the API's iCalendar file, as a download."""
    _, _u, api = _session(request, who)
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
    _, u, api = _session(request, who)
    person = u.subject(who)
    answer = api.cancel(uid, person.given_name, person.family_name)
    return _go(_receipt_url(request, str(answer["id"]), who, "cancel"))


@router.get("/innboks", response_class=HTMLResponse)
def inbox(request: Request, who: Who = 0) -> HTMLResponse:
    """The non-repliable notifications, newest first, linked to their appointment."""
    _, u, api = _session(request, who)
    messages = [_message(n) for n in api.inbox()]
    return _page(request, u, who, "inbox.html", messages=messages)


def _appt(a: dict[str, Any]) -> dict[str, Any]:
    """An appointment as the pages show it."""
    start, end = _instant(a.get("start")), _instant(a.get("end"))
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
    received = _instant(n.get("created_at"))
    return n | {
        "paragraphs": str(n.get("body") or "").split("\n\n"),
        "received": texts.format_time(received) if received else "",
    }


def _instant(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


# -- the booking guide ---------------------------------------------------------------------------


@router.get("/bestill", response_class=HTMLResponse)
def for_whom(request: Request, who: Who = 0) -> HTMLResponse:
    """Step 0: for whom (self, a child, someone the user holds a power of attorney for)."""
    _, u, _api = _session(request, who)
    return _page(request, u, who, "for_whom.html", errors=[])


@router.get("/bestill/klinikk", response_class=HTMLResponse)
def choose_clinic(request: Request, who: Who = 0) -> HTMLResponse:
    """Step 1: a clinic that takes digital bookings; the others explained, with their phone."""
    _, u, api = _session(request, who)
    clinics = api.clinics()
    bookable = [
        c | {"note": "" if _takes(c, RESERVE) else texts.wish_only(str(c["name"]), c.get("phone"))}
        for c in clinics
        if _takes(c, RESERVE) or _takes(c, WISH)
    ]
    offline = [
        c | {"why": texts.clinic_not_connected(str(c["name"]), c.get("phone"))}
        for c in clinics
        if not (_takes(c, RESERVE) or _takes(c, WISH))
    ]
    return _page(request, u, who, "clinic.html", clinics=bookable, offline=offline, errors=[])


@router.get("/bestill/tjeneste", response_class=HTMLResponse)
def choose_service(request: Request, clinic: str, who: Who = 0) -> HTMLResponse:
    """Step 2: the service."""
    _, u, api = _session(request, who)
    c = _clinic(api, clinic)
    services = list(texts.SERVICE_LABELS.items())
    return _page(request, u, who, "service.html", clinic=c, services=services, errors=[])


@router.get("/bestill/behandler", response_class=HTMLResponse)
def choose_practitioner(request: Request, clinic: str, service: str = "", who: Who = 0) -> Response:
    """Step 3: the practitioner (a unit of the clinic); a clinic without slots: the wish form."""
    _, u, api = _session(request, who)
    c = _clinic(api, clinic)
    if not service:
        services = list(texts.SERVICE_LABELS.items())
        errors = [("service-consultation", T.service_missing)]
        return _page(
            request,
            u,
            who,
            "service.html",
            clinic=c,
            services=services,
            errors=errors,
            status=422,
        )
    query = f"for={who}&clinic={clinic}&service={service}"
    if not _takes(c, RESERVE):
        return _go(f"{request.scope.get('root_path', '')}/bestill/onske?{query}")
    units = list(c.get("units") or [])
    if not units:
        return _go(f"{request.scope.get('root_path', '')}/bestill/kalender?{query}")
    return _page(
        request, u, who, "practitioner.html", clinic=c, service=service, units=units, errors=[]
    )


@router.get("/bestill/kalender", response_class=HTMLResponse)
def calendar(
    request: Request,
    clinic: str,
    service: str,
    unit: str = "",
    start: str = "",
    missing: str = "",
    who: Who = 0,
) -> HTMLResponse:
    """Step 4: the free slots of the next two weeks, grouped by day (HentLedigeTimer)."""
    portal, u, api = _session(request, who)
    c = _clinic(api, clinic)
    first = _day(start) or date.today()
    last = first + timedelta(days=CALENDAR_DAYS - 1)
    found = api.free_slots(
        clinic, **{"from": first.isoformat(), "to": last.isoformat()}, service=service, unit=unit
    )
    slots = [_slot_view(portal, s) for s in found.get("slots", [])]
    days = [(heading, list(group)) for heading, group in groupby(slots, key=lambda s: s["day"])]
    return _page(
        request,
        u,
        who,
        "calendar.html",
        clinic=c,
        service=service,
        unit=unit,
        unit_name=next(
            (str(x["name"]) for x in c.get("units") or [] if str(x.get("her_id")) == unit), ""
        ),
        days=days,
        earlier=(first - timedelta(days=CALENDAR_DAYS)).isoformat()
        if first > date.today()
        else None,
        later=(last + timedelta(days=1)).isoformat(),
        takes_wishes=_takes(c, WISH),
        urgent=texts.urgent_call(c.get("phone")),
        errors=[("slot-0", T.calendar_missing)] if missing else [],
    )


def _slot_view(portal: Portal, s: dict[str, Any]) -> dict[str, Any]:
    start, end = _instant(s["start"]), _instant(s["end"])
    assert start is not None
    assert end is not None
    return {
        "token": portal.signer.slot_token(s),
        "id": s["id"],
        "day": texts.day_heading(start),
        # The practitioner stands above the calendar (the unit chosen before).
        "line": texts.slot_line(start, end, str(s.get("service") or ""), None),
        "kind": s.get("appointment_type"),
    }


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@router.get("/bestill/sporsmal", response_class=HTMLResponse)
def questionnaire(
    request: Request, clinic: str, service: str, slot: str = "", unit: str = "", who: Who = 0
) -> Response:
    """Step 5 (when the clinic has one): the questionnaire; else straight to the review."""
    _, u, api = _session(request, who)
    c = _clinic(api, clinic)
    if not slot:
        query = f"for={who}&clinic={c['her_id']}&service={service}&unit={unit}&missing=1"
        return _go(f"{request.scope.get('root_path', '')}/bestill/kalender?{query}")
    questions = _questions(clinic)
    query = f"for={who}&clinic={clinic}&service={service}&unit={unit}&slot={slot}"
    if not questions:
        return _go(f"{request.scope.get('root_path', '')}/bestill/oppsummering?{query}")
    return _page(
        request,
        u,
        who,
        "questionnaire.html",
        clinic=c,
        service=service,
        unit=unit,
        slot=slot,
        questions=list(enumerate(questions)),
    )


def _questions(clinic: str) -> tuple[str, ...]:
    return texts.QUESTIONNAIRES.get(QUESTIONNAIRE_OF.get(clinic, ""), ())


@router.api_route("/bestill/oppsummering", methods=["GET", "POST"], response_class=HTMLResponse)
async def review(request: Request) -> Response:
    """Step 6: what will be sent, "Hva gjelder det?" and "Send bestilling"."""
    fields = await _fields(request)
    return await run_in_threadpool(_review_page, request, fields)


def _review_page(request: Request, fields: dict[str, str]) -> Response:
    # The API calls block: off the event loop, which also serves the API these pages call.
    who = _int(fields.get("for"))
    portal, u, api = _session(request, who)
    return _review(request, portal, u, who, api, fields, errors=[])


async def _fields(request: Request) -> dict[str, str]:
    """Query and form fields together (GET from the calendar, POST from the questionnaire)."""
    got = dict(request.query_params)
    if request.method == "POST":
        form = await request.form()
        got.update({k: str(v) for k, v in form.items()})
    return got


def _int(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def _review(
    request: Request,
    portal: Portal,
    u: User,
    who: int,
    api: PortalApi,
    fields: dict[str, str],
    errors: list[tuple[str, str]],
) -> Response:
    c = _clinic(api, fields.get("clinic", ""))
    slot = portal.signer.slot(fields.get("slot", ""))
    if slot is None:
        return _page(request, u, who, "error.html", status=400, message=T.slot_tampered)
    start, end = _instant(slot["start"]), _instant(slot["end"])
    assert start is not None
    questions = _questions(str(c["her_id"]))
    answers = [(i, q, fields.get(f"a{i}", "")) for i, q in enumerate(questions)]
    return _page(
        request,
        u,
        who,
        "review.html",
        status=422 if errors else 200,
        clinic=c,
        fields=fields,
        slot=slot,
        when=texts.format_period(start, end),
        place=texts.place_of_attendance(
            slot.get("appointment_type"), slot.get("location"), str(c["name"])
        ),
        practitioner=_practitioner(slot, c)["name"],
        service_label=texts.service_label(fields.get("service", "")),
        answers=[a for a in answers if a[2]],
        request_id=fields.get("request_id") or str(uuid.uuid4()),
        subject_max=SUBJECT_MAX,
        errors=errors,
    )


@router.post("/bestill/send")
async def send(request: Request) -> Response:
    """ "Send bestilling": POST /v1/bookings (the request_id was made with the review page)."""
    return await run_in_threadpool(_send, request, await _fields(request))


def _send(request: Request, fields: dict[str, str]) -> Response:
    who = _int(fields.get("for"))
    portal, u, api = _session(request, who)
    subject = fields.get("subject", "").strip()
    errors = _text_errors("subject", T.review_subject, subject, SUBJECT_MAX)
    slot = portal.signer.slot(fields.get("slot", ""))
    if errors or slot is None:
        return _review(request, portal, u, who, api, fields, errors)
    c = _clinic(api, fields.get("clinic", ""))
    request_body = _people(u, who) | {
        "request_id": fields.get("request_id") or str(uuid.uuid4()),
        "action": "reserve",
        "clinic": _clinic_ref(c, slot.get("unit_her_id")),
        "practitioner": _practitioner(slot, c),
        "service": slot.get("service") or fields.get("service") or "consultation",
        "appointment_type": slot.get("appointment_type") or "in_person",
        "slot": {"id": slot["id"], "start": slot["start"], "end": slot["end"]},
        "subject": subject,
    }
    answered = [
        {"question": q, "answer": fields.get(f"a{i}", "").strip()}
        for i, q in enumerate(_questions(str(c["her_id"])))
    ]
    if any(a["answer"] for a in answered):
        request_body["questionnaire"] = [a for a in answered if a["answer"]]
    answer = portal.sender(u).book(request_body)
    return _go(_receipt_url(request, str(answer["id"]), who, "reserve"))


def _text_errors(field: str, label: str, value: str, limit: int) -> list[tuple[str, str]]:
    """Server-side checks of a free-text field (the page counts too, but may be bypassed)."""
    if not value:
        return [(field, texts.missing(label))]
    if len(value) > limit:
        return [(field, texts.too_long(label, limit, len(value)))]
    return []


def _people(u: User, who: int) -> dict[str, Any]:
    """`patient` (and `requester` when acting for someone) of a request."""
    patient = u.subject(who)
    body: dict[str, Any] = {"patient": _person(patient)}
    if who:
        body["requester"] = _person(u.person) | {"relation": u.relation(who)}
    return body


def _person(p: Person) -> dict[str, str]:
    return {"fnr": p.fnr, "given_name": p.given_name, "family_name": p.family_name}


def _clinic_ref(c: dict[str, Any], unit: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"her_id": str(c["her_id"]), "name": c["name"]}
    if unit:
        ref["unit_her_id"] = str(unit)
    return ref


def _practitioner(slot: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    """The slot's practitioner; a unit's slot (a lab) names the unit."""
    who = slot.get("practitioner")
    if isinstance(who, dict) and who.get("name"):
        return {k: v for k, v in who.items() if v}
    unit = str(slot.get("unit_her_id") or "")
    name = next(
        (str(x["name"]) for x in c.get("units") or [] if str(x.get("her_id")) == unit),
        str(c["name"]),
    )
    return {"name": name}


# -- the wish ------------------------------------------------------------------------------------


@router.get("/bestill/onske", response_class=HTMLResponse)
def wish_form(request: Request, clinic: str, service: str = "", who: Who = 0) -> HTMLResponse:
    """ "Finner du ikke ledig time?": the appointment wish (subject + message)."""
    _, u, api = _session(request, who)
    c = _clinic(api, clinic)
    fields = {"service": service or "consultation", "appointment_type": "in_person"}
    return _wish_page(request, u, who, c, fields, [])


def _wish_page(
    request: Request,
    u: User,
    who: int,
    c: dict[str, Any],
    fields: dict[str, str],
    errors: list[tuple[str, str]],
) -> HTMLResponse:
    kinds = [(k, v) for k, v in texts.KIND_LABELS.items() if k != "urgent"]
    return _page(
        request,
        u,
        who,
        "wish.html",
        status=422 if errors else 200,
        clinic=c,
        fields=fields,
        kinds=kinds,
        takes_wishes=_takes(c, WISH),
        request_id=fields.get("request_id") or str(uuid.uuid4()),
        subject_max=SUBJECT_MAX,
        message_max=MESSAGE_MAX,
        urgent=texts.urgent_call(c.get("phone")),
        errors=errors,
    )


@router.post("/bestill/onske")
async def wish(request: Request) -> Response:
    """ "Send timeønske": POST /v1/bookings with action `wish`."""
    return await run_in_threadpool(_wish, request, await _fields(request))


def _wish(request: Request, fields: dict[str, str]) -> Response:
    who = _int(fields.get("for"))
    portal, u, api = _session(request, who)
    c = _clinic(api, fields.get("clinic", ""))
    subject, message = fields.get("subject", "").strip(), fields.get("message", "").strip()
    errors = _text_errors("subject", T.wish_subject, subject, SUBJECT_MAX)
    errors += _text_errors("message", T.wish_message, message, MESSAGE_MAX)
    if errors or not _takes(c, WISH):
        return _wish_page(request, u, who, c, fields, errors)
    answer = portal.sender(u).book(
        _people(u, who)
        | {
            "request_id": fields.get("request_id") or str(uuid.uuid4()),
            "action": "wish",
            "clinic": _clinic_ref(c, None),
            "service": fields.get("service") or "consultation",
            "appointment_type": fields.get("appointment_type") or "in_person",
            "subject": subject,
            "message": message,
        }
    )
    return _go(_receipt_url(request, str(answer["id"]), who, "wish"))


# -- the receipt ---------------------------------------------------------------------------------


def _receipt_url(request: Request, booking_id: str, who: int, kind: str) -> str:
    return f"{request.scope.get('root_path', '')}/kvittering/{booking_id}?for={who}&kind={kind}"


@router.get("/kvittering/{booking_id}", response_class=HTMLResponse)
def receipt(request: Request, booking_id: str, kind: str = "reserve", who: Who = 0) -> Response:
    """ "Bestillingen er kun en forespørsel ...", with the booking's current state."""
    _, u, api = _session(request, who)
    booking = api.booking(booking_id)
    titles = {
        "wish": (T.receipt_wish_title, T.receipt_wish_only),
        "cancel": (T.receipt_cancel_title, T.receipt_cancel_only),
    }
    title, lead = titles.get(kind, (T.receipt_title, T.receipt_request_only))
    return _page(
        request,
        u,
        who,
        "receipt.html",
        title=title,
        lead=lead,
        booking=booking,
        state=texts.booking_state_label(str(booking.get("state") or "")),
    )


# -- helpers ---------------------------------------------------------------------------------------


def _clinic(api: PortalApi, her_id: str) -> dict[str, Any]:
    """A clinic of GET /v1/clinics; ApiProblem 404 when it is not there."""
    from worker.entrypoints.portal.client import ApiProblem

    for c in api.clinics():
        if str(c.get("her_id")) == str(her_id):
            return c
    raise ApiProblem(404, "unknown clinic")


def _takes(c: dict[str, Any], process: str) -> bool:
    return process in (c.get("processes") or [])
