"""Prometheus metrics: counters from every process (multiprocess files), gauges at scrape time.

Counters and histograms are written by whichever process does the work (prefork children run
the intake tasks, the main process runs the inbound consumer); with PROMETHEUS_MULTIPROC_DIR
set each process writes its own mmap file and the scrape sums them. Queue depths, in-flight,
dead letters and bookings by state are read at scrape time from the same data as
`timebok status`, cached for a few seconds. Callers count only after their transaction has
committed (see `worker.adapters.store.db.after_commit`), so a rolled-back attempt is never counted.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, wraps
from pathlib import Path
from typing import Any, ParamSpec

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from mappers.codes import AppRecStatus, Process

log = logging.getLogger("timebok.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STATUS_CACHE_SECONDS = 3.0
# Intake to clinic queue: milliseconds normally, minutes when the EPJ broker is down.
FAST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
# Anything a person at the clinic answers: seconds (AppRec) to days (a reply).
HOUR, DAY = 3600.0, 86400.0
SLOW_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, HOUR, 4 * HOUR, 12 * HOUR, DAY, 3 * DAY, 7 * DAY)
APPREC_STATUS = {AppRecStatus.OK: "ok", AppRecStatus.REJECTED: "rejected"}
APPREC_STATUS |= {AppRecStatus.OK_WITH_ERROR: "ok_with_error"}
_TYPES = frozenset(p.value for p in Process)

P = ParamSpec("P")


@dataclass(frozen=True)
class _Metrics:
    registry: CollectorRegistry
    messages: Counter
    apprecs: Counter
    state_changes: Counter
    dead_letters: Counter
    duplicates: Counter
    request_to_epj: Histogram
    request_to_notification: Histogram
    reply_latency: Histogram
    lookups: Counter
    lookup_latency: Histogram
    api_requests: Counter
    api_latency: Histogram


# A synchronous lookup: milliseconds on a quiet broker, the call timeout (15 s) at most.
LOOKUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)
LOOKUP_OUTCOMES = frozenset({"answered", "empty", "timeout", "error", "cached", "busy"})
# The portal API: a database read in milliseconds, a lookup up to TIMEBOK_SYNC_TIMEOUT.
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)
API_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@cache
def _metrics() -> _Metrics:
    """Built on first use, i.e. after `timebok worker` chose the multiprocess directory."""
    # Our own registry, never prometheus_client's global one: rebuilding never collides.
    reg = CollectorRegistry()
    return _Metrics(
        registry=reg,
        messages=Counter(
            "timebok_messages",
            "EPJ messages in and out, by MsgHead type (or APPREC) and clinic HER-id",
            ["direction", "type", "clinic"],
            registry=reg,
        ),
        apprecs=Counter(
            "timebok_apprec",
            "Application receipts in (from clinics) and out (ours), by status and 8221 code",
            ["direction", "status", "code"],
            registry=reg,
        ),
        state_changes=Counter(
            "timebok_state_changes",
            "Booking state changes, by the state moved to",
            ["state"],
            registry=reg,
        ),
        dead_letters=Counter(
            "timebok_dead_letters",
            "Dead letters recorded, by kind (request, message, outgoing, task)",
            ["kind"],
            registry=reg,
        ),
        duplicates=Counter(
            "timebok_duplicate_messages",
            "Inbound messages already seen (same MsgId), answered without reprocessing",
            registry=reg,
        ),
        request_to_epj=Histogram(
            "timebok_request_to_epj_seconds",
            "Time from the booking request to its message on the clinic's queue",
            buckets=FAST_BUCKETS,
            registry=reg,
        ),
        request_to_notification=Histogram(
            "timebok_request_to_notification_seconds",
            "Time from the booking request to a notification in the patient's inbox",
            ["event"],
            buckets=SLOW_BUCKETS,
            registry=reg,
        ),
        reply_latency=Histogram(
            "timebok_reply_latency_seconds",
            "Time from our message leaving to the clinic's AppRec or business reply",
            ["clinic", "kind"],
            buckets=SLOW_BUCKETS,
            registry=reg,
        ),
        lookups=Counter(
            "timebok_lookups",
            "Synchronous lookups (HentLedigeTimer / HentPlanlagteTimer) by clinic, function "
            "and outcome (answered, empty, timeout, error, cached, busy); cache hit ratio = "
            "cached / all",
            ["clinic", "function", "outcome"],
            registry=reg,
        ),
        lookup_latency=Histogram(
            "timebok_lookup_seconds",
            "Time from a lookup sent to its answer parsed (not counting cached answers)",
            ["function"],
            buckets=LOOKUP_BUCKETS,
            registry=reg,
        ),
        api_requests=Counter(
            "timebok_api_requests",
            "Portal API requests by method, route template (never the path) and status code",
            ["method", "route", "status"],
            registry=reg,
        ),
        api_latency=Histogram(
            "timebok_api_request_seconds",
            "Portal API request duration, by method and route template",
            ["method", "route"],
            buckets=API_BUCKETS,
            registry=reg,
        ),
    )


def registry() -> CollectorRegistry:
    """This process's own counters and histograms (tests, single-process runs)."""
    return _metrics().registry


