"""Error tracking (Sentry): real errors only, tagged with booking and MsgId, never any PII.

A clinic's rejection, an INVALID request or an AppRec Avvist is an expected business outcome:
those paths log at INFO/WARNING, and only ERROR records (and task crashes) become events.
Everything that leaves the process goes through `scrub_event` first: every 11-digit run (a
possible fødselsnummer) is masked anywhere in the event, and the values of name / free-text
fields are replaced wherever they appear.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.transport import Transport

from worker.logs import FNR_PATTERN
from worker.settings import Settings

log = logging.getLogger("timebok.observability")

SCRUBBED = "[scrubbed]"
FNR_MASK = "[fnr]"
# Keys whose values are names, contact details or the patient's / clinic's free text
# (request fields, XML element names), plus Celery's task arguments (the whole request).
PII_KEYS = frozenset(
    {
        "fnr",
        "patient_fnr",
        "given_name",
        "middle_name",
        "family_name",
        "phone",
        "subject",
        "message",
        "questionnaire",
        "question",
        "answer",
        "reason",
        "text",
        "body",
        "payload",
        "Sporsmal",
        "TekstNotatInnhold",
        "GivenName",
        "MiddleName",
        "FamilyName",
        "args",
        "kwargs",
        "argsrepr",
        "kwargsrepr",
    }
)
_NAMES = "|".join(sorted(PII_KEYS | {"input_value"}, key=len, reverse=True))
# key=value, 'key': 'value', "key": "value" inside reprs, pydantic errors and JSON text.
_PAIR = re.compile(
    rf"""(?P<key>['"]?\b(?:{_NAMES})\b['"]?\s*[:=]\s*)"""
    r"""(?P<value>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^,\s)}\]]+)"""
)
_XML = re.compile(
    r"(<(?:\w+:)?(?P<tag>Sporsmal|TekstNotatInnhold|GivenName|MiddleName|FamilyName)\b[^>]*>)"
    r"[^<]*(</(?:\w+:)?(?P=tag)>)"
)
# Where `message` is Sentry's own text (the event's, a log entry's, a breadcrumb's): masked
# with scrub_text, not replaced. Anywhere else a `message` is the patient's free text.
_SENTRY_TEXT = frozenset({(), ("logentry",), ("breadcrumbs",), ("breadcrumbs", "values")})

_initialised = False


def release() -> str:
    """`timebok@<package version>`."""
    try:
        return f"timebok@{version('timebok')}"
    except PackageNotFoundError:
        return "timebok@unknown"


def init_sentry(settings: Settings, transport: type[Transport] | None = None) -> bool:
    """Start error tracking when TIMEBOK_SENTRY_DSN is set; True when it is on."""
    global _initialised
    if not settings.sentry_dsn:
        return False
    options: dict[str, Any] = {"transport": transport} if transport is not None else {}
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.environment,
        release=release(),
        # send_default_pii stays unset: False is its default, and newer SDKs deprecate passing it.
        # Locals hold requests, names and FNRs in reprs that no scrubber can parse reliably.
        include_local_variables=False,
        max_breadcrumbs=50,
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        integrations=[
            CeleryIntegration(propagate_traces=False),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        **options,
    )
    _initialised = True
    log.info("error tracking on", extra={"environment": settings.environment})
    return True


def tag(booking_id: str | None = None, msg_id: str | None = None) -> None:
    """Tag the current scope (a task, a consumed message) with what it is about."""
    if not _initialised:
        return
    if booking_id:
        sentry_sdk.set_tag("booking_id", str(booking_id)[:64])
    if msg_id:
        sentry_sdk.set_tag("msg_id", str(msg_id)[:64])


@contextmanager
def scope(booking_id: str | None = None, msg_id: str | None = None) -> Iterator[None]:
    """A scope of its own for one unit of work outside a Celery task (the inbound consumer)."""
    if not _initialised:
        yield
        return
    with sentry_sdk.isolation_scope():
        tag(booking_id=booking_id, msg_id=msg_id)
        yield


# -- scrubbing ----------------------------------------------------------------------------------


def scrub_text(text: str) -> str:
    """Mask fødselsnumre, `name=value` pairs of PII fields and name / free-text XML elements."""
    text = FNR_PATTERN.sub(lambda m: m.group("id") or FNR_MASK, text)
    text = _PAIR.sub(lambda m: f"{m.group('key')}{SCRUBBED!r}", text)
    return _XML.sub(rf"\1{SCRUBBED}\3", text)


def scrub_event(event: Any, _hint: Any = None) -> Any:
    """`before_send`: the event with no FNR, name or free text left in it."""
    return _walk(event, ()) if isinstance(event, dict) else event


def _walk(value: Any, path: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, list | tuple):
        return [_walk(v, path) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[Any, Any] = {}
    for key, item in value.items():
        if key == "vars" and path[:1] in (("exception",), ("threads",)):
            continue  # frame locals: dropped even if include_local_variables is turned on
        if key in PII_KEYS and not (key == "message" and path in _SENTRY_TEXT):
            out[key] = SCRUBBED
        else:
            name = scrub_text(key) if isinstance(key, str) else key
            out[name] = _walk(item, (*path, str(key)))
    return out
