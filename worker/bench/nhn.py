"""The bench on the national bus: the same drains as kombu's, over AMQP 1.0 with CMS.

A second private stack (Redis DB, PostgreSQL schema, a RabbitMQ vhost, a test PKI) and a
worker started with TIMEBOK_EPJ_TRANSPORT=nhn. The clinic end seals its confirmations
before the clock starts and opens our documents after it stops, so only the worker's work
is timed, as in the kombu drains. Rates come from the database's timestamps (published_at,
the notification's created_at) like theirs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from mappers import incoming
from mappers.model import DialogMessage
from worker.adapters import crypto
from worker.adapters.registry import Registry, with_certificates
from worker.adapters.transports.base import Delivery, Outcome
from worker.bench.data import CLINIC, PORTAL, booking_request, confirmation
from worker.bench.env import BenchWorker, bench_worker, pg_schema, redis_db
from worker.bench.rig import WARMUP, Rig, WorkerCpu
from worker.bench.run import BenchError, Drained, latency_ms, per_second, say
from worker.settings import DEFAULT_DATA_DIR, Settings

NAMESPACE = "NHNBench"


@dataclass
class _Certs:  # not frozen: crypto.ClinicCertificates has plain attributes
    her_id: str
    signing_cert: Path | None
    encryption_cert: Path | None


def _ctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise BenchError("the nhn figures need rabbitmqctl (a private RabbitMQ vhost)")
    subprocess.run([ctl, "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this run, deleted afterwards."""
    name = f"timebok-bench-{uuid.uuid4().hex[:10]}"
    _ctl("add_vhost", name)
    try:
        _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        _ctl("delete_vhost", name)


@contextmanager
def nhn_stack(settings: Settings, n: int, amqp_host: str = "127.0.0.1") -> Iterator[NhnRig]:
    """A warmed-up NhnRig on a private Redis DB, schema, vhost and PKI."""
    from worker.adapters.pki import PkiParty, make_test_pki
    from worker.adapters.topology import declare
    from worker.adapters.transports.nhn import BusAddress

    with ExitStack() as stack:
        broker = stack.enter_context(redis_db(settings.broker_url))
        database, schema = stack.enter_context(pg_schema(settings.database_url))
        host = stack.enter_context(vhost())
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="timebok-bench-")))
        registry = Registry.load(settings.registry_file)
        parties = [PkiParty(settings.own_her_id, settings.own_name)]
        parties += [PkiParty(c.her_id, c.name) for c in registry.clinics]
        make_test_pki(folder / "pki", parties)
        text = Path(settings.registry_file).read_text(encoding="utf-8")
        (folder / "registry.toml").write_text(with_certificates(text, folder / "pki"), "utf-8")
        url = f"amqp://guest:guest@{amqp_host}:5672/{NAMESPACE}?vhost={host}"
        bus = BusAddress.parse(url)
        declare(bus.amqp091_url(), bus.namespace, [p.her_id for p in parties])
        own, pki = settings.own_her_id, folder / "pki"
        cfg = settings.model_copy(
            update={
                "broker_url": broker,
                "epj_transport": "nhn",
                "epj_broker_url": url,
                "database_url": database,
                "database_schema": schema,
                "registry_file": folder / "registry.toml",
                "signing_key": crypto.key_path(pki, own, crypto.SIGNING),
                "signing_cert": crypto.cert_path(pki, own, crypto.SIGNING),
                "encryption_key": crypto.key_path(pki, own, crypto.ENCRYPTION),
                "encryption_cert": crypto.cert_path(pki, own, crypto.ENCRYPTION),
            }
        )
        log = DEFAULT_DATA_DIR.resolve() / "bench-worker-nhn.log"
        worker = stack.enter_context(bench_worker(cfg, log, nhn_env(cfg)))
        rig = NhnRig(cfg, worker, pki, timeout=30 + n / 20)
        stack.callback(rig.close)
        rig.warm_up()
        yield rig


