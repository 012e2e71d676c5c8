"""The national bus on the real RabbitMQ (AMQP 1.0 plugin) with a real worker process.

Each run gets its own RabbitMQ vhost (deleted afterwards), its own PostgreSQL schema and its
own test PKI. The clinic side is played by the test: an NhnTransport with the clinic's keys,
and for the interop checks the `openssl cms` command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mappers import incoming
from mappers.codes import AppRecStatus, ReplyCode
from mappers.model import AppRec, DialogMessage, Person
from tests.certs import CLINIC, OWN, STRANGER, Pki, make_pki
from tests.conftest import PG_URL, ROOT, WorkerProcess, wait_for
from tests.support import apprec_for, avtale, confirmed_event, reply, request
from worker.adapters import crypto
from worker.adapters.store.db import get_message
from worker.adapters.store.migrate import upgrade
from worker.adapters.store.tables import DeadLetterRow, NotificationRow
from worker.adapters.transports.base import Delivery, Envelope, Outcome, transport_headers
from worker.adapters.transports.cms import CmsProtection
from worker.adapters.transports.nhn import CMS_CONTENT_TYPE, NhnTransport
from worker.bootstrap import Deps, bootstrap
from worker.constants import REQUESTS_QUEUE, SUBMIT_TASK
from worker.entrypoints.app import create_app
from worker.flows import views
from worker.settings import Settings

pytestmark = pytest.mark.integration

NOCERT = "8090005"  # a registered clinic without certificates: never sent to on nhn
SILENT = "8090020"  # takes timereservasjon, has certificates, nobody plays it: never answers
NAMESPACE = "NHNTestServiceBus"
OPENSSL = shutil.which("openssl")
RABBITMQCTL = shutil.which("rabbitmqctl")


def _ctl(*args: str) -> None:
    assert RABBITMQCTL, "rabbitmqctl is needed to make a vhost per test run"
    subprocess.run([RABBITMQCTL, "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class _Party:
    """What a CertificateBook needs of a registry entry."""

    her_id: str
    signing_cert: Path | None
    encryption_cert: Path | None


@dataclass
class Bus:
    """The running stack: worker, database, and the clinic's own end of the bus."""

    settings: Settings
    deps: Deps
    env: dict[str, str]
    pki: Pki
    url: str
    tmp: Path
    clinic: NhnTransport
    worker: WorkerProcess
    logs: list[Path] = field(default_factory=list)

    def take(self, queue: str, n: int = 1, timeout: float = 30) -> list[Delivery]:
        """`n` messages off a queue (accepted), in arrival order."""
        got: list[Delivery] = []

        def keep(d: Delivery) -> Outcome:
            got.append(d)
            return Outcome.ACCEPT

        sub = self.clinic.subscribe([queue], keep)
        try:
            deadline = time.monotonic() + timeout
            while len(got) < n and time.monotonic() < deadline:
                sub.drain(0.3)
        finally:
            sub.close()
        assert len(got) >= n, f"{n} message(s) on {queue}, got {len(got)}"
        return got

    def quiet(self, queue: str, seconds: float = 1.5) -> list[Delivery]:
        """Whatever arrives on `queue` within `seconds` (expected: nothing)."""
        got: list[Delivery] = []
        sub = self.clinic.subscribe([queue], lambda d: got.append(d) or Outcome.ACCEPT)
        try:
            sub.drain(seconds)
        finally:
            sub.close()
        return got

    def send(self, xml: bytes, msg_type: str, **over: Any) -> str:
        """The clinic sends `xml` to our async queue, sealed with its keys; the message id."""
        msg_id = over.pop("msg_id", None) or str(uuid.uuid4())
        headers = transport_headers(
            from_her_id=CLINIC, to_her_id=OWN, msg_id=msg_id, msg_type=msg_type
        )
        self.clinic.publish(Envelope(f"{OWN}_async", xml, headers))
        return msg_id

    def send_raw(self, blob: bytes, msg_type: str, *, content_type: str | None = CMS_CONTENT_TYPE,
                 drop: tuple[str, ...] = (), from_her_id: str = CLINIC) -> str:  # fmt: skip
        """A message whose body the test made itself (already CMS, or not at all)."""
        msg_id = str(uuid.uuid4())
        headers = transport_headers(
            from_her_id=from_her_id, to_her_id=OWN, msg_id=msg_id, msg_type=msg_type
        )
        message = self.clinic.message(Envelope(f"{OWN}_async", blob, headers, protect=False))
        message.content_type = content_type
        message.reply_to = f"{from_her_id}_async"
        props = dict(message.properties)
        for name in drop:
            props.pop(name, None)
        message.properties = props
        self.clinic.send(f"{OWN}_async", message)
        return msg_id

    def open(self, delivery: Delivery) -> bytes:
        """What the clinic reads in a message from us (decrypted, our signature verified)."""
        return self.clinic.open(delivery)

    def book(self, **over: Any) -> tuple[dict[str, Any], DialogMessage, Delivery]:
        """A reserve request through the Celery task, as the clinic receives it."""
        req = request("reserve", **over)
        create_app(self.settings).send_task(SUBMIT_TASK, args=[req], queue=REQUESTS_QUEUE)
        [delivery] = self.take(f"{CLINIC}_async")
        doc = incoming.parse_any(self.open(delivery))
        assert isinstance(doc, DialogMessage)
        return req, doc, delivery

    def state(self, booking_id: str) -> str | None:
        """The booking's state now (None before the worker stored it)."""
        try:
            return str(views.booking(self.deps, booking_id)["state"])
        except views.NotFound:
            return None

    def inbox(self, fnr: str) -> int:
        """How many inbox notifications the patient has."""
        with self.deps.store.transaction() as s:
            stmt = select(func.count()).select_from(NotificationRow)
            return int(s.scalar(stmt.where(NotificationRow.patient_fnr == fnr)) or 0)

    def bus_dead_letters(self, msg_id: str) -> list[DeadLetterRow]:
        """Dead letters of kind `bus` for a message id."""
        with self.deps.store.transaction() as s:
            stmt = select(DeadLetterRow).where(
                DeadLetterRow.msg_id == msg_id, DeadLetterRow.kind == "bus"
            )
            rows = list(s.scalars(stmt))
            s.expunge_all()
            return rows


