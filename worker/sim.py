"""EPJ simulator: plays clinics' EPJ systems on the kombu queues (no Celery, no database)."""

from __future__ import annotations

import argparse
import heapq
import random
import re
import signal
import sys
import threading
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from kombu.connection import Connection
from kombu.entity import Queue
from kombu.exceptions import OperationalError

from mappers import apprec as apprec_mapper
from mappers import incoming
from mappers import message as dialog_message
from mappers.codes import (
    APPREC_ERROR_NAMES,
    REPLY_NAMES,
    AppointmentType,
    AppRecStatus,
    Function,
    Process,
    ReplyCode,
    RequestCode,
)
from mappers.errors import MapperError
from mappers.model import (
    AppRec,
    DialogMessage,
    Envelope,
    Event,
    OriginalMsgRef,
    Party,
    Person,
    Practitioner,
    ReceiptError,
    Request,
)
from worker import fnr as fnrs
from worker.adapters import epj
from worker.adapters.registry import Clinic
from worker.errors import EpjUnavailable
from worker.request import appointment_type_code
from worker.settings import async_queue

Policy = Literal["confirm", "reject", "random"]
POLICIES: tuple[Policy, ...] = ("confirm", "reject", "random")
POLICY_KEY = "sim_policy"  # extra key on a registry [[clinic]] table
CONFIRM_PROBABILITY = 0.7  # the `random` policy's chance of confirming
OSLO = ZoneInfo("Europe/Oslo")
PROPOSAL_HOUR = 9  # proposed appointments start at 09:00 Oslo time
PROPOSAL_LENGTH = timedelta(minutes=20)
RETRY_AFTER = 2.0  # seconds before a reply the broker refused is tried again
MAX_WAIT = 0.5  # seconds one drain_events may block, so stop requests are seen quickly
CONFIRMED, CANCELLED = "CONFIRMED", "CANCELLED"

REJECT_TEXTS: Mapping[ReplyCode, str] = {
    ReplyCode.NOT_AVAILABLE: "Timen er dessverre ikke lenger ledig. Velg en annen time.",
    ReplyCode.REJECTED: "Vi kan ikke tilby time ut fra ønsket ditt. Ta kontakt med legekontoret.",
    ReplyCode.CHANGE_REFUSED: "Timen kan ikke endres. Ta kontakt med legekontoret.",
    ReplyCode.NOT_OFFERED: "Legekontoret tilbyr ikke denne tjenesten digitalt.",
}
_APPREC_ROOT = re.compile(rb"<([A-Za-z_][\w.-]*:)?AppRec[\s>/]")
_ELEVEN_DIGITS = re.compile(r"(?<!\d)(\d{6})\d{5}(?!\d)")


def _new_uid() -> str:
    return str(uuid.uuid4())


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- policy (pure)


@dataclass(frozen=True)
class Decision:
    """The business reply a simulated EPJ gives to one request."""

    code: ReplyCode
    text: str | None = None
    event: Event | None = None
    practitioner: Practitioner | None = None


def confirms(policy: Policy, rng: random.Random) -> bool:
    """Whether a policy confirms this time (`random` draws once from `rng`)."""
    if policy == "random":
        return rng.random() < CONFIRM_PROBABILITY
    return policy == "confirm"


def decide(
    msg: DialogMessage,
    clinic: Party,
    *,
    policy: Policy,
    rng: random.Random,
    now: datetime,
    offered: bool = True,
    new_uid: Callable[[], str] = _new_uid,
) -> Decision | None:
    """The reply to a business message; None when it needs none (a reply, an Avtale)."""
    request = msg.request
    if request is None or request.code is RequestCode.APPOINTMENT:
        return None
    if request.code in _CANCELS:
        return _cancel(msg)  # always accepted, and draws nothing from `rng`
    decider = _DECIDERS.get(request.code)
    if not offered or decider is None:
        return Decision(ReplyCode.NOT_OFFERED, REJECT_TEXTS[ReplyCode.NOT_OFFERED])
    return decider(msg, clinic, confirms(policy, rng), now, new_uid)


