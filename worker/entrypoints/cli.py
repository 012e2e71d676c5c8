"""The `timebok` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from worker.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `timebok` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from worker.logs import setup_logging

    settings = Settings()
    setup_logging(settings)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # Only a handler that imported the views can raise their NotFound (kept lazy: a
        # lookup never loads the database layer).
        views = sys.modules.get("worker.flows.views")
        if views is not None and isinstance(exc, views.NotFound):
            return _fail(args, str(exc), 1)
        raise


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    else:
        print(f"timebok: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    """All verbs with their help texts."""
    parser = argparse.ArgumentParser(
        prog="timebok",
        description="Appointment booking between the patient portal and clinic EPJ systems. "
        "Settings come from TIMEBOK_* environment variables (see README).",
    )
    sub = parser.add_subparsers(metavar="COMMAND")
    from worker.entrypoints import commands

    commands.register(sub)
    return parser


def emit(args: argparse.Namespace, data: Any, text: Callable[[Any], str]) -> None:
    """Print JSON with --json, else the human-readable rendering."""
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        print(text(data))


if __name__ == "__main__":
    raise SystemExit(main())
