"""The portal API's routes: each decodes, calls one flow, and maps its outcome to HTTP."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from mappers.codes import Process
from worker.bootstrap import Deps
from worker.domain.booking import State
from worker.entrypoints.api import health
from worker.entrypoints.api.auth import PatientId, require_token
from worker.entrypoints.api.models import (
    Accepted,
    AppointmentOut,
    BookingOut,
    CancelBody,
    ClinicOut,
    Health,
    NotificationOut,
    SlotsOut,
)
from worker.entrypoints.api.problems import ApiProblem, FieldProblem, responses
from worker.flows import lookups, patient, views
from worker.flows.ics import to_ics
from worker.flows.outbound import SubmitResult, submit
from worker.request import AppointmentKind, Service

BOOKING_REQUEST_REF = "#/components/schemas/BookingRequest"
BUSY_RETRY_SECONDS = 1  # a clinic's lookups in flight drain within a second or two

router = APIRouter(prefix="/v1", dependencies=[Depends(require_token)])
public = APIRouter()


def get_deps(request: Request) -> Deps:
    """The process's dependencies, built by create_app."""
    deps: Deps = request.app.state.deps
    return deps


AppDeps = Annotated[Deps, Depends(get_deps)]
Ref = Annotated[str, Path(min_length=1, max_length=64)]

# -- intake ------------------------------------------------------------------------------------


@router.post(
    "/bookings",
    status_code=202,
    response_model=Accepted,
    summary="Send a booking request (the intake contract)",
    responses={
        200: {"model": Accepted, "description": "This request_id was taken in before"},
        **responses(400, 401, 403, 409, 413, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": BOOKING_REQUEST_REF}}},
        }
    },
)
async def post_booking(
    request: Request, response: Response, deps: AppDeps, fnr: PatientId
) -> Accepted:
    """Validate and take in one request exactly as `timebok.submit_booking` does."""
    payload = _decode(await request.body())
    acting = patient.acting_fnr(payload)
    if acting is not None and acting != fnr:
        raise ApiProblem(
            403,
            "the request's requester (or patient, when no requester) is not X-Patient-Id",
            slug="patient-mismatch",
        )
    return await run_in_threadpool(_intake, deps, payload, response, fnr)


def _decode(raw: bytes) -> object:
    """The JSON body as the Celery task would receive it; text that is no JSON stays text
    (stored INVALID with the reason, as `timebok submit` does)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw.decode("utf-8", "replace")


def _intake(deps: Deps, payload: object, response: Response, fnr: str) -> Accepted:
    """The Celery task's code path; 202 new, 200 a repeat, 422 invalid (stored INVALID)."""
    result = submit(deps, payload)
    if not result.created and not patient.may_see(deps, result.booking_id, fnr):
        # Another citizen's request_id: neither its state nor its errors are this one's to see.
        raise ApiProblem(409, "this request_id is taken by another request", slug="id-taken")
    if result.state == State.INVALID.value:
        raise _invalid(deps, result)
    response.status_code = 202 if result.created else 200
    return Accepted(id=result.booking_id, state=result.state)


def _invalid(deps: Deps, result: SubmitResult) -> ApiProblem:
    stored = views.booking(deps, result.booking_id)
    errors = [FieldProblem(**e) for e in stored.get("errors") or []]
    return ApiProblem(
        422,
        result.reason or stored.get("reason"),
        slug="invalid-request",
        errors=errors,
        booking_id=result.booking_id,
    )


@router.get(
    "/bookings/{booking_id}",
    response_model=BookingOut,
    summary="A booking's state, history and messages (`timebok booking ID --json`)",
    responses=responses(400, 401, 404, 422, 503),
)
def get_booking(booking_id: Ref, deps: AppDeps, fnr: PatientId) -> dict[str, Any]:
    """The booking, when X-Patient-Id is its patient or requester (else 404)."""
    return patient.booking(deps, booking_id, fnr)


# -- the registry and lookups ------------------------------------------------------------------


@router.get(
    "/clinics",
    response_model=list[ClinicOut],
    summary="The connected clinics of the address registry",
    responses=responses(401),
)
def get_clinics(deps: AppDeps) -> list[dict[str, Any]]:
    """Clinics with at least one process, in registry order."""
    return [
        {
            "her_id": int(c.her_id),
            "name": c.name,
            "phone": c.phone,
            "processes": sorted(c.processes),
            "units": [{"her_id": int(u.her_id), "name": u.name} for u in c.units],
        }
        for c in deps.registry.clinics
        if c.connected
    ]


