"""The portal API as a real `timebok api` process, on real PostgreSQL + Redis, with a real
worker (the Celery side of intake) and a real `epj-sim` playing the clinic."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, select

from mappers.model import Person
from tests.api_server import OTHER_TOKEN, TOKEN, ApiProcess
from tests.conftest import ROOT, wait_for
from tests.integration.conftest import Stack
from tests.servers import free_port
from tests.support import avtale, fnr, headers, request
from worker import texts
from worker.adapters.store.tables import BookingRow, MessageRow, NotificationRow
from worker.entrypoints.app import create_app, send_booking
from worker.flows import views
from worker.request import BookingRequest

pytestmark = pytest.mark.integration

CLINIC = "8090001"  # played by the simulator
SILENT = "8090020"  # takes timereservasjon, nobody plays it
NOT_RESERVING = "8090010"  # no timereservasjon
PROBLEM = "application/problem+json"
# Patients of this module (numbers apart from other modules' to keep views readable).
ALICE, BOB, PARENT, CHILD = fnr(301), fnr(302), fnr(303), fnr(304)


def _is_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    """The RFC 9457 body of a problem answer (and that it is one)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["type"], str) and body["type"]
    assert set(body) <= {"type", "title", "status", "detail", "instance", "errors", "booking_id"}
    return body


def _sent(stack: Stack, booking_id: str) -> int:
    """Business messages sent to the clinic for a booking (not our receipts of its replies)."""
    with stack.deps.store.transaction() as s:
        stmt = select(func.count()).where(
            MessageRow.booking_id == booking_id,
            MessageRow.direction == "out",
            MessageRow.msg_type != "APPREC",
        )
        return int(s.scalar(stmt) or 0)


def _count(stack: Stack, model: Any, **where: Any) -> int:
    with stack.deps.store.transaction() as s:
        stmt = select(func.count()).select_from(model).filter_by(**where)
        return int(s.scalar(stmt) or 0)


def _gp_slot(api: ApiProcess) -> dict[str, Any]:
    """A free GP slot (with a practitioner) from the API's own lookup."""
    with api.client() as c:
        resp = c.get(f"/v1/clinics/{CLINIC}/free-slots")
    assert resp.status_code == 200, resp.text
    return next(
        s for s in resp.json()["slots"] if s["practitioner"] and s["unit_her_id"] == 8090002
    )


def _reserve_for(slot: dict[str, Any], patient_n: int, **over: Any) -> dict[str, Any]:
    return request(
        "reserve",
        patient_n=patient_n,
        slot={"id": slot["id"], "start": slot["start"], "end": slot["end"]},
        practitioner=slot["practitioner"],
        appointment_type=slot["appointment_type"],
        service=slot["service"],
        clinic={"her_id": CLINIC, "name": "Testlegekontoret", "unit_her_id": slot["unit_her_id"]},
        **over,
    )


def _state(stack: Stack, booking_id: str, *states: str) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        try:
            view = views.booking(stack.deps, booking_id)
        except views.NotFound:
            return None
        return view if view["state"] in states else None

    found: dict[str, Any] = wait_for(settled, 40, 0.2, f"booking {booking_id} in {states}")
    return found


@pytest.fixture(scope="module")
def confirmed(stack: Stack, api: ApiProcess) -> dict[str, str]:
    """ALICE's reservation of a looked-up slot, booked over the API and confirmed."""
    req = _reserve_for(_gp_slot(api), 301)
    with api.client(fnr=ALICE) as c:
        resp = c.post("/v1/bookings", json=req)
    assert resp.status_code == 202, resp.text
    view = _state(stack, req["request_id"], "CONFIRMED", "REJECTED")
    assert view["state"] == "CONFIRMED", view
    return {"booking_id": req["request_id"], "uid": view["appointment_uid"]}


# ---------------------------------------------------------------------------- OpenAPI


