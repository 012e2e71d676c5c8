"""Synchronous lookups on real Redis: `timebok slots` / `planned` against a real `epj-sim`
process and a real worker (booking a slot found by a lookup)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from mappers import incoming
from mappers.codes import RequestCode
from mappers.model import DialogMessage
from tests.conftest import ROOT, wait_for
from tests.integration.conftest import Stack
from tests.support import fnr, request
from worker.adapters.store.tables import DeadLetterRow, MessageRow
from worker.adapters.transports.base import Delivery, Envelope, Outcome, transport_headers
from worker.adapters.transports.kombu import KombuTransport
from worker.bootstrap import Deps
from worker.constants import REQUESTS_QUEUE, SUBMIT_TASK
from worker.entrypoints.app import create_app
from worker.flows import lookups, views
from worker.texts import SLOT_TAKEN

pytestmark = pytest.mark.integration

CLINIC = "8090001"  # played by the simulator: units 8090002 (a GP) and 8090003 (a lab)
SILENT = "8090020"  # takes timereservasjon but nobody plays it: never answers
NOT_CONNECTED = "8090010"  # no timereservasjon in the registry
TIMEOUT = 2.0
APPOINTMENT_KEYS = {
    "uid",
    "status",
    "start",
    "end",
    "duration_minutes",
    "practitioner",
    "location",
    "appointment_type",
    "clinic_her_id",
    "clinic_name",
    "video_url",
    "booking_id",
}


@dataclass
class Sim:
    """A `timebok epj-sim` process playing CLINIC on the stack's Redis."""

    proc: subprocess.Popen[bytes]
    log: Path

    def lookups_answered(self) -> int:
        """How many lookups the simulator answered so far (its own log lines)."""
        return self.log.read_text(encoding="utf-8").count("<- HentLedigeTimer")