def _reserve(
    msg: DialogMessage, clinic: Party, confirm: bool, now: datetime, new_uid: Callable[[], str]
) -> Decision:
    """ReserverAvtale: 05 with the booked slot as a new appointment, or 06."""
    slot, request = msg.event, msg.request
    if not confirm or slot is None:
        return Decision(ReplyCode.NOT_AVAILABLE, REJECT_TEXTS[ReplyCode.NOT_AVAILABLE])
    event = replace(
        slot,
        uid=new_uid(),
        related_to=slot.related_to or slot.uid,
        contact=clinic.her_id,
        location=slot.location or clinic.name,
        status=CONFIRMED,
    )
    practitioner = request.practitioner if request is not None else None
    return Decision(ReplyCode.CONFIRMED, None, event, practitioner)


def _wish(
    msg: DialogMessage, clinic: Party, confirm: bool, now: datetime, new_uid: Callable[[], str]
) -> Decision:
    """OnskeReserver: 05 proposing the next weekday 09:00, or 26."""
    if not confirm:
        return Decision(ReplyCode.REJECTED, REJECT_TEXTS[ReplyCode.REJECTED])
    start = next_weekday_start(now)
    event = Event(
        uid=new_uid(),
        start=start,
        end=start + PROPOSAL_LENGTH,
        contact=clinic.her_id,
        summary=msg.request.subject if msg.request is not None else None,
        location=clinic.name,
        appointment_type=msg.event.appointment_type if msg.event else AppointmentType.ORDINARY,
        status=CONFIRMED,
    )
    return Decision(ReplyCode.CONFIRMED, None, event, _practitioner(msg))


def _change(
    msg: DialogMessage, clinic: Party, confirm: bool, now: datetime, new_uid: Callable[[], str]
) -> Decision:
    """OnskeEndring: 07 moving the appointment (same uid when given) to a later weekday, or 34."""
    if not confirm:
        return Decision(ReplyCode.CHANGE_REFUSED, REJECT_TEXTS[ReplyCode.CHANGE_REFUSED])
    old = msg.event
    start = next_weekday_start(max(now, old.start) if old is not None else now)
    base = old or Event(new_uid(), start, start, clinic.her_id, location=clinic.name)
    event = replace(
        base,
        start=start,
        end=start + PROPOSAL_LENGTH,
        contact=clinic.her_id,
        summary=base.summary or (msg.request.subject if msg.request else None),
        status=CONFIRMED,
    )
    return Decision(ReplyCode.CHANGE_CONFIRMED, None, event, _practitioner(msg))


def _cancel(msg: DialogMessage) -> Decision:
    """AvbestillAvtale / OnskeAvbestill: always 08, the vevent CANCELLED when one was sent."""
    event = replace(msg.event, status=CANCELLED) if msg.event is not None else None
    return Decision(ReplyCode.CANCEL_CONFIRMED, None, event, _practitioner(msg))


def _practitioner(msg: DialogMessage) -> Practitioner | None:
    return msg.request.practitioner if msg.request is not None else None


_Decider = Callable[[DialogMessage, Party, bool, datetime, Callable[[], str]], Decision]
_DECIDERS: Mapping[RequestCode, _Decider] = {
    RequestCode.RESERVE: _reserve,
    RequestCode.WISH: _wish,
    RequestCode.WISH_CHANGE: _change,
}
_CANCELS = frozenset({RequestCode.CANCEL, RequestCode.WISH_CANCEL})


def next_weekday_start(after: datetime) -> datetime:
    """09:00 Europe/Oslo on the first Monday-Friday after the Oslo date of `after`."""
    day = after.astimezone(OSLO).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, PROPOSAL_HOUR, tzinfo=OSLO)


def reply_message(
    request: DialogMessage, clinic: Party, decision: Decision, *, msg_id: str, now: datetime
) -> DialogMessage:
    """The business reply (MsgHead + Notat + xCal) to `request`, sent by `clinic`."""
    reply = dialog_message.reply_to(
        request,
        decision.code,
        msg_id=msg_id,
        gen_date=now,
        text=decision.text,
        event=decision.event,
        practitioner=decision.practitioner,
    )
    return replace(reply, envelope=replace(reply.envelope, sender=clinic))