def _never_raises(fn: Callable[P, None]) -> Callable[P, None]:
    """Counting must never break the business path it observes."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.warning("metric %s not recorded", fn.__name__, exc_info=True)

    return wrapper


# -- labels: bounded, whatever a hostile sender puts in its headers ---------------------------


def clinic_label(her_id: str | None) -> str:
    """A HER-id as a label value ('unknown' when absent or not a HER-id)."""
    return her_id if her_id and her_id.isdigit() and len(her_id) <= 20 else "unknown"


def type_label(msg_type: str | None) -> str:
    """A MsgHead type (or APPREC) as a label value ('OTHER' for anything else)."""
    return msg_type if msg_type in _TYPES else "OTHER"


def apprec_labels(status: str | None, code: str | None) -> tuple[str, str]:
    """(status, code) label values of an AppRec: code list 8258 by name, 8221 code or none."""
    try:
        name = APPREC_STATUS[AppRecStatus(status or "")]
    except ValueError:
        name = "other"
    if not code:
        return name, "none"
    return name, code if len(code) == 3 and code[0].isalpha() and code[1:].isdigit() else "other"


# -- what the handlers call (after their transaction committed) -------------------------------


@_never_raises
def message_out(
    msg_type: str, her_id: str | None, status: str | None = None, code: str | None = None
) -> None:
    """One message published to a clinic's queue (an AppRec is also counted by outcome)."""
    m = _metrics()
    m.messages.labels("out", type_label(msg_type), clinic_label(her_id)).inc()
    if msg_type == Process.APPREC.value:
        m.apprecs.labels("out", *apprec_labels(status, code)).inc()


@_never_raises
def message_in(
    msg_type: str | None, her_id: str | None, status: str | None = None, code: str | None = None
) -> None:
    """One message taken off our queue and stored (an AppRec is also counted by outcome)."""
    m = _metrics()
    m.messages.labels("in", type_label(msg_type), clinic_label(her_id)).inc()
    if msg_type == Process.APPREC.value:
        m.apprecs.labels("in", *apprec_labels(status, code)).inc()


@_never_raises
def lookup(her_id: str, function: str, outcome: str, seconds: float | None = None) -> None:
    """One synchronous lookup and how it ended (`seconds` when it went to the clinic)."""
    m = _metrics()
    name = "planned" if function == "planned" else "free_slots"
    m.lookups.labels(
        clinic_label(her_id), name, outcome if outcome in LOOKUP_OUTCOMES else "error"
    ).inc()
    if seconds is not None:
        m.lookup_latency.labels(name).observe(seconds)


@_never_raises
def api_request(method: str, route: str, status: int, seconds: float) -> None:
    """One portal API request answered (`route`: the template, e.g. /v1/bookings/{booking_id})."""
    m = _metrics()
    method = method if method in API_METHODS else "OTHER"
    m.api_requests.labels(method, route, str(status)).inc()
    m.api_latency.labels(method, route).observe(max(seconds, 0.0))


@_never_raises
def duplicate() -> None:
    """One redelivered message recognised by its MsgId."""
    _metrics().duplicates.inc()


@_never_raises
def state_changed(state: str) -> None:
    """One booking moved to `state`."""
    _metrics().state_changes.labels(state).inc()


@_never_raises
def dead_letter(kind: str) -> None:
    """One dead letter recorded."""
    _metrics().dead_letters.labels(kind if kind.isalpha() and len(kind) <= 16 else "other").inc()


@_never_raises
def request_to_epj(seconds: float) -> None:
    """The booking's message reached the clinic's queue `seconds` after the request."""
    _metrics().request_to_epj.observe(max(seconds, 0.0))


@_never_raises
def request_to_notification(event: str, seconds: float) -> None:
    """The patient was notified (`event`) `seconds` after the request."""
    label = event if event.replace("_", "").isalpha() and len(event) <= 32 else "other"
    _metrics().request_to_notification.labels(label).observe(max(seconds, 0.0))


@_never_raises
def reply_latency(her_id: str | None, kind: str, seconds: float) -> None:
    """A clinic answered (`kind` apprec | reply) `seconds` after our message left."""
    _metrics().reply_latency.labels(clinic_label(her_id), kind).observe(max(seconds, 0.0))


def since(start: datetime | None, now: datetime | None = None) -> float | None:
    """Seconds from `start` to now (None when there is no start)."""
    if start is None:
        return None
    return ((now or datetime.now(UTC)) - start).total_seconds()


# -- gauges at scrape time ----------------------------------------------------------------------