def test_openapi_is_3_1_and_uses_the_intake_contracts_own_model(api: ApiProcess) -> None:
    resp = httpx.get(f"{api.url}/openapi.json")
    assert resp.status_code == 200
    spec = resp.json()
    assert spec["openapi"].startswith("3.1")
    schemas = spec["components"]["schemas"]
    own = BookingRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = own.pop("$defs")
    assert schemas["BookingRequest"] == own
    for name, sub in defs.items():
        assert schemas[name] == sub, name
    body = spec["paths"]["/v1/bookings"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BookingRequest"
    }


def test_openapi_documents_problems_and_the_patient_header(api: ApiProcess) -> None:
    spec = httpx.get(f"{api.url}/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            errors = {s: r for s, r in op["responses"].items() if s.startswith(("4", "5"))}
            if path.startswith("/v1"):
                assert "401" in errors, (method, path)
                assert op["security"] == [{"HTTPBearer": []}]
            for status, answer in errors.items():
                if path != "/healthz":
                    assert list(answer["content"]) == [PROBLEM], (method, path, status)
            header = [p for p in op.get("parameters", ()) if p["name"] == "X-Patient-Id"]
            if header:
                assert header[0]["required"] is True and header[0]["in"] == "header"
                assert "400" in errors
    patient_calls = {
        ("post", "/v1/bookings"),
        ("get", "/v1/bookings/{booking_id}"),
        ("get", "/v1/inbox"),
        ("get", "/v1/appointments"),
        ("get", "/v1/appointments/{uid}.ics"),
        ("post", "/v1/appointments/{uid}/cancel"),
    }
    with_header = {
        (m, p)
        for p, item in spec["paths"].items()
        for m, op in item.items()
        if any(x["name"] == "X-Patient-Id" for x in op.get("parameters", ()))
    }
    assert with_header == patient_calls


# ---------------------------------------------------------------------------- auth


@pytest.mark.parametrize("path", ["/v1/clinics", "/v1/inbox", "/v1/bookings/x"])
def test_no_token_is_401_with_a_challenge(api: ApiProcess, path: str) -> None:
    with api.client(token=None, fnr=ALICE) as c:
        resp = c.get(path)
    _is_problem(resp, 401)
    assert resp.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "auth",
    [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer", f"Basic {TOKEN}", TOKEN, "Bearer a,b"],
)
def test_wrong_token_is_401(api: ApiProcess, auth: str) -> None:
    resp = httpx.get(f"{api.url}/v1/clinics", headers={"Authorization": auth})
    _is_problem(resp, 401)


def test_every_configured_token_is_accepted(api: ApiProcess) -> None:
    for token in (TOKEN, OTHER_TOKEN):
        with api.client(token=token) as c:
            assert c.get("/v1/clinics").status_code == 200


def test_no_token_is_checked_before_the_patient_header(api: ApiProcess) -> None:
    with api.client(token="wrong") as c:
        _is_problem(c.get("/v1/inbox"), 401)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (None, "required"),
        ("", "required"),
        ("1234567890", "11 digits"),
        ("abcdefghijk", "digits"),
        (fnr(301)[:-1] + str((int(fnr(301)[-1]) + 1) % 10), "check digit"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/inbox"),
        ("GET", "/v1/appointments"),
        ("GET", "/v1/bookings/00000000-0000-0000-0000-000000000000"),
        ("GET", "/v1/appointments/x.ics"),
        ("POST", "/v1/appointments/x/cancel"),
        ("POST", "/v1/bookings"),
    ],
)
def test_missing_or_invalid_patient_id_is_400(
    api: ApiProcess, method: str, path: str, value: str | None, why: str
) -> None:
    headers = {} if value is None else {"X-Patient-Id": value}
    with api.client() as c:
        resp = c.request(method, path, headers=headers, json={} if method == "POST" else None)
    body = _is_problem(resp, 400)
    assert "X-Patient-Id" in body["detail"]
    if value:
        assert value not in resp.text  # the number is never echoed


def test_health_and_metrics_need_no_token(api: ApiProcess) -> None:
    resp = httpx.get(f"{api.url}/healthz")
    assert resp.status_code == 200
    assert resp.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "epj_broker": "ok"},
    }
    assert httpx.get(f"{api.url}/metrics").status_code == 200


# ---------------------------------------------------------------------------- problem+json