def _registry(pki: Pki, path: Path) -> Path:
    path.write_text(
        f"""[[clinic]]
her_id = {CLINIC}
name = "Testlegekontoret"
phone = "81569069"
processes = ["timereservasjon", "timeonske", "avtaleavbestilling", "avtaleutsending"]
signing_cert = "{pki.cert(CLINIC, "signing")}"
encryption_cert = "{pki.cert(CLINIC, "encryption")}"
cpa_id = "5f7e3c1a-0000-4000-8000-000000000001"

[[clinic.unit]]
her_id = 8090002
name = "Fastlege August September"

[clinic.unit.sim_calendar]
practitioner = "August September"
video_share = 0.2
urgent_held_back = 2

[[clinic.unit]]
her_id = 8090003
name = "Laboratoriet"

[clinic.unit.sim_calendar]
practitioner = ""
services = ["lab_test"]
slot_minutes = 10
video_share = 0.0
urgent_held_back = 0

[[clinic]]
her_id = {SILENT}
name = "Video Legesenter"
processes = ["timereservasjon"]
signing_cert = "{pki.cert(SILENT, "signing")}"
encryption_cert = "{pki.cert(SILENT, "encryption")}"

[[clinic]]
her_id = {STRANGER}
name = "Annet legekontor"
phone = "22222222"
processes = []
signing_cert = "{pki.cert(STRANGER, "signing")}"
encryption_cert = "{pki.cert(STRANGER, "encryption")}"

[[clinic]]
her_id = {NOCERT}
name = "Uten sertifikat"
phone = "12345678"
processes = ["timereservasjon"]
""",
        encoding="utf-8",
    )
    return path


