"""How the worker hands national-bus messages to its pool and settles them (fakes for the
pool and the event loop; the real path runs in tests/integration/test_nhn.py)."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from worker.adapters.transports.base import Delivery, Outcome
from worker.entrypoints.app import BusConsumer, handle_bus


class _Hub:
    """The event loop's reader registry."""

    def __init__(self) -> None:
        self.readers: dict[int, Callable[[], None]] = {}

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.readers[fd] = callback

    def remove_reader(self, fd: int) -> None:
        self.readers.pop(fd, None)

    def turn(self) -> None:
        """What the loop does when the pipe is readable."""
        for callback in list(self.readers.values()):
            callback()


class _Job:
    def __init__(self, args: tuple[Any, ...], callback: Any, error_callback: Any) -> None:
        self.args, self.callback, self.error_callback = args, callback, error_callback


class _Pool:
    """Records what is applied; the test answers for the pool processes."""

    def __init__(self, *, ready: bool = True) -> None:
        self.jobs: list[_Job] = []
        self.ready = ready

    def apply_async(
        self, fn: Any, args: tuple[Any, ...], callback: Any, error_callback: Any
    ) -> None:
        if not self.ready:
            raise RuntimeError("pool restarting")
        assert fn is handle_bus
        pickle.dumps(args)  # what goes to a pool process must pickle
        self.jobs.append(_Job(args, callback, error_callback))


def _delivery(msg_id: str, settled: list[tuple[str, Outcome]]) -> Delivery:
    return Delivery(
        queue="8093244_async",
        body=b"\x30\x00",
        headers={"msgId": msg_id, "fromHerId": "8090001"},
        settle=lambda outcome: settled.append((msg_id, outcome)),
        content_type="application/pkcs7-mime; smime-type=signed-and-enveloped-data",
    )


@pytest.fixture
def wired() -> Iterator[tuple[BusConsumer, _Hub, _Pool]]:
    hub, pool = _Hub(), _Pool()
    consumer = BusConsumer(0, pool, hub)
    assert consumer.threads is None  # the pool path
    hub.add_reader(consumer.wake_r, consumer._on_wake)  # what start() registers
    yield consumer, hub, pool
    consumer.stop()


def test_messages_go_to_the_pool_and_are_settled_with_its_answer(
    wired: tuple[BusConsumer, _Hub, _Pool],
) -> None:
    consumer, hub, pool = wired
    settled: list[tuple[str, Outcome]] = []
    for msg_id in ("a", "b", "c"):
        consumer.on_delivery(_delivery(msg_id, settled))
    assert pool.jobs == []  # nothing applied outside the event loop's thread
    hub.turn()
    assert [job.args[0]["headers"]["msgId"] for job in pool.jobs] == ["a", "b", "c"]
    assert settled == []  # nothing settled before the pool answered
    pool.jobs[1].callback("accepted")
    pool.jobs[0].callback("rejected")
    pool.jobs[2].error_callback(RuntimeError("pool process died"))
    assert settled == [("b", Outcome.ACCEPT), ("a", Outcome.REJECT), ("c", Outcome.RELEASE)]
    assert consumer.busy == {}


def test_copies_of_one_msg_id_are_handled_one_after_another(
    wired: tuple[BusConsumer, _Hub, _Pool],
) -> None:
    consumer, hub, pool = wired
    settled: list[tuple[str, Outcome]] = []
    consumer.on_delivery(_delivery("same", settled))
    consumer.on_delivery(_delivery("same", settled))
    hub.turn()
    assert len(pool.jobs) == 1  # the copy waits for the first one's commit
    pool.jobs[0].callback("accepted")
    assert len(pool.jobs) == 2 and settled == [("same", Outcome.ACCEPT)]
    pool.jobs[1].callback("accepted")
    assert settled == [("same", Outcome.ACCEPT)] * 2 and consumer.busy == {}


def test_a_pool_that_is_not_ready_releases_the_message() -> None:
    hub, pool = _Hub(), _Pool(ready=False)
    consumer = BusConsumer(0, pool, hub)
    hub.add_reader(consumer.wake_r, consumer._on_wake)
    settled: list[tuple[str, Outcome]] = []
    try:
        consumer.on_delivery(_delivery("x", settled))
        hub.turn()
    finally:
        consumer.stop()
    assert settled == [("x", Outcome.RELEASE)] and consumer.busy == {}


def test_handler_threads_when_asked_for_or_without_an_event_loop() -> None:
    for consumer in (BusConsumer(3, _Pool(), _Hub()), BusConsumer(0, None, None)):
        try:
            assert consumer.threads is not None and consumer.pool is None
        finally:
            consumer.stop()
