"""Chaos: nothing lost, nothing doubled while workers are killed, the broker and the database
restart, the EPJ simulator is killed, drops AppRecs and delivers replies twice.

Three runs, with no safety net: the portal sends each request exactly once (a few twice on
purpose, as duplicates) and never re-sends one because it went missing.

- RabbitMQ (the production broker; a node and a PostgreSQL cluster of the test's own, so
  their restarts disturb nobody): two workers compete throughout; every booking must settle
  in its expected outcome, 0 lost, 0 EXPIRED (the reply timeout outlasts the run).
- nhn: the same, with the EPJ side on the national bus instead of kombu (AMQP 1.0 on the
  same RabbitMQ node, its rabbitmq_amqp1_0 plugin; every payload signed and encrypted with
  CMS; a test PKI from `timebok certs init`, the topology from `timebok queues declare`,
  the simulator with the clinics' keys).
- Redis: kombu's Redis transport takes a message off the list before it records it as
  unacked, so a worker main process (or Redis) dying in between loses it. The run reports
  those losses as figures, read back from Redis' AOF, and passes only within the bound of
  one message per consuming connection (two per worker main process) per such death.

The short runs (TIMEBOK_CHAOS_BOOKINGS unset: 200 requests) of RabbitMQ and Redis are part
of `make test`; `make chaos` runs the RabbitMQ one with 2,000, `make chaos-nhn` the nhn one
(only there: it takes minutes even with 200). Set
TIMEBOK_CHAOS_SEED to replay a run's choices (the figures print the seed).

"Settled" (the end state every booking must reach) is defined explicitly as: a terminal state
(REJECTED, CANCELLED, FAILED, EXPIRED, INVALID) or CONFIRMED, which is where a reserve, wish or
change_wish rests once the clinic has answered. REQUESTED, SENT, DELIVERED and CANCEL_REQUESTED
are never settled.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import AMQPError
from kombu.exceptions import KombuError, OperationalError
from redis import RedisError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mappers import incoming
from mappers.model import DialogMessage
from tests.chaos import harness as h
from tests.conftest import PG_URL, ROOT
from tests.servers import PgCluster, RabbitNode
from tests.support import fnr, request
from worker import fnr as fnrs
from worker.adapters.registry import with_certificates
from worker.bootstrap import Deps, bootstrap
from worker.constants import REQUESTS_QUEUE, SUBMIT_TASK
from worker.domain.booking import TERMINAL, State, can_move
from worker.entrypoints.app import create_app
from worker.settings import SAMPLE_REGISTRY, Settings

pytestmark = pytest.mark.e2e

SIZE = int(os.environ.get("TIMEBOK_CHAOS_BOOKINGS", "200"))
SEED = int(os.environ.get("TIMEBOK_CHAOS_SEED") or secrets.randbelow(1_000_000))
# Submitted at ~12 a second (within what 2 cores sustain with the chaos going on), never in
# less than 20 s: an overloaded EPJ answers AppRecs late and every late AppRec is a resend.
WINDOW = max(20.0, SIZE / 12)  # seconds over which requests are submitted (and chaos runs)
# Seconds allowed after the last request for everything to settle (a bound on the wait, not
# a target: on a shared 2-core machine the backlog of a large run takes minutes).
SETTLE = 600.0 if SIZE >= 1000 else max(150.0, SIZE * 0.75)
SETTLED = frozenset({*TERMINAL, State.CONFIRMED})
# Short timeouts so dropped AppRecs cause resends within the run (the sim replies after 3.5 s,
# later than the 3 s AppRec timeout) and a killed worker's messages come back within seconds.
TIMEBOK = {
    "apprec_timeout": 3,
    # A reply Redis lost (see _check_transport_losses) expires the booking after this: 30 s
    # keeps the short run within a minute and is well above the slowest reply we see (~20 s).
    "reply_timeout": 30 if SIZE < 1000 else 60,
    "max_resends": 5,
    "visibility_timeout": 10,
    "relay_interval": 1,
    "timeout_check_interval": 1,
    "retry_backoff_max": 4,
    "task_max_retries": 30,
}
# On RabbitMQ nothing may expire: a reply timeout longer than the run makes EXPIRED a failure.
# A booking may not give up either: AppRecs are waited for 10 s (a resend each time one is
# dropped), so that five resends (10 + 20 + ... + 160 s) outlast a slow minute on a shared
# machine; the Redis run keeps 3 s.
RABBIT = TIMEBOK | {"reply_timeout": 3600, "apprec_timeout": 10}
# Connections of one worker main process that BRPOP on Redis: Celery's task consumer and the
# inbound EPJ consumer (each may hold one popped, unrecorded message when the process dies).
CONSUMING_CONNECTIONS = 2
SIM = ["--policy", "random", "--seed", str(SEED), "--delay", "3.5"]
SIM += ["--drop-apprec-rate", "0.05", "--duplicate-rate", "0.05"]
BUS_NAMESPACE = "NHNChaos"  # the national bus' namespace (exchange) on the private node

CLINIC, WISH_CLINIC, VIDEO_CLINIC, OFFLINE_CLINIC = "8090001", "8090010", "8090020", "8090030"
NAMES = {
    CLINIC: "Testlegekontoret",
    WISH_CLINIC: "Helsestasjonen Nord",
    VIDEO_CLINIC: "Video Legesenter",
    OFFLINE_CLINIC: "Frakoblet legekontor",
}
# Kinds of request and their share; cancel / change_wish follow a confirmed reserve / wish.
MIX = {
    "reserve": 0.42,
    "video": 0.10,
    "child": 0.05,
    "wish": 0.12,
    "wish_rejected": 0.04,
    "cancel": 0.12,
    "change_wish": 0.08,
    "invalid": 0.07,
}
FOLLOW_UPS = frozenset({"cancel", "change_wish"})
PORTAL_RETRY_RATE = 0.03  # the portal sends the same request (same request_id) twice
OUTCOMES: dict[str, frozenset[str]] = {
    "reserve": frozenset({"CONFIRMED", "REJECTED", "CANCELLED", "FAILED", "EXPIRED"}),
    "cancel": frozenset({"CANCELLED", "REJECTED", "FAILED", "EXPIRED"}),
    "change_wish": frozenset({"CONFIRMED", "REJECTED", "FAILED", "EXPIRED"}),
    "invalid": frozenset({"INVALID"}),
}
# On RabbitMQ nothing is lost: no booking may give up (FAILED) or expire.
OUTCOMES_RABBIT = {k: v - {"FAILED", "EXPIRED"} for k, v in OUTCOMES.items()}
NOTICE = {
    ("reserve", "CONFIRMED"): "confirmed",
    ("reserve", "REJECTED"): "rejected",
    ("wish", "CONFIRMED"): "confirmed",
    ("wish", "REJECTED"): "rejected",
    ("cancel", "CANCELLED"): "cancel_confirmed",
    ("cancel", "REJECTED"): "cancel_refused",
    ("change_wish", "REJECTED"): "rejected",
}
CONFIRMED_AMONG = text("SELECT id FROM bookings WHERE state = 'CONFIRMED' AND id = ANY(:ids)")
WIRE = re.compile(r"^(\d+) <- (\w+) msg=([0-9a-f]{8}) ", re.MULTILINE)


# -- the portal: submits the requests (and a few twice) -------------------------------------


@dataclass
class Sent:
    """One request the portal submitted."""

    request_id: str
    kind: str
    at: datetime
    target: str | None = None
    copies: int = 1
    patient_n: int = 0  # the patient's number in tests.support.fnr(n)
    identifiable: bool = True  # the patient's fnr is valid (an invalid request gets a notice)
    payload: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Portal:
    """Submits SIZE requests over WINDOW seconds, like the portal, surviving broker outages."""

    settings: Settings
    deps: Deps
    rng: random.Random
    sent: dict[str, Sent] = field(default_factory=dict)
    send_errors: int = 0
    _n: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _last_n: int = 0

    def run(self, stop: threading.Event) -> None:
        """Send every planned request, follow-ups once their target is CONFIRMED."""
        app = create_app(self.settings)
        kinds = self._plan()
        started = time.monotonic()
        for i, kind in enumerate(kinds):
            while time.monotonic() < started + i * WINDOW / SIZE:
                time.sleep(0.01)
            if stop.is_set():
                return
            self._submit(app, kind)

    def _plan(self) -> list[str]:
        kinds = [k for k, share in MIX.items() for _ in range(round(SIZE * share))]
        kinds = (kinds + ["reserve"] * SIZE)[:SIZE]
        self.rng.shuffle(kinds)
        # Follow-ups late in the run have confirmed bookings to refer to.
        return sorted(kinds, key=lambda k: k in FOLLOW_UPS and self.rng.random() < 0.6)

    def _submit(self, app: Any, kind: str) -> None:
        target = self._target(kind) if kind in FOLLOW_UPS else None
        if kind in FOLLOW_UPS and target is None:
            kind = "reserve"  # nothing confirmed to refer to yet
        payload = self._payload(kind, target)
        sent = Sent(payload["request_id"], kind, datetime.now(UTC), target[0] if target else None)
        sent.patient_n = target[1] if target else self._last_n
        sent.identifiable = fnrs.is_valid(payload["patient"]["fnr"])
        sent.payload = payload
        self.sent[sent.request_id] = sent
        self._send(app, sent)
        if self.rng.random() < PORTAL_RETRY_RATE:
            sent.copies += 1
            self._send(app, sent)

    def _payload(self, kind: str, target: tuple[str, int] | None) -> dict[str, Any]:
        n = self._last_n = next(self._n)
        if kind in FOLLOW_UPS:
            assert target is not None
            action = "cancel" if kind == "cancel" else "change_wish"
            return request(
                action, patient_n=target[1], booking_ref=target[0], clinic=_clinic(CLINIC)
            )
        if kind == "video":
            return request(
                "reserve", patient_n=n, clinic=_clinic(VIDEO_CLINIC), appointment_type="video"
            )
        if kind == "child":
            parent = {"fnr": fnr(n + 5_000), "given_name": "Ola", "family_name": "Forelder"}
            requester = parent | {"relation": "parental_responsibility"}
            return request("reserve", patient_n=n, requester=requester)
        if kind in ("wish", "wish_rejected"):
            clinic = WISH_CLINIC if kind == "wish_rejected" else CLINIC
            return request("wish", patient_n=n, clinic=_clinic(clinic))
        if kind == "invalid":
            return _invalid(n, self.rng)
        return request("reserve", patient_n=n)

    def _target(self, kind: str) -> tuple[str, int] | None:
        """A CONFIRMED booking no follow-up refers to yet: (id, patient number)."""
        wanted = ("wish",) if kind == "change_wish" else ("reserve", "video", "child", "wish")
        used = {s.target for s in self.sent.values() if s.target}
        candidates = [s.request_id for s in self.sent.values() if s.kind in wanted]
        candidates = [c for c in candidates if c not in used]
        if not candidates:
            return None
        try:
            with self.deps.store.engine.connect() as conn:
                found = conn.execute(CONFIRMED_AMONG, {"ids": candidates})
                confirmed = sorted(r[0] for r in found)
        except DBAPIError:  # PostgreSQL restarting: no follow-up this time
            return None
        if not confirmed:
            return None
        booking_id = self.rng.choice(confirmed)
        return booking_id, self.sent[booking_id].patient_n

    def _send(self, app: Any, sent: Sent) -> None:
        """send_task until the broker takes it (it may be restarting).

        A send that raised was not taken (on RabbitMQ: not confirmed), so it is sent again;
        a send that returned is never repeated, whatever becomes of it.
        """
        deadline = time.monotonic() + 90
        while True:
            try:
                app.send_task(SUBMIT_TASK, args=[sent.payload], queue=REQUESTS_QUEUE)
                return
            except (OperationalError, KombuError, RedisError, OSError, AMQPError):
                self.send_errors += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _clinic(her_id: str) -> dict[str, str]:
    return {"her_id": her_id, "name": NAMES[her_id]}


def _invalid(n: int, rng: random.Random) -> dict[str, Any]:
    """A request the worker must refuse: bad check digit, offline clinic, unsupported process."""
    how = rng.choice(["check_digit", "offline", "unsupported"])
    if how == "offline":
        return request("reserve", patient_n=n, clinic=_clinic(OFFLINE_CLINIC))
    if how == "unsupported":  # Helsestasjonen Nord takes no slot reservations
        return request("reserve", patient_n=n, clinic=_clinic(WISH_CLINIC))
    req = request("reserve", patient_n=n)
    good = req["patient"]["fnr"]
    req["patient"]["fnr"] = good[:10] + str((int(good[10]) + 1) % 10)
    return req


# -- the chaos monkey -------------------------------------------------------------------------


@dataclass
class Cluster:
    """The broker, workers, beat and the simulator (and PostgreSQL), and what was done to them."""

    redis: h.RedisServer | None
    rabbit: RabbitNode | None
    pg: PgCluster | None
    workers: list[h.Service]
    beat: h.Service
    sim: h.Service
    rng: random.Random
    figures: Counter[str] = field(default_factory=Counter)
    exits: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def chaos(self, stop: threading.Event) -> None:
        """Inject the faults of `_schedule` within WINDOW; restart what died by itself."""
        plan = _schedule(self.rng, rabbit=self.rabbit is not None)
        started = time.monotonic()
        for at, action in plan:
            while time.monotonic() < started + at:
                if stop.wait(0.2):
                    return
                self.supervise()
            getattr(self, f"_{action}")()
        while not stop.wait(0.5):
            self.supervise()

    def _kill_child(self) -> None:
        with self.lock:
            kids = [k for w in self.workers for k in w.children()]
            if kids:
                h.kill_pid(self.rng.choice(kids))
                self.figures["kill -9 pool child"] += 1

    def _kill_main(self) -> None:
        with self.lock:
            worker = self.rng.choice(self.workers)
            worker.kill()
            self.figures["kill -9 worker main process"] += 1
            time.sleep(self.rng.uniform(0, 2))
            worker.start(timeout=90)

    def _restart_broker(self) -> None:
        with self.lock:
            if self.rabbit is not None:
                self.rabbit.kill()
                self.figures["kill -9 + restart RabbitMQ"] += 1
                time.sleep(1.0)
                self.rabbit.start()
            elif self.redis is not None:
                self.redis.kill()
                self.figures["kill -9 + restart Redis"] += 1
                time.sleep(1.0)
                self.redis.start()

    def _restart_pg(self) -> None:
        with self.lock:
            assert self.pg is not None
            self.pg.restart()
            self.figures["PostgreSQL restart (fast shutdown, start)"] += 1

    def _kill_sim(self) -> None:
        with self.lock:
            self.sim.kill()  # holding replies it owes (AppRec sent, reply scheduled)
            self.figures["kill -9 + restart simulator"] += 1
            time.sleep(self.rng.uniform(0, 2))
            self.sim.start(timeout=90)

    def supervise(self) -> None:
        """Processes that died of the chaos (not killed by us) are restarted and counted."""
        with self.lock:
            named = [(f"worker{i + 1}", w) for i, w in enumerate(self.workers)]
            for name, service in (*named, ("beat", self.beat), ("sim", self.sim)):
                if not service.running():
                    rc = service.proc.returncode if service.proc is not None else None
                    self.figures[f"{name} exited by itself (rc {rc}), restarted"] += 1
                    self.exits.append(f"{name} rc {rc}: {service.text()[-2000:]}")
                    service.start(timeout=90)

    def worker_log(self) -> str:
        """The logs of every worker, one after the other."""
        return "\n".join(w.text() for w in self.workers)


def _schedule(rng: random.Random, *, rabbit: bool) -> list[tuple[float, str]]:
    """Pool-child kills every ~WINDOW/7 s, two or more main-process kills, a broker restart;
    on RabbitMQ also a PostgreSQL restart and two simulator kills."""
    plan = [(WINDOW * (i + rng.random()) / 7, "kill_child") for i in range(7)]
    mains = max(2, round(WINDOW / 20))
    plan += [(WINDOW * (i + 0.3 + 0.4 * rng.random()) / mains, "kill_main") for i in range(mains)]
    plan.append((WINDOW * 0.5, "restart_broker"))
    if rabbit:
        plan += [(WINDOW * 0.3, "restart_pg"), (WINDOW * 0.2, "kill_sim")]
        plan.append((WINDOW * 0.75, "kill_sim"))
    return sorted(plan)


# -- the runs ---------------------------------------------------------------------------------


def _services(
    stack: ExitStack, env: dict[str, str], tmp: Path, workers: int, sim_options: list[str] = SIM
) -> tuple[list[h.Service], h.Service, h.Service]:
    """Workers (different hostnames), beat and the simulator, started, stopped at exit."""
    started = [
        h.worker(env, tmp / f"worker{i + 1}.log", concurrency=2, hostname=f"chaos{i + 1}@%h")
        for i in range(workers)
    ]
    beat = h.beat(env, tmp / "beat.log", tmp / "beat-schedule")
    sim = h.simulator(env, tmp / "sim.log", *sim_options)
    for service in (*started, beat, sim):
        stack.callback(service.stop)
        service.start(timeout=90)
    return started, beat, sim


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Settings, Deps]]:
    with ExitStack() as stack:
        redis = h.RedisServer(tmp_path / "redis").start()
        stack.callback(redis.stop)
        schema = stack.enter_context(h.private_schema("timebok_chaos"))
        env = h.timebok_env(redis.url(), schema, **TIMEBOK)
        workers, beat, sim = _services(stack, env, tmp_path, workers=1)
        settings = Settings(
            broker_url=redis.url(), database_url=PG_URL, database_schema=schema, **TIMEBOK
        )
        deps = bootstrap(settings)
        stack.callback(deps.store.dispose)
        world = Cluster(redis, None, None, workers, beat, sim, random.Random(SEED))
        yield world, settings, deps


@pytest.fixture
def rabbit_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Settings, Deps]]:
    with ExitStack() as stack:
        rabbit = RabbitNode().start()
        stack.callback(rabbit.stop)
        pg = PgCluster().start()
        stack.callback(pg.stop)
        schema = stack.enter_context(h.private_schema("timebok_chaos", pg.url()))
        env = h.timebok_env(rabbit.url(), schema, database_url=pg.url(), **RABBIT)
        workers, beat, sim = _services(stack, env, tmp_path, workers=2)
        settings = Settings(
            broker_url=rabbit.url(), database_url=pg.url(), database_schema=schema, **RABBIT
        )
        deps = bootstrap(settings)
        stack.callback(deps.store.dispose)
        world = Cluster(None, rabbit, pg, workers, beat, sim, random.Random(SEED))
        yield world, settings, deps


@pytest.fixture
def nhn_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Settings, Deps]]:
    """The RabbitMQ cluster with the EPJ side on the national bus (AMQP 1.0 + CMS)."""
    with ExitStack() as stack:
        rabbit = RabbitNode(plugins=("rabbitmq_amqp1_0",)).start()
        stack.callback(rabbit.stop)
        pg = PgCluster().start()
        stack.callback(pg.stop)
        schema = stack.enter_context(h.private_schema("timebok_chaos", pg.url()))
        registry, pki, keys = _bus_parties(tmp_path)
        bus = {
            "epj_transport": "nhn",
            "epj_broker_url": f"amqp://guest:guest@127.0.0.1:{rabbit.port}/{BUS_NAMESPACE}",
            **keys,
        }
        env = h.timebok_env(rabbit.url(), schema, registry, database_url=pg.url(), **RABBIT, **bus)
        _timebok(env, "queues", "declare")
        sim = [*SIM, "--keys", str(pki)]
        workers, beat, simulator = _services(stack, env, tmp_path, workers=2, sim_options=sim)
        # The test itself only submits (Celery) and reads the store: no bus transport here.
        settings = Settings(
            broker_url=rabbit.url(), database_url=pg.url(), database_schema=schema, **RABBIT
        )
        deps = bootstrap(settings)
        stack.callback(deps.store.dispose)
        world = Cluster(None, rabbit, pg, workers, beat, simulator, random.Random(SEED))
        yield world, settings, deps


def _bus_parties(tmp: Path) -> tuple[Path, Path, dict[str, str]]:
    """A test PKI from `timebok certs init` for us and every clinic of the sample registry:
    the registry naming the clinics' certificates, the PKI folder, our key settings."""
    registry, pki = tmp / "registry.toml", tmp / "pki"
    registry.write_text(SAMPLE_REGISTRY.read_text("utf-8"), "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBOK_")}
    made = _timebok(env | {"TIMEBOK_REGISTRY_FILE": str(registry)}, "certs", "init", str(pki))
    registry.write_text(with_certificates(registry.read_text("utf-8"), pki), "utf-8")
    own = {k.removeprefix("TIMEBOK_").lower(): v for k, v in made["settings"].items()}
    return registry, pki, own