def _clinic_end(pki: Pki, url: str) -> NhnTransport:
    """The clinic's transport: its keys; our registered certificates."""
    own = _Party(OWN, pki.cert(OWN, "signing"), pki.cert(OWN, "encryption"))
    book = crypto.CertificateBook(lambda her_id: own if her_id == OWN else None)
    return NhnTransport(url, CmsProtection({CLINIC: pki.keys(CLINIC)}, book))


@pytest.fixture(scope="module")
def bus(redis_url: str, pg_schema: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    tmp = tmp_path_factory.mktemp("nhn")
    vhost = f"timebok-{uuid.uuid4().hex[:12]}"
    _ctl("add_vhost", vhost)
    _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    url = f"amqp://guest:guest@127.0.0.1:5672/{NAMESPACE}?vhost={vhost}"
    pki = make_pki(tmp / "pki", (OWN, CLINIC, STRANGER, NOCERT, SILENT))
    registry = _registry(pki, tmp / "registry.toml")
    schema = f"{pg_schema}_nhn"
    env = dict(os.environ) | pki.env(OWN) | {
        "TIMEBOK_BROKER_URL": redis_url,
        "TIMEBOK_EPJ_TRANSPORT": "nhn",
        "TIMEBOK_EPJ_BROKER_URL": url,
        "TIMEBOK_DATABASE_URL": PG_URL,
        "TIMEBOK_DATABASE_SCHEMA": schema,
        "TIMEBOK_OWN_HER_ID": OWN,
        "TIMEBOK_REGISTRY_FILE": str(registry),
        "TIMEBOK_APPREC_TIMEOUT": "600",
        "PYTHONPATH": str(ROOT),
    }  # fmt: skip
    settings = Settings(
        broker_url=redis_url,
        epj_transport="nhn",
        epj_broker_url=url,
        database_url=PG_URL,
        database_schema=schema,
        own_her_id=OWN,
        registry_file=registry,
        signing_key=pki.key(OWN, "signing"),
        signing_cert=pki.cert(OWN, "signing"),
        encryption_key=pki.key(OWN, "encryption"),
        encryption_cert=pki.cert(OWN, "encryption"),
    )
    deps = bootstrap(settings)
    with deps.store.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    clinic = _clinic_end(pki, url)
    worker: WorkerProcess | None = None
    try:
        upgrade(deps.store.engine)
        declared = subprocess.run(
            [sys.executable, "-m", "worker.entrypoints.cli", "queues", "declare", "--json"],
            env=env, cwd=ROOT, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        assert declared.returncode == 0, declared.stderr.decode()
        worker = WorkerProcess(env, tmp / "worker.log").start()
        bus = Bus(settings, deps, env, pki, url, tmp, clinic, worker)
        yield bus
        worker = bus.worker  # a test may have replaced it (the killed-worker test)
    finally:
        if worker is not None:
            worker.stop()
        clinic.close()
        deps.epj.close()
        with deps.store.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        deps.store.dispose()
        _ctl("delete_vhost", vhost)


def _patient(req: dict[str, Any]) -> Person:
    p = req["patient"]
    return Person(p["fnr"], p["given_name"], p["family_name"])


def _alive(bus: Bus) -> None:
    assert bus.worker.proc is not None and bus.worker.proc.poll() is None, "worker died"


# -- the round trip ---------------------------------------------------------------------------


def test_queues_declare_made_the_topology(bus: Bus) -> None:
    for her_id in (OWN, CLINIC, STRANGER, NOCERT, SILENT):
        for suffix in ("_async", "_sync", "_syncreply", "_error", "_dl"):
            assert bus.clinic.depth(f"{her_id}{suffix}") >= 0
    again = subprocess.run(
        [sys.executable, "-m", "worker.entrypoints.cli", "queues", "declare"],
        env=bus.env, cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr.decode()  # idempotent
    assert b"25 queues declared" in again.stdout


def test_booking_round_trip_over_nhn(bus: Bus) -> None:
    req, doc, delivery = bus.book()
    h = delivery.headers
    # domain.md section 8: properties and application properties of the library
    assert delivery.content_type == CMS_CONTENT_TYPE
    assert h["msgId"] == doc.envelope.msg_id and delivery.correlation_id == doc.envelope.msg_id
    assert h["type"] == doc.envelope.process.value
    assert delivery.reply_to == f"{OWN}_async"
    assert (h["fromHerId"], h["toHerId"]) == (OWN, CLINIC)
    assert h["cpaId"] == "5f7e3c1a-0000-4000-8000-000000000001"
    datetime.strptime(h["applicationTimeStamp"], "%Y-%m-%dT%H:%M:%SZ")
    assert delivery.body[:1] == b"\x30" and b"<MsgHead" not in delivery.body  # not in clear
    bus.send(apprec_for(doc, AppRecStatus.OK), "APPREC")
    wait_for(lambda: bus.state(req["request_id"]) == "DELIVERED", 30, 0.2, "DELIVERED")
    event = confirmed_event(doc)
    bus.send(reply(doc, ReplyCode.CONFIRMED, event=event), doc.envelope.process.value)
    wait_for(lambda: bus.state(req["request_id"]) == "CONFIRMED", 30, 0.2, "CONFIRMED")
    [receipt] = bus.take(f"{CLINIC}_async")
    assert receipt.headers["type"] == "APPREC"
    rec = incoming.parse_any(bus.open(receipt))
    assert isinstance(rec, AppRec) and rec.status is AppRecStatus.OK
    assert bus.inbox(req["patient"]["fnr"]) == 1
    # The clinic cancels the appointment: an Avtale with status CANCELLED.
    patient = _patient(req)
    cancel = avtale(patient, uid=event.uid, start=event.start, status="CANCELLED")
    bus.send(cancel, "DIALOG_INNBYGGER_AVTALEUTSENDING")
    wait_for(lambda: bus.state(req["request_id"]) == "CANCELLED", 30, 0.2, "CANCELLED")
    bus.take(f"{CLINIC}_async")  # its AppRec
    _alive(bus)


def test_avtale_from_the_clinic_over_nhn(bus: Bus) -> None:
    req = request("reserve", patient_n=7)
    patient = _patient(req)
    uid = str(uuid.uuid4())
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=12)
    bus.send(avtale(patient, uid=uid, start=start), "DIALOG_INNBYGGER_AVTALEUTSENDING")
    [receipt] = bus.take(f"{CLINIC}_async")
    rec = incoming.parse_any(bus.open(receipt))
    assert isinstance(rec, AppRec) and rec.status is AppRecStatus.OK
    wait_for(lambda: views.appointments(bus.deps, patient.fnr), 30, 0.2, "the appointment")
    assert [a["uid"] for a in views.appointments(bus.deps, patient.fnr)] == [uid]


def test_a_party_without_certificates_is_never_sent_to(bus: Bus) -> None:
    req = request("reserve", patient_n=9, clinic={"her_id": NOCERT, "name": "Uten sertifikat"})
    create_app(bus.settings).send_task(SUBMIT_TASK, args=[req], queue=REQUESTS_QUEUE)
    wait_for(lambda: bus.state(req["request_id"]) == "FAILED", 30, 0.2, "FAILED")
    reason = str(views.booking(bus.deps, req["request_id"])["reason"])
    assert NOCERT in reason and "encryption_cert" in reason and "nothing sent" in reason
    assert bus.clinic.depth(f"{NOCERT}_async") == 0
    wait_for(lambda: bus.inbox(req["patient"]["fnr"]) == 1, 10, 0.2, "the patient told")


def test_an_error_on_our_error_queue_fails_the_booking(bus: Bus) -> None:
    req, doc, _delivery = bus.book(patient_n=11)
    headers = transport_headers(
        from_her_id=CLINIC,
        to_her_id=OWN,
        msg_id=uuid.uuid4().hex,
        msg_type=doc.envelope.process.value,
    )
    extra = {
        "originalMessageId": doc.envelope.msg_id,
        "receiverTimeStamp": "2026-12-01T10:00:00Z",
        "errorCondition": "transport:invalid-certificate",
        "errorDescription": "could not decrypt",
    }
    error = Envelope(f"{OWN}_error", b"", headers, extra=extra, protect=False)
    bus.clinic.publish(error)
    bus.clinic.publish(error)  # a redelivered copy tells the patient nothing new
    wait_for(lambda: bus.state(req["request_id"]) == "FAILED", 30, 0.2, "FAILED")
    assert "transport:invalid-certificate" in str(
        views.booking(bus.deps, req["request_id"])["reason"]
    )
    time.sleep(1)
    assert bus.inbox(req["patient"]["fnr"]) == 1


# -- transport errors -----------------------------------------------------------------------


def _valid_reply(bus: Bus) -> tuple[bytes, str]:
    """A well-formed reply document from the clinic (for a booking nobody made)."""
    _req, doc, _d = bus.book(patient_n=21)
    return reply(doc, ReplyCode.CONFIRMED, event=confirmed_event(doc)), doc.envelope.process.value


def _seal(bus: Bus, xml: bytes, signer: str = CLINIC) -> bytes:
    now = datetime.now(UTC)
    return crypto.protect(xml, bus.pki.keys(signer), bus.pki.party(OWN), now)


def _tampered(bus: Bus, xml: bytes) -> bytes:
    blob = bytearray(_seal(bus, xml))
    blob[len(blob) // 2] ^= 0x01
    return bytes(blob)


def _unsigned(bus: Bus, xml: bytes) -> bytes:
    """EnvelopedData around the bare XML: encrypted for us, signed by no one."""
    assert OPENSSL, "openssl is needed"
    source = bus.tmp / f"unsigned-{uuid.uuid4().hex}.xml"
    source.write_bytes(xml)
    return subprocess.run(
        [OPENSSL, "cms", "-encrypt", "-binary", "-aes256", "-outform", "DER", "-in", source,
         str(bus.pki.cert(OWN, "encryption"))],
        check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip


CONDITIONS = {
    "tampered": "transport:invalid-certificate",
    "unsigned": "transport:invalid-certificate",
    "wrongly-signed": "transport:invalid-certificate",
    "wrongly-addressed": "abuse:spoofing-attack",
    "missing-header": "transport:invalid-field-value",
    "plain-text": "transport:unsupported-message",
    "not-xml": "transport:not-well-formed-xml",
}


def _bad(bus: Bus, case: str, xml: bytes) -> tuple[bytes, dict[str, Any]]:
    """The body and send options of each kind of message the bus must refuse."""
    if case == "tampered":
        return _tampered(bus, xml), {}
    if case == "unsigned":
        return _unsigned(bus, xml), {}
    if case == "wrongly-signed":  # fromHerId CLINIC, signed with STRANGER's key
        return _seal(bus, xml, STRANGER), {}
    if case == "wrongly-addressed":  # STRANGER, registered, signs as itself; MsgHead: CLINIC
        return _seal(bus, xml, STRANGER), {"from_her_id": STRANGER}
    if case == "missing-header":
        return _seal(bus, xml), {"drop": ("applicationTimeStamp",)}
    if case == "plain-text":
        return xml, {"content_type": "application/xml"}
    assert case == "not-xml"
    return _seal(bus, b"this is not XML"), {}


@pytest.mark.parametrize("case", list(CONDITIONS))
def test_transport_errors_go_to_the_senders_error_queue(bus: Bus, case: str) -> None:
    condition = CONDITIONS[case]
    xml, msg_type = _valid_reply(bus)
    blob, how = _bad(bus, case, xml)
    # wrongly-addressed: signed by STRANGER, registered, as fromHerId; the MsgHead says CLINIC
    sender = how.get("from_her_id", CLINIC)
    msg_id = bus.send_raw(blob, msg_type, **how)
    [error] = bus.take(f"{sender}_error")
    e = error.headers
    assert error.body == b""
    assert e["originalMessageId"] == msg_id
    assert e["errorCondition"] == condition, e.get("errorDescription")
    assert e["errorDescription"]
    datetime.strptime(e["receiverTimeStamp"], "%Y-%m-%dT%H:%M:%SZ")
    assert (e["fromHerId"], e["toHerId"]) == (OWN, sender)  # swapped
    assert e["type"] == msg_type  # subject = the original's
    with bus.deps.store.transaction() as s:
        assert get_message(s, msg_id) is None  # nothing processed
    [dead] = bus.bus_dead_letters(msg_id)
    assert condition in dead.reason and dead.payload == blob
    assert bus.clinic.depth(f"{OWN}_async") == 0 and bus.clinic.depth(f"{OWN}_dl") == 0
    assert bus.quiet(f"{CLINIC}_async", 0.5) == []  # no AppRec for a transport error
    _alive(bus)


def test_a_refused_message_can_be_inspected_and_replayed(bus: Bus) -> None:
    xml, msg_type = _valid_reply(bus)
    msg_id = bus.send_raw(_tampered(bus, xml), msg_type)
    bus.take(f"{CLINIC}_error")
    [dead] = bus.bus_dead_letters(msg_id)
    cli = [sys.executable, "-m", "worker.entrypoints.cli", "dlq"]
    shown = subprocess.run([*cli, "show", str(dead.id), "--json"], env=bus.env, cwd=ROOT,
                           capture_output=True, timeout=60, check=False)  # fmt: skip
    assert shown.returncode == 0 and msg_id.encode() in shown.stdout
    listed = subprocess.run([*cli, "list", "--json"], env=bus.env, cwd=ROOT,
                            capture_output=True, timeout=60, check=False)  # fmt: skip
    assert f'"id": {dead.id}'.encode() in listed.stdout
    replayed = subprocess.run([*cli, "replay", str(dead.id), "--json"], env=bus.env, cwd=ROOT,
                              capture_output=True, timeout=60, check=False)  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr.decode()
    assert b"refused again" in replayed.stdout
    assert len(bus.bus_dead_letters(msg_id)) == 1  # still one, one more attempt
    assert bus.quiet(f"{CLINIC}_error", 0.5) == []  # a replay tells the sender nothing again


# -- done when: interop with openssl, through the Celery task -------------------------------


def _openssl(*args: str | Path) -> bytes:
    assert OPENSSL, "the openssl command is needed for the interop test"
    done = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, f"openssl {' '.join(map(str, args))}: {done.stderr.decode()}"
    return done.stdout


def test_openssl_reads_what_the_celery_task_sends_and_its_reply_confirms(bus: Bus) -> None:
    pki, tmp = bus.pki, bus.tmp / f"openssl-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    req = request("reserve", patient_n=31)
    create_app(bus.settings).send_task(SUBMIT_TASK, args=[req], queue=REQUESTS_QUEUE)
    [delivery] = bus.take(f"{CLINIC}_async")
    (tmp / "in.der").write_bytes(delivery.body)
    _openssl(
        "cms", "-decrypt", "-binary", "-inform", "DER", "-in", tmp / "in.der",
        "-out", tmp / "signed.der",
        "-recip", pki.cert(CLINIC, "encryption"), "-inkey", pki.key(CLINIC, "encryption"),
    )  # fmt: skip
    xml = _openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", tmp / "signed.der",
        "-CAfile", pki.directory / "ca.pem", "-signer", tmp / "signer.pem",
    )  # fmt: skip
    assert (tmp / "signer.pem").read_bytes().strip() == pki.cert(
        OWN, "signing"
    ).read_bytes().strip()
    doc = incoming.parse_any(xml)
    assert isinstance(doc, DialogMessage) and doc.envelope.msg_id == delivery.headers["msgId"]
    # The clinic's reply, signed and encrypted by openssl, not by us.
    (tmp / "reply.xml").write_bytes(reply(doc, ReplyCode.CONFIRMED, event=confirmed_event(doc)))
    _openssl(
        "cms", "-sign", "-binary", "-md", "sha256", "-nodetach", "-outform", "DER",
        "-in", tmp / "reply.xml", "-out", tmp / "reply-signed.der",
        "-signer", pki.cert(CLINIC, "signing"), "-inkey", pki.key(CLINIC, "signing"),
    )  # fmt: skip
    _openssl(
        "cms", "-encrypt", "-binary", "-aes-256-cbc", "-outform", "DER",
        "-in", tmp / "reply-signed.der", "-out", tmp / "reply.der",
        pki.cert(OWN, "encryption"),
    )  # fmt: skip
    bus.send_raw((tmp / "reply.der").read_bytes(), doc.envelope.process.value)
    wait_for(lambda: bus.state(req["request_id"]) == "CONFIRMED", 30, 0.2, "CONFIRMED")
    [receipt] = bus.take(f"{CLINIC}_async")  # our AppRec OK for the reply
    rec = incoming.parse_any(bus.open(receipt))
    assert isinstance(rec, AppRec) and rec.status is AppRecStatus.OK
    time.sleep(1)  # a second notification would have been written with the first
    assert bus.inbox(req["patient"]["fnr"]) == 1


# -- redelivery: a worker killed mid-message ----------------------------------------------


def test_a_message_in_hand_of_a_killed_worker_is_processed_once(bus: Bus) -> None:
    """The worker is killed while its transaction for the message waits on a lock: nothing
    was committed, nothing settled; RabbitMQ hands the message to the next worker, which
    processes it once (and a second copy with the same MsgId is a duplicate)."""
    req = request("reserve", patient_n=41)
    patient = _patient(req)
    uid = str(uuid.uuid4())
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=14)
    xml = avtale(patient, uid=uid, start=start)
    schema = bus.settings.database_schema
    with bus.deps.store.engine.connect() as lock:
        holder = int(lock.exec_driver_sql("SELECT pg_backend_pid()").scalar() or 0)
        lock.exec_driver_sql(f'LOCK TABLE "{schema}".messages IN ACCESS EXCLUSIVE MODE')
        msg_id = bus.send(xml, "DIALOG_INNBYGGER_AVTALEUTSENDING")
        wait_for(lambda: _blocked_by(bus, holder), 30, 0.2, "the worker to block inside it")
        assert bus.worker.proc is not None
        bus.worker.proc.kill()
        bus.worker.proc.wait(10)
        bus.worker.proc = None
        bus.worker._out.close()
        lock.rollback()
    bus.worker = WorkerProcess(bus.env, bus.tmp / "worker-2.log").start()
    [receipt] = bus.take(f"{CLINIC}_async")
    rec = incoming.parse_any(bus.open(receipt))
    assert isinstance(rec, AppRec) and rec.status is AppRecStatus.OK
    bus.send(xml, "DIALOG_INNBYGGER_AVTALEUTSENDING", msg_id=msg_id)  # a copy, same MsgId
    bus.take(f"{CLINIC}_async")  # the copy gets the same AppRec again
    parsed = incoming.parse_any(xml)
    assert isinstance(parsed, DialogMessage)
    with bus.deps.store.transaction() as s:
        stored = get_message(s, parsed.envelope.msg_id)
        assert stored is not None and stored.status != "rejected"
        count = s.scalar(select(func.count()).select_from(NotificationRow).where(
            NotificationRow.patient_fnr == patient.fnr))  # fmt: skip
    assert [a["uid"] for a in views.appointments(bus.deps, patient.fnr)] == [uid]
    assert count == 1


def _blocked_by(bus: Bus, holder: int) -> bool:
    """Whether some session waits for the lock that backend `holder` holds."""
    with bus.deps.store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE %(holder)s = ANY(pg_blocking_pids(pid))",
            {"holder": holder},
        ).scalar()
    return bool(rows)


# -- synchronous request (the interface the lookups use) --------------------------------------


def test_a_synchronous_request_gets_its_correlated_answer(bus: Bus) -> None:
    """Request to the clinic's `_sync`, reply-to our `_syncreply`; a stray answer is skipped."""
    answered = threading.Event()

    def answer(d: Delivery) -> Outcome:
        question = bus.open(d)
        headers = transport_headers(
            from_her_id=CLINIC, to_her_id=OWN, msg_id=str(uuid.uuid4()), msg_type=d.headers["type"]
        )
        assert d.reply_to == f"{OWN}_syncreply"
        stray = Envelope(d.reply_to, b"<stray/>", headers, correlation_id="someone-else")
        bus.clinic.publish(stray)
        bus.clinic.publish(
            Envelope(
                d.reply_to, question.replace(b"Q", b"A"), headers, correlation_id=d.correlation_id
            )
        )
        answered.set()
        return Outcome.ACCEPT

    sub = bus.clinic.subscribe([f"{CLINIC}_sync"], answer)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: [sub.drain(0.2) for _ in iter(stop.is_set, True)])
    thread.start()
    try:
        msg_id = str(uuid.uuid4())
        headers = transport_headers(
            from_her_id=OWN,
            to_her_id=CLINIC,
            msg_id=msg_id,
            msg_type="DIALOG_INNBYGGER_TIMERESERVASJON",
        )
        got = bus.deps.epj.request(
            Envelope(f"{CLINIC}_sync", b"<Q/>", headers), f"{OWN}_syncreply", 20
        )
    finally:
        stop.set()
        thread.join(5)
        sub.close()
    assert answered.is_set() and got is not None
    assert got.correlation_id == msg_id
    assert bus.deps.epj.open(got) == b"<A/>"


