"""Beat timeouts against the real PostgreSQL and Redis, on a clock the test turns: no AppRec ->
the same document again (same MsgId, same bytes) with backoff, then FAILED and one notice; no
business reply -> EXPIRED and one notice. Also what a resent message answered twice does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mappers.codes import ReplyCode
from tests.chaos import clinic as epj
from tests.chaos.harness import closed_port_url, private_schema, unique_her_id, write_registry
from tests.conftest import PG_URL
from tests.support import request
from worker.adapters.store.db import dead_letters, get_booking
from worker.adapters.store.tables import BookingRow, MessageRow, NotificationRow, OutboxRow
from worker.bootstrap import Deps, bootstrap
from worker.errors import EpjUnavailable
from worker.flows.inbound import receive
from worker.flows.outbound import submit
from worker.flows.relay import relay
from worker.flows.timeouts import check
from worker.settings import Settings, async_queue

pytestmark = pytest.mark.integration

APPREC_TIMEOUT = 60.0
REPLY_TIMEOUT = 3600.0
MAX_RESENDS = 3


class Clock:
    """A clock that only moves when told to (Deps.clock)."""

    def __init__(self) -> None:
        # Far from the wall clock: code that reads the wall clock instead shows up at once.
        self.now = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)

    def __call__(self) -> datetime:
        return self.now

    def at(self, moment: datetime) -> None:
        """Jump to `moment`."""
        self.now = moment


@dataclass
class World:
    """One clinic of our own, a private schema, in-process deps on a controllable clock."""

    deps: Deps
    clock: Clock
    clinic: str
    url: str

    @property
    def queue(self) -> str:
        """The clinic's EPJ queue."""
        return async_queue(self.clinic)

    def request(self, action: str = "reserve", **over: Any) -> dict[str, Any]:
        """A valid request to this world's clinic."""
        return request(
            action, **({"clinic": {"her_id": self.clinic, "name": "Krasjklinikken"}} | over)
        )

    def submitted(self, action: str = "reserve", **over: Any) -> tuple[str, epj.Delivery]:
        """Submit in-process; returns the booking id and what the clinic received."""
        result = submit(self.deps, self.request(action, **over))
        [sent] = epj.take(self.url, self.queue, 1)
        return result.booking_id, sent

    def booking(self, booking_id: str) -> BookingRow:
        """The stored booking."""
        with self.deps.store.transaction() as s:
            row = get_booking(s, booking_id)
            assert row is not None
            return row

    def past_deadline(self, booking_id: str) -> datetime:
        """A second past the booking's current deadline."""
        deadline = self.booking(booking_id).deadline_at
        assert deadline is not None
        return deadline + timedelta(seconds=1)

    def notices(self, booking_id: str) -> list[str]:
        """The notification events about a booking."""
        with self.deps.store.transaction() as s:
            stmt = select(NotificationRow.event).where(NotificationRow.booking_id == booking_id)
            return sorted(s.scalars(stmt))

    def deliver(self, item: tuple[bytes, dict[str, str]]) -> str:
        """The clinic's document arrives on our queue (handled in-process)."""
        body, headers = item
        return receive(self.deps, body, dict(headers)).outcome


@pytest.fixture
def world(redis_url: str, tmp_path: Path) -> Iterator[World]:
    clinic = unique_her_id()
    registry = write_registry(tmp_path / "registry.toml", clinic)
    with private_schema("timebok_timeouts") as schema:
        settings = Settings(
            broker_url=redis_url,
            database_url=PG_URL,
            database_schema=schema,
            registry_file=registry,
            apprec_timeout=APPREC_TIMEOUT,
            reply_timeout=REPLY_TIMEOUT,
            max_resends=MAX_RESENDS,
        )
        clock = Clock()
        deps = bootstrap(settings)
        deps.clock = clock
        try:
            yield World(deps, clock, clinic, redis_url)
        finally:
            deps.store.dispose()


def _outbox_rows(world: World, booking_id: str) -> list[OutboxRow]:
    with world.deps.store.transaction() as s:
        stmt = (
            select(OutboxRow)
            .join(MessageRow, MessageRow.id == OutboxRow.message_id)
            .where(MessageRow.booking_id == booking_id, MessageRow.direction == "out")
            .where(MessageRow.msg_type != "APPREC")
        )
        return list(s.scalars(stmt))


def _out_messages(world: World, booking_id: str) -> list[str]:
    with world.deps.store.transaction() as s:
        stmt = (
            select(MessageRow.msg_id)
            .where(MessageRow.booking_id == booking_id, MessageRow.direction == "out")
            .where(MessageRow.msg_type != "APPREC")
        )
        return list(s.scalars(stmt))


