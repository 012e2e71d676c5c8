"""`timebok epj-sim`: command-line options and subcommands of the simulator."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType

from mappers.model import (
    Person,
)
from worker import fnr as fnrs
from worker.errors import EpjUnavailable
from worker.sim.engine import SimConfig, Simulator
from worker.sim.policy import OSLO, POLICIES, mask_fnrs, to_stderr

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
    parser.add_argument(
        "--keys",
        type=Path,
        default=None,
        metavar="DIR",
        help="nhn: the clinics' key pairs (`timebok certs init DIR`; default: the folder of "
        "TIMEBOK_SIGNING_CERT)",
    )
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
    from worker.adapters.crypto import CryptoError
    from worker.adapters.registry import Registry, RegistryError
    from worker.sim.bus import keys_folder, make_transport

    try:
        registry = Registry.load(settings.registry_file)
        keys = keys_folder(settings, getattr(args, "keys", None))
        sim = Simulator(
            settings,
            registry,
            clinics=args.clinics,
            policy=args.policy,
            seed=args.seed,
            delay=args.delay,
            drop_apprec_rate=args.drop_apprec_rate,
            duplicate_rate=args.duplicate_rate,
            transport=make_transport(settings, registry.clinics, keys),
        )
        return _dispatch(sim, args)
    except (RegistryError, ValueError, EpjUnavailable, CryptoError) as exc:
        to_stderr(mask_fnrs(f"epj-sim: {exc}"))
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