def _timebok(env: dict[str, str], *verb: str) -> Any:
    """Run a `timebok` verb with --json to completion; its answer."""
    done = subprocess.run(
        [sys.executable, "-m", "worker.entrypoints.cli", *verb, "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"timebok {' '.join(verb)}: {done.stderr[-2000:]}"
    return json.loads(done.stdout)


@pytest.mark.timeout(int(WINDOW + SETTLE + 240))
def test_nothing_lost_on_rabbitmq(rabbit_cluster: tuple[Cluster, Settings, Deps]) -> None:
    _nothing_lost(*rabbit_cluster, "RabbitMQ")


@pytest.mark.on_request  # about four minutes even for 200 requests: `make chaos-nhn`
@pytest.mark.timeout(int(WINDOW + SETTLE + 240))
def test_nothing_lost_on_nhn(nhn_cluster: tuple[Cluster, Settings, Deps]) -> None:
    _nothing_lost(*nhn_cluster, "RabbitMQ, the EPJ side on nhn (AMQP 1.0, CMS)")


def _nothing_lost(world: Cluster, settings: Settings, deps: Deps, broker: str) -> None:
    portal, figures = _run(world, settings, deps, broker)
    facts = _facts(deps)
    figures = _check(facts, portal.sent, world.sim.text(), OUTCOMES_RABBIT) | figures
    figures["requests lost"] = 0  # _check_accounted: every request has its booking
    _report(world, figures)


@pytest.mark.timeout(int(WINDOW + SETTLE + 240))
def test_redis_losses_within_the_bound(redis_cluster: tuple[Cluster, Settings, Deps]) -> None:
    world, settings, deps = redis_cluster
    portal, figures = _run(world, settings, deps, "Redis")
    facts = _facts(deps)
    assert world.redis is not None
    losses, lost_requests = _check_transport_losses(
        facts, world, settings.inbound_queue, set(portal.sent)
    )
    sent = {k: v for k, v in portal.sent.items() if k not in lost_requests}
    figures = _check(facts, sent, world.sim.text(), OUTCOMES, portal.sent) | losses | figures
    _report(world, figures)


def _run(
    world: Cluster, settings: Settings, deps: Deps, broker: str
) -> tuple[Portal, dict[str, Any]]:
    """Submit everything while the faults go on; wait until settled (or give up on it)."""
    print(f"\nchaos on {broker}: {SIZE} requests over {WINDOW:.0f} s, seed {SEED}")
    portal = Portal(settings, deps, random.Random(SEED + 1))
    stop = threading.Event()
    monkey = threading.Thread(target=world.chaos, args=(stop,), daemon=True)
    started = time.monotonic()
    monkey.start()
    try:
        portal.run(stop)
        submitted = time.monotonic() - started
        settled = _settle(deps, portal, world)
        _quiesce(deps)
    finally:
        stop.set()
        monkey.join(120)
    for service in (world.sim, world.beat, *world.workers):
        service.stop()
    return portal, dict(world.figures) | {
        "requests submitted": len(portal.sent),
        "portal sent twice (same request_id)": sum(s.copies - 1 for s in portal.sent.values()),
        "portal send errors (broker down), sent again": portal.send_errors,
        "worker starts": sum(w.starts for w in world.workers),
        "seconds to submit": round(submitted, 1),
        "seconds after the last request until all settled": settled,
    }


def _report(world: Cluster, figures: dict[str, Any]) -> None:
    figures |= _log_figures(world.worker_log(), world.sim.text())
    print("\n".join(f"  {k:<56} {v}" for k, v in figures.items()))
    for exit_ in world.exits:
        print(f"--- a process exited by itself ---\n{exit_}")
    assert not world.exits, "a process died of the chaos instead of riding it out"
    worker_log = world.worker_log()
    assert "Unrecoverable error" not in worker_log  # Celery's last words before it exits
    assert _count(worker_log, "inbound handler failed") == 0  # a bug in our handlers


def _settle(deps: Deps, portal: Portal, world: Cluster) -> float | str:
    """Wait until every booking that exists is settled and the requests stop arriving.

    Returns the seconds it took, or (Redis: a lost request never gets a booking) a note
    that requests are missing; the checks then say which and why.
    """
    ids = list(portal.sent)
    unsettled = [s.value for s in State if s not in SETTLED]
    started = time.monotonic()
    last: list[int] = []

    def done() -> bool:
        world.supervise()
        try:
            with deps.store.engine.connect() as conn:
                have = conn.execute(
                    text("SELECT count(*) FROM bookings WHERE id = ANY(:ids)"), {"ids": ids}
                ).scalar_one()
                open_ = conn.execute(
                    text("SELECT count(*) FROM bookings WHERE state = ANY(:s)"), {"s": unsettled}
                ).scalar_one()
        except DBAPIError:  # PostgreSQL restarting
            return False
        last[:] = [have, open_]
        if open_ == 0 and have < len(ids) and world.redis is not None:
            return _only_lost_missing(deps, ids, world.redis)
        return have == len(ids) and open_ == 0

    try:
        h.poll(done, SETTLE, "every booking settled", interval=0.5)
    except TimeoutError:
        if world.redis is None or not last or last[1] != 0:
            pytest.fail(_stuck_report(deps, ids))
        return f"{len(ids) - last[0]} requests without a booking after {SETTLE:.0f} s"
    return round(time.monotonic() - started, 1)  # Redis: lost requests never arrive


def _only_lost_missing(deps: Deps, ids: list[str], redis: h.RedisServer) -> bool:
    """Redis: every request still without a booking is one the AOF shows Redis lost."""
    with deps.store.engine.connect() as conn:
        found = conn.execute(text("SELECT id FROM bookings WHERE id = ANY(:ids)"), {"ids": ids})
        have = {r[0] for r in found}
    lost = h.popped_never_recorded(redis.history(), {REQUESTS_QUEUE})
    return {i for i in ids if i not in have} <= {_request_id(m) for m in lost}


def _quiesce(deps: Deps) -> None:
    """Let late duplicates (second replies to resent messages) arrive and be handled."""
    last: tuple[int, int] = (-1, -1)

    def still() -> bool:
        nonlocal last
        try:
            with deps.store.engine.connect() as conn:
                now = (
                    conn.execute(text("SELECT count(*) FROM messages")).scalar_one(),
                    conn.execute(
                        text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                    ).scalar_one(),
                )
        except DBAPIError:
            return False
        same, last = now == last and now[1] == 0, now
        return same

    with suppress(TimeoutError):
        h.poll(still, 30, "quiet", interval=4.0)


def _stuck_report(deps: Deps, ids: list[str]) -> str:
    with deps.store.engine.connect() as conn:
        have = {r[0] for r in conn.execute(text("SELECT id FROM bookings"))}
        states = conn.execute(text("SELECT state, count(*) FROM bookings GROUP BY state")).all()
        stuck = conn.execute(
            text("SELECT id, state FROM bookings WHERE state = ANY(:s) LIMIT 5"),
            {"s": [s.value for s in State if s not in SETTLED]},
        ).all()
    missing = [i for i in ids if i not in have]
    return (
        f"not settled in {SETTLE:.0f} s: states {states}, e.g. {stuck}; "
        f"{len(missing)} requests without a booking {missing[:5]}"
    )


# -- the checks -------------------------------------------------------------------------------


@dataclass
class Facts:
    """Everything the store holds after the run."""

    bookings: dict[str, dict[str, Any]]
    history: dict[str, list[tuple[str | None, str, datetime]]]
    messages: list[dict[str, Any]]
    outbox: Counter[int]
    unpublished: int
    notifications: list[tuple[str | None, str, str]]
    dead_letters: list[tuple[str, str | None, str]]


def _facts(deps: Deps) -> Facts:
    with deps.store.engine.connect() as conn:
        bookings = {
            r.id: dict(r._mapping)
            for r in conn.execute(
                text("SELECT id, action, state, resends, target_id, created_at FROM bookings")
            )
        }
        history: dict[str, list[tuple[str | None, str, datetime]]] = defaultdict(list)
        for r in conn.execute(
            text("SELECT booking_id, source, target, at FROM booking_history ORDER BY id")
        ):
            history[r.booking_id].append((r.source, r.target, r.at))
        messages = [
            dict(r._mapping)
            for r in conn.execute(
                text(
                    "SELECT id, msg_id, direction, booking_id, msg_type, function, "
                    "ref_to_parent, status FROM messages"
                )
            )
        ]
        outbox = Counter(
            int(r.message_id) for r in conn.execute(text("SELECT message_id FROM outbox"))
        )
        unpublished = conn.execute(
            text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        ).scalar_one()
        notes = [
            (r.booking_id, r.event, r.dedupe_key)
            for r in conn.execute(text("SELECT booking_id, event, dedupe_key FROM notifications"))
        ]
        dead = [
            (r.kind, r.booking_id, r.reason)
            for r in conn.execute(text("SELECT kind, booking_id, reason FROM dead_letters"))
        ]
    return Facts(bookings, history, messages, outbox, int(unpublished), notes, dead)


def _check(
    facts: Facts,
    requests: dict[str, Sent],
    sim_log: str,
    outcomes: dict[str, frozenset[str]],
    submitted: dict[str, Sent] | None = None,
) -> dict[str, Any]:
    """Every check over the requests that reached the broker (`submitted`: all of them)."""
    figures: dict[str, Any] = {}
    figures |= _check_accounted(facts, requests, submitted or requests)
    figures |= _check_settled(facts, requests, outcomes)
    figures |= _check_one_msg_id(facts, requests)
    figures |= _check_wire(facts, sim_log)
    figures |= _check_notifications(facts, requests)
    figures |= _check_receipts(facts)
    figures |= _check_dead_letters(facts, requests)
    return figures


def _kind(sent: Sent) -> str:
    return {"video": "reserve", "child": "reserve", "wish_rejected": "wish"}.get(
        sent.kind, sent.kind
    )


def _check_accounted(
    facts: Facts, requests: dict[str, Sent], submitted: dict[str, Sent]
) -> dict[str, Any]:
    missing = [i for i in requests if i not in facts.bookings]
    extra = [i for i in facts.bookings if i not in submitted]
    assert not missing, f"{len(missing)} submitted requests have no booking: {missing[:5]}"
    assert not extra, f"{len(extra)} bookings nobody asked for: {extra[:5]}"
    return {"bookings": len(facts.bookings), "bookings unaccounted for": len(missing)}


def _check_settled(
    facts: Facts, requests: dict[str, Sent], outcomes: dict[str, frozenset[str]]
) -> dict[str, Any]:
    slowest = 0.0
    for booking_id, sent in requests.items():
        row = facts.bookings[booking_id]
        kind = _kind(sent)
        allowed = outcomes.get(kind, outcomes["reserve"])
        assert row["state"] in allowed, f"{kind} {booking_id} ended {row['state']}"
        path = [target for _source, target, _at in facts.history[booking_id]]
        for a, b in itertools.pairwise(path):
            assert can_move(State(a), State(b)), f"{booking_id}: illegal {a} -> {b} in {path}"
        first = next(at for _s, target, at in facts.history[booking_id] if target in SETTLED)
        slowest = max(slowest, (first - sent.at).total_seconds())
        if kind == "cancel" and row["state"] == "CANCELLED":
            assert facts.bookings[str(sent.target)]["state"] == "CANCELLED", booking_id
    states = Counter(str(b["state"]) for b in facts.bookings.values())
    return {
        "bookings by state": dict(sorted(states.items())),
        "max seconds from submit to settled": round(slowest, 1),
    }


def _business_out(facts: Facts) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in facts.messages:
        if m["direction"] == "out" and m["msg_type"] != "APPREC":
            out[str(m["booking_id"])].append(m)
    return out


def _check_one_msg_id(facts: Facts, requests: dict[str, Sent]) -> dict[str, Any]:
    out = _business_out(facts)
    resends = 0
    for booking_id, row in facts.bookings.items():
        sent = out.get(booking_id, [])
        if row["state"] == "INVALID":
            assert not sent, f"invalid booking {booking_id} sent {len(sent)} messages"
            continue
        by_function = Counter(m["function"] for m in sent)
        assert len(sent) == 1 and set(by_function.values()) == {1}, (
            f"booking {booking_id}: {len(sent)} MsgIds {[m['msg_id'] for m in sent]}"
        )
        [message] = sent
        assert facts.outbox[message["id"]] == 1 + row["resends"], (
            f"booking {booking_id}: {facts.outbox[message['id']]} outbox rows, "
            f"{row['resends']} resends"
        )
        resends += row["resends"]
    assert facts.unpublished == 0, f"{facts.unpublished} outbox rows never published"
    return {"resends (same MsgId)": resends}


def _check_wire(facts: Facts, sim_log: str) -> dict[str, Any]:
    """What the simulator received: only MsgIds we stored, one per booking, however often."""
    by_prefix: dict[str, set[str]] = defaultdict(set)
    owner: dict[str, str] = {}
    for booking_id, sent in _business_out(facts).items():
        for m in sent:
            by_prefix[m["msg_id"][:8]].add(m["msg_id"])
            owner[m["msg_id"]] = booking_id
    seen = Counter(prefix for _her, _function, prefix in WIRE.findall(sim_log))
    unknown = [p for p in seen if p not in by_prefix]
    assert not unknown, f"the simulator received MsgIds never stored: {unknown[:5]}"
    per_booking: dict[str, set[str]] = defaultdict(set)
    for prefix in seen:
        for msg_id in by_prefix[prefix]:
            per_booking[owner[msg_id]].add(msg_id)
    doubled = {b: ids for b, ids in per_booking.items() if len(ids) > 1}
    assert not doubled, f"bookings seen on the wire with several MsgIds: {list(doubled)[:5]}"
    answered = {
        b
        for b, row in facts.bookings.items()
        if row["state"] in ("CONFIRMED", "REJECTED", "CANCELLED") and b in owner.values()
    }
    unseen = answered - set(per_booking)
    assert not unseen, f"answered, yet never seen by the simulator: {sorted(unseen)[:5]}"
    total = sum(seen.values())
    return {
        "business messages received by the simulator": total,
        "  of which repeats of a MsgId already received": total - len(seen),
    }


def _check_notifications(facts: Facts, requests: dict[str, Sent]) -> dict[str, Any]:
    per = Counter((b, e) for b, e, _key in facts.notifications)
    doubled = {k: n for k, n in per.items() if n > 1}
    assert not doubled, f"more than one notification for {list(doubled.items())[:5]}"
    for booking_id, sent in requests.items():
        row = facts.bookings[booking_id]
        kind, state = _kind(sent), row["state"]
        expected = NOTICE.get((kind, state))
        if state == "CANCELLED" and kind != "cancel":
            expected = "confirmed"  # the cancellation's notice sits on the cancel booking
        if state in ("FAILED", "EXPIRED"):
            expected = "undeliverable" if state == "FAILED" else "expired"
        if kind == "change_wish" and state == "CONFIRMED":
            assert per[(sent.target, "changed")] == 1, f"change {booking_id}: no 'changed'"
            continue
        if state == "INVALID":
            expected = "invalid" if sent.identifiable else None
        if expected is not None:
            assert per[(booking_id, expected)] == 1, f"{kind} {booking_id} {state}: no {expected}"
    return {"notifications": len(facts.notifications), "notifications doubled": len(doubled)}


def _check_receipts(facts: Facts) -> dict[str, Any]:
    """Every business message we received got exactly one AppRec (re-sent, never re-made)."""
    receipts = Counter(
        m["ref_to_parent"]
        for m in facts.messages
        if m["direction"] == "out" and m["msg_type"] == "APPREC"
    )
    inbound = [m for m in facts.messages if m["direction"] == "in" and m["msg_type"] != "APPREC"]
    for m in inbound:
        assert receipts[m["msg_id"]] == 1, f"{receipts[m['msg_id']]} AppRecs for {m['msg_id']}"
    republished = sum(
        n - 1
        for m in facts.messages
        if m["msg_type"] == "APPREC" and m["direction"] == "out"
        for n in [facts.outbox[m["id"]]]
    )
    return {
        "replies received (distinct MsgIds)": len(inbound),
        "AppRecs received (distinct MsgIds)": sum(
            1 for m in facts.messages if m["direction"] == "in" and m["msg_type"] == "APPREC"
        ),
        "our AppRecs re-sent for redelivered replies": republished,
    }


def _check_transport_losses(
    facts: Facts, world: Cluster, inbound: str, submitted: set[str]
) -> tuple[dict[str, Any], set[str]]:
    """What Redis lost, as figures, and within the bound of kombu's BRPOP window.

    The AOF shows every message popped off our queues that never reached the unacked hash: a
    worker main process (or Redis) died between the two. One BRPOP is outstanding per
    consuming connection, and the run's one worker has two (Celery's task consumer and the
    inbound EPJ consumer), so at most two per death. Nothing re-sends what was lost: a lost
    request has no booking (unless the portal happened to send it twice), a lost business
    reply leaves its booking to expire, a lost AppRec is covered by a resend. Any other
    missing booking or EXPIRED one fails the run. Returns the figures and the requests lost.
    """
    assert world.redis is not None
    lost = h.popped_never_recorded(world.redis.history(), {REQUESTS_QUEUE, inbound})
    deaths = world.figures["kill -9 worker main process"] + world.figures["kill -9 + restart Redis"]
    requests = {_request_id(m) for m in lost if m["queue"] == REQUESTS_QUEUE}
    no_booking = {r for r in requests if r not in facts.bookings}
    # Requests without a booking that the AOF does not show in that window: lost some other
    # way (reported, and counted against the same bound).
    elsewhere = {r for r in submitted if r not in facts.bookings} - no_booking
    total = len(lost) + len(elsewhere)
    bound = deaths * CONSUMING_CONNECTIONS
    assert total <= bound, f"{total} messages lost in {deaths} deaths: {lost} {elsewhere}"
    replies = {_answered(m) for m in lost if m["queue"] == inbound} - {None}
    expired = {b for b, row in facts.bookings.items() if row["state"] == "EXPIRED"}
    sent = {b: m[0]["msg_id"] for b, m in _business_out(facts).items()}
    unexplained = [b for b in expired if sent.get(b) not in replies]
    assert not unexplained, f"EXPIRED without a lost reply: {unexplained}"
    assert not [b for b, row in facts.bookings.items() if row["state"] == "FAILED"]
    figures = {
        "deaths that can lose a message (main process, Redis)": deaths,
        "messages Redis lost in kombu's BRPOP window (AOF)": len(lost),
        "  requests lost (no booking; nobody re-sends them)": len(no_booking),
        "  requests lost, booked from the portal's duplicate": len(requests - no_booking),
        "  replies lost (booking EXPIRED)": len(replies),
        "  AppRecs lost (covered by a resend)": len(lost) - len(requests) - len(replies),
        "requests lost outside that window (no booking, not in the AOF window)": len(elsewhere),
        f"bound: at most {CONSUMING_CONNECTIONS} lost messages per such death": f"met ({bound})",
    }
    return figures, no_booking | elsewhere


def _request_id(message: dict[str, Any]) -> str:
    args = json.loads(base64.b64decode(message["body"]))[0]
    return str(args[0].get("request_id")) if args and isinstance(args[0], dict) else "-"


def _answered(message: dict[str, Any]) -> str | None:
    """The MsgId a lost business reply answered (None for a lost AppRec)."""
    doc = incoming.parse_any(base64.b64decode(message["body"]))
    if isinstance(doc, DialogMessage) and doc.envelope.conversation is not None:
        return doc.envelope.conversation.ref_to_parent
    return None


def _check_dead_letters(facts: Facts, requests: dict[str, Sent]) -> dict[str, Any]:
    invalid = {i for i, s in requests.items() if s.kind == "invalid"}
    kinds = Counter(k for k, _b, _r in facts.dead_letters)
    unexpected = [d for d in facts.dead_letters if d[0] != "request" or d[1] not in invalid]
    assert not unexpected, f"unexpected dead letters: {unexpected[:5]}"
    per_booking = Counter(b for _k, b, _r in facts.dead_letters)
    assert all(per_booking[i] == 1 for i in invalid), "each invalid request: one dead letter"
    return {"dead letters": dict(kinds)}


def _log_figures(worker_log: str, sim_log: str) -> dict[str, Any]:
    stats = re.findall(r"epj-sim: stopped \((.*)\)", sim_log)
    totals: Counter[str] = Counter()
    for line in stats:
        for part in line.split(", "):
            key, _, value = part.partition("=")
            with suppress(ValueError):
                totals[key] += int(value)
    return {
        "sim: AppRecs dropped": totals["apprec_dropped"],
        "sim: replies delivered twice": sim_log.count(" (x2)"),
        "sim: documents handled": totals["handled"],
        "worker: duplicate messages suppressed (by MsgId)": _count(
            worker_log, "duplicate suppressed"
        ),
        "worker: duplicate requests suppressed (by request_id)": _count(
            worker_log, "duplicate request suppressed"
        ),
    }


def _count(log: str, msg: str) -> int:
    return log.count(f'"msg": "{msg}"')
