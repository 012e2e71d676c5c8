"""No fødselsnummer in any log: a small full run (worker in JSON log mode, beat, the EPJ
simulator dropping AppRecs so messages are resent, invalid requests, an unreadable message, a
clinic-published appointment) and every FNR used is searched for in everything they wrote."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text

from tests.chaos import harness as h
from tests.conftest import PG_URL, ROOT
from tests.support import fnr, request
from worker.adapters.transports.kombu import Envelope, KombuTransport
from worker.bootstrap import bootstrap
from worker.constants import SUBMIT_TASK
from worker.entrypoints.app import create_app, send_booking
from worker.settings import Settings

pytestmark = pytest.mark.integration

CLINIC = {"her_id": "8090001", "name": "Testlegekontoret"}
OFFLINE = {"her_id": "8090030", "name": "Frakoblet legekontor"}
SETTINGS = {"apprec_timeout": 1, "relay_interval": 1, "timeout_check_interval": 1}


def _bad_check_digit(good: str) -> str:
    return good[:10] + str((int(good[10]) + 1) % 10)


PATIENT, WISHER, CHILD, PARENT, OFFLINE_PATIENT, PHONE_PATIENT, STRANGER = (
    fnr(n) for n in (4101, 4102, 4103, 4104, 4105, 4106, 4107)
)
BROKEN = _bad_check_digit(fnr(4108))
EVERY_FNR = (PATIENT, WISHER, CHILD, PARENT, OFFLINE_PATIENT, PHONE_PATIENT, STRANGER, BROKEN)


def _who(number: str, given: str = "Kari") -> dict[str, str]:
    return {"fnr": number, "given_name": given, "family_name": "Nordmann"}


@pytest.fixture
def run(tmp_path: Path) -> Iterator[dict[str, Any]]:
    redis = h.RedisServer(tmp_path / "redis").start()
    try:
        with h.private_schema("timebok_fnrlogs") as schema:
            env = h.timebok_env(redis.url(), schema, **SETTINGS)
            services = [
                h.worker(env, tmp_path / "worker.log"),
                h.beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule"),
                h.simulator(
                    env,
                    tmp_path / "sim.log",
                    *("--delay", "2", "--seed", "3", "--drop-apprec-rate", "0.5"),
                    *("--duplicate-rate", "0.5"),
                ),
            ]
            try:
                for service in services:
                    service.start()
                settings = Settings(
                    broker_url=redis.url(), database_url=PG_URL, database_schema=schema
                )
                yield {"settings": settings, "env": env, "services": services, "tmp": tmp_path}
            finally:
                for service in services:
                    service.stop()
    finally:
        redis.stop()


def test_no_fnr_reaches_any_log(run: dict[str, Any]) -> None:
    settings: Settings = run["settings"]
    deps = bootstrap(settings)
    app = create_app(settings)
    sent: list[dict[str, Any]] = []
    events = TaskEvents(settings.broker_url)

    def send(payload: dict[str, Any]) -> str:
        sent.append(payload)
        send_booking(app, payload)  # as a portal should: no task event shows the request
        return str(payload["request_id"])

    def state(booking_id: str) -> str | None:
        with deps.store.engine.connect() as conn:
            return conn.execute(
                text("SELECT state FROM bookings WHERE id = :i"), {"i": booking_id}
            ).scalar()

    reserve = send(request(patient=_who(PATIENT), clinic=CLINIC))
    wish = send(request("wish", patient=_who(WISHER), clinic=CLINIC))
    child = send(
        request(
            patient=_who(CHILD, "Emma"),
            requester=_who(PARENT, "Ola") | {"relation": "parental_responsibility"},
            clinic=CLINIC,
        )
    )
    send(request(patient=_who(BROKEN), clinic=CLINIC))  # invalid: bad check digit
    send(request(patient=_who(OFFLINE_PATIENT), clinic=OFFLINE))  # invalid: not connected
    try:
        h.poll(
            lambda: all(state(b) == "CONFIRMED" for b in (reserve, wish, child)),
            60,
            "the first bookings confirmed",
        )
        cancel = send(request("cancel", patient=_who(PATIENT), booking_ref=reserve, clinic=CLINIC))
        change = send(request("change_wish", patient=_who(WISHER), booking_ref=wish, clinic=CLINIC))
        _unreadable_message_with_an_fnr(settings)
        _clinic_publishes_an_appointment(run["env"], run["tmp"] / "publish.out")
        h.poll(
            lambda: state(cancel) == "CANCELLED" and state(change) == "CONFIRMED",
            60,
            "the cancellation and the change",
        )
        h.poll(lambda: _notified(deps, PHONE_PATIENT), 30, "the phone-booked appointment")
        h.poll(lambda: _dead_letters(deps) >= 3, 30, "the dead letters")
    finally:
        deps.store.dispose()
        events.close()
    for service in run["services"]:
        service.stop()
    logs = {s.log.name: s.text() for s in run["services"]}
    logs["epj-sim publish-appointment"] = (run["tmp"] / "publish.out").read_text()
    worker_log = logs["worker.log"]
    # The capture is real: the run logged what happened (and resent with dropped AppRecs).
    for expected in (
        "booking state changed",
        "message published",
        "booking invalid",
        "unreadable message rejected",
        "resent without receipt",
    ):
        assert f'"msg": "{expected}"' in worker_log, f"nothing logged as {expected!r}"
    assert f"{PATIENT[:6]}*****" in logs["sim.log"]  # the simulator shows masked numbers
    for name, content in logs.items():
        for number in EVERY_FNR:
            assert number not in content, f"a fødselsnummer ({number[:6]}...) is in {name}"
    # Task events (what Flower shows) carry a placeholder, not the booking request.
    received = [
        e
        for e in events.decoded()
        if e.get("type") == "task-received" and e.get("name") == SUBMIT_TASK
    ]
    assert len(received) >= len(sent)
    assert {e["args"] for e in received} == {"[hidden]"}
    for event in events.decoded():
        for number in EVERY_FNR:
            assert number not in json.dumps(event), f"a fødselsnummer is in {event['type']}"


class TaskEvents:
    """Every Celery task event published on the broker while the test runs."""

    def __init__(self, url: str) -> None:
        self.client: redis.Redis[bytes] = redis.Redis.from_url(url)
        self.raw: list[bytes] = []
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(**{"*celeryev*": lambda m: self.raw.append(m["data"])})
        self.thread = self.pubsub.run_in_thread(sleep_time=0.1, daemon=True)

    def close(self) -> None:
        self.thread.stop()
        self.thread.join(5)
        self.pubsub.close()
        self.client.close()

    def decoded(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for raw in self.raw:
            envelope = json.loads(raw)
            body = envelope["body"]
            if envelope.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            batch = json.loads(body)
            found.extend(batch if isinstance(batch, list) else [batch])
        return found


def _unreadable_message_with_an_fnr(settings: Settings) -> None:
    """A broken MsgHead carrying a patient's number reaches our queue (logged, dead-lettered)."""
    body = (
        '<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24"><MsgInfo>'
        f"<Patient><Ident><Id>{STRANGER}</Id></Ident></Patient></MsgInfo>"
    ).encode()
    headers = {"fromHerId": "8090001", "msgId": str(uuid.uuid4()), "type": STRANGER}
    transport = KombuTransport(settings.epj_url)
    try:
        transport.publish(Envelope(settings.inbound_queue, body, headers))
    finally:
        transport.close()


def _clinic_publishes_an_appointment(env: dict[str, str], out: Path) -> None:
    """`timebok epj-sim publish-appointment --fnr ...`: the clinic books by phone."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=9)
    with out.open("w", encoding="utf-8") as handle:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "worker.entrypoints.cli",
                "epj-sim",
                "publish-appointment",
                *("--clinic", "8090001", "--fnr", PHONE_PATIENT),
                *("--given-name", "Per", "--family-name", "Telefon"),
                *("--start", start.isoformat()),
                *("--end", (start + timedelta(minutes=20)).isoformat()),
            ],
            env=env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=60,
            check=True,
        )


def _notified(deps: Any, patient: str) -> bool:
    with deps.store.engine.connect() as conn:
        return bool(
            conn.execute(
                text("SELECT count(*) FROM notifications WHERE patient_fnr = :f"), {"f": patient}
            ).scalar()
        )


def _dead_letters(deps: Any) -> int:
    with deps.store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM dead_letters")).scalar() or 0)