def nhn_env(cfg: Settings) -> dict[str, str]:
    """What the nhn worker reads on top of the kombu bench worker's environment."""
    env = {"TIMEBOK_EPJ_TRANSPORT": "nhn"}
    names = ("signing_key", "signing_cert", "encryption_key", "encryption_cert")
    # The bench's own TIMEBOK_NHN_CREDIT / _HANDLERS reach the worker: each can be measured.
    for name in (*names, "nhn_credit", "nhn_handlers"):
        env[f"TIMEBOK_{name.upper()}"] = str(getattr(cfg, name))
    return env


class NhnRig(Rig):
    """Rig's drains with the clinic at the other end of the bus (its keys, our certs)."""

    def __init__(self, cfg: Settings, worker: BenchWorker, pki: Path, timeout: float) -> None:
        from worker.adapters.transports.cms import CmsProtection
        from worker.adapters.transports.nhn import NhnTransport

        super().__init__(cfg, worker, timeout)
        portal = _Certs(
            PORTAL.her_id,
            crypto.cert_path(pki, PORTAL.her_id, crypto.SIGNING),
            crypto.cert_path(pki, PORTAL.her_id, crypto.ENCRYPTION),
        )

        def lookup(her_id: str) -> crypto.ClinicCertificates | None:
            return portal if her_id == portal.her_id else None

        keys = {CLINIC.her_id: crypto.load_keys_from_dir(pki, CLINIC.her_id)}
        self.clinic = NhnTransport(cfg.epj_url, CmsProtection(keys, crypto.CertificateBook(lookup)))

    def close(self) -> None:
        """Release connections."""
        self.clinic.close()
        self.deps.epj.close()
        super().close()

    def warm_up(self) -> None:
        """A few bookings and replies through the bus; also waits until the worker is up."""
        say("waiting for the nhn worker (warm-up)")
        payloads = [booking_request(i) for i in range(WARMUP)]
        self._send_requests(payloads)
        self._published_n([str(p["request_id"]) for p in payloads], 90)
        docs = self._take_docs(WARMUP)
        self._reply(docs)
        self._notified_n([_uid(d) for d in docs], 90)
        self._take_deliveries(WARMUP)  # our AppRecs

    def outbound(self, n: int) -> Drained:
        """N pre-enqueued requests -> N documents sealed and on the clinic's queue."""
        payloads = [booking_request(i) for i in range(n)]
        self.worker.freeze()
        self._send_requests(payloads)
        cpu = WorkerCpu(self.worker, self.worker.cpu_seconds(), self.worker.thaw())
        done = self._published_n([str(p["request_id"]) for p in payloads])
        used = cpu(n)
        docs = self._take_docs(n)
        rate = per_second(list(done.values()))
        say(f"nhn outbound: {n} bookings, {rate:.0f}/s, worker CPU {used:.2f} ms each")
        return Drained(rate, latency_ms(done, cpu.thawed), docs, used)

    def inbound(self, docs: list[DialogMessage]) -> Drained:
        """N sealed replies (05) waiting -> N inbox notifications (and N receipts back)."""
        now = datetime.now(UTC)
        messages = [self.clinic.message(confirmation(doc, now)) for doc in docs]
        self.worker.freeze()
        for message in messages:
            self.clinic.send(message.address, message)
        cpu = WorkerCpu(self.worker, self.worker.cpu_seconds(), self.worker.thaw())
        done = self._notified_n([_uid(d) for d in docs])
        used = cpu(len(docs))
        self._take_deliveries(len(docs))
        rate = per_second(list(done.values()))
        say(f"nhn inbound: {len(docs)} replies, {rate:.0f}/s, worker CPU {used:.2f} ms each")
        return Drained(rate, latency_ms(done, cpu.thawed), [], used)

    def _reply(self, docs: list[DialogMessage]) -> None:
        now = datetime.now(UTC)
        for doc in docs:
            self.clinic.publish(confirmation(doc, now))

    def _published_n(self, ids: list[str], timeout: float | None = None) -> dict[str, float]:
        """Until every booking's document is published (the database says so); when."""
        from worker.adapters.store.tables import MessageRow, OutboxRow

        count = (
            select(func.count())
            .select_from(OutboxRow)
            .join(MessageRow, OutboxRow.message_id == MessageRow.id)
            .where(MessageRow.booking_id.in_(ids), OutboxRow.published_at.is_not(None))
        )

        def all_out() -> bool:
            with self.deps.store.transaction() as s:
                return int(s.scalar(count) or 0) >= len(ids)

        self._wait(all_out, f"{len(ids)} documents published on the bus", timeout)
        return self._published(ids)

    def _notified_n(self, ids: list[str], timeout: float | None = None) -> dict[str, float]:
        """Until every booking's inbox notification is written; when each was."""
        from worker.adapters.store.tables import NotificationRow

        count = select(func.count()).where(NotificationRow.booking_id.in_(ids))

        def all_in() -> bool:
            with self.deps.store.transaction() as s:
                return int(s.scalar(count) or 0) >= len(ids)

        self._wait(all_in, f"{len(ids)} inbox notifications", timeout)
        return self._notified(ids)

    def _take_deliveries(self, n: int) -> list[Delivery]:
        got: list[Delivery] = []

        def keep(delivery: Delivery) -> Outcome:
            got.append(delivery)
            return Outcome.ACCEPT

        sub = self.clinic.subscribe([f"{CLINIC.her_id}_async"], keep)
        try:
            deadline = time.monotonic() + self.timeout
            while len(got) < n and time.monotonic() < deadline:
                sub.drain(0.2)
        finally:
            sub.close()
        if len(got) < n:
            raise BenchError(f"only {len(got)} of {n} messages on the clinic's bus queue")
        return got

    def _take_docs(self, n: int) -> list[DialogMessage]:
        """n documents off the clinic's queue, each decrypted, verified, parsed, validated."""
        docs = []
        for delivery in self._take_deliveries(n):
            doc = incoming.parse_any(self.clinic.open(delivery))
            if not isinstance(doc, DialogMessage):
                raise BenchError("the clinic's bus queue holds something other than a request")
            docs.append(doc)
        return docs