@pytest.fixture(scope="module")
def sim(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """The simulator answering at once (delay 0), confirming every reservation."""
    log = Path(tmp_path_factory.mktemp("sim")) / "sim.log"
    out = log.open("ab")
    cmd = [sys.executable, "-m", "worker.entrypoints.cli", "epj-sim", "--clinic", CLINIC]
    proc = subprocess.Popen(
        [*cmd, "--delay", "0", "--seed", "7"],
        env=stack.env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    wait_for(lambda: b"consuming" in log.read_bytes(), 30, 0.1, "simulator consuming")
    try:
        yield Sim(proc, log)
    finally:
        proc.terminate()
        proc.wait(15)
        out.close()


def _deps(stack: Stack, **settings: Any) -> Deps:
    """The stack's deps with other settings (no cache unless asked)."""
    changed = {"lookup_cache_ttl": 0.0, "sync_timeout": TIMEOUT, **settings}
    return replace(stack.deps, settings=stack.settings.model_copy(update=changed))


def cli(stack: Stack, *args: str, cache: bool = False) -> tuple[int, Any, str, float]:
    """Run `timebok <args> --json`: exit code, parsed stdout, stderr, seconds taken."""
    env = {**stack.env, "TIMEBOK_SYNC_TIMEOUT": str(TIMEOUT)}
    if not cache:
        env["TIMEBOK_LOOKUP_CACHE_TTL"] = "0"
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "worker.entrypoints.cli", *args, "--json"],
        env=env,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - began
    out = done.stdout.decode()
    return done.returncode, json.loads(out) if out.strip() else None, done.stderr.decode(), took


def _book(stack: Stack, slot: dict[str, Any], patient_n: int) -> str:
    """A reserve request for a slot from a lookup, carrying its fields unchanged."""
    req = request(
        "reserve",
        patient_n=patient_n,
        slot={"id": slot["id"], "start": slot["start"], "end": slot["end"]},
        practitioner=slot["practitioner"],
        appointment_type=slot["appointment_type"],
        service=slot["service"],
        clinic={"her_id": CLINIC, "name": "Testlegekontoret", "unit_her_id": slot["unit_her_id"]},
    )
    create_app(stack.settings).send_task(SUBMIT_TASK, args=[req], queue=REQUESTS_QUEUE)
    return str(req["request_id"])


def _settled(stack: Stack, booking_id: str) -> dict[str, Any]:
    def state() -> dict[str, Any] | None:
        try:
            view = views.booking(stack.deps, booking_id)
        except views.NotFound:
            return None
        return view if view["state"] in ("CONFIRMED", "REJECTED") else None

    found: dict[str, Any] = wait_for(state, 30, 0.2, f"booking {booking_id} answered")
    return found


def _gp_slot(slots: list[dict[str, Any]]) -> dict[str, Any]:
    """A bookable GP slot (with a practitioner) from a lookup answer."""
    return next(s for s in slots if s["practitioner"] and s["unit_her_id"] == 8090002)


# ---------------------------------------------------------------------------- the CLI


def test_slots_found_and_booked(stack: Stack, sim: Sim) -> None:
    code, got, err, _ = cli(stack, "slots", CLINIC)
    assert code == 0, err
    today = date.today()
    assert got["clinic"] == int(CLINIC) and got["cached"] is False
    assert got["from"] == today.isoformat()
    assert got["to"] == (today + timedelta(days=13)).isoformat()
    assert got["slots"], "the simulated calendar has free slots"
    keys = {"id", "start", "end", "appointment_type", "service", "practitioner"}
    assert set(got["slots"][0]) >= keys | {"unit_her_id", "location"}
    slot = _gp_slot(got["slots"])
    assert datetime.fromisoformat(slot["start"]).utcoffset() is not None

    view = _settled(stack, _book(stack, slot, patient_n=1011))
    assert view["state"] == "CONFIRMED", view
    with stack.deps.store.transaction() as s:
        rows = s.scalars(
            select(MessageRow)
            .where(MessageRow.booking_id == view["id"], MessageRow.direction == "out")
            .order_by(MessageRow.id)
        )
        sent_docs = [incoming.parse_any(row.xml) for row in rows]
    [sent] = [
        d
        for d in sent_docs
        if isinstance(d, DialogMessage) and d.request and d.request.code is RequestCode.RESERVE
    ]
    assert sent.event is not None
    assert sent.event.related_to == slot["id"]
    assert sent.event.start == datetime.fromisoformat(slot["start"])
    assert sent.event.end == datetime.fromisoformat(slot["end"])
    assert sent.request is not None and sent.request.practitioner is not None
    assert sent.request.practitioner.name == slot["practitioner"]["name"]

    code, again, err, _ = cli(stack, "slots", CLINIC)
    assert code == 0, err
    assert slot["id"] not in {s["id"] for s in again["slots"]}
    assert again["slots"], "only the booked slot is gone"


def test_no_slots_is_an_answer(stack: Stack, sim: Sim) -> None:
    later = date.today() + timedelta(days=60)  # beyond the calendar's 28 days
    code, got, err, _ = cli(
        stack, "slots", CLINIC, "--from", later.isoformat(), "--to", str(later + timedelta(3))
    )
    assert code == 0, err
    assert got["slots"] == [] and got["from"] == later.isoformat()


@pytest.mark.parametrize("kind", ["video", "urgent", "in_person"])
def test_type_filter(stack: Stack, sim: Sim, kind: str) -> None:
    code, got, err, _ = cli(stack, "slots", CLINIC, "--type", kind)
    assert code == 0, err
    assert got["slots"] and {s["appointment_type"] for s in got["slots"]} == {kind}


def test_unit_and_service_filter(stack: Stack, sim: Sim) -> None:
    code, got, err, _ = cli(stack, "slots", CLINIC, "--unit", "8090003", "--service", "lab_test")
    assert code == 0, err
    assert got["slots"] and {s["unit_her_id"] for s in got["slots"]} == {8090003}
    assert {s["service"] for s in got["slots"]} == {"lab_test"}


def test_practitioner_filter(stack: Stack, sim: Sim) -> None:
    got = lookups.free_slots(_deps(stack), lookups.SlotsQuery(CLINIC, practitioner="8090002"))
    assert got["slots"]
    assert {(s["practitioner"] or {}).get("her_id") for s in got["slots"]} == {"8090002"}
    everyone = lookups.free_slots(_deps(stack), lookups.SlotsQuery(CLINIC))
    assert len(everyone["slots"]) > len(got["slots"])  # the lab's slots were left out


def test_clinic_that_does_not_answer_exits_3_within_the_timeout(stack: Stack, sim: Sim) -> None:
    _code, _got, _err, start_up = cli(stack, "slots", NOT_CONNECTED)  # the same start, no wait
    code, got, _err, took = cli(stack, "slots", SILENT)
    assert code == 3
    assert "did not answer within 2 s" in got["error"]
    # Beyond starting the interpreter (measured beside it), the wait ends within timeout + 1 s.
    assert took - start_up < TIMEOUT + 1.0, (took, start_up)
    assert took >= TIMEOUT


@pytest.mark.parametrize("clinic", [NOT_CONNECTED, "8099999"])
def test_clinic_not_connected_exits_2_and_sends_nothing(
    stack: Stack, sim: Sim, clinic: str
) -> None:
    code, got, _err, _ = cli(stack, "slots", clinic)
    assert code == 2
    assert "nothing sent" in got["error"]
    assert stack.depth(f"{clinic}_sync") == 0
    code, got, _err, _ = cli(stack, "planned", clinic, "--patient", fnr(3))
    assert code == 2 and "nothing sent" in got["error"]


def test_bad_input_exits_2(stack: Stack, sim: Sim) -> None:
    code, got, _err, _ = cli(stack, "slots", CLINIC, "--from", "2026-12-10", "--to", "2026-12-01")
    assert code == 2 and "before" in got["error"]
    code, got, _err, _ = cli(stack, "slots", CLINIC, "--unit", "8090021")
    assert code == 2 and "not a unit" in got["error"]


def test_planned_lists_the_patients_booked_appointment(stack: Stack, sim: Sim) -> None:
    code, got, err, _ = cli(stack, "slots", CLINIC, "--type", "video")
    assert code == 0, err
    slot = _gp_slot(got["slots"])
    assert _settled(stack, _book(stack, slot, patient_n=1021))["state"] == "CONFIRMED"
    code, planned, err, _ = cli(stack, "planned", CLINIC, "--patient", fnr(1021))
    assert code == 0, err
    assert planned["clinic"] == int(CLINIC)
    [appointment] = planned["appointments"]
    assert appointment["start"] == slot["start"] and appointment["appointment_type"] == "video"
    assert set(appointment) == APPOINTMENT_KEYS  # the fields of `timebok appointments --json`
    code, nobody, err, _ = cli(stack, "planned", CLINIC, "--patient", fnr(1022))
    assert code == 0 and nobody["appointments"] == [], err


# ---------------------------------------------------------------------------- the race


def test_two_patients_race_for_one_slot(stack: Stack, sim: Sim) -> None:
    got = lookups.free_slots(_deps(stack), lookups.SlotsQuery(CLINIC))
    slot = _gp_slot(got["slots"])
    patients = {_book(stack, slot, patient_n=n): n for n in (1031, 1032)}
    states = {_settled(stack, b)["state"]: b for b in patients}
    assert set(states) == {"CONFIRMED", "REJECTED"}
    lost = states["REJECTED"]
    [told] = [n for n in views.inbox(stack.deps, fnr(patients[lost])) if n["booking_id"] == lost]
    assert told["event"] == "rejected" and told["title"] == "Timen er ikke lenger ledig"
    assert told["body"].startswith(SLOT_TAKEN)  # the time was taken: not the generic refusal
    assert "ut fra bestillingen din" not in told["body"]


# ---------------------------------------------------------------------------- cache and limit


def test_answers_are_cached_until_a_reservation(stack: Stack, sim: Sim) -> None:
    deps = _deps(stack, lookup_cache_ttl=30.0)
    query = lookups.SlotsQuery(CLINIC, start=date.today() + timedelta(days=2))
    asked = sim.lookups_answered()
    first = lookups.free_slots(deps, query)
    second = lookups.free_slots(deps, query)
    assert first["cached"] is False and second["cached"] is True
    assert second["slots"] == first["slots"]
    code, third, err, _ = cli(stack, "slots", CLINIC, "--from", str(query.start), cache=True)
    assert code == 0 and third["cached"] is True, err  # another process shares the cache
    assert sim.lookups_answered() == asked + 1  # the clinic was asked once
    slot = _gp_slot(first["slots"])
    assert _settled(stack, _book(stack, slot, patient_n=1041))["state"] == "CONFIRMED"
    fresh = lookups.free_slots(deps, query)
    assert fresh["cached"] is False
    assert slot["id"] not in {s["id"] for s in fresh["slots"]}


def test_busy_clinic_is_answered_at_once(stack: Stack, sim: Sim) -> None:
    deps = _deps(stack, lookup_max_in_flight=1, sync_timeout=8.0)  # holds the one place
    outcome: list[str] = []

    def ask() -> None:
        try:
            lookups.free_slots(deps, lookups.SlotsQuery(SILENT))
        except lookups.NoAnswer:
            outcome.append("timeout")

    waiting = threading.Thread(target=ask)
    waiting.start()
    time.sleep(0.5)
    with pytest.raises(lookups.Busy, match=r"busy.*try again"):
        lookups.free_slots(deps, lookups.SlotsQuery(SILENT))
    # Another process shares the count: busy, retryable, exit 3 like a missing answer.
    env = {**stack.env, "TIMEBOK_LOOKUP_MAX_IN_FLIGHT": "1", "TIMEBOK_SYNC_TIMEOUT": "30"}
    done = subprocess.run(
        [sys.executable, "-m", "worker.entrypoints.cli", "slots", SILENT, "--json"],
        env=env,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    waiting.join(10)
    assert outcome == ["timeout"]
    assert done.returncode == 3, done.stderr.decode()
    error = json.loads(done.stdout)["error"]
    assert "busy" in error and "try again" in error


# ---------------------------------------------------------------------------- many at once


def test_fifty_concurrent_lookups_each_get_their_own_answer(stack: Stack, sim: Sim) -> None:
    deps = _deps(stack, lookup_max_in_flight=100, sync_timeout=15.0)
    # Three days each (not 14: some 600 slots an answer), so the number in flight is what is
    # tried, not how fast a loaded machine builds 50 large answers one after another.
    today = date.today()
    units = [None, "8090002", "8090003"]
    queries = [
        lookups.SlotsQuery(
            CLINIC,
            unit=units[i % 3],
            start=today + timedelta(days=i % 10),
            end=today + timedelta(days=i % 10 + 2),
        )
        for i in range(50)
    ]
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda q: lookups.free_slots(deps, q), queries))
    for query, answer in zip(queries, answers, strict=True):
        assert answer["from"] == str(query.start) and answer["slots"]
        days = {datetime.fromisoformat(s["start"]).date() for s in answer["slots"]}
        assert min(days) >= query.start - timedelta(days=1)  # UTC vs Oslo at midnight
        found_units = {s["unit_her_id"] for s in answer["slots"]}
        assert found_units == ({8090002, 8090003} if query.unit is None else {int(query.unit)})


