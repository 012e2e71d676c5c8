"""A wish reaches the clinic with its wanted type, urgency and service: the EPJ simulator reads
them back from the XML and answers with such an appointment; `timebok booking ID --json` shows
what the clinic received."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import Stack
from tests.integration.test_cli import booking_json
from tests.integration.test_inbound_flow import wait_state
from tests.integration.test_outbound_flow import send
from tests.support import CLINIC, request
from worker import sim
from worker.adapters.registry import Registry
from worker.flows import views
from worker.settings import async_queue

pytestmark = pytest.mark.integration
# Patients 91-93: the PostgreSQL schema is shared by every integration module of a run.


@pytest.fixture(scope="module")
def said(stack: Stack) -> Iterator[list[str]]:
    """The EPJ simulator answering the sample registry's clinics at once; its output lines."""
    lines: list[str] = []
    simulator = sim.Simulator(
        stack.settings,
        Registry.load(stack.settings.registry_file),
        delay=0.0,
        seed=1,
        echo=lines.append,
    )
    stop = threading.Event()
    thread = threading.Thread(target=simulator.run, args=(stop, 600.0), daemon=True)
    thread.start()
    try:
        yield lines
    finally:
        stop.set()
        thread.join(timeout=10)
        simulator.close()
        _drain_leftovers(stack)


def _drain_leftovers(stack: Stack) -> None:
    """Take what the worker sent after the simulator stopped (its last AppRecs) off the clinic
    queues, which the next module of the run shares."""
    queue = async_queue(CLINIC)
    time.sleep(1.0)  # the worker's receipt for the last reply is committed, then published
    left = stack.depth(queue)
    if left:
        stack.drain(queue, left)


def test_urgent_vaccination_wish_arrives_as_one(stack: Stack, said: list[str]) -> None:
    req = request("wish", patient_n=91, appointment_type="urgent", service="vaccination")
    send(stack, req)
    wait_state(stack, req["request_id"], "CONFIRMED")
    assert any(
        "OnskeReserver" in line and "(Hastetime, Haster, vaccination)" in line for line in said
    )
    shown = wait_for(lambda: booking_json(stack, req["request_id"]), what="booking --json")
    assert (shown["appointment_type"], shown["service"], shown["urgent"]) == (
        "urgent",
        "vaccination",
        True,
    )
    [appt] = views.appointments(stack.deps, req["patient"]["fnr"])
    assert appt["appointment_type"] == "urgent"  # the simulated clinic gave what was asked


def test_change_wish_to_video_arrives_as_video(stack: Stack, said: list[str]) -> None:
    wish = request("wish", patient_n=92, appointment_type="in_person", service="consultation")
    send(stack, wish)
    wait_state(stack, wish["request_id"], "CONFIRMED")
    change = request(
        "change_wish",
        patient_n=92,
        appointment_type="video",
        service="lab_test",
        booking_ref=wish["request_id"],
    )
    send(stack, change)
    wait_state(stack, change["request_id"], "CONFIRMED")
    assert any("OnskeEndring" in line and "(Video, Vanlig, lab_test)" in line for line in said)
    shown = views.booking(stack.deps, change["request_id"])
    assert (shown["appointment_type"], shown["service"], shown["urgent"]) == (
        "video",
        "lab_test",
        False,
    )
    [appt] = views.appointments(stack.deps, wish["patient"]["fnr"])
    assert appt["appointment_type"] == "video"


def test_reservation_shows_its_type_from_the_vevent(stack: Stack, said: list[str]) -> None:
    req = request("reserve", patient_n=93, appointment_type="phone")
    send(stack, req)
    wait_state(stack, req["request_id"], "CONFIRMED")
    shown = views.booking(stack.deps, req["request_id"])
    assert (shown["appointment_type"], shown["service"], shown["urgent"]) == (
        "phone",
        "consultation",
        False,
    )
    assert any("ReserverAvtale" in line for line in said)