def _uid(doc: DialogMessage) -> str:
    if doc.event is None:
        raise BenchError("a reservation without its slot")
    return doc.event.uid


def nhn_scenarios(
    rig: NhnRig, kombu: Rig, n: int, rounds: int, kombu_figures: bool = False
) -> dict[str, float]:
    """nhn outbound and inbound drains, `rounds` times, the best of each, each right after
    the same kombu drain: the ratios divide by those kombu rates (`kombu_figures`: they are
    also the results' outbound / inbound figures)."""
    best: dict[str, Drained] = {}

    def keep(name: str, drained: Drained) -> Drained:
        best[name] = max(best.get(name, drained), drained, key=_rate)
        return drained

    for _ in range(rounds):
        out = keep("kombu_out", kombu.outbound(n))
        bus_out = keep("nhn_out", rig.outbound(n))
        keep("kombu_in", kombu.inbound(out.docs))
        keep("nhn_in", rig.inbound(bus_out.docs))
    results = {
        "nhn_outbound_per_s": best["nhn_out"].rate,
        "nhn_inbound_per_s": best["nhn_in"].rate,
        "nhn_outbound_worker_cpu_ms": best["nhn_out"].cpu_ms,
        "nhn_inbound_worker_cpu_ms": best["nhn_in"].cpu_ms,
        "nhn_outbound_ratio": best["nhn_out"].rate / best["kombu_out"].rate,
        "nhn_inbound_ratio": best["nhn_in"].rate / best["kombu_in"].rate,
        "nhn_kombu_outbound_per_s": best["kombu_out"].rate,
        "nhn_kombu_inbound_per_s": best["kombu_in"].rate,
    }
    if kombu_figures:
        results["outbound_per_s"] = best["kombu_out"].rate
        results["inbound_per_s"] = best["kombu_in"].rate
        results["outbound_worker_cpu_ms"] = best["kombu_out"].cpu_ms
        results["inbound_worker_cpu_ms"] = best["kombu_in"].cpu_ms
    return results


def _rate(drained: Drained) -> float:
    return drained.rate
