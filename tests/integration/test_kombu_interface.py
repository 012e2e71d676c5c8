"""The kombu transport behind the interface (real Redis): settle outcomes, synchronous request."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from worker.adapters.transports.base import Delivery, Envelope, Outcome, transport_headers
from worker.adapters.transports.kombu import KombuTransport

pytestmark = pytest.mark.integration


def _headers(msg_id: str) -> dict[str, str]:
    return transport_headers(from_her_id="1", to_her_id="2", msg_id=msg_id, msg_type="T")


def _drain(t: KombuTransport, queue: str, outcome: Outcome, seconds: float = 1.5) -> list[Delivery]:
    got: list[Delivery] = []

    def keep(d: Delivery) -> Outcome:
        got.append(d)
        return outcome

    sub = t.subscribe([queue], keep)
    try:
        deadline = time.monotonic() + seconds
        while not got and time.monotonic() < deadline:
            sub.drain(0.3)
    finally:
        sub.close()
    return got


def test_accept_release_reject_on_kombu(redis_url: str) -> None:
    t = KombuTransport(redis_url)
    queue = f"q-{uuid.uuid4().hex}"
    try:
        t.publish(Envelope(queue, b"<a/>", _headers("m1")))
        released = _drain(t, queue, Outcome.RELEASE)  # may come back within the same drain
        first = released[0]
        assert first.body == b"<a/>" and first.headers["msgId"] == "m1" and first.queue == queue
        assert {d.headers["msgId"] for d in released} == {"m1"}
        [again] = _drain(t, queue, Outcome.REJECT)  # released: it came back
        assert again.headers["msgId"] == "m1"
        assert _drain(t, queue, Outcome.ACCEPT, 0.8) == []  # rejected: gone
        t.publish(Envelope(queue, b"<b/>", _headers("m2")))
        assert [d.headers["msgId"] for d in _drain(t, queue, Outcome.ACCEPT)] == ["m2"]
        assert t.depth(queue) == 0
    finally:
        t.close()


def test_synchronous_request_on_kombu(redis_url: str) -> None:
    clinic, ours = KombuTransport(redis_url), KombuTransport(redis_url)
    sync, reply = f"c-{uuid.uuid4().hex}_sync", f"o-{uuid.uuid4().hex}_syncreply"
    stop = threading.Event()

    def answer(d: Delivery) -> Outcome:
        assert d.reply_to == reply and d.correlation_id
        clinic.publish(Envelope(reply, b"<A/>", _headers("a1"), correlation_id=d.correlation_id))
        return Outcome.ACCEPT

    sub = clinic.subscribe([sync], answer)
    thread = threading.Thread(target=lambda: [sub.drain(0.2) for _ in iter(stop.is_set, True)])
    thread.start()
    try:
        got = ours.request(Envelope(sync, b"<Q/>", _headers("q1")), reply, 10)
    finally:
        stop.set()
        thread.join(5)
        sub.close()
        clinic.close()
        ours.close()
    assert got is not None and got.body == b"<A/>" and got.correlation_id == "q1"
    assert got.headers["correlationId"] == "q1"
