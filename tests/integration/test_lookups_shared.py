"""What lookups share between processes, on real Redis and a real worker: the one reply
queue every process reads (answers handed over through Redis, never put back), and the
cache (made stale by the clinic's replies, not only by what we send).

The simulator runs in a thread of the test process with a business-reply delay, so a lookup
can be made between a request and the clinic's answer to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mappers.model import Person
from tests.conftest import PG_URL, ROOT, WorkerProcess, wait_for
from tests.support import fnr, request
from worker import sim
from worker.adapters.handoff import RedisHandoff
from worker.adapters.registry import Registry
from worker.adapters.store.migrate import upgrade
from worker.adapters.transports import base
from worker.adapters.transports.base import Envelope, ReplyRouter, transport_headers
from worker.adapters.transports.kombu import KombuTransport
from worker.bootstrap import Deps, bootstrap
from worker.constants import REQUESTS_QUEUE, SUBMIT_TASK
from worker.entrypoints.app import create_app
from worker.flows import lookups, views
from worker.settings import Settings

pytestmark = pytest.mark.integration

CLINIC = "8090001"  # units 8090002 (a GP) and 8090003 (a lab)
EAST = "8090040"  # a clinic without units
WEST = "8090050"  # refuses every reservation (sim_policy)
UNITS = {CLINIC: {8090002, 8090003}, EAST: {8090040}, WEST: {8090050}}
OWN_REPLIES = "8093244_syncreply"
TIMEOUT = 2.0  # the lookups' timeout here, as in test_lookups
DELAY = 4.0  # seconds the simulated clinics take to answer a booking (lookups: at once)
SAMPLE = ROOT / "worker" / "sample" / "registry.toml"
MORE = f"""

[[clinic]]
her_id = {EAST}
name = "Legesenter Øst"
processes = ["timereservasjon", "avtaleavbestilling", "avtaleutsending"]

[[clinic]]
her_id = {WEST}
name = "Legesenter Vest"
processes = ["timereservasjon", "avtaleavbestilling", "avtaleutsending"]
sim_policy = "reject"
"""


@dataclass
class Shared:
    """A worker and the deps of the test process, on a registry with three bookable clinics."""

    settings: Settings
    deps: Deps
    env: dict[str, str]
    simulator: sim.Simulator


@pytest.fixture(scope="module")
def shared(
    redis_url: str, pg_schema: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shared]:
    tmp = tmp_path_factory.mktemp("shared")
    registry = tmp / "registry.toml"
    registry.write_text(SAMPLE.read_text(encoding="utf-8") + MORE, encoding="utf-8")
    env = {
        **os.environ,
        "TIMEBOK_BROKER_URL": redis_url,
        "TIMEBOK_DATABASE_URL": PG_URL,
        "TIMEBOK_DATABASE_SCHEMA": pg_schema,
        "TIMEBOK_REGISTRY_FILE": str(registry),
        "TIMEBOK_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    settings = Settings(
        broker_url=redis_url,
        database_url=PG_URL,
        database_schema=pg_schema,
        registry_file=registry,
        sync_timeout=TIMEOUT,
        lookup_cache_ttl=30.0,
    )
    deps = bootstrap(settings)
    upgrade(deps.store.engine)
    simulator = sim.Simulator(
        settings,
        Registry.load(registry),
        clinics=[CLINIC, EAST, WEST],
        delay=DELAY,
        seed=11,
        echo=lambda _line: None,
        transport=KombuTransport(settings.epj_url),
    )
    stop = threading.Event()
    thread = threading.Thread(target=simulator.run, args=(stop, 900.0), daemon=True)
    thread.start()
    worker = WorkerProcess(env, tmp / "worker.log").start()
    try:
        yield Shared(settings, deps, env, simulator)
    finally:
        worker.stop()
        stop.set()
        thread.join(10)
        simulator.close()
        deps.epj.close()
        deps.store.dispose()


def _process(shared: Shared, **settings: Any) -> Deps:
    """Deps as another process has them: a transport (so a reply consumer) of its own, and
    the hand-off through the shared Redis (what bootstrap wires from the settings)."""
    cfg = shared.settings.model_copy(update=settings)
    epj = KombuTransport(cfg.epj_url, RedisHandoff(cfg.broker_url))
    return replace(shared.deps, settings=cfg, epj=epj)


def _started(processes: list[Deps]) -> list[Deps]:
    """Each process's reply consumer up (one lookup each): what is measured is the lookups
    in flight together, not the start of three consumers on a loaded machine."""
    day = _weekdays(1)[0]
    for process in processes:
        lookups.free_slots(process, lookups.SlotsQuery(EAST, start=day, end=day))
    return processes


def _routers() -> list[ReplyRouter]:
    """Every reply consumer of this test process (each stands for one process)."""
    return [r for per_queue in list(base._routers.values()) for r in per_queue.values()]


def _released() -> int:
    return sum(r.stats["stray"] for r in _routers())


def _caller(shared: Shared, go: Path, asked: list[tuple[str, date]]) -> subprocess.Popen[bytes]:
    """Another process asking `asked` at once when `go` appears (tests/lookup_caller.py)."""
    env = {**shared.env, "TIMEBOK_SYNC_TIMEOUT": str(TIMEOUT), "TIMEBOK_LOOKUP_CACHE_TTL": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.lookup_caller", str(go), *(f"{c}:{d}" for c, d in asked)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _own(clinic: str, start: date, answer: dict[str, Any]) -> None:
    """The answer is the one to this question: that clinic's slots, from that day."""
    assert answer["slots"], (clinic, start)
    assert {s["unit_her_id"] for s in answer["slots"]} <= UNITS[clinic]
    first = min(datetime.fromisoformat(s["start"]).date() for s in answer["slots"])
    assert first >= start - timedelta(days=1)  # UTC vs Oslo at midnight


