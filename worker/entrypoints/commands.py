"""The verbs of `timebok`: each parses its options and calls one handler."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.flows.views import ReadDeps
    from worker.settings import Settings

# Read-only verbs (booking, inbox, appointments, ics, dlq list / show) are called in loops by
# operators and scripts: every import beyond what the verb needs is paid on each call, so
# modules are imported in the handlers, not here. They are `reader`s: they get no Settings
# (pydantic) and read with the driver alone, never SQLAlchemy, Celery, kombu or a transport
# (`make bench` measures their start as cli_start_ms; tests/unit/test_cli_imports.py keeps
# the import set).


def register(sub: Any, verb: str | None = None) -> None:
    """Add the verbs to the subparsers object: only `verb` when it names one (building all
    nineteen costs a read-only call a fifth of its start), else every verb (help, typos)."""
    verbs = {
        "worker": _worker,
        "beat": _beat,
        "migrate": _migrate,
        "api": _api,
        "submit": _submit,
        "booking": _booking,
        "inbox": _inbox,
        "appointments": _appointments,
        "slots": _slots,
        "planned": _planned,
        "ics": _ics,
        "validate": _validate,
        "dlq": _dlq,
        "status": _status,
        "certs": _certs,
        "queues": _queues,
        "epj-sim": lambda s: _sim(s, verb),
        "demo": _demo,
        "bench": _bench,
    }
    for add in [verbs[verb]] if verb in verbs else verbs.values():
        add(sub)


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")


def _deps(settings: Settings) -> Any:
    from worker.bootstrap import bootstrap

    return bootstrap(settings)


def _read() -> ReadDeps:
    """The store the environment names, for the read side alone."""
    from worker.flows.views import open_store
    from worker.storeenv import store_location

    return open_store(*store_location())


# -- processes -------------------------------------------------------------------------------


def _worker(sub: Any) -> None:
    p = sub.add_parser("worker", help="run a Celery worker (intake + inbound EPJ consumer)")
    p.add_argument("-c", "--concurrency", type=int, default=2, help="pool processes (2)")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--pool", default="prefork", help="prefork (default), solo or threads")
    p.add_argument("-n", "--hostname", default=None, help="node name (default timebok@%%h)")
    p.set_defaults(handler=_run_worker)


def _run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from worker.entrypoints.processes import run_worker

    return run_worker(args, settings)


def _beat(sub: Any) -> None:
    p = sub.add_parser("beat", help="run the scheduler (outbox relay, timeouts)")
    p.add_argument("--schedule", default=".timebok/celerybeat-schedule", help="state file")
    p.set_defaults(handler=run_beat)


def run_beat(args: argparse.Namespace, settings: Settings) -> int:
    """Start Celery beat with timebok's schedule."""
    from worker.entrypoints.app import create_app
    from worker.observability import init_sentry

    init_sentry(settings)
    Path(args.schedule).parent.mkdir(parents=True, exist_ok=True)
    create_app(settings).start(["beat", f"--schedule={args.schedule}", "--loglevel=INFO"])
    return 0


def _migrate(sub: Any) -> None:
    p = sub.add_parser("migrate", help="apply database migrations (run before workers start)")
    p.set_defaults(handler=run_migrate)


def run_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    """Upgrade the database to the newest migration."""
    from worker.adapters.store.migrate import current_revision, upgrade

    deps = _deps(settings)
    if settings.database_schema and deps.store.is_postgres:
        from sqlalchemy import text

        with deps.store.engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{settings.database_schema}"'))
    upgrade(deps.store.engine)
    print(f"database at migration {current_revision(deps.store.engine)}")
    return 0


def _api(sub: Any) -> None:
    p = sub.add_parser(
        "api",
        help="serve the portal HTTP API (OpenAPI 3.1 at /openapi.json)",
        description="Serve the portal API: booking intake, booking state, clinics, free slots, "
        "the citizen's inbox, appointments, .ics and cancel (/v1, bearer token from "
        "TIMEBOK_API_TOKENS, X-Patient-Id for the citizen), plus /healthz and /metrics without "
        "a token. OpenAPI 3.1 at /openapi.json; errors are application/problem+json. Listens on "
        "TIMEBOK_API_HOST:TIMEBOK_API_PORT (127.0.0.1:8080) unless --host / --port say "
        "otherwise. Needs a migrated database (timebok migrate). See README 'Portal API'.",
    )
    p.add_argument("--host", help="address to listen on (default TIMEBOK_API_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default TIMEBOK_API_PORT, 8080)")
    p.set_defaults(handler=run_api)


