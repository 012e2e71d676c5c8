"""What the pages share: the session, rendering, the clinic list, request parts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from mappers.model import Person
from worker import texts
from worker.entrypoints.portal.client import PortalApi
from worker.entrypoints.portal.people import USERS, User
from worker.entrypoints.portal.site import Portal

T = texts.PORTAL
RESERVE, WISH, CANCEL = "timereservasjon", "timeonske", "avtaleavbestilling"

Who = Annotated[int, Query(alias="for", ge=0)]


class LoginRequired(Exception):
    """No valid session cookie: the page sends the browser to the login."""


def portal_of(request: Request) -> Portal:
    """The portal the app was made with."""
    portal: Portal = request.app.state.portal
    return portal


def session(request: Request, who: int = 0) -> tuple[Portal, User, PortalApi]:
    """(portal, logged-in user, the API as person `who`); LoginRequired without a login."""
    portal = portal_of(request)
    u = portal.current(request)
    if u is None or not u.valid(who):
        raise LoginRequired
    return portal, u, portal.api(u, who)


def page(request: Request, u: User, who: int, name: str, **ctx: Any) -> HTMLResponse:
    """Render with the user, whom the page is about and the 'for' query."""
    status = int(ctx.pop("status", 200))
    return portal_of(request).render(
        request,
        name,
        status=status,
        user=u,
        who=who,
        subject=full_name(u.subject(who)),
        users=USERS,
        **ctx,
    )


def full_name(p: Person) -> str:
    return f"{p.given_name} {p.family_name}"


def go(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def instant(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


async def form_fields(request: Request) -> dict[str, str]:
    """Query and form fields together (GET from the calendar, POST from the questionnaire)."""
    got = dict(request.query_params)
    if request.method == "POST":
        form = await request.form()
        got.update({k: str(v) for k, v in form.items()})
    return got


def int_field(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


def text_errors(field: str, label: str, value: str, limit: int) -> list[tuple[str, str]]:
    """Server-side checks of a free-text field (the page counts too, but may be bypassed)."""
    if not value:
        return [(field, texts.missing(label))]
    if len(value) > limit:
        return [(field, texts.too_long(label, limit, len(value)))]
    return []


def people(u: User, who: int) -> dict[str, Any]:
    """`patient` (and `requester` when acting for someone) of a request."""
    patient = u.subject(who)
    body: dict[str, Any] = {"patient": person(patient)}
    if who:
        body["requester"] = person(u.person) | {"relation": u.relation(who)}
    return body


def person(p: Person) -> dict[str, str]:
    return {"fnr": p.fnr, "given_name": p.given_name, "family_name": p.family_name}


def clinic_ref(c: dict[str, Any], unit: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"her_id": str(c["her_id"]), "name": c["name"]}
    if unit:
        ref["unit_her_id"] = str(unit)
    return ref


def receipt_url(request: Request, booking_id: str, who: int, kind: str) -> str:
    return f"{request.scope.get('root_path', '')}/kvittering/{booking_id}?for={who}&kind={kind}"


def clinic_of(api: PortalApi, her_id: str) -> dict[str, Any]:
    """A clinic of GET /v1/clinics; ApiProblem 404 when it is not there."""
    from worker.entrypoints.portal.client import ApiProblem

    for c in api.clinics():
        if str(c.get("her_id")) == str(her_id):
            return c
    raise ApiProblem(404, "unknown clinic")


def takes(c: dict[str, Any], process: str) -> bool:
    return process in (c.get("processes") or [])