def receipt_ok(request: DialogMessage, clinic: Party, now: datetime) -> AppRec:
    """AppRec 1.1 OK for a business message, from `clinic`."""
    rec = apprec_mapper.receipt_for(request.envelope, msg_id=_new_uid(), gen_date=now)
    return replace(rec, sender=clinic)


def receipt_refused(
    exc: MapperError, clinic: Party, to: Party, headers: Mapping[str, str], now: datetime
) -> AppRec:
    """AppRec 1.1 Avvist with the mapper error's 8221 code, from `clinic` to `to`."""
    rec = apprec_mapper.rejection(exc, msg_id=_new_uid(), gen_date=now)
    if rec is None:  # no readable MsgHead: point at what the transport headers say
        original = OriginalMsgRef(
            headers.get("type") or "Ukjent", now, headers.get("msgId") or _new_uid()
        )
        error = ReceiptError(exc.code, APPREC_ERROR_NAMES.get(exc.code, ""), str(exc))
        rec = AppRec(_new_uid(), now, clinic, to, AppRecStatus.REJECTED, original, (error,))
    return replace(rec, sender=clinic, receiver=to)


def reply_function(request: DialogMessage) -> Function:
    """SvarAvtaleReservasjon / SvarOnske / SvarAvbestilling for a request."""
    code = request.request.code if request.request is not None else None
    if code in _CANCELS:
        return Function.CANCELLATION_REPLY
    if request.envelope.process is Process.WISH:
        return Function.WISH_REPLY
    return Function.RESERVATION_REPLY


def is_apprec(data: bytes, headers: Mapping[str, str]) -> bool:
    """Whether a document is (or claims to be) an AppRec, which is never answered."""
    return headers.get("type") == Process.APPREC.value or bool(_APPREC_ROOT.search(data[:4096]))


def read_policies(path: str | Path) -> dict[str, Policy]:
    """The per-clinic `sim_policy` overrides of a registry TOML file ({} when unreadable)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}
    entries = data.get("clinic")
    found: dict[str, Policy] = {}
    for entry in entries if isinstance(entries, list) else []:
        value = entry.get(POLICY_KEY) if isinstance(entry, dict) else None
        if value is not None:
            found[str(entry.get("her_id"))] = check_policy(value)
    return found


def check_policy(value: object) -> Policy:
    """A policy name, or ValueError."""
    if value not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)} (got {value!r})")
    return value


# ---------------------------------------------------------------------------- the simulator


class SimConfig(Protocol):
    """What the simulator reads from the settings."""

    @property
    def epj_url(self) -> str:
        """The EPJ transport URL."""

    @property
    def own_her_id(self) -> str:
        """The portal's HER-id (where clinic-originated messages go)."""

    @property
    def own_name(self) -> str:
        """The portal's name."""

    @property
    def registry_file(self) -> Path:
        """The registry TOML (read for `sim_policy` overrides)."""


class SimRegistry(Protocol):
    """What the simulator needs from the address registry."""

    @property
    def clinics(self) -> tuple[Clinic, ...]:
        """Every clinic."""

    def clinic(self, her_id: str) -> Clinic | None:
        """The clinic with (or owning the unit with) this HER-id."""


@dataclass(frozen=True)
class _Outgoing:
    """A document waiting to be published, with its log line."""

    item: epj.Envelope
    line: str
    copies: int = 1