def run_api(args: argparse.Namespace, settings: Settings) -> int:
    """Run the portal API until stopped."""
    from worker.entrypoints.api import serve
    from worker.observability import init_sentry

    init_sentry(settings)
    changed = {k: v for k, v in {"api_host": args.host, "api_port": args.port}.items() if v}
    return serve(settings.model_copy(update=changed) if changed else settings)


# -- intake ------------------------------------------------------------------------------------


def _submit(sub: Any) -> None:
    p = sub.add_parser("submit", help="send a booking request (JSON file or - for stdin)")
    p.add_argument("file", help="request JSON (see schemas/booking-request.schema.json)")
    _json_flag(p)
    p.set_defaults(handler=run_submit)


def run_submit(args: argparse.Namespace, settings: Settings) -> int:
    """Queue the request on booking.requests exactly as the portal would."""
    from worker.constants import REQUESTS_QUEUE
    from worker.entrypoints.app import create_app, send_booking
    from worker.flows.outbound import payload_id

    raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
    try:
        payload: Any = json.loads(raw)
    except ValueError:
        payload = raw  # the worker stores it as INVALID with the JSON error
    app = create_app(settings)
    send_booking(app, payload)
    booking_id = payload_id(payload)
    data = {"booking_id": booking_id, "queue": REQUESTS_QUEUE, "queued": True}
    from worker.entrypoints.cli import emit

    emit(args, data, lambda d: f"queued booking {d['booking_id']} on {d['queue']}")
    return 0


def _booking(sub: Any) -> None:
    p = sub.add_parser("booking", help="a booking's state, history and messages")
    p.add_argument("id", help="the request_id")
    _json_flag(p)
    p.set_defaults(reader=run_booking)


def run_booking(args: argparse.Namespace) -> int:
    """Show one booking."""
    from worker.entrypoints.cli import emit
    from worker.entrypoints.render import booking_text
    from worker.flows import views

    emit(args, views.booking(_read(), args.id), booking_text)
    return 0


# -- the patient's view ------------------------------------------------------------------------


def _inbox(sub: Any) -> None:
    p = sub.add_parser("inbox", help="a patient's inbox notifications")
    p.add_argument("fnr", help="the patient's fødselsnummer")
    _json_flag(p)
    p.set_defaults(reader=run_inbox)


def run_inbox(args: argparse.Namespace) -> int:
    """Print the inbox."""
    from worker.entrypoints.cli import emit
    from worker.entrypoints.render import inbox_text
    from worker.flows import views

    emit(args, views.inbox(_read(), args.fnr), inbox_text)
    return 0


def _appointments(sub: Any) -> None:
    p = sub.add_parser("appointments", help="a patient's appointments (Timeavtaler)")
    p.add_argument("fnr", help="the patient's fødselsnummer")
    _json_flag(p)
    p.set_defaults(reader=run_appointments)


def run_appointments(args: argparse.Namespace) -> int:
    """Print the appointments."""
    from worker.entrypoints.cli import emit
    from worker.entrypoints.render import appointments_text
    from worker.flows import views

    emit(args, views.appointments(_read(), args.fnr), appointments_text)
    return 0


LOOKUP_EXIT_CODES = """exit codes:
  0  answered (an empty list is an answer)
  2  bad input; the clinic is not in the registry, does not take timereservasjon, or
     refused to list (nothing sent, or the clinic's text)
  3  no usable answer within TIMEBOK_SYNC_TIMEOUT seconds: no answer, the EPJ broker
     unreachable, the clinic busy (too many lookups in flight), or an answer that cannot
     be read or verified (kept as a dead letter); try again"""


