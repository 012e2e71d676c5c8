"""EPJ simulator engine: consumes clinic queues, answers on a schedule, originates Avtale."""

from __future__ import annotations

import heapq
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from kombu.connection import Connection
from kombu.entity import Queue
from kombu.exceptions import OperationalError

from mappers import apprec as apprec_mapper
from mappers import incoming
from mappers import message as dialog_message
from mappers.codes import (
    REPLY_NAMES,
    URGENCY_NAMES,
    AppointmentType,
    AppRecStatus,
    Process,
    RequestCode,
)
from mappers.errors import MapperError
from mappers.model import (
    AppRec,
    DialogMessage,
    Envelope,
    Event,
    Party,
    Person,
    Practitioner,
    Request,
)
from worker import fnr as fnrs
from worker.adapters.broker import redelivery_options
from worker.adapters.registry import Clinic
from worker.adapters.transports import kombu as epj
from worker.adapters.transports.base import BusRefusal
from worker.errors import EpjUnavailable
from worker.kinds import appointment_type_code
from worker.settings import async_queue, sync_queue
from worker.sim.policy import (
    CANCELLED,
    CONFIRMED,
    MAX_WAIT,
    RETRY_AFTER,
    Policy,
    check_policy,
    decide,
    is_apprec,
    mask_fnrs,
    new_uid,
    read_policies,
    receipt_ok,
    receipt_refused,
    reply_function,
    reply_message,
    to_stderr,
    utcnow,
)
from worker.sim.sync import SyncDesk

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
    # Acks the message this answers: called once every copy is published, never before.
    settle: Callable[[], None] | None = None


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
        echo: Callable[[str], None] = to_stderr,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config, self.registry = config, registry
        self.clinics = _clinics(registry, clinics)
        self.policy = check_policy(policy)
        self.policies = dict(read_policies(config.registry_file) if policies is None else policies)
        self.delay = max(0.0, delay)
        self.drop_apprec_rate, self.duplicate_rate = drop_apprec_rate, duplicate_rate
        self.seed = seed  # with the MsgId, seeds each message's decision (see _rng_for)
        self.chaos = random.Random(None if seed is None else seed + 1)  # noqa: S311
        self.transport = transport or epj.KombuTransport(config.epj_url)
        self.echo, self.clock = echo, clock  # `echo` receives each line, FNRs already masked
        self.stats: Counter[str] = Counter()
        self._due: list[tuple[float, int, _Outgoing]] = []
        self._seq = 0
        self.desk = SyncDesk(
            self.clinics,
            getattr(config, "registry_file", None),
            seed=seed or 0,
            clock=self.clock,
            say=self._say,
        )

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
        queues = ", ".join(
            q for c in self.clinics for q in (async_queue(c.her_id), sync_queue(c.her_id))
        )
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
        if self.transport.name != "kombu":
            self._consume_subscribed(stop, deadline, connected)
            return
        # kombu is unannotated, hence the ignores on its constructors.
        url = self.config.epj_url
        # On Redis, what a killed simulator held unacked comes back after the visibility
        # timeout (the worker's setting), like the worker's own messages.
        visibility = int(getattr(self.config, "visibility_timeout", 3600))
        options = redelivery_options(visibility) if url.startswith("redis") else {}
        conn = Connection(url, transport_options=options)  # type: ignore[no-untyped-call]
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

    def _consume_subscribed(
        self, stop: threading.Event, deadline: float | None, connected: threading.Event
    ) -> None:
        """The clinics' queues through the transport interface (the national bus)."""
        queues = [async_queue(clinic.her_id) for clinic in self.clinics]
        queues += [sync_queue(clinic.her_id) for clinic in self.clinics]
        sub = self.transport.subscribe(queues, self._on_delivery)
        try:
            connected.set()
            while not stop.is_set() and not _past(deadline):
                self.flush_due()
                sub.drain(self._wait(deadline))
        finally:
            sub.close()

    def _on_delivery(self, delivery: epj.Delivery) -> epj.Outcome | None:
        """Open (decrypt, verify) and handle one message; a refused one is dropped.

        A message whose reply is scheduled stays unsettled (None) until that reply is
        published, as on kombu: a simulator killed in between gets it again.
        """
        lookup_asked = delivery.queue.endswith("_sync")
        her_id = delivery.queue.removesuffix("_async").removesuffix("_sync")
        try:
            body = self.transport.open(delivery)
        except BusRefusal as exc:
            self.stats["refused"] += 1
            self._say(f"{her_id}: refused on the bus ({exc.condition}); message dropped")
            return epj.Outcome.ACCEPT
        try:
            if lookup_asked:
                self.answer_lookup(her_id, body, delivery.reply_to, delivery.correlation_id)
            elif self.handle(her_id, body, delivery.headers, settle=partial(_accept, delivery)):
                return None  # accepted by flush_due once its reply is out
        except EpjUnavailable as exc:
            self._say(f"{her_id}: cannot publish ({exc}); message released")
            return epj.Outcome.RELEASE
        except Exception as exc:  # a simulator bug must not stop the other clinics
            self.stats["errors"] += 1
            self._say(f"{her_id}: internal error {exc!r}; message dropped")
        return epj.Outcome.ACCEPT

    @contextmanager
    def _consumers(self, conn: Connection) -> Iterator[None]:
        with ExitStack() as stack:
            for clinic in self.clinics:
                queue = Queue(async_queue(clinic.her_id), durable=True)  # type: ignore[no-untyped-call]
                callback = partial(self._on_message, clinic.her_id)
                consumer = conn.Consumer([queue], on_message=callback)  # type: ignore[no-untyped-call]
                stack.enter_context(consumer)
                sync = Queue(sync_queue(clinic.her_id), durable=True)  # type: ignore[no-untyped-call]
                answer = partial(self._on_sync_message, clinic.her_id)
                stack.enter_context(conn.Consumer([sync], on_message=answer))  # type: ignore[no-untyped-call]
            yield

    def _on_message(self, her_id: str, message: Any) -> None:
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        headers = {str(k): str(v) for k, v in (message.headers or {}).items()}
        try:
            if self.handle(her_id, body, headers, settle=message.ack):
                return  # acked by flush_due once its reply is out (see _Outgoing.settle)
        except EpjUnavailable as exc:
            self._say(f"{her_id}: cannot publish ({exc}); message requeued")
            message.requeue()
            return
        except Exception as exc:  # a simulator bug must not stop the other clinics
            self.stats["errors"] += 1
            self._say(f"{her_id}: internal error {exc!r}; message dropped")
        message.ack()

    def _on_sync_message(self, her_id: str, message: Any) -> None:
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        headers = {str(k): str(v) for k, v in (message.headers or {}).items()}
        try:
            self.answer_lookup(her_id, body, headers.get("replyTo"), headers.get("correlationId"))
        except EpjUnavailable as exc:
            self._say(f"{her_id}: cannot answer a lookup ({exc}); dropped (its caller gives up)")
        except Exception as exc:  # a simulator bug must not stop the other clinics
            self.stats["errors"] += 1
            self._say(f"{her_id}: internal error {exc!r}; lookup dropped")
        message.ack()

    def answer_lookup(
        self, her_id: str, body: bytes, reply_to: str | None, correlation_id: str | None
    ) -> None:
        """Answer a HentLedigeTimer / HentPlanlagteTimer at once (no AppRec either way)."""
        self.stats["lookups"] += 1
        self.desk.answer(self.transport, her_id, body, reply_to, correlation_id)

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

    def handle(
        self,
        her_id: str,
        body: bytes,
        headers: Mapping[str, str],
        settle: Callable[[], None] | None = None,
    ) -> bool:
        """Answer one raw document that arrived on a clinic's queue (AppRec, then the reply).

        Returns True when a reply was scheduled and `settle` (the message's ack) left to run
        once it is published: a simulator killed before that gets the message again, as an
        EPJ that keeps what it received would, and answers it with the same MsgIds.
        """
        self.stats["handled"] += 1
        clinic = self._clinic(her_id)
        try:
            doc = incoming.parse_any(body)
        except MapperError as exc:
            self._refuse(clinic, body, headers, exc)
            return False
        if isinstance(doc, AppRec):
            self.stats["apprec_in"] += 1
            status = doc.status.name
            self._say(f"{her_id} <- AppRec {status} for {doc.original.msg_id}")
            return False
        return self._accept(clinic, doc, settle)

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

    def _accept(self, clinic: Party, msg: DialogMessage, settle: Callable[[], None] | None) -> bool:
        """AppRec OK at once, then the business reply after the delay."""
        env = msg.envelope
        self.stats["business_in"] += 1
        if env.receiver.unit is not None:
            clinic = replace(clinic, unit=env.receiver.unit)
        rec = replace(receipt_ok(msg, clinic, self.clock()), msg_id=_answer_id(env, "apprec"))
        function = incoming.function_of(msg)
        what = f"{clinic.her_id} <- {function} {_short(env.msg_id)} {_who(env.patient)}"
        what += _wanted(msg.request)
        opener = env.conversation.ref_to_conversation if env.conversation else env.msg_id
        self._send_receipt(rec, what, conversation=opener)
        return self._reply(clinic, msg, settle)

    def _reply(self, clinic: Party, msg: DialogMessage, settle: Callable[[], None] | None) -> bool:
        offered = self._offered(clinic.her_id, msg.envelope.process)
        decision = decide(
            msg,
            clinic,
            policy=self.policy_for(clinic.her_id),
            rng=self._rng_for(msg.envelope),
            now=self.clock(),
            offered=offered,
        )
        if decision is None:
            return False
        request = msg.request
        if request is not None and request.code is RequestCode.RESERVE:
            decision = self.desk.reserve(clinic.her_id, msg, decision)
        elif request is not None and request.code is RequestCode.CANCEL:
            self.desk.cancelled(clinic.her_id, msg)
        msg_id = _answer_id(msg.envelope, "reply")
        reply = reply_message(msg, clinic, decision, msg_id=msg_id, now=self.clock())
        try:
            item = _dialog_item(reply)
        except MapperError as exc:
            self.stats["errors"] += 1
            self._say(f"{clinic.her_id}: cannot build {reply_function(msg)}: {exc}")
            return False
        copies = 2 if self._chance(self.duplicate_rate) else 1
        line = (
            f"{clinic.her_id} -> {reply.envelope.receiver.her_id} {reply_function(msg)} "
            f"{decision.code} {REPLY_NAMES[decision.code]} {_short(reply.envelope.msg_id)}"
            f"{' (x2)' if copies == 2 else ''}"
        )
        self._schedule(_Outgoing(item, line, copies, settle), self.delay)
        return settle is not None

    def _rng_for(self, env: Envelope) -> random.Random:
        """The same decision for every delivery of one message (seeded by seed and MsgId)."""
        return random.Random(f"{self.seed}:{env.msg_id}")  # noqa: S311

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
            self._settle(out)
            sent += 1
        return sent

    def _settle(self, out: _Outgoing) -> None:
        """Ack the message a published reply answers."""
        if out.settle is None:
            return
        try:
            out.settle()
        except Exception as exc:  # its channel died meanwhile: it comes back, same answers
            self._say(f"cannot ack an answered message ({exc!r}); it will be answered again")

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
            uid=uid or new_uid(),
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
        """Publish an Avtale with the vevent CANCELLED (the clinic cancels); returns the MsgId.

        The appointment's slot is free again in this simulator's calendar."""
        clinic = self._clinic(clinic_her_id)
        event = Event(uid, start, end, clinic.her_id, location=clinic.name, status=CANCELLED)
        self.desk.free(clinic.her_id, uid)
        return self._publish_avtale(clinic, patient, event, None, "cancelled")

    def _publish_avtale(
        self, clinic: Party, patient: Person, event: Event, who: Practitioner | None, what: str
    ) -> str:
        envelope = Envelope(
            process=Process.PUBLICATION,
            msg_id=new_uid(),
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


def _accept(delivery: epj.Delivery) -> None:
    delivery.finish(epj.Outcome.ACCEPT)


def _dialog_item(msg: DialogMessage) -> epj.Envelope:
    """A business message with its transport headers, for the receiver's async queue."""
    queue = async_queue(msg.envelope.receiver.her_id)
    return epj.Envelope(queue, dialog_message.build(msg), epj.dialog_headers(msg))


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


def _wanted(request: Request | None) -> str:
    """What a wish asks for, as the EPJ read it: ' (Hastetime, Haster, vaccination)'."""
    if request is None:
        return ""
    parts = [
        request.appointment_type.value if request.appointment_type else None,
        URGENCY_NAMES[request.urgency] if request.urgency else None,
        request.service,
    ]
    shown = [p for p in parts if p]
    return f" ({', '.join(shown)})" if shown else ""


def _as_practitioner(value: Practitioner | str | None) -> Practitioner | None:
    return Practitioner(value) if isinstance(value, str) else value


def _avtale_text(what: str) -> str:
    texts = {"new": "Ny timeavtale", "changed": "Endret timeavtale", "cancelled": "Avlyst time"}
    return texts.get(what, "Timeavtale")


_ANSWERS = uuid.UUID("5d0c4b7e-3f1a-4c59-9a57-2b8e6f0d1c43")


def _answer_id(env: Envelope, kind: str) -> str:
    """The MsgId of our answer (`apprec`, `reply`) to a message: the same on every delivery."""
    return str(uuid.uuid5(_ANSWERS, f"{env.sender.her_id}:{env.msg_id}:{kind}"))


def _who(patient: Person | None) -> str:
    return f"patient={fnrs.mask(patient.fnr)}" if patient is not None else "patient=-"


def _short(msg_id: str) -> str:
    return f"msg={msg_id[:8]}"


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _safe_url(url: str) -> str:
    """The broker URL without a password."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)