def _weekdays(n: int) -> list[date]:
    """The next n weekdays after today (every clinic has free slots on them)."""
    days, day = [], date.today()
    while len(days) < n:
        day += timedelta(days=1)
        if day.weekday() < 5:
            days.append(day)
    return days


# ---------------------------------------------------------------------------- the reply queue


def test_lookups_of_several_processes_each_get_their_own_answer(
    shared: Shared, tmp_path: Path
) -> None:
    released = _released()
    processes = _started([_process(shared, lookup_cache_ttl=0.0) for _ in range(3)])
    days = _weekdays(4)
    asked = [(c, d) for c in (CLINIC, EAST, WEST) for d in days]
    go = tmp_path / "go"
    callers = [_caller(shared, go, asked[i::2]) for i in range(2)]
    for caller in callers:
        assert caller.stdout is not None
        assert caller.stdout.readline().strip() == b"ready", caller.stderr
    go.touch()  # the other processes' lookups and ours in flight together

    def ask(i: int) -> dict[str, Any]:
        clinic, day = asked[i % len(asked)]
        query = lookups.SlotsQuery(clinic, start=day, end=day)
        return lookups.free_slots(processes[i % 3], query)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(12)))
    for i, answer in enumerate(answers):
        _own(*asked[i % len(asked)], answer)
    handed_in = sum(r.stats["handed_in"] for r in _routers())
    for i, caller in enumerate(callers):
        out, err = caller.communicate(timeout=60)
        assert caller.returncode == 0, err.decode()[-2000:]
        got = json.loads(out)
        for (clinic, day), answer in zip(asked[i::2], got["answers"], strict=True):
            assert "error" not in answer, answer
            _own(clinic, day, answer)
        assert sum(r["stray"] for r in got["routers"]) == 0  # nothing put back there either
        handed_in += sum(r["handed_in"] for r in got["routers"])
    # Answers taken by the wrong consumer went straight to their caller, never back.
    assert _released() == released
    assert handed_in > 0


def test_fifty_concurrent_lookups_to_several_clinics(shared: Shared) -> None:
    released = _released()
    # The default timeout: 50 at once on a loaded 2-core machine with the simulator in this
    # process; what is checked is that each gets its own answer.
    many = {"lookup_cache_ttl": 0.0, "lookup_max_in_flight": 100, "sync_timeout": 15.0}
    processes = _started([_process(shared, **many) for _ in range(3)])
    days = _weekdays(5)
    asked = [(c, d) for c in (CLINIC, EAST, WEST) for d in days]

    def ask(i: int) -> dict[str, Any]:
        clinic, day = asked[i % len(asked)]
        unit = "8090003" if clinic == CLINIC and i % 2 else None
        query = lookups.SlotsQuery(clinic, start=day, end=day, unit=unit)
        return lookups.free_slots(processes[i % 3], query)

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(ask, range(50)))
    for i, answer in enumerate(answers):
        clinic, day = asked[i % len(asked)]
        _own(clinic, day, answer)
        if clinic == CLINIC and i % 2:
            assert {s["unit_her_id"] for s in answer["slots"]} == {8090003}
    assert _released() == released


def test_an_answer_nobody_waits_for_is_dropped_at_once(shared: Shared) -> None:
    process = _process(shared, lookup_cache_ttl=0.0)
    lookups.free_slots(process, lookups.SlotsQuery(EAST))  # its reply consumer is up
    released = _released()
    late = sum(r.stats["late"] for r in _routers())
    headers = transport_headers(
        from_her_id=EAST, to_her_id="8093244", msg_id=str(uuid.uuid4()), msg_type="X"
    )
    stray = Envelope(OWN_REPLIES, b"<nobody/>", headers, correlation_id=str(uuid.uuid4()))
    KombuTransport(shared.settings.epj_url).publish(stray)
    wait_for(lambda: sum(r.stats["late"] for r in _routers()) > late, 20, 0.05, "dropped")
    assert _released() == released  # not put back for other processes to bounce
    assert shared.deps.epj.depth(OWN_REPLIES) == 0


# ---------------------------------------------------------------------------- the cache