def test_unknown_route_and_wrong_method_are_problems(api: ApiProcess) -> None:
    with api.client() as c:
        body = _is_problem(c.get("/nowhere"), 404)
        assert body["instance"] == "/nowhere"
        _is_problem(c.get("/v1/bookings/"), 404)  # never a redirect
        _is_problem(c.delete("/v1/bookings"), 405)
        _is_problem(c.put("/v1/clinics"), 405)


def test_body_over_the_limit_is_413(stack: Stack, api: ApiProcess) -> None:
    before = _count(stack, BookingRow)
    big = request("wish", patient_n=301, message="x" * 200)
    big["questionnaire"] = [{"question": "q", "answer": "a" * 1000}] * 70
    with api.client(fnr=ALICE) as c:
        _is_problem(c.post("/v1/bookings", json=big), 413)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
            yield json.dumps(big).encode()

        _is_problem(c.post("/v1/bookings", content=chunks()), 413)
    assert _count(stack, BookingRow) == before


def test_fastapi_validation_is_a_problem_with_field_errors(api: ApiProcess) -> None:
    with api.client() as c:
        resp = c.get(f"/v1/clinics/{CLINIC}/free-slots", params={"from": "tomorrow"})
    body = _is_problem(resp, 422)
    assert [e["field"] for e in body["errors"]] == ["query.from"]
    with api.client(fnr=ALICE) as c:
        resp = c.post("/v1/appointments/x/cancel", json={"request_id": 1, "extra": True})
    body = _is_problem(resp, 422)
    assert {e["field"] for e in body["errors"]} == {"request_id", "extra"}


# ---------------------------------------------------------------------------- intake


def test_new_booking_is_202_and_the_same_request_id_again_is_200(
    stack: Stack, api: ApiProcess
) -> None:
    req = request("wish", patient_n=301)
    with api.client(fnr=ALICE) as c:
        first = c.post("/v1/bookings", json=req)
        again = c.post("/v1/bookings", json=req)
    assert first.status_code == 202, first.text
    assert first.json()["id"] == req["request_id"]
    assert first.json()["state"] in ("REQUESTED", "SENT")
    assert again.status_code == 200
    assert again.json()["id"] == req["request_id"]
    assert _count(stack, BookingRow, id=req["request_id"]) == 1
    assert _sent(stack, req["request_id"]) == 1


def test_invalid_request_is_422_with_field_errors_and_stored_invalid(
    stack: Stack, api: ApiProcess
) -> None:
    req = request("reserve", patient_n=301, subject=None)
    req["slot"] = {**req["slot"], "end": req["slot"]["start"]}
    with api.client(fnr=ALICE) as c:
        resp = c.post("/v1/bookings", json=req)
        again = c.post("/v1/bookings", json=req)
    body = _is_problem(resp, 422)
    assert body["booking_id"] == req["request_id"]
    assert {e["field"] for e in body["errors"]} == {"subject", "slot.start"}
    assert ALICE not in resp.text
    assert _is_problem(again, 422)["errors"] == body["errors"]
    view = views.booking(stack.deps, req["request_id"])
    assert view["state"] == "INVALID"
    assert view["errors"] == body["errors"]
    with stack.deps.store.transaction() as s:
        events = s.scalars(
            select(NotificationRow.event).where(NotificationRow.booking_id == req["request_id"])
        )
        assert list(events) == ["invalid"]  # told in the inbox, as over Celery


def test_unknown_clinic_is_422_and_stored_invalid(stack: Stack, api: ApiProcess) -> None:
    req = request("wish", patient_n=301, clinic={"her_id": "9999999", "name": "Ukjent"})
    with api.client(fnr=ALICE) as c:
        body = _is_problem(c.post("/v1/bookings", json=req), 422)
    assert [e["field"] for e in body["errors"]] == ["clinic.her_id"]
    assert views.booking(stack.deps, req["request_id"])["state"] == "INVALID"


def test_malformed_json_is_422_and_stored_invalid(stack: Stack, api: ApiProcess) -> None:
    with api.client(fnr=ALICE) as c:
        resp = c.post(
            "/v1/bookings", content=b'{"request_id": ', headers={"content-type": "application/json"}
        )
    body = _is_problem(resp, 422)
    assert [e["field"] for e in body["errors"]] == ["$"]
    assert views.booking(stack.deps, body["booking_id"])["state"] == "INVALID"


