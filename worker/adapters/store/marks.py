"""Marks of published outbox rows, written a few at a time by a thread of the process.

A row written leased to this process is published by it and then marked (published, its
message sent, its booking SENT: `outbox.claim_published`). One statement per mark cost a
round trip and a PostgreSQL transaction per message; here the marks of the rows published
within `delay` seconds go in one statement, written by a background thread while the
handler goes on with the next message.

Nothing depends on a mark being written at once: a reply that overtakes it finds its
booking REQUESTED and moves it on (worker.flows.replies), and a mark that is never written (the
process died) only means the row is published once more, same bytes and MsgId, when its
lease ends. A mark that fails to write (database unavailable) is kept and tried again;
`close` writes what is left when the process shuts down.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from worker.adapters.store.outbox import Claimed, Mark

log = logging.getLogger("timebok.relay")

DELAY = 0.05  # seconds a mark waits for others to join it
RETRY = 1.0  # seconds between attempts while the database is unavailable


@dataclass(frozen=True)
class Waiting:
    """A mark to write and what to do once it is written."""

    mark: Mark
    then: Callable[[Claimed], None]


Write = Callable[[list[Mark]], dict[int, Claimed]]


class Marks:
    """Marks collected from any thread, written in batches by one background thread."""

    def __init__(self, write: Write, *, delay: float = DELAY, retry: float = RETRY) -> None:
        self._write, self._delay, self._retry = write, delay, retry
        self._waiting: list[Waiting] = []
        self._wake = threading.Condition()
        self._writing = threading.Lock()  # one write at a time: the thread's or close()'s
        self._closed = False
        self._stop = threading.Event()  # set by close(): cuts the thread's waits short
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, mark: Mark, then: Callable[[Claimed], None]) -> None:
        """Queue a mark; `then` runs (in the writing thread) once it is written.

        After `close` (a handler still finishing while the process shuts down) the mark is
        written at once, in the caller's thread.
        """
        with self._wake:
            self._waiting.append(Waiting(mark, then))
            closed = self._closed
            if not closed and (self._thread is None or self._pid != os.getpid()):
                self._pid = os.getpid()  # no thread yet, or this is a forked child
                self._thread = threading.Thread(target=self._run, name="timebok-marks")
                self._thread.daemon = True
                self._thread.start()
            self._wake.notify()
        if closed:
            self.flush()

    def pending(self) -> int:
        """How many marks wait to be written."""
        with self._wake:
            return len(self._waiting)

    def flush(self) -> bool:
        """Write every waiting mark now; False (marks kept) when the write failed."""
        with self._writing:
            with self._wake:
                batch, self._waiting = self._waiting, []
            if not batch:
                return True
            try:
                claimed = self._write([w.mark for w in batch])
            except Exception as exc:  # the database is away: keep them, try again
                log.warning("marks of published messages not written yet: %s", str(exc)[:200])
                with self._wake:
                    self._waiting[:0] = batch
                return False
        for waiting in batch:
            try:
                waiting.then(claimed.get(waiting.mark.outbox_id, Claimed(False)))
            except Exception:  # log lines and metrics must never lose the other marks
                log.warning("after-mark step failed", exc_info=True)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left (trying until `timeout`)."""
        with self._wake:
            self._closed = True
            self._stop.set()
            self._wake.notify()
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            thread.join(timeout)
        give_up = time.monotonic() + timeout
        while not self.flush() and time.monotonic() < give_up:
            time.sleep(min(self._retry, timeout))

    def _run(self) -> None:
        # Returns once closed: close() writes what is left.
        while True:
            with self._wake:
                while not self._waiting and not self._closed:
                    self._wake.wait()
            if self._stop.wait(self._delay):  # let the marks of the next few messages join
                return
            if not self.flush() and self._stop.wait(self._retry):
                return