def _book(shared: Shared, clinic: str, slot: dict[str, Any], patient_n: int) -> str:
    req = request(
        "reserve",
        patient_n=patient_n,
        slot={"id": slot["id"], "start": slot["start"], "end": slot["end"]},
        practitioner=slot["practitioner"] or {"name": "Legesenter"},
        appointment_type=slot["appointment_type"],
        service=slot["service"],
        clinic={"her_id": clinic, "name": "Legekontoret", "unit_her_id": slot["unit_her_id"]},
    )
    return _submit(shared, req)


def _submit(shared: Shared, req: dict[str, Any]) -> str:
    create_app(shared.settings).send_task(SUBMIT_TASK, args=[req], queue=REQUESTS_QUEUE)
    return str(req["request_id"])


def _state(shared: Shared, booking_id: str) -> str | None:
    try:
        return str(views.booking(shared.deps, booking_id)["state"])
    except views.NotFound:
        return None


def _until(shared: Shared, booking_id: str, *states: str) -> str:
    found = wait_for(lambda: _state(shared, booking_id) in states and _state(shared, booking_id),
                     40, 0.1, f"booking {booking_id} {states}")  # fmt: skip
    return str(found)


def _cached_while_waiting(shared: Shared, booking_id: str, query: lookups.SlotsQuery) -> None:
    """The clinic has the request but has not answered yet: fill the cache now."""
    _until(shared, booking_id, "DELIVERED")
    lookups.free_slots(shared.deps, query)
    assert lookups.free_slots(shared.deps, query)["cached"] is True
    assert _state(shared, booking_id) == "DELIVERED", "the clinic answered too soon to tell"


def test_a_confirmation_makes_the_clinics_cached_slots_stale(shared: Shared) -> None:
    query = lookups.SlotsQuery(CLINIC, unit="8090002", start=_weekdays(6)[5])
    slot = lookups.free_slots(shared.deps, query)["slots"][0]
    booking = _book(shared, CLINIC, slot, patient_n=6101)
    _cached_while_waiting(shared, booking, query)
    assert _until(shared, booking, "CONFIRMED", "REJECTED") == "CONFIRMED"
    after = lookups.free_slots(shared.deps, query)
    assert after["cached"] is False
    assert slot["id"] not in {s["id"] for s in after["slots"]}


def test_a_refusal_makes_the_clinics_cached_slots_stale(shared: Shared) -> None:
    query = lookups.SlotsQuery(WEST, start=_weekdays(7)[6])
    slot = lookups.free_slots(shared.deps, query)["slots"][0]
    booking = _book(shared, WEST, slot, patient_n=6102)
    _cached_while_waiting(shared, booking, query)
    assert _until(shared, booking, "CONFIRMED", "REJECTED") == "REJECTED"
    assert lookups.free_slots(shared.deps, query)["cached"] is False


def test_a_patients_cancellation_makes_the_clinics_cached_slots_stale(shared: Shared) -> None:
    query = lookups.SlotsQuery(EAST, start=_weekdays(8)[7])
    slot = lookups.free_slots(shared.deps, query)["slots"][0]
    booking = _book(shared, EAST, slot, patient_n=6103)
    assert _until(shared, booking, "CONFIRMED", "REJECTED") == "CONFIRMED"
    cancel = request("cancel", patient_n=6103, booking_ref=booking, clinic={"her_id": EAST,
                     "name": "Legesenter Øst"})  # fmt: skip
    cancel_id = _submit(shared, cancel)
    _cached_while_waiting(shared, cancel_id, query)
    assert _until(shared, cancel_id, "CANCELLED", "REJECTED") == "CANCELLED"
    after = lookups.free_slots(shared.deps, query)
    assert after["cached"] is False
    assert slot["id"] in {s["id"] for s in after["slots"]}  # free again, and shown so


def test_a_clinics_cancellation_frees_the_slot_in_the_next_lookup(shared: Shared) -> None:
    query = lookups.SlotsQuery(CLINIC, unit="8090002", start=_weekdays(9)[8])
    slot = lookups.free_slots(shared.deps, query)["slots"][0]
    booking = _book(shared, CLINIC, slot, patient_n=6104)
    assert _until(shared, booking, "CONFIRMED", "REJECTED") == "CONFIRMED"
    lookups.free_slots(shared.deps, query)
    before = lookups.free_slots(shared.deps, query)
    assert before["cached"] is True and slot["id"] not in {s["id"] for s in before["slots"]}
    uid = views.booking(shared.deps, booking)["appointment_uid"]
    start, end = (datetime.fromisoformat(slot[k]) for k in ("start", "end"))
    patient = Person(fnr(6104), "Line", "Danser")
    shared.simulator.cancel_appointment(CLINIC, uid, patient, start, end)  # nothing from us
    _until(shared, booking, "CANCELLED")
    after = lookups.free_slots(shared.deps, query)
    assert after["cached"] is False
    assert slot["id"] in {s["id"] for s in after["slots"]}