def test_request_for_another_citizen_is_403_and_nothing_is_stored(
    stack: Stack, api: ApiProcess
) -> None:
    req = request("wish", patient_n=302)  # BOB's wish, vouched for as ALICE
    with api.client(fnr=ALICE) as c:
        body = _is_problem(c.post("/v1/bookings", json=req), 403)
    assert BOB not in json.dumps(body) and ALICE not in json.dumps(body)
    assert _count(stack, BookingRow, id=req["request_id"]) == 0


def test_a_representative_books_as_the_requester(stack: Stack, api: ApiProcess) -> None:
    requester = {
        "fnr": PARENT,
        "given_name": "Per",
        "family_name": "Danser",
        "relation": "parental_responsibility",
    }
    req = request("wish", patient_n=304, requester=requester)
    with api.client(fnr=CHILD) as c:  # the child is not the one who sends it
        _is_problem(c.post("/v1/bookings", json=req), 403)
    with api.client(fnr=PARENT) as c:
        assert c.post("/v1/bookings", json=req).status_code == 202
        assert c.get(f"/v1/bookings/{req['request_id']}").status_code == 200
    with api.client(fnr=CHILD) as c:  # the patient may read it too
        assert c.get(f"/v1/bookings/{req['request_id']}").status_code == 200
    with api.client(fnr=BOB) as c:
        _is_problem(c.get(f"/v1/bookings/{req['request_id']}"), 404)


def test_another_citizens_request_id_is_409_and_tells_nothing(
    stack: Stack, api: ApiProcess
) -> None:
    theirs = request("wish", patient_n=301)
    with api.client(fnr=ALICE) as c:
        assert c.post("/v1/bookings", json=theirs).status_code == 202
    mine = request("wish", patient_n=302, request_id=theirs["request_id"])
    with api.client(fnr=BOB) as c:
        body = _is_problem(c.post("/v1/bookings", json=mine), 409)
    assert set(body) == {"type", "title", "status", "detail", "instance"}
    assert _count(stack, BookingRow, id=theirs["request_id"]) == 1
    assert _count(stack, BookingRow, patient_fnr=BOB, id=theirs["request_id"]) == 0


def _worker_saw_duplicate(stack: Stack, booking_id: str) -> bool:
    for line in stack.worker.log.read_text(encoding="utf-8", errors="replace").splitlines():
        if "duplicate request suppressed" in line and booking_id in line:
            return True
    return False


def test_celery_first_then_api_is_one_booking(stack: Stack, api: ApiProcess) -> None:
    req = request("wish", patient_n=301)
    send_booking(create_app(stack.settings), req)
    _state(stack, req["request_id"], "SENT", "DELIVERED", "CONFIRMED", "REJECTED")
    with api.client(fnr=ALICE) as c:
        resp = c.post("/v1/bookings", json=req)
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == req["request_id"]
    assert _count(stack, BookingRow, id=req["request_id"]) == 1
    assert _sent(stack, req["request_id"]) == 1


def test_api_first_then_celery_is_one_booking(stack: Stack, api: ApiProcess) -> None:
    req = request("wish", patient_n=301)
    with api.client(fnr=ALICE) as c:
        assert c.post("/v1/bookings", json=req).status_code == 202
    send_booking(create_app(stack.settings), req)
    wait_for(lambda: _worker_saw_duplicate(stack, req["request_id"]), 40, 0.2, "worker dedupe")
    assert _count(stack, BookingRow, id=req["request_id"]) == 1
    assert _sent(stack, req["request_id"]) == 1


def test_invalid_over_celery_then_api_answers_the_same_422(stack: Stack, api: ApiProcess) -> None:
    req = request("wish", patient_n=301, message=None)
    send_booking(create_app(stack.settings), req)
    _state(stack, req["request_id"], "INVALID")
    with api.client(fnr=ALICE) as c:
        body = _is_problem(c.post("/v1/bookings", json=req), 422)
    assert body["booking_id"] == req["request_id"]
    assert [e["field"] for e in body["errors"]] == ["message"]
    assert _count(stack, BookingRow, id=req["request_id"]) == 1