# ---------------------------------------------------------------------------- bad answers


def test_malformed_answer_is_an_error_and_a_dead_letter(stack: Stack, sim: Sim) -> None:
    """A fake clinic answers SILENT's lookups with something that is not a SvarLedigeTimer."""
    clinic = KombuTransport(stack.settings.epj_url)
    stop = threading.Event()

    def garbage(d: Delivery) -> Outcome:
        headers = transport_headers(
            from_her_id=SILENT, to_her_id="8093244", msg_id=str(uuid.uuid4()), msg_type="X"
        )
        reply = Envelope(d.reply_to or "", b"<Svar>nope</Svar>", headers)
        clinic.publish(replace(reply, correlation_id=d.correlation_id))
        return Outcome.ACCEPT

    sub = clinic.subscribe([f"{SILENT}_sync"], garbage)
    thread = threading.Thread(target=lambda: [sub.drain(0.2) for _ in iter(stop.is_set, True)])
    thread.start()
    try:
        with pytest.raises(lookups.UnreadableAnswer, match="cannot be read"):
            lookups.free_slots(_deps(stack), lookups.SlotsQuery(SILENT))
        ok = lookups.free_slots(_deps(stack), lookups.SlotsQuery(CLINIC))  # others unaffected
        assert ok["slots"]
        code, got, err, _ = cli(stack, "slots", SILENT)
        assert code == 3, err  # no usable answer: retryable, like none at all
        assert "cannot be read or verified" in got["error"] and "dead letter" in got["error"]
    finally:
        stop.set()
        thread.join(5)
        sub.close()
        clinic.close()
    with stack.deps.store.transaction() as s:
        rows = list(s.scalars(select(DeadLetterRow).where(DeadLetterRow.kind == "lookup")))
    assert len(rows) == 2 and rows[-1].payload == b"<Svar>nope</Svar>"
    assert rows[-1].source_queue == "8093244_syncreply"