# -- bus messages handled in the pool processes ------------------------------------------------


def test_bus_messages_handled_in_the_pool_processes(bus: Bus) -> None:
    """TIMEBOK_NHN_HANDLERS=0: the pool decrypts and stores, the main process settles; a
    copy with the same MsgId waits for the first and gets the same receipt."""
    bus.worker.stop()
    env = bus.env | {"TIMEBOK_NHN_HANDLERS": "0"}
    bus.worker = WorkerProcess(env, bus.tmp / "worker-pool.log").start()
    req = request("reserve", patient_n=43)
    patient = _patient(req)
    uid = str(uuid.uuid4())
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=15)
    xml = avtale(patient, uid=uid, start=start)
    msg_id = bus.send(xml, "DIALOG_INNBYGGER_AVTALEUTSENDING")
    bus.send(xml, "DIALOG_INNBYGGER_AVTALEUTSENDING", msg_id=msg_id)
    receipts = bus.take(f"{CLINIC}_async", 2)
    for receipt in receipts:
        rec = incoming.parse_any(bus.open(receipt))
        assert isinstance(rec, AppRec) and rec.status is AppRecStatus.OK
    assert [a["uid"] for a in views.appointments(bus.deps, patient.fnr)] == [uid]
    assert bus.inbox(patient.fnr) == 1
    assert bus.quiet(f"{OWN}_async", 1.0) == []  # both settled: nothing left on our queue
