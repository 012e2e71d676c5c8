"""`timebok demo`: the whole booking flow on embedded defaults, with real processes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import redis

from mappers.model import Person
from worker import fnr as fnrs
from worker.adapters.store.migrate import upgrade
from worker.bootstrap import Deps, bootstrap
from worker.entrypoints import render
from worker.flows import views
from worker.settings import DEFAULT_DATA_DIR, Settings

CLINIC, VIDEO_CLINIC, WISH_CLINIC, OFFLINE_CLINIC = "8090001", "8090020", "8090010", "8090030"
# Synthetic test numbers (month + 80): they can never belong to a real person.
PATIENT = Person("14838510036", "Kari", "Nordmann")
PARENT = Person("02868011028", "Ola", "Nordmann")
CHILD = Person("23891951000", "Emma", "Nordmann")
FINAL = frozenset({"CONFIRMED", "REJECTED", "CANCELLED", "FAILED", "EXPIRED", "INVALID"})


class DemoError(Exception):
    """The demo cannot run here (no Redis, a process died); the message says what to do."""


@dataclass
class Step:
    """One scripted request and what the demo expects of it."""

    name: str
    payload: dict[str, Any]
    expect: str
    after: str | None = None  # wait for this step to reach CONFIRMED first
    states: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The request_id."""
        return str(self.payload["request_id"])


def _slot(days: int, hour: int, minutes: int = 20) -> dict[str, str]:
    start = (datetime.now(UTC) + timedelta(days=days)).replace(
        hour=hour, minute=0, second=0, microsecond=0
    )
    end = start + timedelta(minutes=minutes)
    return {
        "id": f"slot-{uuid.uuid4().hex[:12]}",
        "start": start.isoformat(),
        "end": end.isoformat(),
    }


def _who(p: Person) -> dict[str, str]:
    return {"fnr": p.fnr, "given_name": p.given_name, "family_name": p.family_name}


def _reserve(kind: str, days: int, clinic: str = CLINIC, **extra: Any) -> dict[str, Any]:
    names = {
        CLINIC: "Testlegekontoret",
        VIDEO_CLINIC: "Video Legesenter",
        OFFLINE_CLINIC: "Frakoblet legekontor",
    }
    return {
        "request_id": str(uuid.uuid4()),
        "action": "reserve",
        "patient": _who(PATIENT),
        "clinic": {"her_id": clinic, "name": names[clinic]},
        "practitioner": {"name": "August September", "her_id": "8090002"},
        "service": "consultation",
        "appointment_type": kind,
        "slot": _slot(days, 9 + days % 6),
        "subject": {"video": "Oppfølging", "phone": "Prøvesvar"}.get(kind, "Vondt i halsen"),
    } | extra


def _wish(clinic: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": str(uuid.uuid4()),
        "action": "wish",
        "patient": _who(PATIENT),
        "clinic": {"her_id": clinic, "name": name},
        "service": "vaccination" if clinic == WISH_CLINIC else "consultation",
        "subject": "Vaksine" if clinic == WISH_CLINIC else "Årlig kontroll",
        "message": "Passer best tirsdag eller torsdag formiddag.",
    } | extra


def script() -> list[Step]:
    """The scripted requests, in the order they are sent."""
    in_person = _reserve("in_person", 3)
    wish = _wish(CLINIC, "Testlegekontoret")
    bad = _reserve("in_person", 4)
    bad["patient"] = _who(PATIENT) | {
        "fnr": PATIENT.fnr[:10] + str((int(PATIENT.fnr[10]) + 1) % 10)
    }
    child = _reserve(
        "in_person",
        6,
        patient=_who(CHILD),
        subject="Øreverk",
        requester=_who(PARENT) | {"relation": "parental_responsibility"},
    )
    return [
        Step("time ved legekontoret", in_person, "CANCELLED"),
        Step("videotime", _reserve("video", 5, VIDEO_CLINIC), "CONFIRMED"),
        Step("telefontime", _reserve("phone", 7), "CANCELLED"),
        Step("hastetime", _reserve("urgent", 1), "CONFIRMED"),
        Step("timeønske", wish, "CONFIRMED"),
        Step(
            "endre timeønske",
            {
                "request_id": str(uuid.uuid4()),
                "action": "change_wish",
                "patient": _who(PATIENT),
                "clinic": {"her_id": CLINIC, "name": "Testlegekontoret"},
                "service": "consultation",
                "message": "Kan vi flytte til ettermiddagen?",
                "booking_ref": wish["request_id"],
            },
            "CONFIRMED",
            after="timeønske",
        ),
        Step(
            "avbestille time",
            {
                "request_id": str(uuid.uuid4()),
                "action": "cancel",
                "patient": _who(PATIENT),
                "clinic": {"her_id": CLINIC, "name": "Testlegekontoret"},
                "booking_ref": in_person["request_id"],
            },
            "CANCELLED",
            after="time ved legekontoret",
        ),
        Step("forelder bestiller for barn", child, "CONFIRMED"),
        Step(
            "klinikk uten digital timebestilling",
            _reserve("in_person", 8, OFFLINE_CLINIC),
            "INVALID",
        ),
        Step("ugyldig forespørsel", bad, "INVALID"),
        Step("klinikken avslår", _wish(WISH_CLINIC, "Helsestasjonen Nord"), "REJECTED"),
    ]


