"""The booking guide (domain.md section 1): for whom, clinic, service, practitioner, free
slots, questionnaire, review, send; and the appointment wish."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from itertools import groupby
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from worker import texts
from worker.entrypoints.portal.client import PortalApi
from worker.entrypoints.portal.common import (
    RESERVE,
    WISH,
    T,
    Who,
    clinic_of,
    clinic_ref,
    form_fields,
    go,
    instant,
    int_field,
    page,
    people,
    receipt_url,
    session,
    takes,
    text_errors,
)
from worker.entrypoints.portal.people import User
from worker.entrypoints.portal.site import Portal

router = APIRouter()
SUBJECT_MAX, MESSAGE_MAX = 50, 250
# Clinics whose booking guide asks the questionnaire (texts.QUESTIONNAIRES) before the review.
QUESTIONNAIRE_OF = {"8090001": "luftveier"}
CALENDAR_DAYS = 4  # days per calendar page ("Senere timer" shows the next ones)


@router.get("/bestill", response_class=HTMLResponse)
def for_whom(request: Request, who: Who = 0) -> HTMLResponse:
    """Step 0: for whom (self, a child, someone the user holds a power of attorney for)."""
    _, u, _api = session(request, who)
    return page(request, u, who, "for_whom.html", errors=[])


@router.get("/bestill/klinikk", response_class=HTMLResponse)
def choose_clinic(request: Request, who: Who = 0) -> HTMLResponse:
    """Step 1: a clinic that takes digital bookings; the others explained, with their phone."""
    _, u, api = session(request, who)
    clinics = api.clinics()
    bookable = [
        c | {"note": "" if takes(c, RESERVE) else texts.wish_only(str(c["name"]), c.get("phone"))}
        for c in clinics
        if takes(c, RESERVE) or takes(c, WISH)
    ]
    offline = [
        c | {"why": texts.clinic_not_connected(str(c["name"]), c.get("phone"))}
        for c in clinics
        if not (takes(c, RESERVE) or takes(c, WISH))
    ]
    return page(request, u, who, "clinic.html", clinics=bookable, offline=offline, errors=[])


@router.get("/bestill/tjeneste", response_class=HTMLResponse)
def choose_service(request: Request, clinic: str, who: Who = 0) -> HTMLResponse:
    """Step 2: the service."""
    _, u, api = session(request, who)
    c = clinic_of(api, clinic)
    services = list(texts.SERVICE_LABELS.items())
    return page(request, u, who, "service.html", clinic=c, services=services, errors=[])


@router.get("/bestill/behandler", response_class=HTMLResponse)
def choose_practitioner(request: Request, clinic: str, service: str = "", who: Who = 0) -> Response:
    """Step 3: the practitioner (a unit of the clinic); a clinic without slots: the wish form."""
    _, u, api = session(request, who)
    c = clinic_of(api, clinic)
    if not service:
        services = list(texts.SERVICE_LABELS.items())
        errors = [("service-consultation", T.service_missing)]
        return page(
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
    if not takes(c, RESERVE):
        return go(f"{request.scope.get('root_path', '')}/bestill/onske?{query}")
    units = list(c.get("units") or [])
    if not units:
        return go(f"{request.scope.get('root_path', '')}/bestill/kalender?{query}")
    return page(
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
    portal, u, api = session(request, who)
    c = clinic_of(api, clinic)
    first = _day(start) or date.today()
    last = first + timedelta(days=CALENDAR_DAYS - 1)
    found = api.free_slots(
        clinic, **{"from": first.isoformat(), "to": last.isoformat()}, service=service, unit=unit
    )
    slots = [_slot_view(portal, s) for s in found.get("slots", [])]
    days = [(heading, list(group)) for heading, group in groupby(slots, key=lambda s: s["day"])]
    return page(
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
        takes_wishes=takes(c, WISH),
        urgent=texts.urgent_call(c.get("phone")),
        errors=[("slot-0", T.calendar_missing)] if missing else [],
    )


def _slot_view(portal: Portal, s: dict[str, Any]) -> dict[str, Any]:
    start, end = instant(s["start"]), instant(s["end"])
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
    _, u, api = session(request, who)
    c = clinic_of(api, clinic)
    if not slot:
        query = f"for={who}&clinic={c['her_id']}&service={service}&unit={unit}&missing=1"
        return go(f"{request.scope.get('root_path', '')}/bestill/kalender?{query}")
    questions = _questions(clinic)
    query = f"for={who}&clinic={clinic}&service={service}&unit={unit}&slot={slot}"
    if not questions:
        return go(f"{request.scope.get('root_path', '')}/bestill/oppsummering?{query}")
    return page(
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
    fields = await form_fields(request)
    return await run_in_threadpool(_review_page, request, fields)


def _review_page(request: Request, fields: dict[str, str]) -> Response:
    # The API calls block: off the event loop, which also serves the API these pages call.
    who = int_field(fields.get("for"))
    portal, u, api = session(request, who)
    return _review(request, portal, u, who, api, fields, errors=[])


def _review(
    request: Request,
    portal: Portal,
    u: User,
    who: int,
    api: PortalApi,
    fields: dict[str, str],
    errors: list[tuple[str, str]],
) -> Response:
    c = clinic_of(api, fields.get("clinic", ""))
    slot = portal.signer.slot(fields.get("slot", ""))
    if slot is None:
        return page(request, u, who, "error.html", status=400, message=T.slot_tampered)
    start, end = instant(slot["start"]), instant(slot["end"])
    assert start is not None
    questions = _questions(str(c["her_id"]))
    answers = [(i, q, fields.get(f"a{i}", "")) for i, q in enumerate(questions)]
    return page(
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
    return await run_in_threadpool(_send, request, await form_fields(request))


def _send(request: Request, fields: dict[str, str]) -> Response:
    who = int_field(fields.get("for"))
    portal, u, api = session(request, who)
    subject = fields.get("subject", "").strip()
    errors = text_errors("subject", T.review_subject, subject, SUBJECT_MAX)
    slot = portal.signer.slot(fields.get("slot", ""))
    if errors or slot is None:
        return _review(request, portal, u, who, api, fields, errors)
    c = clinic_of(api, fields.get("clinic", ""))
    request_body = people(u, who) | {
        "request_id": fields.get("request_id") or str(uuid.uuid4()),
        "action": "reserve",
        "clinic": clinic_ref(c, slot.get("unit_her_id")),
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
    return go(receipt_url(request, str(answer["id"]), who, "reserve"))


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


@router.get("/bestill/onske", response_class=HTMLResponse)
def wish_form(request: Request, clinic: str, service: str = "", who: Who = 0) -> HTMLResponse:
    """ "Finner du ikke ledig time?": the appointment wish (subject + message)."""
    _, u, api = session(request, who)
    c = clinic_of(api, clinic)
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
    return page(
        request,
        u,
        who,
        "wish.html",
        status=422 if errors else 200,
        clinic=c,
        fields=fields,
        kinds=kinds,
        takes_wishes=takes(c, WISH),
        request_id=fields.get("request_id") or str(uuid.uuid4()),
        subject_max=SUBJECT_MAX,
        message_max=MESSAGE_MAX,
        urgent=texts.urgent_call(c.get("phone")),
        errors=errors,
    )


@router.post("/bestill/onske")
async def wish(request: Request) -> Response:
    """ "Send timeønske": POST /v1/bookings with action `wish`."""
    return await run_in_threadpool(_wish, request, await form_fields(request))


def _wish(request: Request, fields: dict[str, str]) -> Response:
    who = int_field(fields.get("for"))
    portal, u, api = session(request, who)
    c = clinic_of(api, fields.get("clinic", ""))
    subject, message = fields.get("subject", "").strip(), fields.get("message", "").strip()
    errors = text_errors("subject", T.wish_subject, subject, SUBJECT_MAX)
    errors += text_errors("message", T.wish_message, message, MESSAGE_MAX)
    if errors or not takes(c, WISH):
        return _wish_page(request, u, who, c, fields, errors)
    answer = portal.sender(u).book(
        people(u, who)
        | {
            "request_id": fields.get("request_id") or str(uuid.uuid4()),
            "action": "wish",
            "clinic": clinic_ref(c, None),
            "service": fields.get("service") or "consultation",
            "appointment_type": fields.get("appointment_type") or "in_person",
            "subject": subject,
            "message": message,
        }
    )
    return go(receipt_url(request, str(answer["id"]), who, "wish"))