# ---------------------------------------------------------------------------- reads


def test_booking_is_what_the_cli_prints(
    stack: Stack, api: ApiProcess, confirmed: dict[str, str]
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.entrypoints.cli",
            "booking",
            confirmed["booking_id"],
            "--json",
        ],
        env=stack.env,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    with api.client(fnr=ALICE) as c:
        resp = c.get(f"/v1/bookings/{confirmed['booking_id']}")
    assert resp.status_code == 200
    assert resp.json() == json.loads(done.stdout)
    assert resp.headers["cache-control"] == "no-store"


def test_another_patients_booking_is_404(api: ApiProcess, confirmed: dict[str, str]) -> None:
    with api.client(fnr=BOB) as c:
        body = _is_problem(c.get(f"/v1/bookings/{confirmed['booking_id']}"), 404)
        unknown = _is_problem(c.get(f"/v1/bookings/{uuid.uuid4()}"), 404)
    assert body["title"] == unknown["title"]  # indistinguishable from one that does not exist


def test_clinics_are_the_connected_ones_of_the_registry(stack: Stack, api: ApiProcess) -> None:
    with api.client() as c:
        got = c.get("/v1/clinics").json()
    expected = [c for c in stack.deps.registry.clinics if c.processes]
    assert [c["her_id"] for c in got] == [int(c.her_id) for c in expected]
    first = next(c for c in got if c["her_id"] == int(CLINIC))
    assert first["name"] == "Testlegekontoret" and first["phone"] == "81569069"
    assert "timereservasjon" in first["processes"]
    assert first["units"] == [
        {"her_id": 8090002, "name": "Fastlege August September"},
        {"her_id": 8090003, "name": "Laboratoriet"},
    ]
    assert 8090030 not in {c["her_id"] for c in got}  # in the registry, not connected


def test_free_slots_is_the_slots_object(stack: Stack, api: ApiProcess) -> None:
    with api.client() as c:
        resp = c.get(
            f"/v1/clinics/{CLINIC}/free-slots",
            params={"unit": "8090003", "service": "lab_test", "type": "in_person"},
        )
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert set(got) == {"clinic", "from", "to", "slots", "cached"}
    assert got["clinic"] == int(CLINIC) and got["slots"]
    assert {s["unit_her_id"] for s in got["slots"]} == {8090003}
    assert {s["service"] for s in got["slots"]} == {"lab_test"}
    keys = {"id", "start", "end", "appointment_type", "service", "practitioner"}
    assert set(got["slots"][0]) == keys | {"unit_her_id", "location"}


def test_free_slots_errors(stack: Stack, api: ApiProcess) -> None:
    with api.client() as c:
        assert _is_problem(c.get("/v1/clinics/1234567/free-slots"), 404)["type"].endswith(
            "unknown-clinic"
        )
        _is_problem(c.get("/v1/clinics/not-digits/free-slots"), 404)
        _is_problem(c.get(f"/v1/clinics/{NOT_RESERVING}/free-slots"), 409)
        _is_problem(c.get(f"/v1/clinics/{CLINIC}/free-slots?unit=8090021"), 422)
        bad = {"from": "2027-01-10", "to": "2027-01-01"}
        _is_problem(c.get(f"/v1/clinics/{CLINIC}/free-slots", params=bad), 422)
        end_of_time = {"from": "9999-12-25"}
        _is_problem(c.get(f"/v1/clinics/{CLINIC}/free-slots", params=end_of_time), 422)
        _is_problem(c.get(f"/v1/clinics/{SILENT}/free-slots"), 504)


def test_busy_clinic_is_503_with_retry_after(stack: Stack, api: ApiProcess) -> None:
    key = f"timebok:lookup:inflight:{SILENT}"
    client = redis.Redis.from_url(stack.settings.broker_url)
    client.set(key, stack.settings.lookup_max_in_flight, ex=60)  # every place taken
    try:
        with api.client() as c:
            resp = c.get(f"/v1/clinics/{SILENT}/free-slots")
    finally:
        client.delete(key)
        client.close()
    assert _is_problem(resp, 503)["type"].endswith("busy")
    assert int(resp.headers["retry-after"]) >= 1


