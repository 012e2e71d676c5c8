"""A simulator killed with kill -9 between its AppRec and its reply still sends the reply.

A real EPJ keeps what it received: the simulator acks a message only once every answer it
owes is published, so a restarted simulator gets the message again and answers it, with
the same MsgIds (the portal deduplicates them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection, Queue

from mappers import incoming
from mappers import message as dialog_message
from mappers.codes import ReplyCode
from mappers.model import AppRec, DialogMessage
from tests.chaos import harness as h
from tests.integration.test_sim import World

pytestmark = pytest.mark.e2e
AMQP_URL = os.environ.get("TIMEBOK_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """HER-ids (and so queues) of this run only, on the shared RabbitMQ; deleted afterwards."""
    w = World(AMQP_URL, tmp_path)
    yield w
    w.transport.close()
    with Connection(AMQP_URL) as conn:
        for her_id in (w.portal, w.clinic, w.rejecting):
            Queue(f"{her_id}_async", durable=True)(conn.default_channel).delete()


def _take(queue: str, expect: int, timeout: float) -> list[AppRec | DialogMessage]:
    """Exactly `expect` documents off `queue` within `timeout` seconds, parsed."""
    got: list[AppRec | DialogMessage] = []
    deadline = time.monotonic() + timeout
    with Connection(AMQP_URL) as conn:
        simple = conn.SimpleQueue(Queue(queue, durable=True))
        try:
            while len(got) < expect and time.monotonic() < deadline:
                try:
                    m = simple.get(block=True, timeout=0.2)
                except simple.Empty:
                    continue
                body = m.body.encode() if isinstance(m.body, str) else bytes(m.body)
                got.append(incoming.parse_any(body))
                m.ack()
        finally:
            simple.close()
    assert len(got) == expect, f"expected {expect} document(s) on {queue}, got {len(got)}"
    return got


def _sim(world: World, tmp: Path, delay: float) -> h.Service:
    env = h.timebok_env(
        AMQP_URL,
        "-",
        world.registry_file,
        own_her_id=world.portal,
        own_name="Testportalen",
    )
    return h.simulator(env, tmp / "sim.log", "--policy", "confirm", "--delay", str(delay))


@pytest.mark.timeout(120)
def test_a_reply_owed_when_the_simulator_is_killed_is_sent_after_its_restart(
    world: World, tmp_path: Path
) -> None:
    first = _sim(world, tmp_path, delay=600).start()  # the reply would come in 10 minutes
    try:
        request = world.reserve(world.clinic)
        world.send(world.clinic, dialog_message.build(request), request)
        [receipt] = _take(f"{world.portal}_async", 1, timeout=20)
        assert isinstance(receipt, AppRec)
        first.kill()  # AppRec sent, reply still owed
        second = _sim(world, tmp_path, delay=0.2).start()
        try:
            got = _take(f"{world.portal}_async", 2, timeout=20)
        finally:
            second.stop()
    finally:
        first.stop()
    again = [r for r in got if isinstance(r, AppRec)]
    replies = [r for r in got if isinstance(r, DialogMessage)]
    assert [r.msg_id for r in again] == [receipt.msg_id]  # the same receipt, the same MsgId
    assert len(replies) == 1
    assert replies[0].reply is not None
    assert replies[0].reply.code is ReplyCode.CONFIRMED
    assert replies[0].envelope.conversation is not None
    assert replies[0].envelope.conversation.ref_to_parent == request.envelope.msg_id
