"""The synchronous lookups: free slots (HentLedigeTimer) and planned appointments
(HentPlanlagteTimer), asked of a clinic's EPJ and answered within TIMEBOK_SYNC_TIMEOUT.

Used by `timebok slots` / `timebok planned` and the portal API. No AppRec is sent or
expected on either side; an answer that cannot be read is an error for its caller only and
a dead letter. Free-slot answers are cached in Redis (shared by every process) and each
clinic has a bounded number of lookups in flight.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import redis

from mappers import lookup
from mappers.codes import Process, ReplyCode
from mappers.errors import MapperError
from mappers.model import Lookup, LookupAnswer, Party, Person, Practitioner, Slot, SlotQuery
from worker import metrics
from worker.adapters.registry import Clinic
from worker.adapters.transports.base import BusRefusal, Delivery, Envelope, transport_headers
from worker.errors import EpjUnavailable, PermanentError, TransientError
from worker.request import AppointmentKind, Service
from worker.settings import sync_queue, sync_reply_queue

if TYPE_CHECKING:
    from worker.adapters.registry import AddressRegistry
    from worker.adapters.store.db import Store
    from worker.adapters.transports.base import Transport
    from worker.settings import Settings


class Deps(Protocol):
    """What a lookup uses (worker.bootstrap.Deps, or LightDeps for the CLI)."""

    @property
    def settings(self) -> Settings:
        """The settings."""
        ...

    @property
    def epj(self) -> Transport:
        """The EPJ transport."""
        ...

    @property
    def registry(self) -> AddressRegistry:
        """The address registry."""
        ...

    @property
    def clock(self) -> Callable[[], datetime]:
        """Now, timezone-aware."""
        ...

    @property
    def own_party(self) -> Party:
        """Our own party, the sender."""
        ...

    @property
    def store(self) -> Store:
        """The store (dead letters only)."""
        ...


log = logging.getLogger("timebok.lookups")

DEFAULT_DAYS = 14  # `timebok slots` without --to: today and the 13 days after it
MAX_DAYS = 92  # a longer period is refused: no EPJ answers a quarter's calendar at once
_KINDS = {
    AppointmentKind.IN_PERSON: "Ordinær",
    AppointmentKind.URGENT: "Hastetime",
    AppointmentKind.VIDEO: "Video",
    AppointmentKind.PHONE: "Telefon",
}
KIND_TO_TYPE = {kind: lookup.type_of(code) for kind, code in _KINDS.items()}
TYPE_TO_KIND = {kind_type: kind for kind, kind_type in KIND_TO_TYPE.items()}
CACHE_PREFIX = "timebok:lookup"
OSLO = ZoneInfo("Europe/Oslo")  # "today" is the patient's day


class BadLookup(PermanentError):
    """Bad input, or a clinic that is unknown or does not take timereservasjon (nothing sent)."""


class NoAnswer(TransientError):
    """The clinic did not answer within TIMEBOK_SYNC_TIMEOUT seconds."""


class Busy(TransientError):
    """Too many lookups to this clinic are in flight: try again shortly."""


class LookupFailed(PermanentError):
    """The clinic's answer could not be read or verified, or it refused to answer."""


@dataclass(frozen=True)
class SlotsQuery:
    """What `timebok slots` asks: a clinic, a period and optional filters."""

    clinic: str
    start: date | None = None
    end: date | None = None
    unit: str | None = None
    appointment_type: str | None = None  # the contract's word: in_person, video, ...
    service: str | None = None  # consultation, lab_test, vaccination, other
    practitioner: str | None = None  # a practitioner's HER-id
    patient: str | None = None  # FNR


# ---------------------------------------------------------------------------- the two lookups


def free_slots(deps: Deps, query: SlotsQuery) -> dict[str, Any]:
    """The clinic's free slots: `{"clinic", "from", "to", "slots", "cached"}`."""
    clinic = _clinic(deps, query.clinic)
    first, last = _period(deps, query)
    asked = _free_query(deps, query, clinic, first, last)
    head = {"clinic": int(clinic.her_id), "from": first.isoformat(), "to": last.isoformat()}
    cache = _Cache(deps)
    key = cache.key(clinic.her_id, query, first, last)
    hit = cache.get(key)
    if hit is not None:
        metrics.lookup(clinic.her_id, "free_slots", "cached")
        return {**head, "slots": hit, "cached": True}
    answer = _ask(deps, clinic, asked, "free_slots", cache)
    slots = [slot_dict(s) for s in answer.slots]
    cache.put(key, slots)
    return {**head, "slots": slots, "cached": False}