def test_inbox_and_appointments_are_the_patients_own(
    stack: Stack, api: ApiProcess, confirmed: dict[str, str]
) -> None:
    with api.client(fnr=ALICE) as c:
        inbox = c.get("/v1/inbox").json()
        appointments = c.get("/v1/appointments").json()
    assert inbox == views.inbox(stack.deps, ALICE)
    assert any(n["booking_id"] == confirmed["booking_id"] for n in inbox)
    assert appointments == views.appointments(stack.deps, ALICE)
    assert confirmed["uid"] in {a["uid"] for a in appointments}
    with api.client(fnr=BOB) as c:
        assert confirmed["booking_id"] not in {n["booking_id"] for n in c.get("/v1/inbox").json()}
        assert confirmed["uid"] not in {a["uid"] for a in c.get("/v1/appointments").json()}


def test_ics_is_the_patients_own(api: ApiProcess, confirmed: dict[str, str]) -> None:
    with api.client(fnr=ALICE) as c:
        resp = c.get(f"/v1/appointments/{confirmed['uid']}.ics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/calendar")
    assert f"UID:{confirmed['uid']}" in resp.text.replace("\r\n ", "")
    assert "BEGIN:VEVENT" in resp.text
    with api.client(fnr=BOB) as c:
        _is_problem(c.get(f"/v1/appointments/{confirmed['uid']}.ics"), 404)
        _is_problem(c.get("/v1/appointments/no-such-uid.ics"), 404)


def test_cancel_another_patients_appointment_is_404(
    stack: Stack, api: ApiProcess, confirmed: dict[str, str]
) -> None:
    before = _count(stack, BookingRow)
    with api.client(fnr=BOB) as c:
        _is_problem(c.post(f"/v1/appointments/{confirmed['uid']}/cancel"), 404)
    assert _count(stack, BookingRow) == before


def test_cancel_is_one_request_however_often_it_is_sent(
    stack: Stack, api: ApiProcess, confirmed: dict[str, str]
) -> None:
    uid = confirmed["uid"]
    with api.client(fnr=ALICE) as c:
        first = c.post(f"/v1/appointments/{uid}/cancel")
        again = c.post(f"/v1/appointments/{uid}/cancel")
    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    cancel = first.json()["id"]
    view = _state(stack, cancel, "CONFIRMED", "CANCELLED", "REJECTED", "FAILED")
    assert view["action"] == "cancel" and view["booking_ref"] == uid
    assert _count(stack, BookingRow, target_id=uid) == 1
    with api.client(fnr=ALICE) as c:
        listed = {a["uid"]: a["status"] for a in c.get("/v1/appointments").json()}
        # a new request_id is a new request: refused, the appointment is cancelled already
        fresh = c.post(f"/v1/appointments/{uid}/cancel", json={"request_id": str(uuid.uuid4())})
    assert view["state"] == "CANCELLED", view  # the clinic took the cancellation
    assert listed[uid] == texts.STATUS_CANCELLED
    assert _is_problem(fresh, 422)["errors"][0]["field"] == "booking_ref"


# ---------------------------------------------------------------------------- logs, metrics


def test_access_log_has_route_templates_and_no_fodselsnummer(
    api: ApiProcess, confirmed: dict[str, str]
) -> None:
    with api.client(fnr=ALICE) as c:
        c.get("/v1/inbox", params={"note": ALICE})
        c.get(f"/v1/appointments/{confirmed['uid']}.ics")
    text = api.log.read_text(encoding="utf-8")
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    access = [x for x in lines if x.get("logger") == "timebok.api.access"]
    assert access, text[-2000:]
    assert {"method", "route", "status", "duration_ms"} <= set(access[-1])
    routes = {x["route"] for x in access}
    assert {"/v1/inbox", "/v1/appointments/{uid}.ics"} <= routes
    assert confirmed["uid"] not in json.dumps(access)  # templates, never paths
    for number in (ALICE, BOB, PARENT, CHILD):
        assert number not in text
    assert "note=" not in text