# -- processes ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


@contextmanager
def broker(settings: Settings, out: TextIO) -> Iterator[str]:
    """The configured Redis if it answers, else a private redis-server, else DemoError."""
    if _answers(settings.broker_url):
        yield settings.broker_url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise DemoError(
            f"no Redis at {settings.broker_url} and no redis-server on PATH: start one with "
            "`docker compose up -d redis` or install the OS package (apt install redis-server)"
        )
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    print(
        f"no Redis at {settings.broker_url}; started a private redis-server on port {port}",
        file=out,
    )
    try:
        _wait(lambda: _answers(url), 10, "the private redis-server")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise DemoError(f"timed out waiting for {what}")


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path, ready: str | None) -> Iterator[None]:
    """A `timebok ...` subprocess, stopped (TERM, then KILL) on the way out."""
    handle = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.entrypoints.cli", *args],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    try:
        if ready:
            _wait(
                lambda: ready.encode() in log.read_bytes() or proc.poll() is not None,
                60,
                f"`timebok {args[0]}` to start",
            )
            if proc.poll() is not None:
                raise DemoError(f"`timebok {args[0]}` exited; see {log}")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        handle.close()


# -- the flow ------------------------------------------------------------------------------------


def run_flow(settings: Settings, env: dict[str, str], logs: Path, out: TextIO) -> dict[str, Any]:
    """Start worker + simulator, run the script, return final states and the patients' views."""
    deps = bootstrap(settings)
    try:
        return _flow(deps, settings, env, logs, out)
    finally:
        deps.store.dispose()


def _flow(
    deps: Deps, settings: Settings, env: dict[str, str], logs: Path, out: TextIO
) -> dict[str, Any]:
    upgrade(deps.store.engine)
    steps = script()
    with ExitStack() as stack:
        stack.enter_context(
            process(["worker", "--concurrency=2"], env, logs / "worker.log", "ready.")
        )
        stack.enter_context(
            process(
                ["epj-sim", "--policy", "confirm", "--delay", "0.3"],
                env,
                logs / "epj-sim.log",
                "consuming",
            )
        )
        looked = _lookup_and_book(deps, settings, out)
        _submit_all(deps, settings, steps, out)
        extra = _clinic_traffic(deps, settings, steps, out)
    return {
        "lookup": looked,
        "states": {s.name: _state(deps, s.id) for s in steps},
        "expected": {s.name: s.expect for s in steps},
        "ids": {s.name: s.id for s in steps},
        "phone_booked_uid": extra,
        "inbox": {p.fnr: views.inbox(deps, p.fnr) for p in (PATIENT, CHILD)},
        "appointments": {p.fnr: views.appointments(deps, p.fnr) for p in (PATIENT, CHILD)},
    }


