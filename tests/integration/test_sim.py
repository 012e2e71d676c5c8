"""The EPJ simulator against the real Redis: requests in on a clinic queue, answers out."""

from __future__ import annotations

import argparse
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from kombu.connection import Connection
from kombu.entity import Queue
from lxml import etree

from mappers import incoming
from mappers import message as dialog_message
from mappers.codes import NS_MSGHEAD, AppRecError, AppRecStatus, Function, ReplyCode, RequestCode
from mappers.model import AppRec, DialogMessage, Event, Party, Person, Practitioner
from mappers.outgoing import compose
from worker import fnr as fnrs
from worker import sim
from worker.adapters.registry import Registry
from worker.adapters.transports.kombu import Envelope, KombuTransport, transport_headers
from worker.settings import Settings, async_queue

pytestmark = pytest.mark.integration

PATIENT = Person(fnrs.make(date(1980, 5, 17), 123), "Kari", "Nordmann")
Received = tuple[DialogMessage | AppRec, dict[str, str], str]


def _her_id() -> str:
    """A HER-id unique to this run, so queues never meet another run's."""
    return str(70_000_000 + secrets.randbelow(20_000_000))


class World:
    """One portal and two clinics (one with `sim_policy = "reject"`) on a private Redis DB."""

    def __init__(self, redis_url: str, tmp: Path) -> None:
        self.portal, self.clinic, self.rejecting = _her_id(), _her_id(), _her_id()
        self.registry_file = tmp / "registry.toml"
        self.registry_file.write_text(self._toml(), encoding="utf-8")
        self.settings = Settings(
            broker_url=redis_url,
            own_her_id=self.portal,
            own_name="Testportalen",
            registry_file=self.registry_file,
        )
        self.registry = Registry.load(self.registry_file)
        self.transport = KombuTransport(self.settings.epj_url)

    def _toml(self) -> str:
        processes = '["timereservasjon", "timeonske", "avtaleavbestilling", "avtaleutsending"]'
        return (
            f'[portal]\nher_id = "{self.portal}"\nname = "Testportalen"\n'
            f'[[clinic]]\nher_id = "{self.clinic}"\nname = "Simklinikken"\n'
            f"processes = {processes}\n"
            f'[[clinic]]\nher_id = "{self.rejecting}"\nname = "Fullt legekontor"\n'
            f'processes = {processes}\nsim_policy = "reject"\n'
        )

    def simulator(self, **options: object) -> sim.Simulator:
        """A simulator for both clinics, replying at once."""
        return sim.Simulator(
            self.settings,
            self.registry,
            delay=0.0,
            seed=1,
            echo=lambda _line: None,
            **options,  # type: ignore[arg-type]
        )

    def reserve(self, clinic: str) -> DialogMessage:
        """A ReserverAvtale from the portal to `clinic`."""
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
        return compose(
            Function.RESERVE,
            msg_id=str(uuid.uuid4()),
            gen_date=datetime.now(UTC),
            sender=Party(self.portal, "Testportalen"),
            receiver=Party(clinic, "Simklinikken"),
            patient=PATIENT,
            subject="Magesmerter",
            practitioner=Practitioner("August September"),
            event=Event(
                uid=str(uuid.uuid4()),
                start=start,
                end=start + timedelta(minutes=20),
                contact=clinic,
                related_to="slot-17",
                location="Simklinikken",
            ),
        )

    def send(self, clinic: str, body: bytes, request: DialogMessage) -> None:
        """Put a document on the clinic's queue, as the portal's worker does."""
        env = request.envelope
        headers = transport_headers(
            from_her_id=self.portal,
            to_her_id=clinic,
            msg_id=env.msg_id,
            msg_type=env.process.value,
        )
        self.transport.publish(Envelope(async_queue(clinic), body, headers))

    def receive(
        self, expect: int, timeout: float = 15.0, *, linger: bool = False
    ) -> list[Received]:
        """Take `expect` documents off the portal's queue (parsed, headers, content type).

        With `linger`, keep listening until the timeout to prove nothing more arrives.
        """
        got: list[Received] = []
        deadline = time.monotonic() + timeout
        with Connection(self.settings.epj_url) as conn:
            simple = conn.SimpleQueue(Queue(async_queue(self.portal), durable=True))
            try:
                while (linger or len(got) < expect) and time.monotonic() < deadline:
                    try:
                        m = simple.get(block=True, timeout=0.2)
                    except simple.Empty:
                        continue
                    headers = {str(k): str(v) for k, v in (m.headers or {}).items()}
                    got.append((incoming.parse_any(m.body), headers, m.content_type))
                    m.ack()
            finally:
                simple.close()
        assert len(got) == expect, f"expected {expect} message(s), got {len(got)}"
        return got


@pytest.fixture
def world(redis_url: str, tmp_path: Path) -> Iterator[World]:
    """A fresh set of HER-ids and queues on the run's private Redis DB."""
    w = World(redis_url, tmp_path)
    yield w
    w.transport.close()