def test_no_apprec_resends_the_same_document_with_backoff_then_fails_once(world: World) -> None:
    booking_id, first = world.submitted()
    row = world.booking(booking_id)
    assert row.state == "SENT"
    assert row.deadline_at == world.clock.now + timedelta(seconds=APPREC_TIMEOUT)  # our clock
    deadline = row.deadline_at
    for attempt in range(1, MAX_RESENDS + 1):
        world.clock.at(deadline - timedelta(seconds=1))
        assert check(world.deps) == 0  # not yet: nothing resent before the deadline
        assert epj.depth(world.url, world.queue) == 0
        world.clock.at(deadline + timedelta(seconds=1))
        assert check(world.deps) == 1
        [again] = epj.take(world.url, world.queue, 1)
        assert again.body == first.body  # identical bytes ...
        assert again.msg_id == first.msg_id  # ... and the same MsgId in the header
        row = world.booking(booking_id)
        assert (row.state, row.resends) == ("SENT", attempt)
        assert row.deadline_at is not None
        waited = row.deadline_at - world.clock.now
        assert waited == timedelta(seconds=APPREC_TIMEOUT * 2**attempt)  # exponential backoff
        deadline = row.deadline_at
    world.clock.at(deadline + timedelta(seconds=1))
    assert check(world.deps) == 1
    row = world.booking(booking_id)
    assert row.state == "FAILED" and row.deadline_at is None
    world.clock.at(deadline + timedelta(days=30))
    assert check(world.deps) == 0  # given up: never again
    assert epj.depth(world.url, world.queue) == 0
    assert world.notices(booking_id) == ["undeliverable"]
    assert _out_messages(world, booking_id) == [first.msg_id]
    rows = _outbox_rows(world, booking_id)
    assert len(rows) == 1 + MAX_RESENDS and all(r.published_at for r in rows)


def test_resends_wait_uncounted_while_our_epj_transport_is_down(world: World) -> None:
    booking_id, first = world.submitted()
    down = bootstrap(world.deps.settings.model_copy(update={"epj_broker_url": closed_port_url()}))
    down.clock = world.clock
    try:
        world.clock.at(world.past_deadline(booking_id))
        with pytest.raises(EpjUnavailable):
            check(down)  # the resend is queued, its publish fails: it waits in the outbox
        for _ in range(MAX_RESENDS + 3):  # far longer than the resends would last
            world.clock.at(world.past_deadline(booking_id))
            assert check(down) == 0
    finally:
        down.store.dispose()
    row = world.booking(booking_id)
    assert (row.state, row.resends) == ("SENT", 1)  # not FAILED: the clinic never got a copy
    assert len(_outbox_rows(world, booking_id)) == 2  # one copy waiting, not one per check
    assert world.notices(booking_id) == []
    assert relay(world.deps) == 1  # the transport is back
    [again] = epj.take(world.url, world.queue, 1)
    assert (again.body, again.msg_id) == (first.body, first.msg_id)
    world.clock.at(world.past_deadline(booking_id))
    assert check(world.deps) == 1  # and the schedule goes on from where it was
    assert world.booking(booking_id).resends == 2
    epj.take(world.url, world.queue, 1)


def test_apprec_stops_the_resends_and_a_missing_reply_expires_once(world: World) -> None:
    booking_id, sent = world.submitted("wish")
    assert world.deliver(epj.apprec_ok(sent.parsed())) == "processed"
    row = world.booking(booking_id)
    assert row.state == "DELIVERED"
    assert row.deadline_at == world.clock.now + timedelta(seconds=REPLY_TIMEOUT)
    world.clock.at(world.clock.now + timedelta(seconds=REPLY_TIMEOUT - 1))
    assert check(world.deps) == 0  # delivered: no resend, and the reply may still come
    assert epj.depth(world.url, world.queue) == 0
    world.clock.at(world.clock.now + timedelta(seconds=2))
    assert check(world.deps) == 1
    assert world.booking(booking_id).state == "EXPIRED"
    assert check(world.deps) == 0
    assert world.notices(booking_id) == ["expired"]
    # The clinic answers after all: the booking stays EXPIRED and the patient hears nothing new.
    event = epj.booked_wish(sent.parsed())
    late = world.deliver(epj.answer(sent.parsed(), ReplyCode.CONFIRMED, event=event))
    assert late == "processed"
    assert world.booking(booking_id).state == "EXPIRED"
    assert world.notices(booking_id) == ["expired"]


def test_apprec_after_a_resend_stops_further_resends(world: World) -> None:
    booking_id, sent = world.submitted()
    world.clock.at(world.clock.now + timedelta(seconds=APPREC_TIMEOUT + 1))
    assert check(world.deps) == 1
    [again] = epj.take(world.url, world.queue, 1)
    assert again.body == sent.body
    assert world.deliver(epj.apprec_ok(again.parsed())) == "processed"
    assert world.booking(booking_id).state == "DELIVERED"
    world.clock.at(world.clock.now + timedelta(seconds=APPREC_TIMEOUT * 10))
    assert check(world.deps) == 0
    assert epj.depth(world.url, world.queue) == 0
    assert world.notices(booking_id) == []