def test_metrics_count_requests_by_route_template_and_status(api: ApiProcess) -> None:
    with api.client(fnr=ALICE) as c:
        c.get("/v1/inbox")
    with api.client(token="nope") as c:
        c.get("/v1/clinics")
    text = httpx.get(f"{api.url}/metrics").text
    assert re.search(
        r'timebok_api_requests_total\{method="GET",route="/v1/inbox",status="200"\} [1-9]', text
    )
    assert re.search(
        r'timebok_api_requests_total\{method="GET",route="/v1/clinics",status="401"\} [1-9]', text
    )
    assert 'timebok_api_request_seconds_bucket{le="0.005",method="GET",route="/v1/inbox"}' in text


def test_health_is_503_when_a_broker_is_unreachable(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {
        **stack.env,
        "TIMEBOK_BROKER_URL": dead,
        "TIMEBOK_EPJ_BROKER_URL": stack.settings.epj_url,
    }
    server = ApiProcess(env, Path(tmp_path_factory.mktemp("api-dead")) / "api.log").start()
    try:
        resp = httpx.get(f"{server.url}/healthz", timeout=60)
    finally:
        server.stop()
    assert resp.status_code == 503
    assert resp.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "unavailable", "epj_broker": "ok"},
    }


def test_cancel_of_an_appointment_the_clinic_booked_needs_the_names(
    stack: Stack, api: ApiProcess
) -> None:
    uid = str(uuid.uuid4())
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=6)
    body = avtale(Person(BOB, "Bo", "Telefon"), uid=uid, start=start)
    stack.publish_raw(body, headers(str(uuid.uuid4()), "DIALOG_INNBYGGER_AVTALEUTSENDING"))
    wait_for(lambda: uid in {a["uid"] for a in views.appointments(stack.deps, BOB)}, 30, 0.2)
    with api.client(fnr=BOB) as c:
        refused = c.post(f"/v1/appointments/{uid}/cancel")
        assert _is_problem(refused, 422)["errors"] == [
            {"field": "patient", "message": "is required for this appointment"}
        ]
        assert _count(stack, BookingRow, target_id=uid) == 0  # nothing stored
        names = {"patient": {"given_name": "Bo", "family_name": "Telefon"}}
        taken = c.post(f"/v1/appointments/{uid}/cancel", json=names)
    assert taken.status_code == 202, taken.text
    view = views.booking(stack.deps, taken.json()["id"])
    assert view["action"] == "cancel" and view["booking_ref"] == uid
    with api.client(fnr=ALICE) as c:
        _is_problem(c.post(f"/v1/appointments/{uid}/cancel", json=names), 404)


def test_a_representative_reads_and_cancels_the_appointment_they_booked(
    stack: Stack, api: ApiProcess
) -> None:
    requester = {
        "fnr": PARENT,
        "given_name": "Per",
        "family_name": "Danser",
        "relation": "parental_responsibility",
    }
    req = _reserve_for(_gp_slot(api), 304, requester=requester)
    with api.client(fnr=PARENT) as c:
        assert c.post("/v1/bookings", json=req).status_code == 202
    view = _state(stack, req["request_id"], "CONFIRMED", "REJECTED")
    assert view["state"] == "CONFIRMED", view
    uid = view["appointment_uid"]
    with api.client(fnr=PARENT) as c:
        assert c.get(f"/v1/appointments/{uid}.ics").status_code == 200
        assert uid not in {a["uid"] for a in c.get("/v1/appointments").json()}  # not theirs
        cancel = c.post(f"/v1/appointments/{uid}/cancel")
    with api.client(fnr=CHILD) as c:
        assert uid in {a["uid"] for a in c.get("/v1/appointments").json()}
    assert cancel.status_code == 202, cancel.text
    with stack.deps.store.transaction() as s:
        row = s.get(BookingRow, cancel.json()["id"])
        assert row is not None and row.patient_fnr == CHILD
        assert row.request is not None and row.request["requester"]["fnr"] == PARENT