def _lookup_and_book(deps: Deps, settings: Settings, out: TextIO) -> dict[str, Any]:
    """Ask the GP's calendar for free slots, book the first, show it is gone from the next."""
    from worker.entrypoints.app import create_app, send_booking
    from worker.flows import lookups

    query = lookups.SlotsQuery(CLINIC, unit="8090002")
    print("  timebok slots 8090001 --unit 8090002 (HentLedigeTimer)", file=out)
    found = lookups.free_slots(deps, query)
    for slot in found["slots"][:3]:
        print(
            f"    ledig {render.local(slot['start'])} {slot['appointment_type']} {slot['id']}",
            file=out,
        )
    slot = found["slots"][0]
    req = _reserve(slot["appointment_type"], 0) | {
        "slot": {"id": slot["id"], "start": slot["start"], "end": slot["end"]},
        "practitioner": slot["practitioner"],
        "service": slot["service"],
        "clinic": {
            "her_id": CLINIC,
            "name": "Testlegekontoret",
            "unit_her_id": slot["unit_her_id"],
        },
    }
    send_booking(create_app(settings), req)
    _wait(lambda: _state(deps, req["request_id"]) == "CONFIRMED", 60, "the looked-up slot booked")
    print(f"  bestilt {render.local(slot['start'])}: CONFIRMED", file=out)
    again = lookups.free_slots(deps, query)
    gone = slot["id"] not in {s["id"] for s in again["slots"]}
    print(f"  nytt oppslag: {len(again['slots'])} ledige, den bestilte er borte: {gone}", file=out)
    return {"slot": slot["id"], "booked": req["request_id"], "gone": gone}


def _state(deps: Deps, booking_id: str) -> str | None:
    try:
        return str(views.booking(deps, booking_id)["state"])
    except views.NotFound:
        return None


def _submit_all(deps: Deps, settings: Settings, steps: list[Step], out: TextIO) -> None:
    from worker.entrypoints.app import create_app, send_booking

    app = create_app(settings)
    pending = list(steps)
    sent: set[str] = set()
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        by_name = {s.name: s for s in steps}
        for step in pending:
            if step.name in sent:
                continue
            if step.after and _state(deps, by_name[step.after].id) not in ("CONFIRMED",):
                continue
            send_booking(app, step.payload)
            sent.add(step.name)
        _progress(deps, steps, out)
        if len(sent) == len(steps) and all(
            st.states[-1:] and st.states[-1] in FINAL for st in steps
        ):
            return
        time.sleep(0.2)
    raise DemoError("the bookings did not settle within 45 s; see .timebok/*.log")


def _progress(deps: Deps, steps: list[Step], out: TextIO) -> None:
    """Print a booking's whole path (from its history) each time it moves."""
    for step in steps:
        try:
            path = [h["to"] for h in views.booking(deps, step.id)["history"]]
        except views.NotFound:
            continue
        if path != step.states:
            step.states = path
            print(f"  {step.name:<36} {' -> '.join(path)}", file=out, flush=True)


def _clinic_traffic(deps: Deps, settings: Settings, steps: list[Step], out: TextIO) -> str:
    """The clinic cancels the phone appointment and publishes one booked by phone."""
    from worker.adapters.registry import Registry
    from worker.sim import Simulator
    from worker.sim.bus import keys_folder, make_transport

    registry = Registry.load(settings.registry_file)
    transport = make_transport(settings, registry.clinics, keys_folder(settings, None))
    sim = Simulator(settings, registry, echo=lambda _line: None, transport=transport)
    phone = next(s for s in steps if s.name == "telefontime")
    booking = views.booking(deps, phone.id)
    appt = next(
        a for a in views.appointments(deps, PATIENT.fnr) if a["uid"] == booking["appointment_uid"]
    )
    sim.cancel_appointment(
        CLINIC,
        appt["uid"],
        PATIENT,
        datetime.fromisoformat(appt["start"]),
        datetime.fromisoformat(appt["end"]),
    )
    start = (datetime.now(UTC) + timedelta(days=12)).replace(
        hour=8, minute=0, second=0, microsecond=0
    )
    uid = sim.publish_appointment(
        CLINIC, PATIENT, start, start + timedelta(minutes=30), practitioner="August September"
    )
    sim.close()
    print("  klinikken avlyser telefontimen og sender en time bestilt på telefon", file=out)
    _wait(
        lambda: (
            _state(deps, phone.id) == "CANCELLED"
            and any(a["uid"] == uid for a in views.appointments(deps, PATIENT.fnr))
        ),
        20,
        "the clinic's cancellation and phone booking",
    )
    _progress(deps, steps, out)
    return uid


# -- the command ---------------------------------------------------------------------------------


