"""The transactional outbox: a crash between commit and publish (or between publish and commit)
loses nothing and never makes a new document: the relay publishes the stored bytes with the
stored MsgId. And an unreachable EPJ broker: the task retries with backoff, the booking waits
as REQUESTED with its outbox row, and is published as stored once the broker is back."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mappers import incoming
from mappers.codes import AppRecStatus
from mappers.model import DialogMessage
from tests.chaos import clinic as epj
from tests.chaos import harness as h
from tests.conftest import PG_URL, ROOT, wait_for
from tests.support import apprec_for, request
from tests.support import headers as headers_for
from worker.adapters.store.db import dead_letters, get_booking, history
from worker.adapters.store.tables import MessageRow, OutboxRow
from worker.adapters.transports.kombu import Envelope
from worker.bootstrap import Deps, bootstrap
from worker.constants import RELAY_TASK, REQUESTS_QUEUE, SUBMIT_TASK
from worker.entrypoints.app import create_app
from worker.errors import EpjUnavailable
from worker.flows import dlq, inbound
from worker.flows.outbound import submit
from worker.flows.relay import relay
from worker.settings import Settings, async_queue

pytestmark = pytest.mark.integration


@dataclass
class Place:
    """A private Redis (broker and EPJ transport), a private schema, one clinic of our own."""

    redis: h.RedisServer
    schema: str
    clinic: str
    registry: Path
    tmp: Path

    @property
    def url(self) -> str:
        """The broker (and, unless told otherwise, EPJ transport) URL."""
        return self.redis.url()

    @property
    def queue(self) -> str:
        """The clinic's EPJ queue."""
        return async_queue(self.clinic)

    def settings(self, **over: Any) -> Settings:
        """Settings for in-process deps."""
        base: dict[str, Any] = {
            "broker_url": self.url,
            "database_url": PG_URL,
            "database_schema": self.schema,
            "registry_file": self.registry,
        }
        return Settings(**(base | over))

    def env(self, **over: object) -> dict[str, str]:
        """Environment for a timebok subprocess."""
        return h.timebok_env(self.url, self.schema, self.registry, **over)

    def request(self, **over: Any) -> dict[str, Any]:
        """A valid reserve request to our clinic."""
        return request(**({"clinic": {"her_id": self.clinic, "name": "Krasjklinikken"}} | over))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[h.RedisServer]:
    server = h.RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def place(redis_server: h.RedisServer, tmp_path: Path) -> Iterator[Place]:
    clinic = h.unique_her_id()
    registry = h.write_registry(tmp_path / "registry.toml", clinic)
    with h.private_schema("timebok_outbox") as schema:
        yield Place(redis_server, schema, clinic, registry, tmp_path)


@pytest.fixture
def deps(place: Place) -> Iterator[Deps]:
    made = bootstrap(place.settings())
    try:
        yield made
    finally:
        made.store.dispose()


@dataclass
class Stored:
    """What the store holds for one booking."""

    state: str
    messages: list[MessageRow]
    outbox: list[OutboxRow]


def stored(deps: Deps, booking_id: str) -> Stored:
    with deps.store.transaction() as s:
        row = get_booking(s, booking_id)
        assert row is not None, f"no booking {booking_id}"
        messages = list(
            s.scalars(
                select(MessageRow)
                .where(MessageRow.booking_id == booking_id, MessageRow.direction == "out")
                .order_by(MessageRow.id)
            )
        )
        outbox = list(
            s.scalars(
                select(OutboxRow)
                .where(OutboxRow.message_id.in_([m.id for m in messages]))
                .order_by(OutboxRow.id)
            )
        )
        return Stored(row.state, messages, outbox)


CRASH_LEASE = 5.0  # seconds the crashed writer's rows stay leased to it (a loaded machine
# can take over a second between the kill and the first relay below)