def planned(deps: Deps, clinic_her_id: str, patient: str) -> dict[str, Any]:
    """The patient's planned appointments at the clinic: `{"clinic", "appointments"}`."""
    clinic = _clinic(deps, clinic_her_id)
    person = _person(patient)
    if person is None:
        raise BadLookup("--patient is required: a fødselsnummer")
    asked = lookup.planned_request(
        msg_id=str(uuid.uuid4()),
        gen_date=deps.clock(),
        sender=deps.own_party,
        receiver=Party(clinic.her_id, clinic.name),
        patient=person,
    )
    answer = _ask(deps, clinic, asked, "planned", _Cache(deps))
    found = [appointment_dict(s, clinic) for s in answer.slots]
    return {"clinic": int(clinic.her_id), "appointments": found}


def invalidate(deps: Deps, clinic_her_id: str) -> None:
    """Forget the clinic's cached free slots (a slot was reserved or freed)."""
    _Cache(deps).invalidate(clinic_her_id)


# ---------------------------------------------------------------------------- checking input


def _clinic(deps: Deps, her_id: str) -> Clinic:
    """The registry's clinic, which must take timereservasjon (else nothing is sent)."""
    her_id = str(her_id).strip()
    if not her_id.isdigit():
        raise BadLookup(f"clinic HER-id must be digits, not {her_id!r}")
    clinic = deps.registry.clinic(her_id)
    if clinic is None:
        raise BadLookup(f"clinic {her_id} is not in the address registry; nothing sent")
    if not clinic.supports(Process.RESERVATION):
        raise BadLookup(
            f"clinic {her_id} ({clinic.name}) does not support timereservasjon; nothing sent"
        )
    return clinic


def _period(deps: Deps, query: SlotsQuery) -> tuple[date, date]:
    """From today (Oslo) and 14 days unless asked otherwise; never a reversed period."""
    today = deps.clock().astimezone(OSLO).date()
    first = query.start or today
    try:
        last = query.end or first + timedelta(days=DEFAULT_DAYS - 1)
    except OverflowError:  # --from in the last days of year 9999
        raise BadLookup(f"--from {first} leaves no {DEFAULT_DAYS} days to ask about") from None
    if last < first:
        raise BadLookup(f"--to {last} is before --from {first}")
    if (last - first).days >= MAX_DAYS:
        raise BadLookup(f"a period of at most {MAX_DAYS} days can be asked about")
    return first, last


def _free_query(deps: Deps, query: SlotsQuery, clinic: Clinic, first: date, last: date) -> Lookup:
    """The HentLedigeTimer for a checked query (a unit as the receiver's level-2 party)."""
    unit = None
    if query.unit:
        found = next((u for u in clinic.units if u.her_id == str(query.unit)), None)
        if found is None:
            raise BadLookup(f"unit {query.unit} is not a unit of clinic {clinic.her_id}")
        unit = Party(found.her_id, found.name)
    kind = None
    if query.appointment_type:
        try:
            kind = KIND_TO_TYPE[AppointmentKind(query.appointment_type)]
        except ValueError:
            raise BadLookup(f"unknown appointment type {query.appointment_type!r}") from None
    if query.service:
        try:
            Service(query.service)
        except ValueError:
            raise BadLookup(f"unknown service {query.service!r}") from None
    who = Practitioner("", her_id=str(query.practitioner)) if query.practitioner else None
    return lookup.free_slots_request(
        msg_id=str(uuid.uuid4()),
        gen_date=deps.clock(),
        sender=deps.own_party,
        receiver=Party(clinic.her_id, clinic.name, unit),
        query=SlotQuery(first, last, kind, query.service, who),
        patient=_person(query.patient),
    )


def _person(fnr: str | None) -> Person | None:
    """The patient of a lookup (only the number is known here); BadLookup when invalid."""
    if not fnr:
        return None
    from worker import fnr as fnrs

    try:
        fnrs.check(fnr)
    except ValueError as exc:
        raise BadLookup(f"--patient: {exc}") from None
    return Person(fnr, "", "")


# ---------------------------------------------------------------------------- asking


def _ask(deps: Deps, clinic: Clinic, asked: Lookup, function: str, cache: _Cache) -> LookupAnswer:
    """Send the lookup to the clinic's `_sync` queue and read its answer."""
    timeout = deps.settings.sync_timeout
    with cache.slot(clinic.her_id, timeout, function):
        began = time.monotonic()
        delivery = _request(deps, clinic, asked, timeout)
        took = time.monotonic() - began
        if delivery is None:
            metrics.lookup(clinic.her_id, function, "timeout", took)
            raise NoAnswer(
                f"clinic {clinic.her_id} did not answer within {timeout:g} s (TIMEBOK_SYNC_TIMEOUT)"
            )
        try:
            answer = _read(deps, clinic, asked, delivery)
        except LookupFailed:
            metrics.lookup(clinic.her_id, function, "error", took)
            raise
    metrics.lookup(clinic.her_id, function, "answered" if answer.slots else "empty", took)
    return answer


