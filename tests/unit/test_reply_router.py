"""The shared reply consumer of synchronous requests (pure logic, an in-memory transport)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from worker.adapters.transports.base import (
    Delivery,
    Envelope,
    Handler,
    HandoffUnavailable,
    Outcome,
    ReplyRouter,
    transport_headers,
)


class _Sub:
    def __init__(self, mem: _Memory, handler: Handler) -> None:
        self.mem, self.handler = mem, handler

    def drain(self, timeout: float) -> int:
        try:
            item = self.mem.replies.get(timeout=timeout)
        except queue.Empty:
            return 0
        outcome = self.handler(_delivery(item, self.mem))
        self.mem.settled.append((item.correlation_id or "", outcome))
        if outcome is Outcome.RELEASE:
            self.mem.released += 1
        return 1

    def close(self) -> None:
        """Nothing to release; counted."""
        self.mem.closed += 1


class _Memory:
    """A transport whose clinic answers every request with its correlation id, reversed ones
    held back when asked to."""

    name = "memory"

    def __init__(self, answer: bool = True) -> None:
        self.replies: queue.Queue[Envelope] = queue.Queue()
        self.answer = answer
        self.subscriptions = 0
        self.published: list[Envelope] = []
        self.settled: list[tuple[str, Outcome]] = []
        self.released = 0
        self.closed = 0
        self.lock = threading.Lock()

    def publish(self, item: Envelope) -> None:
        with self.lock:
            self.published.append(item)
        if self.answer and item.queue.endswith("_sync"):
            body = item.body + b"!"
            self.replies.put(Envelope(item.reply_to or "", body, {}, None, item.correlation_id))

    def subscribe(self, queues: Sequence[str], handler: Handler) -> _Sub:
        self.subscriptions += 1
        return _Sub(self, handler)


def _delivery(item: Envelope, mem: _Memory) -> Delivery:
    return Delivery(item.queue, item.body, {}, lambda _o: None, correlation_id=item.correlation_id)


def _ask(router: ReplyRouter, n: int, timeout: float = 5.0) -> Delivery | None:
    headers = transport_headers(from_her_id="1", to_her_id="2", msg_id=f"m{n}", msg_type="T")
    return router.ask(Envelope("2_sync", f"q{n}".encode(), headers), timeout)


def test_concurrent_requests_share_one_consumer_and_get_their_own_answers() -> None:
    mem = _Memory()
    router = ReplyRouter(mem, "1_syncreply")  # type: ignore[arg-type]
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda n: _ask(router, n), range(60)))
    assert [a.body if a else None for a in answers] == [f"q{n}!".encode() for n in range(60)]
    assert mem.subscriptions == 1
    assert all(p.reply_to == "1_syncreply" and p.correlation_id for p in mem.published)


def test_a_late_answer_is_accepted_and_dropped() -> None:
    mem = _Memory(answer=False)
    router = ReplyRouter(mem, "1_syncreply")  # type: ignore[arg-type]
    assert _ask(router, 1, timeout=0.2) is None
    mem.replies.put(Envelope("1_syncreply", b"late", {}, None, "m1"))
    router._ensure()
    for _ in range(50):
        if mem.settled:
            break
        threading.Event().wait(0.05)
    assert mem.settled == [("m1", Outcome.ACCEPT)]
    assert router.stats["late"] == 1


def test_an_answer_nobody_here_asked_for_is_released_for_another_process() -> None:
    mem = _Memory(answer=False)
    router = ReplyRouter(mem, "1_syncreply")  # type: ignore[arg-type]
    router._ensure()
    mem.replies.put(Envelope("1_syncreply", b"theirs", {}, None, "elsewhere"))
    for _ in range(50):
        if mem.settled:
            break
        threading.Event().wait(0.05)
    assert mem.settled[0] == ("elsewhere", Outcome.RELEASE)


class _Handoff:
    """The hand-off between processes, in memory (the real one is Redis: tests/integration)."""

    def __init__(self) -> None:
        self.waits: dict[str, str] = {}
        self.inboxes: dict[str, queue.Queue[Delivery]] = {}
        self.lock = threading.Lock()

    def _inbox(self, name: str) -> queue.Queue[Delivery]:
        with self.lock:
            return self.inboxes.setdefault(name, queue.Queue())

    def expect(self, correlation_id: str, inbox: str, timeout: float) -> None:
        with self.lock:
            self.waits[correlation_id] = inbox

    def forget(self, correlation_id: str) -> None:
        with self.lock:
            self.waits.pop(correlation_id, None)

    def forward(self, delivery: Delivery) -> str | None:
        with self.lock:
            inbox = self.waits.get(delivery.correlation_id or "")
        if inbox is not None:
            self._inbox(inbox).put(delivery)
        return inbox

    def receive(self, inbox: str, timeout: float) -> Delivery | None:
        try:
            return self._inbox(inbox).get(timeout=timeout)
        except queue.Empty:
            return None


def test_answers_taken_by_another_process_are_handed_over_never_released() -> None:
    mem, handoff = _Memory(), _Handoff()
    # Three "processes" consume the same reply queue; each answer lands at any of them.
    routers = [ReplyRouter(mem, "1_syncreply", handoff) for _ in range(3)]  # type: ignore[arg-type]
    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda n: _ask(routers[n % 3], n), range(90)))
    assert [a.body if a else None for a in answers] == [f"q{n}!".encode() for n in range(90)]
    assert mem.released == 0
    assert sum(r.stats["handed_over"] for r in routers) > 0
    assert sum(r.stats["handed_over"] for r in routers) == sum(
        r.stats["handed_in"] for r in routers
    )
    assert handoff.waits == {}  # every call forgot its note


def test_an_answer_nobody_anywhere_waits_for_is_dropped_as_late_at_once() -> None:
    mem, handoff = _Memory(answer=False), _Handoff()
    router = ReplyRouter(mem, "1_syncreply", handoff)  # type: ignore[arg-type]
    router._ensure()
    mem.replies.put(Envelope("1_syncreply", b"nobody's", {}, None, "unknown"))
    for _ in range(50):
        if mem.settled:
            break
        threading.Event().wait(0.05)
    assert mem.settled == [("unknown", Outcome.ACCEPT)]
    assert router.stats["late"] == 1 and mem.released == 0


def test_without_a_working_handoff_a_stray_answer_is_released() -> None:
    class _Down(_Handoff):
        def forward(self, delivery: Delivery) -> str | None:
            raise HandoffUnavailable("down")

    mem = _Memory(answer=False)
    router = ReplyRouter(mem, "1_syncreply", _Down())  # type: ignore[arg-type]
    router._ensure()
    mem.replies.put(Envelope("1_syncreply", b"theirs", {}, None, "elsewhere"))
    for _ in range(50):
        if mem.settled:
            break
        threading.Event().wait(0.05)
    assert mem.settled[0] == ("elsewhere", Outcome.RELEASE)


def test_stopping_closes_the_consumer_and_a_later_request_starts_it_again() -> None:
    mem = _Memory()
    router = ReplyRouter(mem, "1_syncreply")  # type: ignore[arg-type]
    assert _ask(router, 1) is not None
    router.stop()
    assert mem.closed == 1  # closed cleanly: what it held goes back to the queue
    answer = _ask(router, 2)
    assert answer is not None and answer.body == b"q2!"
    assert mem.subscriptions == 2