class Simulator:
    """Plays the EPJ systems of one or more clinics on their `<HER-id>_async` queues."""

    def __init__(
        self,
        config: SimConfig,
        registry: SimRegistry,
        clinics: Sequence[str] | None = None,
        policy: Policy = "confirm",
        seed: int | None = None,
        delay: float = 0.0,
        *,
        policies: Mapping[str, Policy] | None = None,
        drop_apprec_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        transport: epj.EpjTransport | None = None,
        echo: Callable[[str], None] = _stderr,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.config, self.registry = config, registry
        self.clinics = _clinics(registry, clinics)
        self.policy = check_policy(policy)
        self.policies = dict(read_policies(config.registry_file) if policies is None else policies)
        self.delay = max(0.0, delay)
        self.drop_apprec_rate, self.duplicate_rate = drop_apprec_rate, duplicate_rate
        self.rng = random.Random(seed)  # noqa: S311 - reproducible simulation, not security
        self.chaos = random.Random(None if seed is None else seed + 1)  # noqa: S311
        self.transport = transport or epj.KombuTransport(config.epj_url)
        self.echo, self.clock = echo, clock  # `echo` receives each line, FNRs already masked
        self.stats: Counter[str] = Counter()
        self._due: list[tuple[float, int, _Outgoing]] = []
        self._seq = 0

    def policy_for(self, her_id: str) -> Policy:
        """The clinic's `sim_policy` override, else the simulator's policy."""
        return self.policies.get(her_id, self.policy)

    # -- consuming ------------------------------------------------------------------------

    def run(
        self, stop_event: threading.Event | None = None, max_seconds: float | None = None
    ) -> int:
        """Consume every simulated clinic's queue until stopped; returns messages handled.

        A broker unreachable at the start raises EpjUnavailable; one lost later (a restart) is
        reconnected to, keeping the scheduled replies, as an EPJ system would.
        """
        stop = stop_event or threading.Event()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        queues = ", ".join(async_queue(c.her_id) for c in self.clinics)
        self._say(f"epj-sim: consuming {queues} on {_safe_url(self.config.epj_url)}")
        connected = threading.Event()
        try:
            while not stop.is_set() and not _past(deadline):
                try:
                    self._consume(stop, deadline, connected)
                except EpjUnavailable as exc:
                    if not connected.is_set():
                        raise
                    self._say(f"epj-sim: {exc}; reconnecting in {RETRY_AFTER:.0f} s")
                    stop.wait(RETRY_AFTER)
        finally:
            self._stopped()
        return self.stats["handled"]

    def _consume(
        self, stop: threading.Event, deadline: float | None, connected: threading.Event
    ) -> None:
        # kombu is unannotated, hence the ignores on its constructors.
        conn = Connection(self.config.epj_url)  # type: ignore[no-untyped-call]
        errors = (OperationalError, OSError, *conn.connection_errors)
        try:
            with conn, self._consumers(conn):
                connected.set()
                while not stop.is_set() and not _past(deadline):
                    self.flush_due()
                    with suppress(TimeoutError):
                        conn.drain_events(timeout=self._wait(deadline))  # type: ignore[no-untyped-call]
        except errors as exc:
            raise EpjUnavailable(f"EPJ broker: {exc}") from exc

    @contextmanager
    def _consumers(self, conn: Connection) -> Iterator[None]:
        with ExitStack() as stack:
            for clinic in self.clinics:
                queue = Queue(async_queue(clinic.her_id), durable=True)  # type: ignore[no-untyped-call]
                callback = partial(self._on_message, clinic.her_id)
                consumer = conn.Consumer([queue], on_message=callback)  # type: ignore[no-untyped-call]
                stack.enter_context(consumer)
            yield

    def _on_message(self, her_id: str, message: Any) -> None:
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        headers = {str(k): str(v) for k, v in (message.headers or {}).items()}
        try:
            self.handle(her_id, body, headers)
        except EpjUnavailable as exc:
            self._say(f"{her_id}: cannot publish ({exc}); message requeued")
            message.requeue()
            return
        except Exception as exc:  # a simulator bug must not stop the other clinics
            self.stats["errors"] += 1
            self._say(f"{her_id}: internal error {exc!r}; message dropped")
        message.ack()

    def _wait(self, deadline: float | None) -> float:
        """How long drain_events may block: until the next due reply, at most MAX_WAIT."""
        now = time.monotonic()
        limits = [MAX_WAIT]
        if self._due:
            limits.append(self._due[0][0] - now)
        if deadline is not None:
            limits.append(deadline - now)
        return max(0.01, min(limits))

    def _stopped(self) -> None:
        if self._due:
            self._say(f"epj-sim: stopped with {len(self._due)} scheduled replies not sent")
        summary = ", ".join(f"{k}={v}" for k, v in sorted(self.stats.items()))
        self._say(f"epj-sim: stopped ({summary or 'nothing handled'})")

    # -- handling -------------------------------------------------------------------------

    def handle(self, her_id: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Answer one raw document that arrived on a clinic's queue (AppRec, then the reply)."""
        self.stats["handled"] += 1
        clinic = self._clinic(her_id)
        try:
            doc = incoming.parse_any(body)
        except MapperError as exc:
            self._refuse(clinic, body, headers, exc)
            return
        if isinstance(doc, AppRec):
            self.stats["apprec_in"] += 1
            status = doc.status.name
            self._say(f"{her_id} <- AppRec {status} for {doc.original.msg_id}")
            return
        self._accept(clinic, doc)

    def _refuse(
        self, clinic: Party, body: bytes, headers: Mapping[str, str], exc: MapperError
    ) -> None:
        """A document the mappers refuse: AppRec Avvist, like a strict EPJ (never to an AppRec)."""
        self.stats["invalid"] += 1
        what = f"{clinic.her_id} <- invalid document ({exc.code}: {str(exc)[:120]})"
        if is_apprec(body, headers):
            self._say(f"{what}; an AppRec, not answered")
            return
        rec = receipt_refused(
            exc, clinic, self._refused_sender(headers, exc), headers, self.clock()
        )
        self._send_receipt(rec, what, conversation=headers.get("refToConversation"))

    def _refused_sender(self, headers: Mapping[str, str], exc: MapperError) -> Party:
        """Who sent a document we cannot read: the header, the MsgHead, else the portal."""
        her_id = headers.get("fromHerId") or (exc.sender.her_id if exc.sender else "")
        if exc.sender is not None and exc.sender.her_id == her_id:
            return exc.sender
        if not her_id or her_id == self.config.own_her_id:
            return self._portal()
        return Party(her_id, "Ukjent avsender")

    def _accept(self, clinic: Party, msg: DialogMessage) -> None:
        """AppRec OK at once, then the business reply after the delay."""
        env = msg.envelope
        self.stats["business_in"] += 1
        if env.receiver.unit is not None:
            clinic = replace(clinic, unit=env.receiver.unit)
        rec = receipt_ok(msg, clinic, self.clock())
        function = incoming.function_of(msg)
        what = f"{clinic.her_id} <- {function} {_short(env.msg_id)} {_who(env.patient)}"
        opener = env.conversation.ref_to_conversation if env.conversation else env.msg_id
        self._send_receipt(rec, what, conversation=opener)
        self._reply(clinic, msg)

    def _reply(self, clinic: Party, msg: DialogMessage) -> None:
        offered = self._offered(clinic.her_id, msg.envelope.process)
        decision = decide(
            msg,
            clinic,
            policy=self.policy_for(clinic.her_id),
            rng=self.rng,
            now=self.clock(),
            offered=offered,
        )
        if decision is None:
            return
        reply = reply_message(msg, clinic, decision, msg_id=_new_uid(), now=self.clock())
        try:
            item = _dialog_item(reply)
        except MapperError as exc:
            self.stats["errors"] += 1
            self._say(f"{clinic.her_id}: cannot build {reply_function(msg)}: {exc}")
            return
        copies = 2 if self._chance(self.duplicate_rate) else 1
        line = (
            f"{clinic.her_id} -> {reply.envelope.receiver.her_id} {reply_function(msg)} "
            f"{decision.code} {REPLY_NAMES[decision.code]} {_short(reply.envelope.msg_id)}"
            f"{' (x2)' if copies == 2 else ''}"
        )
        self._schedule(_Outgoing(item, line, copies), self.delay)

    def _offered(self, her_id: str, process: Process) -> bool:
        found = self.registry.clinic(her_id)
        return found is None or found.supports(process)

    def _send_receipt(self, rec: AppRec, what: str, *, conversation: str | None) -> None:
        """Publish (or, for chaos tests, drop) an AppRec and print the line."""
        state = "OK" if rec.status is AppRecStatus.OK else f"Avvist {rec.errors[0].code}"
        if self._chance(self.drop_apprec_rate):
            self.stats["apprec_dropped"] += 1
            self._say(f"{what} -> AppRec {state} DROPPED")
            return
        self.transport.publish(_receipt_item(rec, conversation))
        self.stats["apprec_out"] += 1
        self._say(f"{what} -> AppRec {state}")

    def _say(self, line: str) -> None:
        self.echo(mask_fnrs(line))

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self.chaos.random() < rate

    # -- schedule -------------------------------------------------------------------------

    def _schedule(self, out: _Outgoing, delay: float) -> None:
        self._seq += 1
        heapq.heappush(self._due, (time.monotonic() + delay, self._seq, out))

    def flush_due(self) -> int:
        """Publish every scheduled reply whose time has come; returns how many."""
        sent = 0
        while self._due and self._due[0][0] <= time.monotonic():
            out = heapq.heappop(self._due)[2]
            try:
                for _ in range(out.copies):
                    self.transport.publish(out.item)
            except EpjUnavailable as exc:
                self._say(f"cannot publish a reply ({exc}); retrying in {RETRY_AFTER:.0f} s")
                self._schedule(out, RETRY_AFTER)
                break
            self.stats["replies_out"] += 1
            self._say(out.line)
            sent += 1
        return sent

    @property
    def pending(self) -> int:
        """Scheduled business replies not yet published."""
        return len(self._due)

    # -- clinic-originated Avtale -------------------------------------------------------

    def publish_appointment(
        self,
        clinic_her_id: str,
        patient: Person,
        start: datetime,
        end: datetime,
        practitioner: Practitioner | str | None = None,
        appointment_type: AppointmentType | str | None = None,
        location: str | None = None,
        uid: str | None = None,
        summary: str | None = None,
    ) -> str:
        """Publish an Avtale (MOA, CONFIRMED): an appointment booked by phone; returns its uid."""
        clinic = self._clinic(clinic_her_id)
        event = Event(
            uid=uid or _new_uid(),
            start=start,
            end=end,
            contact=clinic.her_id,
            summary=summary,
            location=location or clinic.name,
            appointment_type=_appointment_type(appointment_type),
            status=CONFIRMED,
        )
        self._publish_avtale(clinic, patient, event, _as_practitioner(practitioner), "new")
        return event.uid

    def change_appointment(
        self,
        clinic_her_id: str,
        uid: str,
        patient: Person,
        start: datetime,
        end: datetime,
        location: str | None = None,
        summary: str | None = None,
    ) -> str:
        """Publish an Avtale moving an appointment (same uid, CONFIRMED); returns the MsgId."""
        clinic = self._clinic(clinic_her_id)
        event = Event(uid, start, end, clinic.her_id, summary=summary, status=CONFIRMED)
        event = replace(event, location=location or clinic.name)
        return self._publish_avtale(clinic, patient, event, None, "changed")

    def cancel_appointment(
        self, clinic_her_id: str, uid: str, patient: Person, start: datetime, end: datetime
    ) -> str:
        """Publish an Avtale with the vevent CANCELLED (the clinic cancels); returns the MsgId."""
        clinic = self._clinic(clinic_her_id)
        event = Event(uid, start, end, clinic.her_id, location=clinic.name, status=CANCELLED)
        return self._publish_avtale(clinic, patient, event, None, "cancelled")

    def _publish_avtale(
        self, clinic: Party, patient: Person, event: Event, who: Practitioner | None, what: str
    ) -> str:
        envelope = Envelope(
            process=Process.PUBLICATION,
            msg_id=_new_uid(),
            gen_date=self.clock(),
            sender=clinic,
            receiver=self._portal(),
            patient=patient,
        )
        request = Request(RequestCode.APPOINTMENT, "Timeavtale", _avtale_text(what), who)
        msg = DialogMessage(envelope=envelope, request=request, event=event)
        self.transport.publish(_dialog_item(msg))
        self.stats["avtale_out"] += 1
        self._say(
            f"{clinic.her_id} -> {envelope.receiver.her_id} Avtale {event.status} ({what}) "
            f"uid={event.uid} {_short(envelope.msg_id)} {_who(patient)}"
        )
        return envelope.msg_id

    # -- helpers --------------------------------------------------------------------------

    def _clinic(self, her_id: str) -> Party:
        """The clinic as a MsgHead party (HER-id and name from the registry)."""
        found = self.registry.clinic(her_id)
        if found is None:
            raise ValueError(f"HER-id {her_id} is not a clinic in the address registry")
        return Party(found.her_id, found.name)

    def _portal(self) -> Party:
        return Party(self.config.own_her_id, self.config.own_name)

    def close(self) -> None:
        """Release the publishing connection."""
        close = getattr(self.transport, "close", None)
        if callable(close):
            close()


# ---------------------------------------------------------------------------- module helpers


def _clinics(registry: SimRegistry, her_ids: Sequence[str] | None) -> tuple[Clinic, ...]:
    """The clinics to play: the named ones, else every connected clinic in the registry."""
    if not her_ids:
        return tuple(c for c in registry.clinics if c.connected)
    found: dict[str, Clinic] = {}
    for her_id in her_ids:
        clinic = registry.clinic(str(her_id))
        if clinic is None:
            raise ValueError(f"HER-id {her_id} is not a clinic in the address registry")
        found[clinic.her_id] = clinic
    return tuple(found.values())


def _dialog_item(msg: DialogMessage) -> epj.Envelope:
    """A business message with its transport headers, for the receiver's async queue."""
    env = msg.envelope
    conv = env.conversation
    headers = epj.transport_headers(
        from_her_id=env.sender.her_id,
        to_her_id=env.receiver.her_id,
        msg_id=env.msg_id,
        msg_type=env.process.value,
        ref_to_parent=conv.ref_to_parent if conv else None,
        ref_to_conversation=conv.ref_to_conversation if conv else None,
    )
    return epj.Envelope(async_queue(env.receiver.her_id), dialog_message.build(msg), headers)


def _receipt_item(rec: AppRec, conversation: str | None) -> epj.Envelope:
    """An AppRec with its transport headers (refToParent = the message it answers)."""
    headers = epj.transport_headers(
        from_her_id=rec.sender.her_id,
        to_her_id=rec.receiver.her_id,
        msg_id=rec.msg_id,
        msg_type=Process.APPREC.value,
        ref_to_parent=rec.original.msg_id,
        ref_to_conversation=conversation,
    )
    return epj.Envelope(async_queue(rec.receiver.her_id), apprec_mapper.build(rec), headers)


def _appointment_type(value: AppointmentType | str | None) -> AppointmentType | None:
    if value is None or isinstance(value, AppointmentType):
        return value
    return appointment_type_code(value)


def _as_practitioner(value: Practitioner | str | None) -> Practitioner | None:
    return Practitioner(value) if isinstance(value, str) else value


def _avtale_text(what: str) -> str:
    texts = {"new": "Ny timeavtale", "changed": "Endret timeavtale", "cancelled": "Avlyst time"}
    return texts.get(what, "Timeavtale")


def _who(patient: Person | None) -> str:
    return f"patient={fnrs.mask(patient.fnr)}" if patient is not None else "patient=-"


def mask_fnrs(text: str) -> str:
    """`text` with every 11-digit number cut to its first 6 digits + "*****" (log lines)."""
    return _ELEVEN_DIGITS.sub(r"\1*****", text)


def _short(msg_id: str) -> str:
    return f"msg={msg_id[:8]}"


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _safe_url(url: str) -> str:
    """The broker URL without a password."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


# ---------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options and subcommands of `timebok epj-sim`."""
    parser.add_argument(
        "--clinic",
        action="append",
        dest="clinics",
        metavar="HER",
        help="clinic HER-id to play (repeatable; default: every connected clinic)",
    )
    parser.add_argument("--policy", choices=POLICIES, default="confirm")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible runs")
    parser.add_argument(
        "--delay",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds before the business reply (default 2)",
    )
    parser.add_argument("--drop-apprec-rate", type=_rate, default=0.0, metavar="F")
    parser.add_argument("--duplicate-rate", type=_rate, default=0.0, metavar="F")
    parser.add_argument("--max-seconds", type=float, default=None, metavar="S")
    sub = parser.add_subparsers(
        dest="sim_command", metavar="{publish-appointment,cancel-appointment}"
    )
    publish = sub.add_parser("publish-appointment", help="the clinic publishes an appointment")
    _target_arguments(publish)
    publish.add_argument("--given-name", required=True)
    publish.add_argument("--family-name", required=True)
    publish.add_argument("--practitioner", default=None, metavar="NAME")
    publish.add_argument(
        "--type",
        dest="appointment_type",
        default=None,
        choices=("in_person", "video", "phone", "urgent"),
    )
    publish.add_argument("--location", default=None)
    publish.add_argument("--summary", default=None)
    publish.add_argument("--uid", default=None)
    cancel = sub.add_parser("cancel-appointment", help="the clinic cancels an appointment")
    cancel.add_argument("uid", metavar="UID")
    _target_arguments(cancel)
    cancel.add_argument("--given-name", default="", help="optional: MsgHead names may be left out")
    cancel.add_argument("--family-name", default="")


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clinic", dest="target_clinic", required=True, metavar="HER")
    parser.add_argument("--fnr", required=True, metavar="FNR")
    parser.add_argument("--start", type=_aware, required=True, metavar="ISO")
    parser.add_argument("--end", type=_aware, required=True, metavar="ISO")


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _aware(text: str) -> datetime:
    """An ISO 8601 date-time; without an offset it is Oslo time."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {text!r}") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=OSLO)


def run_from_args(args: argparse.Namespace, settings: SimConfig) -> int:
    """Run `timebok epj-sim` (consume, or one publish/cancel subcommand); returns an exit code."""
    from worker.adapters.registry import Registry, RegistryError

    try:
        sim = Simulator(
            settings,
            Registry.load(settings.registry_file),
            clinics=args.clinics,
            policy=args.policy,
            seed=args.seed,
            delay=args.delay,
            drop_apprec_rate=args.drop_apprec_rate,
            duplicate_rate=args.duplicate_rate,
        )
        return _dispatch(sim, args)
    except (RegistryError, ValueError, EpjUnavailable) as exc:
        _stderr(mask_fnrs(f"epj-sim: {exc}"))
        return 2 if isinstance(exc, RegistryError | ValueError) else 1


def _dispatch(sim: Simulator, args: argparse.Namespace) -> int:
    try:
        command = getattr(args, "sim_command", None)
        if command is None:
            _consume(sim, args.max_seconds)
            return 0
        if args.start >= args.end:
            raise ValueError("--start must be before --end")
        if command == "publish-appointment":
            print(_publish_command(sim, args))
        else:
            print(_cancel_command(sim, args))
        return 0
    finally:
        sim.close()


def _person(args: argparse.Namespace) -> Person:
    fnrs.check(args.fnr)
    return Person(args.fnr, args.given_name, args.family_name)


def _publish_command(sim: Simulator, args: argparse.Namespace) -> str:
    return sim.publish_appointment(
        args.target_clinic,
        _person(args),
        args.start,
        args.end,
        practitioner=args.practitioner,
        appointment_type=args.appointment_type,
        location=args.location,
        uid=args.uid,
        summary=args.summary,
    )


def _cancel_command(sim: Simulator, args: argparse.Namespace) -> str:
    return sim.cancel_appointment(args.target_clinic, args.uid, _person(args), args.start, args.end)


def _consume(sim: Simulator, max_seconds: float | None) -> None:
    """Run until SIGTERM / SIGINT / --max-seconds."""
    stop = threading.Event()

    def _handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _handler)
    try:
        sim.run(stop, max_seconds)
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry: `python -m worker.sim [options]`."""
    from worker.settings import Settings

    parser = argparse.ArgumentParser(prog="epj-sim", description=__doc__)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv), Settings())


if __name__ == "__main__":
    sys.exit(main())