def test_late_answer_is_dropped(stack: Stack, sim: Sim) -> None:
    """An answer after the caller gave up is consumed and logged, never handed to another."""
    clinic = KombuTransport(stack.settings.epj_url)
    held: list[Delivery] = []
    stop = threading.Event()

    def hold(d: Delivery) -> Outcome:
        held.append(d)
        return Outcome.ACCEPT

    sub = clinic.subscribe([f"{SILENT}_sync"], hold)
    thread = threading.Thread(target=lambda: [sub.drain(0.2) for _ in iter(stop.is_set, True)])
    thread.start()
    try:
        with pytest.raises(lookups.NoAnswer):
            lookups.free_slots(_deps(stack, sync_timeout=1.0), lookups.SlotsQuery(SILENT))
        [asked] = held
        headers = transport_headers(
            from_her_id=SILENT, to_her_id="8093244", msg_id=str(uuid.uuid4()), msg_type="X"
        )
        clinic.publish(
            Envelope("8093244_syncreply", b"<late/>", headers, correlation_id=asked.correlation_id)
        )
        wait_for(lambda: stack.depth("8093244_syncreply") == 0, 10, 0.1, "late answer consumed")
        ok = lookups.free_slots(_deps(stack), lookups.SlotsQuery(CLINIC))
        assert ok["slots"]
    finally:
        stop.set()
        thread.join(5)
        sub.close()
        clinic.close()


def test_cache_is_in_the_shared_redis(stack: Stack, sim: Sim) -> None:
    deps = _deps(stack, lookup_cache_ttl=5.0)
    lookups.free_slots(deps, lookups.SlotsQuery(CLINIC, unit="8090003"))
    client = redis.Redis.from_url(stack.settings.broker_url)
    [key] = client.keys("timebok:lookup:slots:8090001:*:8090003:-:-:-")
    assert 0 < client.pttl(key) <= 5000