def _request(deps: Deps, clinic: Clinic, asked: Lookup, timeout: float) -> Delivery | None:
    """Publish and wait; an unreachable broker is a missing answer to the caller."""
    env = asked.envelope
    item = Envelope(
        sync_queue(clinic.her_id),
        lookup.build_lookup(asked),
        transport_headers(
            from_her_id=env.sender.her_id,
            to_her_id=env.receiver.her_id,  # the queue owner; a unit is in MsgHead
            msg_id=env.msg_id,
            msg_type=env.process.value,
        ),
        correlation_id=env.msg_id,
    )
    reply = sync_reply_queue(deps.settings.own_her_id)
    try:
        return deps.epj.request(item, reply, timeout)
    except EpjUnavailable as exc:
        log.warning("lookup to %s not sent: %s", clinic.her_id, exc)
        raise NoAnswer(f"clinic {clinic.her_id} cannot be reached now: {exc}") from exc


def _read(deps: Deps, clinic: Clinic, asked: Lookup, delivery: Delivery) -> LookupAnswer:
    """Open, parse and check the answer; anything wrong is dead-lettered and raised."""
    try:
        xml = deps.epj.open(delivery)
        answer = lookup.parse_answer(xml, max_bytes=deps.settings.max_message_bytes)
        _check(clinic, asked, answer)
    except (BusRefusal, MapperError, LookupFailed) as exc:
        _dead_letter(deps, delivery, asked, exc)
        if isinstance(exc, LookupFailed):
            raise
        raise LookupFailed(f"clinic {clinic.her_id} sent an answer that cannot be read") from exc
    if answer.code is not ReplyCode.LISTING:
        raise LookupFailed(
            f"clinic {clinic.her_id} did not list its calendar: {answer.text or answer.code}"
        )
    return answer


def _check(clinic: Clinic, asked: Lookup, answer: LookupAnswer) -> None:
    """The answer must come from the clinic (or a unit of it), answer this very question."""
    env = answer.envelope
    owners = {clinic.her_id, *(u.her_id for u in clinic.units)}
    if env.sender.her_id not in owners:
        raise LookupFailed(f"answer from {env.sender.her_id}, not from clinic {clinic.her_id}")
    asked_id = asked.envelope.msg_id
    if env.conversation is None or env.conversation.ref_to_parent != asked_id:
        raise LookupFailed("answer does not refer to the lookup it came back for")
    if answer.asked is not None and answer.asked is not asked.code:
        raise LookupFailed(f"answer to {answer.asked}, asked {asked.code}")
    for slot in answer.slots:
        if slot.unit_her_id not in owners:
            raise LookupFailed(f"slot {slot.id} belongs to {slot.unit_her_id}, not this clinic")


def _dead_letter(deps: Deps, delivery: Delivery, asked: Lookup, exc: Exception) -> None:
    """Keep the unreadable answer for inspection (never replayed: its caller is gone)."""
    reason = f"{type(exc).__name__}: {exc}"[:500]
    log.warning("lookup answer refused: %s", reason)
    from worker.adapters.store.db import add_dead_letter

    with suppress(Exception), deps.store.transaction() as s:
        add_dead_letter(
            s,
            kind="lookup",
            reason=reason,
            source_queue=delivery.queue,
            payload=delivery.body,
            error_code=getattr(exc, "code", None) or getattr(exc, "condition", None),
            msg_id=asked.envelope.msg_id,
            headers=dict(delivery.headers),
        )
    metrics.dead_letter("lookup")


# ---------------------------------------------------------------------------- JSON shapes


def slot_dict(slot: Slot) -> dict[str, Any]:
    """One slot of `timebok slots --json` (what a `reserve` request carries unchanged)."""
    kind = TYPE_TO_KIND.get(slot.appointment_type) if slot.appointment_type else None
    return {
        "id": slot.id,
        "start": slot.start.isoformat(),
        "end": slot.end.isoformat(),
        "appointment_type": kind.value if kind else None,
        "service": slot.service,
        "practitioner": _practitioner(slot.practitioner),
        "unit_her_id": int(slot.unit_her_id) if slot.unit_her_id.isdigit() else slot.unit_her_id,
        "location": slot.location,
    }


