"""What the bench scenarios drive: send, freeze/thaw the worker, wait, read what it did."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis
from kombu.connection import Connection
from kombu.entity import Queue
from sqlalchemy import select, text

from mappers import incoming
from mappers.model import DialogMessage
from worker.adapters.store.tables import MessageRow, NotificationRow, OutboxRow
from worker.bench.data import CLINIC, NOOP_TASK, booking_request, confirmation
from worker.bench.env import BenchWorker, bench_worker, cli_start, pg_schema, redis_db
from worker.bench.run import BenchError, Drained, latency_ms, per_second, percentile, say
from worker.constants import REQUESTS_QUEUE
from worker.entrypoints.app import send_booking
from worker.settings import DEFAULT_DATA_DIR, Settings, async_queue

WARMUP = 16  # of each kind, so every process has imported, connected and compiled first
POLL = 0.005  # seconds between cheap completion checks (one Redis call each)
T = TypeVar("T")


@contextmanager
def private_stack(settings: Settings, n: int) -> Iterator[Rig]:
    """A warmed-up Rig on a private Redis DB and PostgreSQL schema; all removed afterwards."""
    with ExitStack() as stack:
        broker = stack.enter_context(redis_db(settings.broker_url))
        database, schema = stack.enter_context(pg_schema(settings.database_url))
        cfg = settings.model_copy(
            update={
                "broker_url": broker,
                "epj_broker_url": broker,
                "database_url": database,
                "database_schema": schema,
            }
        )
        log = DEFAULT_DATA_DIR.resolve() / "bench-worker.log"
        worker = stack.enter_context(bench_worker(cfg, log))
        rig = Rig(cfg, worker, timeout=30 + n / 20)
        stack.callback(rig.close)
        rig.warm_up()
        yield rig


class Completions:
    """Worker timestamps of Celery task-succeeded events, read off raw pub/sub.

    While a drain runs, the listener only keeps the raw event messages (Celery sends them
    in batches, `task.multi`); they are decoded once the queue is empty, so the rig takes as
    little CPU as possible from the worker it measures. It listens only inside
    `listening()`.
    """

    def __init__(self, broker_url: str) -> None:
        self._raw: list[bytes] = []
        self._decoded = 0
        self._stamps: list[float] = []
        self._client: redis.Redis[bytes] = redis.Redis.from_url(broker_url)
        db = self._client.connection_pool.connection_kwargs.get("db", 0)
        self._pattern = f"/{db}.celeryev/task.*"

    @contextmanager
    def listening(self) -> Iterator[None]:
        """Collect events (from none) until the block ends."""
        self._raw, self._decoded, self._stamps = [], 0, []
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(self._pattern)
        stop = threading.Event()

        def listen() -> None:
            while not stop.is_set():
                message = pubsub.get_message(timeout=0.2)
                if message is not None:
                    self._raw.append(message["data"])

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(2)
            pubsub.close()

    def stamps(self) -> list[float]:
        """The task-succeeded timestamps so far (decodes what arrived since the last call)."""
        arrived = len(self._raw)
        for raw in self._raw[self._decoded : arrived]:
            self._stamps.extend(succeeded_at(raw))
        self._decoded = arrived
        return self._stamps

    def close(self) -> None:
        """Release the connection."""
        self._client.close()


def succeeded_at(raw: bytes) -> list[float]:
    """The timestamps of the task-succeeded events in one kombu event message (or batch)."""
    envelope = json.loads(raw)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    events = json.loads(body)
    batch = events if isinstance(events, list) else [events]
    return [float(e["timestamp"]) for e in batch if e.get("type") == "task-succeeded"]


class Rig:
    """The scenarios, each measured the same way (see worker.bench.run)."""

    def __init__(self, cfg: Settings, worker: BenchWorker, timeout: float) -> None:
        from worker.bootstrap import bootstrap
        from worker.entrypoints.app import create_app

        self.cfg, self.worker, self.timeout = cfg, worker, timeout
        self.deps = bootstrap(cfg)
        self.app = create_app(cfg)
        self.redis: redis.Redis[bytes] = redis.Redis.from_url(cfg.broker_url)
        self.completions = Completions(cfg.broker_url)
        self.clinic_queue = async_queue(CLINIC.her_id)

    def close(self) -> None:
        """Release connections."""
        self.completions.close()
        self.redis.close()
        self.deps.store.dispose()

    def cli_start(self) -> tuple[float, float]:
        """Median wall and CPU ms of `timebok booking ID --json` for a stored booking that sent
        a message (the worker frozen meanwhile)."""
        sent = "SELECT booking_id FROM messages WHERE direction = 'out' LIMIT 1"
        with self.deps.store.engine.connect() as conn:
            booking_id = conn.execute(text(sent)).scalar_one()
        return self.frozen(lambda: cli_start(self.cfg, str(booking_id)))

    def frozen(self, fn: Callable[[], T]) -> T:
        """Run fn while the worker is stopped (it gets the CPU to itself)."""
        self.worker.freeze()
        try:
            return fn()
        finally:
            self.worker.thaw()

    def warm_up(self) -> None:
        """A few of each kind through every path; also waits until the worker is up."""
        say("waiting for the worker (warm-up)")
        payloads = [booking_request(i) for i in range(WARMUP)]
        with self.completions.listening():
            self._send_noops(WARMUP)
            self._send_requests(payloads)
            self._wait(lambda: len(self.completions.stamps()) >= 2 * WARMUP, "warm-up tasks", 90)
        docs = self._take_docs(WARMUP)
        self._published([str(p["request_id"]) for p in payloads])
        now = datetime.now(UTC)
        for doc in docs:
            self.deps.epj.publish(confirmation(doc, now))
        self._wait_depth(WARMUP, "warm-up receipts")
        self._notified([_booking_id(d) for d in docs])
        self.redis.delete(self.clinic_queue)

    def noop(self, n: int) -> Drained:
        """N bare no-op tasks: Celery's own ceiling with these settings."""
        self.worker.freeze()
        self._send_noops(n)
        with self.completions.listening():
            cpu = self._cpu_from_thaw()
            self._wait(self._requests_done, f"{n} no-op tasks")
            used = cpu(n)
            self._wait(lambda: len(self.completions.stamps()) >= n, f"events of {n} no-op tasks")
            stamps = sorted(self.completions.stamps())[:n]
        rate = per_second(stamps)
        say(f"noop: {n} tasks, {rate:.0f}/s, worker CPU {used:.2f} ms each")
        return Drained(rate, [], [], used)

    def outbound(self, n: int) -> Drained:
        """N pre-enqueued requests -> N validated documents on the clinic queue."""
        payloads = [booking_request(i) for i in range(n)]
        self.worker.freeze()
        self._send_requests(payloads)
        cpu = self._cpu_from_thaw()
        self._wait_depth(n, f"{n} documents on the clinic queue")
        done = self._published([str(p["request_id"]) for p in payloads])
        used = cpu(n)
        docs = self._take_docs(n)
        rate = per_second(list(done.values()))
        say(f"outbound: {n} bookings, {rate:.0f}/s, worker CPU {used:.2f} ms each")
        return Drained(rate, latency_ms(done, cpu.thawed), docs, used)

    def inbound(self, docs: list[DialogMessage]) -> Drained:
        """N pre-loaded replies (05) -> N inbox notifications (and N receipts back)."""
        now = datetime.now(UTC)
        replies = [confirmation(doc, now) for doc in docs]
        self.worker.freeze()
        for item in replies:
            self.deps.epj.publish(item)
        cpu = self._cpu_from_thaw()
        self._wait_depth(len(docs), f"{len(docs)} receipts")
        done = self._notified([_booking_id(d) for d in docs])
        used = cpu(len(docs))
        self.redis.delete(self.clinic_queue)
        rate = per_second(list(done.values()))
        say(f"inbound: {len(docs)} replies, {rate:.0f}/s, worker CPU {used:.2f} ms each")
        return Drained(rate, latency_ms(done, cpu.thawed), [], used)

    def _cpu_from_thaw(self) -> WorkerCpu:
        """Thaw the frozen worker; the result tells its CPU per item since then."""
        before = self.worker.cpu_seconds()
        return WorkerCpu(self.worker, before, self.worker.thaw())

    def paced_outbound(self, rate: float, seconds: float) -> Drained:
        """Requests at `rate` per second: enqueue -> EPJ queue latency."""
        payloads = [booking_request(i) for i in range(max(20, int(rate * seconds)))]
        with self.app.producer_or_acquire() as producer:
            sent = pace(rate, payloads, lambda p: self._send_request(p, producer))
        self._wait_depth(len(sent), "paced documents")
        done = self._published(list(sent))
        docs = self._take_docs(len(sent))
        latencies = latency_ms(done, sent)
        say(f"outbound at {rate:.0f}/s: p99 {percentile(latencies, 99):.1f} ms")
        return Drained(rate, latencies, docs)

    def paced_inbound(self, docs: list[DialogMessage], rate: float) -> Drained:
        """Replies at `rate` per second: queue -> inbox notification latency."""
        now = datetime.now(UTC)
        replies = {_booking_id(d): confirmation(d, now) for d in docs}
        sent = pace(rate, list(replies), lambda key: self._publish(key, replies[key]))
        self._wait_depth(len(sent), "paced receipts")
        done = self._notified(list(sent))
        self.redis.delete(self.clinic_queue)
        latencies = latency_ms(done, sent)
        say(f"inbound at {rate:.0f}/s: p99 {percentile(latencies, 99):.1f} ms")
        return Drained(rate, latencies, [])

    # -- sending ----------------------------------------------------------------------------

    def _send_noops(self, n: int) -> None:
        with self.app.producer_or_acquire() as producer:
            for _ in range(n):
                self.app.send_task(NOOP_TASK, queue=REQUESTS_QUEUE, producer=producer)

    def _send_requests(self, payloads: list[dict[str, Any]]) -> None:
        with self.app.producer_or_acquire() as producer:
            for payload in payloads:
                self._send_request(payload, producer)

    def _send_request(self, payload: dict[str, Any], producer: Any) -> tuple[str, float]:
        stamp = time.time()
        send_booking(self.app, payload, producer)
        return str(payload["request_id"]), stamp

    def _publish(self, key: str, item: Any) -> tuple[str, float]:
        stamp = time.time()
        self.deps.epj.publish(item)
        return key, stamp

    # -- waiting and reading ----------------------------------------------------------------

    def _wait(self, done: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while not done():
            self.worker.check()
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {what}; see {self.worker.log}")
            time.sleep(POLL)

    def _requests_done(self) -> bool:
        """Nothing waits on the request queue and nothing is unacked (late ack: all ran)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(REQUESTS_QUEUE).hlen("unacked")
        waiting, unacked = pipe.execute()
        return int(waiting) == 0 and int(unacked) == 0

    def _wait_depth(self, n: int, what: str) -> None:
        """Until n messages wait on the clinic queue (a cheap stand-in for 'all done')."""
        self._wait(lambda: int(self.redis.llen(self.clinic_queue)) >= n, what)

    def _published(self, ids: list[str]) -> dict[str, float]:
        """booking id -> when its document was published (all of them, once committed)."""
        stmt = (
            select(MessageRow.booking_id, OutboxRow.published_at)
            .join(OutboxRow, OutboxRow.message_id == MessageRow.id)
            .where(MessageRow.booking_id.in_(ids), MessageRow.msg_type != "APPREC")
            .where(OutboxRow.published_at.is_not(None))
        )
        return self._rows(stmt, len(ids), "published bookings")

    def _notified(self, ids: list[str]) -> dict[str, float]:
        """booking id -> when its inbox notification was written (all of them)."""
        stmt = select(NotificationRow.booking_id, NotificationRow.created_at).where(
            NotificationRow.booking_id.in_(ids)
        )
        return self._rows(stmt, len(ids), "inbox notifications")

    def _rows(self, stmt: Any, n: int, what: str) -> dict[str, float]:
        """key -> timestamp, re-read briefly until all n rows are committed."""
        for _ in range(100):
            with self.deps.store.transaction() as s:
                found = {str(k): at.timestamp() for k, at in s.execute(stmt)}
            if len(found) >= n:
                return found
            time.sleep(0.05)
        raise BenchError(f"only {len(found)} of {n} {what} in the database")

    def _take_docs(self, n: int) -> list[DialogMessage]:
        """Take n documents off the clinic queue, each parsed and schema-validated."""
        docs: list[DialogMessage] = []
        with Connection(self.cfg.epj_url) as conn:
            queue = conn.SimpleQueue(Queue(self.clinic_queue, durable=True), no_ack=True)
            try:
                while len(docs) < n:
                    docs.append(_request_doc(queue.get(timeout=self.timeout).body))
            except queue.Empty as exc:
                raise BenchError(f"only {len(docs)} of {n} documents on the clinic queue") from exc
            finally:
                queue.close()
        return docs


class WorkerCpu:
    """The worker's CPU (main process and pool) from a thaw on, per item."""

    def __init__(self, worker: BenchWorker, before: float, thawed: float) -> None:
        self.worker, self.before, self.thawed = worker, before, thawed

    def __call__(self, items: int) -> float:
        """Milliseconds of CPU per item so far."""
        return (self.worker.cpu_seconds() - self.before) * 1000 / items


def _request_doc(body: bytes | str) -> DialogMessage:
    doc = incoming.parse_any(body if isinstance(body, bytes) else body.encode())
    if not isinstance(doc, DialogMessage):
        raise BenchError("the clinic queue holds something other than a request")
    return doc


def _booking_id(doc: DialogMessage) -> str:
    """Our booking id travels as the requested slot's xCal uid."""
    if doc.event is None:
        raise BenchError("a reservation without its slot")
    return doc.event.uid


def pace(rate: float, items: list[T], send: Callable[[T], tuple[str, float]]) -> dict[str, float]:
    """Send items at a steady rate; key -> wall-clock time it was sent."""
    sent: dict[str, float] = {}
    started = time.perf_counter()
    for i, item in enumerate(items):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        key, stamp = send(item)
        sent[key] = stamp
    return sent
