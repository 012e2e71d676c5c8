"""Logging: one line per event, JSON when asked, and no fødselsnummer ever."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from worker.settings import Settings

# An 11-digit run is a possible fødselsnummer unless it is part of an identifier: a UUID (a
# booking id, a MsgId) or a hex token (a trace id). Masking those would make log lines and
# events unsearchable by the ids they exist for, and they are no FNR.
_HEX_ID = (
    r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{16,}"
)
FNR_PATTERN = re.compile(
    rf"(?<![0-9A-Za-z])(?P<id>{_HEX_ID})(?![0-9A-Za-z])|(?<!\d)(?P<born>\d{{6}})\d{{5}}(?!\d)"
)
_HIDDEN = frozenset({"args", "kwargs", "argsrepr", "kwargsrepr"})
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def scrub(text: str) -> str:
    """Mask every 11-digit run outside an identifier (a possible FNR) to its first six digits."""
    return FNR_PATTERN.sub(lambda m: m.group("id") or f"{m.group('born')}*****", text)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class ScrubFilter(logging.Filter):
    """Masks fødselsnumre in the message and the structured extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            # Celery puts task args (the whole booking request) into `data`: never log them.
            record.data = {k: "[hidden]" if k in _HIDDEN else v for k, v in data.items()}
        record.msg = scrub(record.getMessage())
        record.args = None
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, scrub(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise the record with its extras."""
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            data["exc"] = scrub(self.formatException(record.exc_info))
        return scrub(json.dumps(data, default=str))


class TextFormatter(logging.Formatter):
    """Human-readable line with key=value extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the message and its extras."""
        base = super().format(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return scrub(f"{base} {extras}".rstrip())


def setup_logging(settings: Settings) -> None:
    """Configure the root logger once for this process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ScrubFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)