def test_a_cancellation_nobody_receipts_fails_and_keeps_the_appointment(world: World) -> None:
    booking_id, sent = world.submitted()
    doc = sent.parsed()
    world.deliver(epj.apprec_ok(doc))
    world.deliver(epj.answer(doc, ReplyCode.CONFIRMED, event=epj.booked(doc)))
    epj.take(world.url, world.queue, 1)  # our AppRec for the confirmation
    patient = world.booking(booking_id).patient_fnr
    cancel = world.request("cancel", booking_ref=booking_id)
    cancel["patient"]["fnr"] = patient
    cancel_id = submit(world.deps, cancel).booking_id
    epj.take(world.url, world.queue, 1)
    assert world.booking(booking_id).state == "CANCEL_REQUESTED"
    for _ in range(MAX_RESENDS + 1):
        deadline = world.booking(cancel_id).deadline_at
        assert deadline is not None
        world.clock.at(deadline + timedelta(seconds=1))
        assert check(world.deps) == 1
    assert world.booking(cancel_id).state == "FAILED"
    assert world.booking(booking_id).state == "CONFIRMED"  # the appointment still stands
    assert world.notices(cancel_id) == ["undeliverable"]
    assert world.notices(booking_id) == ["confirmed"]
    epj.take(world.url, world.queue, MAX_RESENDS)


def test_parallel_timeout_checks_resend_each_booking_once(world: World) -> None:
    ids = [world.submitted(patient_n=n)[0] for n in range(1, 11)]
    world.clock.at(world.clock.now + timedelta(seconds=APPREC_TIMEOUT + 1))
    others = [bootstrap(world.deps.settings) for _ in range(3)]
    for other in others:
        other.clock = world.clock
    touched: list[int] = []
    barrier = threading.Barrier(len(others))

    def run(deps: Deps) -> None:
        barrier.wait()
        touched.append(check(deps))

    threads = [threading.Thread(target=run, args=(d,)) for d in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for other in others:
        other.store.dispose()
    assert sum(touched) == len(ids)
    assert [world.booking(i).resends for i in ids] == [1] * len(ids)
    epj.take(world.url, world.queue, len(ids))
    assert epj.depth(world.url, world.queue) == 0


# -- a resent message may be answered twice (each answer with its own MsgId) -------------------


def test_a_late_refusal_of_a_resent_booking_leaves_the_cancellation_alone(world: World) -> None:
    booking_id, sent = world.submitted()
    doc = sent.parsed()
    world.clock.at(world.clock.now + timedelta(seconds=APPREC_TIMEOUT + 1))
    check(world.deps)  # resent: the clinic now answers it twice
    epj.take(world.url, world.queue, 1)
    world.deliver(epj.answer(doc, ReplyCode.CONFIRMED, event=epj.booked(doc)))
    cancel = world.request("cancel", booking_ref=booking_id)
    cancel["patient"]["fnr"] = world.booking(booking_id).patient_fnr
    submit(world.deps, cancel)
    assert world.booking(booking_id).state == "CANCEL_REQUESTED"
    late = world.deliver(epj.answer(doc, ReplyCode.NOT_AVAILABLE, text="Opptatt"))
    assert late == "processed"  # AppRec OK, not an internal error
    assert world.booking(booking_id).state == "CANCEL_REQUESTED"
    assert world.notices(booking_id) == ["confirmed"]
    with world.deps.store.transaction() as s:
        assert dead_letters(s) == []
    epj.take(world.url, world.queue, 3)  # two AppRecs of ours + the cancellation


def test_a_change_confirmed_twice_notifies_once(world: World) -> None:
    wish_id, sent = world.submitted("wish")
    doc = sent.parsed()
    world.deliver(epj.answer(doc, ReplyCode.CONFIRMED, event=epj.booked_wish(doc)))
    change = world.request("change_wish", booking_ref=wish_id)
    change["patient"]["fnr"] = world.booking(wish_id).patient_fnr
    submit(world.deps, change)
    [_ours, changed] = epj.take(world.url, world.queue, 2)
    cdoc = changed.parsed()
    assert cdoc.event is not None
    moved = epj.moved(cdoc.event, days=2)
    for _ in range(2):  # the change was resent and the clinic confirmed both copies
        world.deliver(epj.answer(cdoc, ReplyCode.CHANGE_CONFIRMED, event=moved))
    assert world.notices(wish_id) == ["changed", "confirmed"]
    epj.take(world.url, world.queue, 2)


def test_notification_key_holds_when_the_clinic_cancels_twice(world: World) -> None:
    """Two cancellations of one appointment (two MsgIds): one notice, by the unique key."""
    booking_id, sent = world.submitted()
    doc = sent.parsed()
    event = epj.booked(doc)
    world.deliver(epj.answer(doc, ReplyCode.CONFIRMED, event=event))
    for _ in range(2):
        world.deliver(epj.clinic_cancels(doc, event))
    assert world.booking(booking_id).state == "CANCELLED"
    assert world.notices(booking_id) == ["cancelled_by_clinic", "confirmed"]
    with world.deps.store.transaction() as s:
        total = s.scalar(select(func.count()).select_from(NotificationRow))
    assert total == 2
    epj.take(world.url, world.queue, 3)