def appointment_dict(slot: Slot, clinic: Clinic) -> dict[str, Any]:
    """One planned appointment with the fields of `timebok appointments --json`."""
    kind = TYPE_TO_KIND.get(slot.appointment_type) if slot.appointment_type else None
    return {
        "uid": slot.id,
        "status": "CONFIRMED",
        "start": slot.start.isoformat(),
        "end": slot.end.isoformat(),
        "duration_minutes": int((slot.end - slot.start).total_seconds() // 60),
        "practitioner": slot.practitioner.name if slot.practitioner else None,
        "location": slot.location,
        "appointment_type": kind.value if kind else None,
        "clinic_her_id": clinic.her_id,
        "clinic_name": clinic.name,
        "video_url": slot.url,
        "booking_id": None,
    }


def _practitioner(who: Practitioner | None) -> dict[str, Any] | None:
    """The practitioner as a `reserve` request's `practitioner` object."""
    if who is None:
        return None
    return {"name": who.name, "her_id": who.her_id, "hpr": who.hpr}


# ---------------------------------------------------------------------------- cache and limit


class _Cache:
    """Free-slot answers and in-flight counts in the shared Redis (per process without one)."""

    _local_flight: dict[str, int] = {}  # noqa: RUF012 - the per-process fallback, shared

    def __init__(self, deps: Deps) -> None:
        self.ttl = deps.settings.lookup_cache_ttl
        self.limit = deps.settings.lookup_max_in_flight
        url = deps.settings.lookup_cache_url
        self.redis = _client(url) if url else None

    def key(self, clinic: str, query: SlotsQuery, first: date, last: date) -> str | None:
        """The cache key of a free-slots question (None: not cached)."""
        if self.redis is None or self.ttl <= 0:
            return None
        gen = self._safe(lambda r: r.get(f"{CACHE_PREFIX}:gen:{clinic}")) or b"0"
        parts = [query.unit, query.appointment_type, query.service, query.practitioner]
        tail = ":".join(p or "-" for p in parts)
        return f"{CACHE_PREFIX}:slots:{clinic}:{gen.decode()}:{first}:{last}:{tail}"

    def get(self, key: str | None) -> list[dict[str, Any]] | None:
        """The cached slots, or None."""
        if key is None:
            return None
        raw = self._safe(lambda r: r.get(key))
        return None if raw is None else list(json.loads(raw))

    def put(self, key: str | None, slots: list[dict[str, Any]]) -> None:
        """Cache an answer for TIMEBOK_LOOKUP_CACHE_TTL seconds."""
        if key is not None:
            data = json.dumps(slots)
            self._safe(lambda r: r.set(key, data, px=int(self.ttl * 1000)))

    def invalidate(self, clinic: str) -> None:
        """A new generation for the clinic: every cached answer of it is unreachable."""
        self._safe(lambda r: r.incr(f"{CACHE_PREFIX}:gen:{clinic}"))

    @contextmanager
    def slot(self, clinic: str, timeout: float, function: str) -> Iterator[None]:
        """One of the clinic's in-flight places for the call, or Busy at once."""
        key = f"{CACHE_PREFIX}:inflight:{clinic}"
        taken = self._take(key, timeout)
        if taken > self.limit:
            self._give(key)
            metrics.lookup(clinic, function, "busy")
            raise Busy(f"clinic {clinic} has {self.limit} lookups in flight; try again shortly")
        try:
            yield
        finally:
            self._give(key)

    def _take(self, key: str, timeout: float) -> int:
        if self.redis is not None:
            pipe = self.redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, int(timeout) + 30)  # a killed caller's place comes back
            with suppress(redis.RedisError):
                return int(pipe.execute()[0])
        self._local_flight[key] = self._local_flight.get(key, 0) + 1
        return self._local_flight[key]

    def _give(self, key: str) -> None:
        if self.redis is not None:
            with suppress(redis.RedisError):
                self.redis.decr(key)
                return
        self._local_flight[key] = max(0, self._local_flight.get(key, 0) - 1)

    def _safe(self, fn: Any) -> Any:
        """A cache that is down is a cache miss, never a failed lookup."""
        if self.redis is None:
            return None
        try:
            return fn(self.redis)
        except redis.RedisError as exc:
            log.warning("lookup cache unavailable: %s", exc)
            return None


_clients: dict[str, redis.Redis[bytes]] = {}


def _client(url: str) -> redis.Redis[bytes]:
    """One Redis client (a connection pool) per URL and process."""
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, socket_timeout=2)
    return client


__all__ = [
    "BadLookup",
    "Busy",
    "LookupFailed",
    "NoAnswer",
    "SlotsQuery",
    "free_slots",
    "invalidate",
    "planned",
]