def _slots(sub: Any) -> None:
    p = sub.add_parser(
        "slots",
        help="ask a clinic for free slots (HentLedigeTimer)",
        epilog=LOOKUP_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("clinic", metavar="CLINIC_HER_ID", help="the clinic's HER-id")
    p.add_argument("--unit", metavar="HER_ID", help="only this unit of the clinic")
    p.add_argument("--from", dest="start", type=_day, metavar="YYYY-MM-DD", help="first day")
    p.add_argument("--to", dest="end", type=_day, metavar="YYYY-MM-DD", help="last day")
    p.add_argument("--type", choices=["in_person", "video", "phone", "urgent"])
    p.add_argument("--service", choices=["consultation", "lab_test", "vaccination", "other"])
    p.add_argument("--patient", metavar="FNR", help="the patient asking (fødselsnummer)")
    _json_flag(p)
    p.set_defaults(handler=run_slots)


def _day(text: str) -> Any:
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def run_slots(args: argparse.Namespace, settings: Settings) -> int:
    """Print the clinic's free slots; exit 2 bad input / not connected, 3 no usable answer."""
    from worker.entrypoints.render import slots_text
    from worker.flows import lookups

    query = lookups.SlotsQuery(
        clinic=args.clinic,
        start=args.start,
        end=args.end,
        unit=args.unit,
        appointment_type=args.type,
        service=args.service,
        patient=args.patient,
    )
    return _lookup(args, settings, lambda deps: lookups.free_slots(deps, query), slots_text)


def _planned(sub: Any) -> None:
    p = sub.add_parser(
        "planned",
        help="ask a clinic for a patient's planned appointments",
        epilog=LOOKUP_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("clinic", metavar="CLINIC_HER_ID", help="the clinic's HER-id")
    p.add_argument("--patient", metavar="FNR", required=True, help="the patient's fødselsnummer")
    _json_flag(p)
    p.set_defaults(handler=run_planned)


def run_planned(args: argparse.Namespace, settings: Settings) -> int:
    """Print the patient's planned appointments at the clinic."""
    from worker.entrypoints.render import planned_text
    from worker.flows import lookups

    def ask(deps: Any) -> dict[str, Any]:
        return lookups.planned(deps, args.clinic, args.patient)

    return _lookup(args, settings, ask, planned_text)


def _lookup(args: argparse.Namespace, settings: Settings, ask: Any, text: Any) -> int:
    """Run one lookup and map its failures to the contract's exit codes."""
    from worker.bootstrap import LightDeps
    from worker.entrypoints.cli import _fail, emit
    from worker.flows import lookups

    deps = LightDeps(settings)
    try:
        emit(args, ask(deps), text)
    except (lookups.BadLookup, lookups.LookupRefused) as exc:
        return _fail(args, str(exc), 2)
    except lookups.NoAnswer as exc:  # also busy, and an answer that cannot be read: retryable
        return _fail(args, str(exc), 3)
    finally:
        lookups.finish(deps)
    return 0


def _ics(sub: Any) -> None:
    p = sub.add_parser("ics", help="export one appointment as an .ics calendar file")
    p.add_argument("uid", help="the appointment uid")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.set_defaults(reader=run_ics)


def run_ics(args: argparse.Namespace) -> int:
    """Write the .ics file."""
    from worker.flows import views
    from worker.flows.ics import to_ics

    data = to_ics(views.appointment(_read(), args.uid))
    if args.output:
        Path(args.output).write_bytes(data)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
    return 0


# -- operations --------------------------------------------------------------------------------


def _validate(sub: Any) -> None:
    p = sub.add_parser("validate", help="validate an XML message and explain every error")
    p.add_argument("file", help="MsgHead or AppRec XML document")
    _json_flag(p)
    p.set_defaults(handler=run_validate)


def run_validate(args: argparse.Namespace, _settings: Settings) -> int:
    """Exit 0 when valid, 1 with one plain line per problem otherwise."""
    from mappers.explain import explain
    from worker.entrypoints.cli import emit

    problems = explain(Path(args.file).read_bytes())
    data = {"file": args.file, "valid": not problems, "errors": problems}
    emit(args, data, lambda d: "valid" if d["valid"] else "\n".join(d["errors"]))
    return 0 if not problems else 1


_AGE = re.compile(r"^(\d+)([smhd])$")


def parse_age(text: str) -> timedelta:
    """'30d', '12h', '15m', '45s' -> timedelta."""
    m = _AGE.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError("use a number and a unit: 45s, 15m, 12h or 30d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})


def _dlq(sub: Any) -> None:
    p = sub.add_parser("dlq", help="dead letters: list, show, replay, purge")
    dsub = p.add_subparsers(metavar="ACTION", required=True)
    ls = dsub.add_parser("list", help="dead letters not yet replayed")
    ls.add_argument("--all", action="store_true", help="include replayed ones")
    _json_flag(ls)
    ls.set_defaults(reader=run_dlq_list)
    show = dsub.add_parser("show", help="one dead letter with its raw payload")
    show.add_argument("id", type=int)
    _json_flag(show)
    show.set_defaults(reader=run_dlq_show)
    replay = dsub.add_parser("replay", help="run a dead letter through the normal path again")
    replay.add_argument("id", type=int)
    _json_flag(replay)
    replay.set_defaults(handler=run_dlq_replay)
    purge = dsub.add_parser("purge", help="delete dead letters older than an age")
    purge.add_argument("--older-than", type=parse_age, required=True, help="e.g. 30d, 12h")
    _json_flag(purge)
    purge.set_defaults(handler=run_dlq_purge)


def run_dlq_list(args: argparse.Namespace) -> int:
    """List dead letters."""
    from worker.entrypoints.cli import emit
    from worker.entrypoints.render import dlq_text
    from worker.flows import views

    emit(args, views.dead_letters(_read(), include_replayed=args.all), dlq_text)
    return 0


def run_dlq_show(args: argparse.Namespace) -> int:
    """Show one dead letter."""
    from worker.entrypoints.cli import emit
    from worker.flows import views

    data = views.dead_letter(_read(), args.id)
    emit(args, data, lambda d: "\n".join(f"{k}: {v}" for k, v in d.items()))
    return 0


def run_dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Replay one dead letter."""
    from worker.entrypoints.cli import emit
    from worker.flows.dlq import replay

    result = replay(_deps(settings), args.id)
    emit(args, result, lambda d: f"replayed {d['id']}: {d['result']}")
    return 0


def run_dlq_purge(args: argparse.Namespace, settings: Settings) -> int:
    """Delete old dead letters."""
    from worker.entrypoints.cli import emit
    from worker.flows.dlq import purge

    n = purge(_deps(settings), args.older_than)
    emit(args, {"purged": n}, lambda d: f"purged {d['purged']} dead letters")
    return 0


def _status(sub: Any) -> None:
    p = sub.add_parser("status", help="queue depths, dead letters, bookings by state")
    _json_flag(p)
    p.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    """Print the status; exit 1 when something needs attention."""
    from worker.entrypoints.cli import emit
    from worker.entrypoints.render import status_text
    from worker.flows.status import collect

    data = collect(_deps(settings))
    emit(args, data, status_text)
    return 1 if data["attention"] else 0


def _certs(sub: Any) -> None:
    p = sub.add_parser("certs", help="certificates for the national message bus (nhn transport)")
    csub = p.add_subparsers(metavar="ACTION")
    init = csub.add_parser(
        "init",
        help="write a test PKI: a CA and signing + encryption key pairs for our party and "
        "every registry clinic; print the settings and registry lines that use them",
    )
    init.add_argument("dir", type=Path, metavar="DIR")
    init.add_argument(
        "--days", type=int, default=365, help="validity of the key pairs' certificates (365)"
    )
    init.add_argument("--force", action="store_true", help="replace pairs already in DIR")
    _json_flag(init)
    init.set_defaults(handler=run_certs_init)
    p.set_defaults(handler=lambda _a, _s: p.print_help() or 2)


def run_certs_init(args: argparse.Namespace, settings: Settings) -> int:
    """Write the test PKI; exit 2 when the registry cannot be read."""
    from worker.adapters.registry import RegistryError
    from worker.entrypoints.cli import emit
    from worker.entrypoints.render import certs_init_text
    from worker.flows.certs import init

    try:
        data = init(settings, args.dir, days=args.days, force=args.force)
    except (RegistryError, OSError) as exc:
        print(f"timebok: certs init: {exc}", file=sys.stderr)
        return 2
    emit(args, data, certs_init_text)
    return 0


def _queues(sub: Any) -> None:
    from worker.constants import BUS_DELIVERY_LIMIT as DEFAULT_DELIVERY_LIMIT

    p = sub.add_parser("queues", help="the national bus topology on RabbitMQ")
    qsub = p.add_subparsers(metavar="ACTION", required=True)
    declare = qsub.add_parser(
        "declare", help="namespace exchange + quorum queues for us and every registry party"
    )
    declare.add_argument(
        "--delivery-limit",
        type=int,
        default=DEFAULT_DELIVERY_LIMIT,
        help=f"deliveries before a message goes to <her_id>_dl ({DEFAULT_DELIVERY_LIMIT})",
    )
    _json_flag(declare)
    declare.set_defaults(handler=run_queues_declare)


def run_queues_declare(args: argparse.Namespace, settings: Settings) -> int:
    """Declare the bus topology from TIMEBOK_EPJ_BROKER_URL (its path is the namespace)."""
    from worker.adapters.registry import Registry
    from worker.adapters.topology import declare
    from worker.adapters.transports.nhn import BusAddress
    from worker.entrypoints.cli import emit

    if args.delivery_limit < 1:
        print("--delivery-limit must be at least 1", file=sys.stderr)
        return 2
    try:
        bus = BusAddress.parse(settings.epj_url)
    except ValueError as exc:
        print(f"TIMEBOK_EPJ_BROKER_URL: {exc}", file=sys.stderr)
        return 2
    registry = Registry.load(settings.registry_file)
    parties = [settings.own_her_id, *(c.her_id for c in registry.clinics)]
    done = declare(bus.amqp091_url(), bus.namespace, parties, args.delivery_limit)
    data = {"exchange": done.exchange, "queues": list(done.queues)}
    emit(args, data, lambda d: f"exchange {d['exchange']}: {len(d['queues'])} queues declared")
    return 0


def _sim(sub: Any, verb: str | None) -> None:
    p = sub.add_parser("epj-sim", help="simulate clinic EPJ systems on the same transport")
    if verb in (None, "epj-sim"):  # the simulator's options import the simulator
        from worker import sim

        sim.add_arguments(p)
    p.set_defaults(handler=_run_sim)


def _run_sim(args: argparse.Namespace, settings: Settings) -> int:
    from worker import sim

    return sim.run_from_args(args, settings)


def _demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the whole booking flow locally and print the inbox")
    p.add_argument(
        "--portal",
        action="store_true",
        help="instead: start worker, simulator and api, print the patient pages' URL, run until "
        "Ctrl-C",
    )
    p.add_argument("--port", type=int, default=None, help="--portal: the API's port (8080)")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Run the scripted demo (or, with --portal, the patient pages)."""
    if args.portal:
        from worker.entrypoints import portal_demo

        return portal_demo.run(settings, port=args.port)
    from worker.entrypoints.demo import run

    return run(settings)


def _bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="measure throughput against Celery's own ceiling")
    p.add_argument("--n", type=int, default=1000, help="messages per drain (1000)")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="noop, outbound and inbound drains, each this many times; the best of each counts (2)",
    )
    p.add_argument(
        "--only",
        default="kombu,nhn,lookups",
        metavar="SECTIONS",
        help="comma-separated sections to run: kombu (drains, mapping, CMS, half-rate, CLI), "
        "nhn (the drains on the national bus; also runs kombu's outbound and inbound drains, "
        "which its ratios divide by), lookups (default: all three)",
    )
    p.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Run the benchmark."""
    from worker.bench.run import parse_sections, run

    try:
        only = parse_sections(args.only)
    except ValueError as exc:
        print(f"timebok bench: --only: {exc}", file=sys.stderr)
        return 2
    return run(settings, args.n, args.rounds, only)
