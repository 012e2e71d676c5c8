"""Batched marks: written together, in order, never lost when a write fails."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from tests.conftest import wait_for
from worker.adapters.store.marks import Marks
from worker.adapters.store.outbox import Claimed, Mark
from worker.settings import Settings

AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Writer:
    """Records each batch; fails while `down` is set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.attempts = 0
        self.down = False

    def __call__(self, marks: list[Mark]) -> dict[int, Claimed]:
        self.attempts += 1
        if self.down:
            raise ConnectionError("database unavailable")
        self.batches.append([m.outbox_id for m in marks])
        return {m.outbox_id: Claimed(True, f"b{m.outbox_id}", AT) for m in marks if m.outbox_id}


def mark(outbox_id: int) -> Mark:
    return Mark(outbox_id, AT, AT)


def test_marks_added_together_are_written_in_one_batch_then_each_is_told() -> None:
    writer, told = Writer(), list[Claimed]()
    marks = Marks(writer, delay=0.2)
    for oid in (1, 2, 3):
        marks.add(mark(oid), told.append)
    wait_for(lambda: len(told) == 3, timeout=5, what="three marks written")
    assert writer.batches == [[1, 2, 3]]
    assert told == [Claimed(True, "b1", AT), Claimed(True, "b2", AT), Claimed(True, "b3", AT)]
    assert marks.pending() == 0
    marks.close()


def test_a_row_marked_by_somebody_else_is_reported_as_not_claimed() -> None:
    told: list[Claimed] = []
    marks = Marks(Writer(), delay=0)
    marks.add(mark(0), told.append)  # the writer marks no row 0: a relay had it
    wait_for(lambda: told, timeout=5, what="the mark written")
    assert told == [Claimed(False)]
    marks.close()


def test_a_failed_write_keeps_the_marks_and_the_next_attempt_writes_them() -> None:
    writer, told = Writer(), list[Claimed]()
    writer.down = True
    marks = Marks(writer, delay=0, retry=30)  # after its failed attempt the thread waits
    marks.add(mark(1), told.append)
    wait_for(lambda: writer.attempts == 1, timeout=5, what="the thread's attempt")
    assert marks.pending() == 1 and told == []
    assert not marks.flush()  # still down: kept again
    assert marks.pending() == 1 and told == []
    writer.down = False
    assert marks.flush()
    assert writer.batches == [[1]] and told == [Claimed(True, "b1", AT)]
    marks.close(timeout=5)  # the waiting thread stops at once
    assert writer.attempts == 3


def test_close_writes_what_is_left_and_later_marks_at_once() -> None:
    writer, told = Writer(), list[Claimed]()
    marks = Marks(writer, delay=30)  # the thread would wait long: close() must not
    marks.add(mark(1), told.append)
    marks.add(mark(2), told.append)
    marks.close(timeout=5)
    assert writer.batches == [[1, 2]] and len(told) == 2
    marks.add(mark(3), told.append)  # a handler finishing during shutdown
    assert writer.batches == [[1, 2], [3]] and len(told) == 3


def test_a_failing_step_after_a_mark_does_not_lose_the_others() -> None:
    told: list[int] = []

    def broken(_claimed: Claimed) -> None:
        raise ValueError("metrics failed")

    marks = Marks(Writer(), delay=0.2)
    marks.add(mark(1), broken)
    marks.add(mark(2), lambda c: told.append(2))
    wait_for(lambda: told, timeout=5, what="the second mark's step")
    assert told == [2] and marks.pending() == 0
    marks.close()


def test_marks_from_many_threads_are_each_written_once() -> None:
    writer, told = Writer(), list[Claimed]()
    lock = threading.Lock()
    marks = Marks(writer, delay=0.01)

    def tell(claimed: Claimed) -> None:
        with lock:
            told.append(claimed)

    def add_many(start: int) -> None:
        for oid in range(start, start + 100):
            marks.add(mark(oid), tell)

    threads = [threading.Thread(target=add_many, args=(1 + 100 * i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    marks.close()
    written = [oid for batch in writer.batches for oid in batch]
    assert sorted(written) == list(range(1, 401)) and len(told) == 400


def test_the_mark_delay_must_stay_well_inside_the_lease() -> None:
    assert Settings(outbox_lease=1.0, outbox_mark_delay=0.1).outbox_mark_delay == 0.1
    with pytest.raises(ValidationError, match="a tenth of outbox_lease"):
        Settings(outbox_lease=1.0, outbox_mark_delay=0.2)
