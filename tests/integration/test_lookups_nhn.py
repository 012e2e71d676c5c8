"""Synchronous lookups on the national bus: real RabbitMQ (AMQP 1.0), CMS both ways, the
simulator playing the clinic with its keys, a real worker booking the slot found."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta

import pytest

from tests.certs import CLINIC
from tests.conftest import wait_for
from tests.integration.test_nhn import Bus, bus  # noqa: F401 - the module's stack
from tests.support import request
from worker import sim
from worker.adapters.registry import Registry
from worker.constants import REQUESTS_QUEUE, SUBMIT_TASK
from worker.entrypoints.app import create_app
from worker.flows import lookups, views
from worker.sim.bus import make_transport

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
        transport=make_transport(bus.settings, [clinic], keys),
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
        patient_n=51,
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


def test_concurrent_lookups_over_nhn_each_get_their_own_answer(
    bus: Bus,  # noqa: F811
    clinic_sim: sim.Simulator,
) -> None:
    today = date.today()
    queries = [lookups.SlotsQuery(CLINIC, start=today + timedelta(days=i)) for i in range(20)]
    deps = _deps(bus, lookup_max_in_flight=50)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda q: lookups.free_slots(deps, q), queries))
    for query, answer in zip(queries, answers, strict=True):
        assert answer["from"] == str(query.start)
        if answer["slots"]:  # weekends have none
            first = min(datetime.fromisoformat(s["start"]).date() for s in answer["slots"])
            assert first >= query.start - timedelta(days=1)
    assert sum(bool(a["slots"]) for a in answers) >= 10