def queue_role(name: str, own_her_id: str) -> str:
    """What a queue is for: intake, maintenance, inbound, error, clinic or clinic_error."""
    if name.endswith("_async"):
        return "inbound" if name == f"{own_her_id}_async" else "clinic"
    if name.endswith("_error"):
        return "error" if name == f"{own_her_id}_error" else "clinic_error"
    return "maintenance" if name.endswith("maintenance") else "intake"


def status_gauges(
    data: dict[str, Any] | None, own_her_id: str, now: datetime | None = None
) -> list[Metric]:
    """The `timebok status` data as gauge families (only `timebok_status_up` when it failed)."""
    up = GaugeMetricFamily("timebok_status_up", "1 when queues and store could be read")
    up.add_metric([], 0.0 if data is None else 1.0)
    if data is None:
        return [up]
    queues = GaugeMetricFamily(
        "timebok_queue_messages", "Messages waiting on a queue", labels=["queue", "role"]
    )
    for name, depth in sorted(data["queues"].items()):
        if depth is not None:  # unreachable: no sample rather than a false zero
            queues.add_metric([name, queue_role(name, own_her_id)], float(depth))
    states = GaugeMetricFamily("timebok_bookings", "Bookings by state", labels=["state"])
    for state, n in sorted(data["bookings_by_state"].items()):
        states.add_metric([state], float(n))
    waiting = GaugeMetricFamily(
        "timebok_oldest_waiting_seconds",
        "Age of the oldest booking still waiting for the clinic (REQUESTED, SENT, DELIVERED)",
        labels=["clinic"],
    )
    for clinic, w in sorted(data["oldest_waiting"].items()):
        if w.get("since"):
            age = since(datetime.fromisoformat(w["since"]), now) or 0.0
            waiting.add_metric([clinic_label(clinic)], max(age, 0.0))
    return [up, queues, states, waiting, *_scalars(data)]


def _scalars(data: dict[str, Any]) -> Iterator[Metric]:
    for name, key, doc in (
        ("timebok_in_flight_messages", "in_flight", "Celery messages delivered but not acked"),
        ("timebok_dead_letters_waiting", "dead_letters", "Dead letters not yet replayed"),
        ("timebok_outbox_backlog", "outbox_backlog", "Committed messages not yet published"),
    ):
        if data.get(key) is not None:
            yield GaugeMetricFamily(name, doc, value=float(data[key]))
    oldest = data.get("outbox_oldest")
    yield GaugeMetricFamily(
        "timebok_outbox_oldest_seconds",
        "Age of the oldest unpublished outbox message (0 when none)",
        value=max(since(datetime.fromisoformat(oldest)) or 0.0, 0.0) if oldest else 0.0,
    )
    yield GaugeMetricFamily(
        "timebok_attention_items",
        "Things `timebok status` says need attention",
        value=float(len(data.get("attention") or ())),
    )


class StatusCollector(Collector):
    """Gauges from `timebok status` data, read at most every few seconds."""

    def __init__(
        self,
        source: Callable[[], dict[str, Any]],
        own_her_id: str,
        ttl: float = STATUS_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source, self._own, self._ttl, self._clock = source, own_her_id, ttl, clock
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._data: dict[str, Any] | None = None

    def collect(self) -> Iterable[Metric]:
        """The gauges (one scrape at a time reads the source; the rest use the cache)."""
        with self._lock:
            if self._clock() - self._at >= self._ttl:
                self._data = self._read()
                self._at = self._clock()
            data = self._data
        return status_gauges(data, self._own)

    def _read(self) -> dict[str, Any] | None:
        try:
            return self._source()
        except Exception:
            log.warning("status for metrics could not be read", exc_info=True)
            return None


# -- the worker's endpoint ------------------------------------------------------------------------


def use_multiprocess_dir() -> Path:
    """Point every process of this worker at one metrics directory, emptied at start.

    PROMETHEUS_MULTIPROC_DIR when given (give each worker node its own), else a fresh
    temporary directory removed when the worker exits. Must run before any metric is
    created and before the pool forks.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # the last run's counts would add up with this one's
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="timebok-metrics-"))
        os.environ[MULTIPROC_ENV] = str(path)
        atexit.register(_remove_dir, path, os.getpid())
    # prometheus_client chooses mmap-backed values when first imported: choose again now.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    _metrics.cache_clear()
    return path


def _remove_dir(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # never from a forked child that happens to run atexit
        shutil.rmtree(path, ignore_errors=True)


def exposition_registry(status: Collector | None = None) -> CollectorRegistry:
    """What the endpoint serves: all processes' counters (or this one's) plus the gauges."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = _metrics().registry
    if status is not None:
        registry.register(status)
    return registry


def serve(port: int, status: Collector | None = None, addr: str = "0.0.0.0") -> None:  # noqa: S104
    """Serve /metrics from this (the worker's main) process on a daemon thread."""
    start_http_server(port, addr=addr, registry=exposition_registry(status))
    log.info("metrics endpoint listening", extra={"port": port})
