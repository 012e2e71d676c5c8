"""The patient pages against a fake Portal API (httpx.MockTransport recording every call)."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

with warnings.catch_warnings():
    # Starlette asks for its `httpx2` fork; plain httpx still drives its test client.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from worker import texts
from worker.entrypoints.portal import create_portal
from worker.entrypoints.portal.people import EMMA, KARI, OLA, USERS
from worker.settings import Settings

TEMPLATES = Path(__file__).resolve().parents[2] / "worker/entrypoints/portal/templates"
T = texts.PORTAL
START = (datetime.now(UTC) + timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)

CLINICS = [
    {
        "her_id": 8090001,
        "name": "Testlegekontoret",
        "phone": "81569069",
        "processes": ["timereservasjon", "timeonske", "avtaleavbestilling"],
        "units": [{"her_id": 8090002, "name": "Fastlege August September"}],
    },
    {
        "her_id": 8090010,
        "name": "Helsestasjonen Nord",
        "phone": None,
        "processes": ["timeonske"],
        "units": [],
    },
    {"her_id": 8090030, "name": "Frakoblet legekontor", "phone": "22334455", "processes": []},
]


def _slot(n: int, kind: str) -> dict[str, Any]:
    start = START + timedelta(days=n // 2, minutes=20 * n)
    return {
        "id": f"slot-{n}",
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=20)).isoformat(),
        "appointment_type": kind,
        "service": "consultation",
        "practitioner": {"name": "August September", "her_id": "8090002"},
        "unit_her_id": 8090002,
        "location": "Testlegekontoret",
    }


@dataclass
class FakeApi:
    """Answers like the Portal API; records (method, path, headers, json body)."""

    calls: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)  # path prefix -> status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, request.url.path, dict(request.headers), body))
        path = request.url.path
        for prefix, status in self.fail.items():
            if path.startswith(prefix) and status == 0:
                raise httpx.ConnectError("refused", request=request)
            if path.startswith(prefix):
                problem = {"type": "about:blank", "title": "x", "status": status, "detail": "x"}
                return httpx.Response(status, json=problem)
        return self._answer(request.method, path)

    def _answer(self, method: str, path: str) -> httpx.Response:
        if path == "/v1/clinics":
            return httpx.Response(200, json=CLINICS)
        if path.endswith("/free-slots"):
            slots = [_slot(0, "in_person"), _slot(1, "video"), _slot(2, "in_person")]
            return httpx.Response(200, json={"clinic": 8090001, "slots": slots})
        if method == "POST" and path == "/v1/bookings":
            return httpx.Response(202, json={"id": "b-1", "state": "REQUESTED"})
        if path.startswith("/v1/bookings/"):
            return httpx.Response(200, json={"id": path.rsplit("/", 1)[1], "state": "SENT"})
        if path == "/v1/inbox":
            return httpx.Response(200, json=[self._notice()])
        if path.endswith(".ics"):
            return httpx.Response(200, content=b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")
        if path.endswith("/cancel"):
            return httpx.Response(202, json={"id": "c-1", "state": "REQUESTED"})
        if path == "/v1/appointments":
            return httpx.Response(200, json=[self._appointment()])
        return httpx.Response(404, json={"title": "not found", "status": 404})

    @staticmethod
    def _notice() -> dict[str, Any]:
        return {
            "event": "confirmed",
            "title": "Du har fått en ny timeavtale",
            "body": "Din timereservasjon er bekreftet.\n\n" + texts.NO_REPLY,
            "appointment_uid": "appt-1",
            "repliable": False,
            "created_at": START.isoformat(),
        }

    @staticmethod
    def _appointment() -> dict[str, Any]:
        return {
            "uid": "appt-1",
            "status": texts.STATUS_ASSIGNED,
            "start": START.isoformat(),
            "end": (START + timedelta(minutes=20)).isoformat(),
            "duration_minutes": 20,
            "practitioner": "August September",
            "location": None,
            "appointment_type": "video",
            "clinic_name": "Testlegekontoret",
            "video_url": "https://video.example/abc",
        }

    def posted(self) -> list[Any]:
        """Bodies of POST /v1/bookings."""
        return [c[3] for c in self.calls if c[0] == "POST" and c[1] == "/v1/bookings"]


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def client(api: FakeApi) -> Iterator[TestClient]:
    settings = Settings(api_tokens="tok-1,tok-2", portal_secret="s3cret")  # type: ignore[arg-type]
    app = create_portal(settings, transport=httpx.MockTransport(api))
    with TestClient(app, base_url="http://portal.test/portal", root_path="/portal") as c:
        yield c


def login(client: TestClient, key: str) -> None:
    answer = client.post("/logg-inn", data={"person": key}, follow_redirects=False)
    assert answer.status_code == 303


def test_pages_need_a_login(client: TestClient) -> None:
    answer = client.get("/timeavtaler", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("/logg-inn")


def test_a_forged_cookie_is_no_login(client: TestClient) -> None:
    client.cookies.set("timebok_portal", "eyJ1c2VyIjoia2FyaSJ9.forged")
    assert client.get("/innboks", follow_redirects=False).status_code == 303


def test_login_without_a_choice_shows_an_error_summary(client: TestClient) -> None:
    answer = client.post("/logg-inn", data={})
    assert answer.status_code == 422
    assert T.error_summary in answer.text
    assert 'href="#person-kari"' in answer.text


def test_every_call_carries_the_token_and_the_patient(client: TestClient, api: FakeApi) -> None:
    login(client, "kari")
    page = client.get("/innboks")
    assert page.status_code == 200
    assert "Du har fått en ny timeavtale" in page.text
    assert "/timeavtaler/appt-1" in page.text  # linked to its appointment
    _, _, headers, _ = api.calls[-1]
    assert headers["authorization"] == "Bearer tok-1"
    assert headers["x-patient-id"] == KARI.fnr


def test_the_calendar_groups_by_day_and_marks_video(client: TestClient) -> None:
    login(client, "kari")
    page = client.get("/bestill/kalender?for=0&clinic=8090001&service=consultation&unit=8090002")
    assert page.status_code == 200
    assert page.text.count(texts.day_heading(START)) == 1  # two slots that day, one heading
    assert T.calendar_video in page.text
    assert texts.urgent_call("81569069") in page.text
    assert T.calendar_no_fit in page.text  # the clinic takes wishes


def test_a_clinic_that_takes_no_bookings_is_explained(client: TestClient) -> None:
    login(client, "kari")
    page = client.get("/bestill/klinikk?for=0")
    assert texts.clinic_not_connected("Frakoblet legekontor", "22334455") in page.text
    assert 'value="8090030"' not in page.text  # not selectable
    assert texts.wish_only("Helsestasjonen Nord", None) in page.text  # wishes only


def test_a_clinic_without_reservations_goes_to_the_wish(client: TestClient) -> None:
    login(client, "kari")
    answer = client.get(
        "/bestill/behandler?for=0&clinic=8090010&service=vaccination", follow_redirects=False
    )
    assert answer.status_code == 303
    assert "/bestill/onske?" in answer.headers["location"]


def _review_form(client: TestClient, who: int) -> dict[str, str]:
    page = client.get(f"/bestill/kalender?for={who}&clinic=8090001&service=consultation")
    token = re.search(r'name="slot" value="([^"]+)"', page.text)
    assert token
    review = client.post(
        "/bestill/oppsummering",
        data={
            "for": str(who),
            "clinic": "8090001",
            "service": "consultation",
            "unit": "8090002",
            "slot": token.group(1),
            "a0": "Nei",
        },
    )
    assert review.status_code == 200
    assert T.review_send in review.text
    fields = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', review.text))
    return fields


def test_a_parent_books_for_a_child(client: TestClient, api: FakeApi) -> None:
    login(client, "ola")
    fields = _review_form(client, 1)
    answer = client.post("/bestill/send", data=fields | {"subject": "Øreverk"})
    assert answer.status_code == 200
    assert T.receipt_request_only in answer.text
    (sent,) = api.posted()
    assert sent["action"] == "reserve"
    assert sent["patient"]["fnr"] == EMMA.fnr
    assert sent["requester"] == {
        "fnr": OLA.fnr,
        "given_name": "Ola",
        "family_name": "Nordmann",
        "relation": "parental_responsibility",
    }
    assert sent["slot"]["id"] == "slot-0"
    (headers,) = [c[2] for c in api.calls if c[0] == "POST" and c[1] == "/v1/bookings"]
    assert headers["x-patient-id"] == OLA.fnr  # the API wants the requester there
    assert sent["request_id"] == fields["request_id"]
    assert sent["questionnaire"] == [
        {"question": texts.QUESTIONNAIRES["luftveier"][0], "answer": "Nei"}
    ]


def test_the_subject_limit_is_enforced_on_the_server(client: TestClient, api: FakeApi) -> None:
    login(client, "kari")
    fields = _review_form(client, 0)
    answer = client.post("/bestill/send", data=fields | {"subject": "x" * 51})
    assert answer.status_code == 422
    assert texts.too_long(T.review_subject, 50, 51) in answer.text
    assert api.posted() == []
    answer = client.post("/bestill/send", data=fields | {"subject": "x" * 50})
    assert answer.status_code == 200
    assert len(api.posted()) == 1


def test_a_tampered_slot_is_refused(client: TestClient, api: FakeApi) -> None:
    login(client, "kari")
    fields = _review_form(client, 0)
    answer = client.post(
        "/bestill/send", data=fields | {"slot": "x" + fields["slot"], "subject": "a"}
    )
    assert answer.status_code == 400
    assert api.posted() == []


def test_a_wish(client: TestClient, api: FakeApi) -> None:
    login(client, "kari")
    page = client.get("/bestill/onske?for=0&clinic=8090001&service=consultation")
    request_id = re.search(r'name="request_id" value="([^"]+)"', page.text)
    assert request_id
    data = {
        "for": "0",
        "clinic": "8090001",
        "service": "consultation",
        "request_id": request_id.group(1),
        "subject": "Kontroll",
        "message": "",
        "appointment_type": "video",
    }
    refused = client.post("/bestill/onske", data=data)
    assert refused.status_code == 422
    assert texts.missing(T.wish_message) in refused.text
    done = client.post("/bestill/onske", data=data | {"message": "Tirsdag formiddag"})
    assert T.receipt_wish_only in done.text
    (sent,) = api.posted()
    assert sent["action"] == "wish"
    assert sent["appointment_type"] == "video"
    assert "requester" not in sent


def test_appointment_details_calendar_and_cancel(client: TestClient, api: FakeApi) -> None:
    login(client, "kari")
    page = client.get("/timeavtaler/appt-1?for=0")
    assert T.start_video in page.text
    assert "https://video.example/abc" in page.text
    assert texts.duration(20) in page.text
    ics = client.get("/timeavtaler/appt-1/kalender.ics?for=0")
    assert ics.headers["content-type"].startswith("text/calendar")
    assert "attachment" in ics.headers["content-disposition"]
    done = client.post("/timeavtaler/appt-1/avbestill", data={"for": "0"})
    assert T.receipt_cancel_only in done.text
    assert ("POST", "/v1/appointments/appt-1/cancel") in [(c[0], c[1]) for c in api.calls]


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (504, T.problem_timeout),
        (409, T.problem_not_reservable),
        (503, T.problem_busy),
        (0, T.problem_unavailable),  # no answer at all
    ],
)
def test_api_problems_become_norwegian(
    client: TestClient, api: FakeApi, status: int, message: str
) -> None:
    login(client, "kari")
    api.fail["/v1/clinics/8090001/free-slots"] = status
    page = client.get("/bestill/kalender?for=0&clinic=8090001&service=consultation")
    assert page.status_code == (status or 502)
    assert message in page.text


def test_no_fnr_in_any_url(client: TestClient) -> None:
    for u in USERS:
        login(client, u.key)
        for path in ("/timeavtaler?for=1", "/innboks?for=1", "/bestill?for=1"):
            page = client.get(path)
            links = re.findall(r'(?:href|action)="([^"]*)"', page.text)
            for person in (u.person, *(r.person for r in u.represents)):
                assert all(person.fnr not in link for link in links)


def test_someone_else_cannot_be_picked(client: TestClient) -> None:
    login(client, "kari")
    assert client.get("/innboks?for=2", follow_redirects=False).status_code == 303


def test_templates_carry_no_words_of_their_own() -> None:
    """Every visible word comes from worker/texts.py (the templates only reference it)."""
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text(encoding="utf-8")
        # The one macro that writes attributes (not text) inside a tag.
        text = re.sub(r"{% macro has_error.*?{% endmacro %}", " ", text, flags=re.S)
        text = re.sub(r"{#.*?#}|{%.*?%}|{{.*?}}", " ", text, flags=re.S)
        text = re.sub(r"<!doctype[^>]*>", " ", text, flags=re.I)
        text = re.sub(r"<[^>]*>", " ", text, flags=re.S)
        words = re.findall(r"[A-Za-zÆØÅæøå]{2,}", text)
        assert words == [], f"{template.name}: {words}"


def test_the_api_app_serves_the_pages(tmp_path: Path) -> None:
    """create_app mounts them under /portal (its hook), with their static files."""
    from worker.entrypoints.api import create_app

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", api_tokens="t")  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as c:
        login_page = c.get("/portal/logg-inn")
        assert login_page.status_code == 200
        assert 'lang="nb"' in login_page.text
        assert c.get("/portal/static/portal.js").status_code == 200
        assert c.get("/portal/timeavtaler", follow_redirects=False).status_code == 303