def crash_script(
    place: Place, payload: dict[str, Any], crash: str
) -> subprocess.CompletedProcess[str]:
    """Run `submit` in a child process that kill -9s itself at `crash` ("commit" / "publish")."""
    code = textwrap.dedent(
        f"""
        import json, os, signal, sys
        from worker.flows import outbound
        from worker.bootstrap import bootstrap

        def die(*_a, **_k):
            os.kill(os.getpid(), signal.SIGKILL)

        deps = bootstrap()
        if {crash!r} == "commit":
            outbound.publish = die  # committed, then the process dies before publishing
        else:
            publish = deps.epj.publish

            def publish_then_die(item):
                publish(item)
                die()  # published, then the process dies before the relay commits

            deps.epj.publish = publish_then_die
        outbound.submit(deps, json.loads(sys.argv[1]))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", code, json.dumps(payload)],
        env=place.env(outbox_lease=CRASH_LEASE),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- crash between commit and publish --------------------------------------------------------


def test_transport_failing_after_commit_leaves_the_document_for_the_relay(
    place: Place, deps: Deps
) -> None:
    down = bootstrap(place.settings(epj_broker_url=h.closed_port_url()))
    req = place.request()
    try:
        with pytest.raises(EpjUnavailable):
            submit(down, req)  # committed booking + message + outbox, then the publish failed
    finally:
        down.store.dispose()
    before = stored(deps, req["request_id"])
    assert before.state == "REQUESTED"
    [message] = before.messages
    [row] = before.outbox
    assert row.published_at is None and row.attempts == 1 and row.last_error
    assert epj.depth(place.url, place.queue) == 0
    assert relay(deps) == 1
    [got] = epj.take(place.url, place.queue, 1)
    assert got.body == message.xml and got.msg_id == message.msg_id
    after = stored(deps, req["request_id"])
    assert after.state == "SENT"
    assert [m.msg_id for m in after.messages] == [message.msg_id]
    # The task's retry finds what is stored and makes nothing new.
    again = submit(deps, req)
    assert not again.created and again.msg_id == message.msg_id
    assert len(stored(deps, req["request_id"]).outbox) == 1
    assert epj.depth(place.url, place.queue) == 0


def test_process_killed_right_after_commit_is_published_by_the_beat_relay(
    place: Place, deps: Deps
) -> None:
    req = place.request()
    proc = crash_script(place, req, "commit")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    before = stored(deps, req["request_id"])
    assert before.state == "REQUESTED" and len(before.outbox) == 1
    [message] = before.messages
    assert epj.depth(place.url, place.queue) == 0
    worker = h.worker(place.env(), place.tmp / "worker.log").start()
    try:
        time.sleep(CRASH_LEASE)  # until then the row is left to the process that died
        create_app(place.settings()).send_task(RELAY_TASK)  # what beat sends every few seconds
        [got] = epj.take(place.url, place.queue, 1, timeout=30)
    finally:
        worker.stop()
    assert got.body == message.xml and got.msg_id == message.msg_id
    after = stored(deps, req["request_id"])
    assert after.state == "SENT" and [m.msg_id for m in after.messages] == [message.msg_id]
    assert [r.published_at is not None for r in after.outbox] == [True]


def test_process_killed_between_publish_and_commit_republishes_identical_bytes(
    place: Place, deps: Deps
) -> None:
    req = place.request()
    proc = crash_script(place, req, "publish")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    before = stored(deps, req["request_id"])
    assert before.state == "REQUESTED"  # the publish happened, its marking never did
    assert relay(deps) == 0  # leased to the writer, which died: nobody takes it yet
    wait_for(lambda: relay(deps) == 1, CRASH_LEASE + 10, 0.1, "the lease to end")
    first, second = epj.take(place.url, place.queue, 2)
    [message] = before.messages
    assert first.body == second.body == message.xml
    assert first.msg_id == second.msg_id == message.msg_id
    assert stored(deps, req["request_id"]).state == "SENT"


def test_a_receipt_that_overtakes_the_marking_moves_the_booking_once(
    place: Place, deps: Deps
) -> None:
    """A fresh row is marked published after the publish: a fast clinic can answer first."""
    req = place.request()
    publish = deps.epj.publish

    def publish_then_clinic_answers(item: Envelope) -> None:
        publish(item)
        doc = incoming.parse_any(item.body)
        assert isinstance(doc, DialogMessage)
        ack = apprec_for(doc, AppRecStatus.OK)
        inbound.receive(deps, ack, headers_for(doc.envelope.msg_id, "APPREC", sender=place.clinic))

    deps.epj.publish = publish_then_clinic_answers  # type: ignore[method-assign]
    result = submit(deps, req)
    assert result.state == "SENT"  # what the portal is told: the document left
    after = stored(deps, req["request_id"])
    assert after.state == "DELIVERED"
    assert [r.published_at is not None for r in after.outbox] == [True]
    with deps.store.transaction() as s:
        moves = [(h.source, h.target) for h in history(s, req["request_id"])]
    assert moves == [(None, "REQUESTED"), ("REQUESTED", "SENT"), ("SENT", "DELIVERED")]


def test_a_worker_stopped_right_after_publishing_marks_its_rows_before_it_exits(
    place: Place, deps: Deps
) -> None:
    """The worker marks published rows in batches (worker.adapters.store.marks): a warm
    shutdown writes the marks still waiting, so no row is left for the relay to publish a
    second time."""
    reqs = [place.request() for _ in range(6)]
    env = place.env(outbox_mark_delay=2.0)  # marks wait long: the stop comes first
    worker = h.worker(env, place.tmp / "worker.log").start()
    try:
        app = create_app(place.settings())
        for req in reqs:
            app.send_task(SUBMIT_TASK, args=[req], queue=REQUESTS_QUEUE)
        got = epj.take(place.url, place.queue, len(reqs))
    finally:
        worker.stop()  # at once: the last marks are still waiting for their batch
    for req in reqs:
        after = stored(deps, req["request_id"])
        assert after.state == "SENT", worker.text()[-3000:]
        assert [r.published_at is not None for r in after.outbox] == [True]
    assert relay(deps) == 0 and epj.depth(place.url, place.queue) == 0
    assert len({d.msg_id for d in got}) == len(reqs)
    assert "published twice" not in worker.text()


# -- the EPJ broker is unreachable -------------------------------------------------------------

RETRY = re.compile(r"Retry in ([0-9.]+)s")


def test_unreachable_epj_broker_retries_with_backoff_and_loses_nothing(
    place: Place, deps: Deps
) -> None:
    env = place.env(epj_broker_url=h.closed_port_url(), task_max_retries=3, retry_backoff_max=1.5)
    worker = h.worker(env, place.tmp / "worker.log").start()
    req = place.request()
    try:
        create_app(place.settings()).send_task(SUBMIT_TASK, args=[req], queue=REQUESTS_QUEUE)
        wait_for(lambda: _task_dead_letters(deps), 60, 0.2, "the task to give up")
    finally:
        worker.stop()
    lines = _json_lines(worker.text())
    delays = [float(d) for line in lines for d in RETRY.findall(line["msg"])]
    assert len(delays) == 3, worker.text()[-3000:]  # max_retries, then the dead letter
    assert all(0 <= d <= 1.5 for d in delays) and len(set(delays)) > 1  # capped, jittered
    assert [x.get("attempt") for x in lines if x["msg"] == "transient error, retrying"] == [1, 2, 3]
    kept = stored(deps, req["request_id"])
    assert kept.state == "REQUESTED"  # never dropped, never FAILED by a broker outage
    [message] = kept.messages
    [row] = kept.outbox
    assert (
        row.published_at is None
        and row.attempts == 4
        and "cannot publish" in (row.last_error or "")
    )
    [dead] = _task_dead_letters(deps)
    assert dead.attempts == 4 and dead.source_queue == REQUESTS_QUEUE
    assert json.loads(dead.payload)["request_id"] == req["request_id"]
    # The broker is back: the relay publishes the stored document, MsgId unchanged.
    assert relay(deps) == 1
    [got] = epj.take(place.url, place.queue, 1)
    assert got.msg_id == message.msg_id and got.body == message.xml
    assert stored(deps, req["request_id"]).state == "SENT"
    # Replaying the task's dead letter (twice) makes nothing new.
    for _ in range(2):
        result = dlq.replay(deps, dead.id)
        assert result["result"] == f"booking {req['request_id']} SENT"
    assert len(stored(deps, req["request_id"]).messages) == 1
    assert epj.depth(place.url, place.queue) == 0


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _task_dead_letters(deps: Deps) -> list[Any]:
    with deps.store.transaction() as s:
        return [d for d in dead_letters(s, include_replayed=True) if d.kind == "task"]