@contextmanager
def running(simulator: sim.Simulator) -> Iterator[None]:
    """The simulator's consume loop in a thread, stopped (and joined) on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=simulator.run, args=(stop, 30.0), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        simulator.close()
    assert not thread.is_alive()


def _split(got: list[Received]) -> tuple[list[Received], list[Received]]:
    receipts = [r for r in got if isinstance(r[0], AppRec)]
    return receipts, [r for r in got if isinstance(r[0], DialogMessage)]


def test_reservation_gets_apprec_ok_then_a_confirmation(world: World) -> None:
    request = world.reserve(world.clinic)
    world.send(world.clinic, dialog_message.build(request), request)
    with running(world.simulator()):
        got = world.receive(2)
    receipts, replies = _split(got)
    (rec, rec_headers, rec_type), (reply, headers, content_type) = receipts[0], replies[0]
    assert isinstance(rec, AppRec)
    assert rec.status is AppRecStatus.OK
    assert rec.original.msg_id == request.envelope.msg_id
    assert rec_headers["type"] == "APPREC"
    assert isinstance(reply, DialogMessage)
    assert reply.reply is not None
    assert reply.reply.code is ReplyCode.CONFIRMED
    assert reply.envelope.conversation is not None
    assert reply.envelope.conversation.ref_to_parent == request.envelope.msg_id
    assert reply.envelope.sender == Party(world.clinic, "Simklinikken")
    assert reply.event is not None
    assert reply.event.related_to == "slot-17"
    assert reply.event.status == "CONFIRMED"
    assert request.event is not None
    assert reply.event.uid != request.event.uid
    assert (content_type, rec_type) == ("application/xml", "application/xml")
    assert headers["fromHerId"] == world.clinic
    assert headers["toHerId"] == world.portal
    assert headers["msgId"] == reply.envelope.msg_id
    assert headers["refToParent"] == request.envelope.msg_id
    assert headers["type"] == request.envelope.process.value


def test_clinic_with_sim_policy_reject_answers_06(world: World) -> None:
    request = world.reserve(world.rejecting)
    body = dialog_message.build(request)
    world.send(world.rejecting, body, request)
    with running(world.simulator(policy="confirm")):
        _receipts, replies = _split(world.receive(2))
    reply = replies[0][0]
    assert isinstance(reply, DialogMessage)
    assert reply.reply is not None
    assert reply.reply.code is ReplyCode.NOT_AVAILABLE
    assert reply.reply.text


def test_invalid_document_gets_apprec_avvist_t02(world: World) -> None:
    request = world.reserve(world.clinic)
    root = etree.fromstring(dialog_message.build(request))
    mig = root.find(f"{{{NS_MSGHEAD}}}MsgInfo/{{{NS_MSGHEAD}}}MIGversion")
    assert mig is not None
    mig.getparent().remove(mig)  # type: ignore[union-attr]  # now invalid against the schema
    broken = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    world.send(world.clinic, broken, request)
    with running(world.simulator()):
        ((rec, headers, _),) = world.receive(1, timeout=1.5, linger=True)  # and nothing else
    assert isinstance(rec, AppRec)
    assert rec.status is AppRecStatus.REJECTED
    assert rec.errors[0].code == AppRecError.NOT_VALID
    assert rec.original.msg_id == request.envelope.msg_id
    assert rec.receiver.her_id == world.portal
    assert headers["toHerId"] == world.portal


def test_publish_appointment_puts_an_avtale_on_the_portal_queue(world: World) -> None:
    simulator = world.simulator()
    start = datetime(2030, 1, 7, 9, 0, tzinfo=sim.OSLO)
    uid = simulator.publish_appointment(
        world.clinic, PATIENT, start, start + timedelta(minutes=30), "Rita Lin", "phone"
    )
    simulator.close()
    ((avtale, headers, _),) = world.receive(1)
    assert isinstance(avtale, DialogMessage)
    assert avtale.request is not None
    assert avtale.request.code is RequestCode.APPOINTMENT
    assert avtale.event is not None
    assert (avtale.event.uid, avtale.event.status) == (uid, "CONFIRMED")
    assert avtale.event.start == start
    assert avtale.envelope.patient == PATIENT
    assert headers["fromHerId"] == world.clinic
    assert headers["type"] == "DIALOG_INNBYGGER_AVTALEUTSENDING"


def test_cli_cancel_appointment_publishes_a_cancelled_avtale(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    sim.add_arguments(parser)
    uid = str(uuid.uuid4())
    args = parser.parse_args(
        [
            "cancel-appointment",
            uid,
            "--clinic",
            world.clinic,
            "--fnr",
            PATIENT.fnr,
            "--start",
            "2030-01-07T09:00:00+01:00",
            "--end",
            "2030-01-07T09:30:00+01:00",
        ]
    )
    assert sim.run_from_args(args, world.settings) == 0
    ((avtale, _, _),) = world.receive(1)
    assert isinstance(avtale, DialogMessage)
    assert avtale.event is not None
    assert (avtale.event.uid, avtale.event.status) == (uid, "CANCELLED")
    out = capsys.readouterr()
    assert out.out.strip() == avtale.envelope.msg_id
    assert PATIENT.fnr not in out.err
    assert PATIENT.fnr[:6] + "*****" in out.err


def test_cli_consumes_until_max_seconds(world: World) -> None:
    parser = argparse.ArgumentParser()
    sim.add_arguments(parser)
    request = world.reserve(world.clinic)
    world.send(world.clinic, dialog_message.build(request), request)
    args = parser.parse_args(["--clinic", world.clinic, "--delay", "0", "--max-seconds", "2"])
    assert sim.run_from_args(args, world.settings) == 0
    assert len(world.receive(2)) == 2