@router.get(
    "/clinics/{her_id}/free-slots",
    response_model=SlotsOut,
    summary="Ask a clinic for free slots (HentLedigeTimer)",
    responses=responses(401, 404, 409, 422, 502, 503, 504),
)
def get_free_slots(
    deps: AppDeps,
    her_id: Annotated[str, Path(min_length=1, max_length=20, examples=["8090001"])],
    start: Annotated[date | None, Query(alias="from", description="First day")] = None,
    end: Annotated[date | None, Query(alias="to", description="Last day")] = None,
    kind: Annotated[AppointmentKind | None, Query(alias="type")] = None,
    service: Service | None = None,
    unit: Annotated[str | None, Query(max_length=20, description="A unit's HER-id")] = None,
) -> dict[str, Any]:
    """The lookup of `timebok slots`, bounded by TIMEBOK_SYNC_TIMEOUT."""
    clinic = deps.registry.clinic(her_id) if her_id.isdigit() else None
    if clinic is None:
        raise ApiProblem(
            404, f"clinic {her_id} is not in the address registry", slug="unknown-clinic"
        )
    if not clinic.supports(Process.RESERVATION):
        raise ApiProblem(
            409, f"clinic {her_id} does not take timereservasjon", slug="not-supported"
        )
    query = lookups.SlotsQuery(
        clinic=her_id,
        start=start,
        end=end,
        unit=unit,
        appointment_type=kind.value if kind else None,
        service=service.value if service else None,
    )
    try:
        return lookups.free_slots(deps, query)
    except lookups.BadLookup as exc:
        raise ApiProblem(422, str(exc), slug="invalid-parameters") from None
    except lookups.Busy as exc:
        retry = {"Retry-After": str(BUSY_RETRY_SECONDS)}
        raise ApiProblem(503, str(exc), slug="busy", headers=retry) from None
    except lookups.NoAnswer as exc:
        raise ApiProblem(504, str(exc), slug="no-answer") from None
    except lookups.LookupFailed as exc:
        raise ApiProblem(502, str(exc), slug="lookup-failed") from None


# -- the citizen's own -------------------------------------------------------------------------


@router.get(
    "/inbox",
    response_model=list[NotificationOut],
    summary="The citizen's notifications, newest first",
    responses=responses(400, 401, 503),
)
def get_inbox(deps: AppDeps, fnr: PatientId) -> list[dict[str, Any]]:
    """`timebok inbox FNR --json` for X-Patient-Id."""
    return views.inbox(deps, fnr)


@router.get(
    "/appointments",
    response_model=list[AppointmentOut],
    summary="The citizen's appointments (Timeavtaler), soonest first",
    responses=responses(400, 401, 503),
)
def get_appointments(deps: AppDeps, fnr: PatientId) -> list[dict[str, Any]]:
    """`timebok appointments FNR --json` for X-Patient-Id."""
    return views.appointments(deps, fnr)


@router.get(
    "/appointments/{uid}.ics",
    response_class=Response,
    summary="Legg i egen kalender: the appointment as an .ics file",
    responses={
        200: {
            "description": "An iCalendar file with one VEVENT",
            "content": {"text/calendar": {"schema": {"type": "string"}}},
        },
        **responses(400, 401, 404, 422, 503),
    },
)
def get_ics(uid: Ref, deps: AppDeps, fnr: PatientId) -> Response:
    """The citizen's appointment (404 for another's uid)."""
    data = to_ics(patient.appointment(deps, uid, fnr))
    disposition = 'attachment; filename="timeavtale.ics"'
    return Response(data, media_type="text/calendar", headers={"Content-Disposition": disposition})


@router.post(
    "/appointments/{uid}/cancel",
    status_code=202,
    response_model=Accepted,
    summary="Cancel the citizen's appointment (a `cancel` request)",
    responses={
        200: {"model": Accepted, "description": "This cancel was taken in before"},
        **responses(400, 401, 404, 409, 413, 422, 503),
    },
)
def post_cancel(
    uid: Ref,
    response: Response,
    deps: AppDeps,
    fnr: PatientId,
    body: Annotated[CancelBody | None, Body()] = None,
) -> Accepted:
    """Build the cancel for the appointment and take it in through the intake path."""
    names = (body.patient.given_name, body.patient.family_name) if body and body.patient else None
    request_id = body.request_id if body else None
    payload = patient.cancel_request(deps, uid, fnr, request_id=request_id, names=names)
    if not payload["patient"].get("given_name"):
        raise ApiProblem(
            422,
            "the clinic booked this appointment: give the patient's names in the body",
            slug="invalid-parameters",
            errors=[FieldProblem(field="patient", message="is required for this appointment")],
        )
    return _intake(deps, payload, response, fnr)


# -- no token ----------------------------------------------------------------------------------


@public.get(
    "/healthz",
    response_model=Health,
    summary="Database and brokers reachable (no token)",
    responses={503: {"model": Health, "description": "Something is unreachable"}},
)
def get_healthz(deps: AppDeps, response: Response) -> Health:
    """200 when the database and both brokers answer, else 503 saying which did not."""
    checks = health.check(deps)
    ok = all(v == "ok" for v in checks.values())
    response.status_code = 200 if ok else 503
    return Health(status="ok" if ok else "unavailable", checks=checks)
