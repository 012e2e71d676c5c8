"""The `timebok` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from worker.errors import NotFound, StoreUnavailable

if TYPE_CHECKING:
    from worker.settings import Settings

    Handler = Callable[[argparse.Namespace, Settings], int]
    Reader = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `timebok` console script."""
    given = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_verb(given))
    args = parser.parse_args(given)
    if not getattr(args, "handler", None) and not getattr(args, "reader", None):
        parser.print_help()
        return 2
    try:
        return _dispatch(args)
    except NotFound as exc:
        return _fail(args, str(exc), 1)
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    """Run the verb: a read-only one (`reader`) without the settings object or logging set
    up, which cost more than its query (pydantic); every other with both."""
    if getattr(args, "reader", None):
        reader: Reader = args.reader
        try:
            return reader(args)
        except StoreUnavailable as exc:  # no traceback for a database that is not there
            return _fail(args, str(exc), 1)
    from worker.logs import setup_logging
    from worker.settings import Settings

    settings = Settings()
    setup_logging(settings)
    handler: Handler = args.handler
    return handler(args, settings)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    else:
        print(f"timebok: {message}", file=sys.stderr)
    return code


def _verb(argv: list[str]) -> str | None:
    """The verb asked for (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """All verbs with their help texts; `verb`: the one being run (its options are built
    only then where that costs imports, as `epj-sim`'s do)."""
    parser = argparse.ArgumentParser(
        prog="timebok",
        description="Appointment booking between the patient portal and clinic EPJ systems. "
        "Settings come from TIMEBOK_* environment variables (see README).",
    )
    sub = parser.add_subparsers(metavar="COMMAND")
    from worker.entrypoints import commands

    commands.register(sub, verb)
    return parser


def emit(args: argparse.Namespace, data: Any, text: Callable[[Any], str]) -> None:
    """Print JSON with --json, else the human-readable rendering."""
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        print(text(data))


if __name__ == "__main__":
    raise SystemExit(main())