def run(settings: Settings, out: TextIO = sys.stdout) -> int:
    """`timebok demo`: prints progress, the inbox and the appointments; 0 when all as expected."""
    data_dir = DEFAULT_DATA_DIR.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    db = data_dir / "demo.db"
    for leftover in data_dir.glob("demo.db*"):
        leftover.unlink()
    started = time.monotonic()
    try:
        with broker(settings, out) as url:
            cfg = settings.model_copy(
                update={"broker_url": url, "epj_broker_url": url, "database_url": f"sqlite:///{db}"}
            )
            if settings.epj_transport == "nhn":
                cfg = _on_the_bus(settings, cfg, data_dir, out)
            env = _env(cfg)
            print(f"timebok demo: store {db}, broker {url}", file=out)
            result = run_flow(cfg, env, data_dir, out)
    except DemoError as exc:
        print(f"timebok demo: {exc}", file=sys.stderr)
        return 1
    _print_result(result, out)
    wrong = {n: s for n, s in result["states"].items() if s != result["expected"][n]}
    print(f"\n{len(result['states'])} bookings in {time.monotonic() - started:.1f} s", file=out)
    if not result["lookup"]["gone"]:
        print("timebok demo: the booked slot was still offered by the next lookup", file=sys.stderr)
        return 1
    if wrong:
        print(f"timebok demo: unexpected final states: {wrong}", file=sys.stderr)
        return 1
    return 0


LOCAL_BUS = "amqp://guest:guest@localhost:5672/NHNTestServiceBus"


def _on_the_bus(settings: Settings, cfg: Settings, data_dir: Path, out: TextIO) -> Settings:
    """nhn: a local RabbitMQ with its AMQP 1.0 plugin, a test PKI, the bus topology."""
    from worker.adapters.pki import PkiParty, make_test_pki
    from worker.adapters.registry import Registry, with_certificates
    from worker.adapters.topology import declare
    from worker.adapters.transports.nhn import BusAddress

    given = settings.epj_broker_url or ""
    url = given if given.startswith("amqp") else LOCAL_BUS
    registry = Registry.load(settings.registry_file)
    certs = data_dir / "certs"
    parties = [PkiParty(cfg.own_her_id, cfg.own_name)]
    parties += [PkiParty(c.her_id, c.name) for c in registry.clinics]
    make_test_pki(certs, parties)
    demo_registry = data_dir / "demo-registry.toml"
    text = Path(settings.registry_file).read_text(encoding="utf-8")
    demo_registry.write_text(with_certificates(text, certs), encoding="utf-8")
    bus = BusAddress.parse(url)
    try:
        declare(bus.amqp091_url(), bus.namespace, [p.her_id for p in parties])
    except Exception as exc:
        raise DemoError(
            f"cannot declare the bus topology on {bus.host}:{bus.port} ({exc}); is RabbitMQ "
            "running with `rabbitmq-plugins enable rabbitmq_amqp1_0`?"
        ) from exc
    print(
        f"timebok demo: national bus {bus.host}:{bus.port}/{bus.namespace}, keys {certs}", file=out
    )
    own = cfg.own_her_id
    return cfg.model_copy(
        update={
            "epj_broker_url": url,
            "registry_file": demo_registry,
            "signing_key": certs / f"{own}-signing.key",
            "signing_cert": certs / f"{own}-signing.pem",
            "encryption_key": certs / f"{own}-encryption.key",
            "encryption_cert": certs / f"{own}-encryption.pem",
        }
    )


def _env(cfg: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TIMEBOK_BROKER_URL": cfg.broker_url,
            "TIMEBOK_EPJ_BROKER_URL": cfg.epj_url,
            "TIMEBOK_DATABASE_URL": cfg.database_url,
            "TIMEBOK_REGISTRY_FILE": str(cfg.registry_file),
            "TIMEBOK_OWN_HER_ID": cfg.own_her_id,
        }
    )
    if cfg.database_schema:
        env["TIMEBOK_DATABASE_SCHEMA"] = cfg.database_schema
    env["TIMEBOK_EPJ_TRANSPORT"] = cfg.epj_transport
    for name in ("signing_key", "signing_cert", "encryption_key", "encryption_cert"):
        value = getattr(cfg, name)
        if value is not None:
            env[f"TIMEBOK_{name.upper()}"] = str(value)
    return env


def _print_result(result: dict[str, Any], out: TextIO) -> None:
    print("\nresultat", file=out)
    print(render.table(["forespørsel", "tilstand"], sorted(result["states"].items())), file=out)
    for person, label in ((PATIENT, "Kari Nordmann"), (CHILD, "Emma Nordmann (barn)")):
        print(f"\n== Innboks: {label} ({fnrs.mask(person.fnr)}) ==", file=out)
        print(render.inbox_text(result["inbox"][person.fnr]), file=out)
        print(f"\n== Timeavtaler: {label} ==", file=out)
        print(render.appointments_text(result["appointments"][person.fnr]), file=out)
