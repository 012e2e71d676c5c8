"""Synchronous lookups on the national bus: real RabbitMQ (AMQP 1.0), CMS both ways, the
simulator playing the clinic with its keys, a real worker booking the slot found."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from tests.certs import CLINIC
from tests.conftest import ROOT, wait_for
from tests.integration.test_nhn import SILENT, Bus, bus  # noqa: F401 - the module's stack
from tests.support import fnr, request
from worker import sim
from worker.adapters.registry import Registry
from worker.adapters.transports import base
from worker.adapters.transports.base import ReplyRouter
from worker.bootstrap import make_transport
from worker.constants import REQUESTS_QUEUE, SUBMIT_TASK
from worker.entrypoints.app import create_app
from worker.flows import lookups, views
from worker.sim import bus as sim_bus
from worker.texts import SLOT_TAKEN

TIMEOUT = 2.0  # the CLI lookups' timeout here, as on kombu

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clinic_sim(bus: Bus) -> Iterator[sim.Simulator]:  # noqa: F811 - the imported fixture
    """The simulator answering for CLINIC over nhn, in a thread of the test process."""
    registry = Registry.load(bus.settings.registry_file)
    clinic = registry.clinic(CLINIC)
    assert clinic is not None
    keys = bus.pki.key(CLINIC, "signing").parent
    simulator = sim.Simulator(
        bus.settings,
        registry,
        clinics=[CLINIC],
        delay=0.0,
        seed=3,
        echo=lambda _line: None,
        transport=sim_bus.make_transport(bus.settings, [clinic], keys),
    )
    stop = threading.Event()
    thread = threading.Thread(target=simulator.run, args=(stop, 600.0), daemon=True)
    thread.start()
    try:
        yield simulator
    finally:
        stop.set()
        thread.join(10)
        simulator.close()


@pytest.fixture(scope="module", autouse=True)
def _replies_stopped(bus: Bus) -> Iterator[None]:  # noqa: F811
    """Every reply consumer of this module stopped before the bus's transport closes (one
    left running would connect again, and its IO thread outlive the interpreter)."""
    yield
    for transport in list(base._routers):
        base.stop_replies(transport)


def _deps(bus: Bus, **settings: object) -> lookups.Deps:  # noqa: F811
    from dataclasses import replace

    changed = {"lookup_cache_ttl": 0.0, "sync_timeout": 10.0, **settings}
    quiet = bus.settings.model_copy(update=changed)
    return replace(bus.deps, settings=quiet)


def test_slots_found_and_booked_over_nhn(bus: Bus, clinic_sim: sim.Simulator) -> None:  # noqa: F811
    got = lookups.free_slots(_deps(bus), lookups.SlotsQuery(CLINIC))
    assert got["slots"] and got["cached"] is False
    slot = next(s for s in got["slots"] if s["appointment_type"] == "in_person")
    req = request(
        "reserve",
        patient_n=7151,
        slot={"id": slot["id"], "start": slot["start"], "end": slot["end"]},
        practitioner=slot["practitioner"] or {"name": "Testlegekontoret"},
        appointment_type=slot["appointment_type"],
        service=slot["service"],
        clinic={"her_id": CLINIC, "name": "Testlegekontoret"},
    )
    create_app(bus.settings).send_task(SUBMIT_TASK, args=[req], queue=REQUESTS_QUEUE)

    def confirmed() -> bool:
        try:
            return views.booking(bus.deps, req["request_id"])["state"] == "CONFIRMED"
        except views.NotFound:
            return False

    wait_for(confirmed, 40, 0.3, "booking CONFIRMED over nhn")
    assert clinic_sim.desk.calendars[CLINIC].is_taken(slot["id"])
    again = lookups.free_slots(_deps(bus), lookups.SlotsQuery(CLINIC))
    assert slot["id"] not in {s["id"] for s in again["slots"]} and again["slots"]


def test_type_filter_and_no_slots_over_nhn(bus: Bus, clinic_sim: sim.Simulator) -> None:  # noqa: F811
    video = lookups.free_slots(_deps(bus), lookups.SlotsQuery(CLINIC, appointment_type="video"))
    assert video["slots"] and {s["appointment_type"] for s in video["slots"]} == {"video"}
    later = date.today() + timedelta(days=60)
    empty = lookups.free_slots(_deps(bus), lookups.SlotsQuery(CLINIC, start=later))
    assert empty["slots"] == []


def test_clinic_without_timereservasjon_is_refused_before_sending(bus: Bus) -> None:  # noqa: F811
    with pytest.raises(lookups.BadLookup, match="nothing sent"):
        lookups.free_slots(_deps(bus), lookups.SlotsQuery("8090099"))
    assert bus.clinic.depth("8090099_sync") == 0


def test_fifty_concurrent_lookups_over_nhn_each_get_their_own_answer(
    bus: Bus,  # noqa: F811
    clinic_sim: sim.Simulator,
) -> None:
    # One day each (some 20-60 slots, not 600): what is tried is the number in flight, on a
    # machine where the simulator shares the test process and its CPU.
    days = [date.today() + timedelta(days=n) for n in range(1, 20)]
    weekdays = [d for d in days if d.weekday() < 5][:10]
    units = [None, "8090002", "8090003"]
    queries = [
        lookups.SlotsQuery(CLINIC, unit=units[i % 3], start=weekdays[i % 10], end=weekdays[i % 10])
        for i in range(50)
    ]
    # Two processes' worth of reply consumers on the one `_syncreply` queue.
    many = {"lookup_max_in_flight": 100, "sync_timeout": 15.0}
    callers = [_deps(bus, **many), _process(bus, **many)]

    def ask(i: int) -> dict[str, Any]:
        return lookups.free_slots(callers[i % 2], queries[i])

    try:
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(ask, range(50)))
    finally:
        lookups.finish(callers[1])
    for query, answer in zip(queries, answers, strict=True):
        assert answer["from"] == str(query.start) and answer["slots"]
        first = min(datetime.fromisoformat(s["start"]).date() for s in answer["slots"])
        assert first >= query.start - timedelta(days=1)  # UTC vs Oslo at midnight
        found = {s["unit_her_id"] for s in answer["slots"]}
        assert found == ({8090002, 8090003} if query.unit is None else {int(query.unit)})
    assert sum(r.stats["stray"] for r in _routers()) == 0  # handed over, never put back


def test_clinic_that_does_not_answer_exits_3_within_the_timeout_over_nhn(bus: Bus) -> None:  # noqa: F811
    code, got, err, _ = _cli(bus, "slots", SILENT)
    assert code == 3, err
    assert "did not answer within 2 s" in got["error"]
    # The wait itself (connection and reply consumer set up included), without the
    # interpreter's start, which on a loaded machine varies by seconds between two runs.
    caller = _process(bus, sync_timeout=TIMEOUT)
    began = time.monotonic()
    with pytest.raises(lookups.NoAnswer, match="did not answer within 2 s"):
        lookups.free_slots(caller, lookups.SlotsQuery(SILENT))
    took = time.monotonic() - began
    lookups.finish(caller)
    assert TIMEOUT <= took < TIMEOUT + 1.0, took


def test_two_patients_race_for_one_slot_over_nhn(bus: Bus, clinic_sim: sim.Simulator) -> None:  # noqa: F811
    got = lookups.free_slots(_deps(bus), lookups.SlotsQuery(CLINIC, unit="8090002"))
    slot = got["slots"][0]
    patients = {_book(bus, slot, patient_n=n): n for n in (7101, 7102)}
    states = {_settled(bus, b): b for b in patients}
    assert set(states) == {"CONFIRMED", "REJECTED"}
    lost = states["REJECTED"]
    [told] = [n for n in views.inbox(bus.deps, fnr(patients[lost])) if n["booking_id"] == lost]
    assert told["title"] == "Timen er ikke lenger ledig"
    assert told["body"].startswith(SLOT_TAKEN) and "ut fra bestillingen din" not in told["body"]


def test_cached_answers_over_nhn(bus: Bus, clinic_sim: sim.Simulator) -> None:  # noqa: F811
    deps = _deps(bus, lookup_cache_ttl=30.0)
    query = lookups.SlotsQuery(CLINIC, unit="8090003", start=date.today() + timedelta(days=3))
    before = clinic_sim.stats["lookups"]
    first = lookups.free_slots(deps, query)
    second = lookups.free_slots(deps, query)
    assert first["cached"] is False and second["cached"] is True
    assert second["slots"] == first["slots"]
    env = {"TIMEBOK_LOOKUP_CACHE_TTL": "30"}
    code, third, err, _ = _cli(bus, "slots", CLINIC, "--unit", "8090003", "--from",
                               str(query.start), env=env)  # fmt: skip
    assert code == 0 and third["cached"] is True, err  # another process shares the cache
    assert clinic_sim.stats["lookups"] == before + 1  # asked once


def test_planned_over_nhn(bus: Bus, clinic_sim: sim.Simulator) -> None:  # noqa: F811
    got = lookups.free_slots(_deps(bus), lookups.SlotsQuery(CLINIC, appointment_type="video"))
    slot = got["slots"][0]
    assert _settled(bus, _book(bus, slot, patient_n=7103)) == "CONFIRMED"
    code, planned, err, _ = _cli(bus, "planned", CLINIC, "--patient", fnr(7103))
    assert code == 0, err
    [appointment] = planned["appointments"]
    assert appointment["start"] == slot["start"] and appointment["appointment_type"] == "video"
    nobody = lookups.planned(_deps(bus), CLINIC, fnr(7104))
    assert nobody["appointments"] == []


@pytest.mark.parametrize("kind", ["urgent", "in_person"])
def test_type_filter_over_nhn(bus: Bus, clinic_sim: sim.Simulator, kind: str) -> None:  # noqa: F811
    code, got, err, _ = _cli(bus, "slots", CLINIC, "--type", kind)
    assert code == 0, err
    assert got["slots"] and {s["appointment_type"] for s in got["slots"]} == {kind}


def test_practitioner_filter_over_nhn(bus: Bus, clinic_sim: sim.Simulator) -> None:  # noqa: F811
    query = lookups.SlotsQuery(CLINIC, practitioner="8090002")
    got = lookups.free_slots(_deps(bus), query)
    assert got["slots"]
    assert {(s["practitioner"] or {}).get("her_id") for s in got["slots"]} == {"8090002"}
    everyone = lookups.free_slots(_deps(bus), lookups.SlotsQuery(CLINIC))
    assert {s["unit_her_id"] for s in everyone["slots"]} == {8090002, 8090003}


# ---------------------------------------------------------------------------- helpers


def _process(bus: Bus, **settings: object) -> lookups.Deps:  # noqa: F811
    """Deps as another process has them: an nhn transport (so a reply consumer) of its own,
    with the hand-off through the shared Redis, as bootstrap wires it."""
    from dataclasses import replace

    cfg = bus.settings.model_copy(update={"lookup_cache_ttl": 0.0, **settings})
    return replace(
        bus.deps, settings=cfg, epj=make_transport(cfg, Registry.load(cfg.registry_file))
    )


def _routers() -> list[ReplyRouter]:
    return [r for per_queue in list(base._routers.values()) for r in per_queue.values()]


def _cli(
    bus: Bus,  # noqa: F811
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[int, Any, str, float]:
    """Run `timebok <args> --json` on the bus: exit code, parsed stdout, stderr, seconds."""
    full = {**bus.env, "TIMEBOK_SYNC_TIMEOUT": str(TIMEOUT), "TIMEBOK_LOOKUP_CACHE_TTL": "0"}
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "worker.entrypoints.cli", *args, "--json"],
        env=full | (env or {}),
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - began
    out = done.stdout.decode()
    return done.returncode, json.loads(out) if out.strip() else None, done.stderr.decode(), took


def _book(bus: Bus, slot: dict[str, Any], patient_n: int) -> str:  # noqa: F811
    req = request(
        "reserve",
        patient_n=patient_n,
        slot={"id": slot["id"], "start": slot["start"], "end": slot["end"]},
        practitioner=slot["practitioner"] or {"name": "Testlegekontoret"},
        appointment_type=slot["appointment_type"],
        service=slot["service"],
        clinic={"her_id": CLINIC, "name": "Testlegekontoret", "unit_her_id": slot["unit_her_id"]},
    )
    create_app(bus.settings).send_task(SUBMIT_TASK, args=[req], queue=REQUESTS_QUEUE)
    return str(req["request_id"])


def _settled(bus: Bus, booking_id: str) -> str:  # noqa: F811
    found = wait_for(
        lambda: bus.state(booking_id) in ("CONFIRMED", "REJECTED") and bus.state(booking_id),
        40,
        0.2,
        f"booking {booking_id} answered over nhn",
    )
    return str(found)
