"""`GET /healthz`: can this process reach its database and both brokers right now?"""

from __future__ import annotations

import logging
from collections.abc import Callable

from worker.adapters.transports.kombu import KombuTransport
from worker.bootstrap import Deps
from worker.constants import REQUESTS_QUEUE

log = logging.getLogger("timebok.api")


def check(deps: Deps) -> dict[str, str]:
    """`ok` or `unavailable` for database, broker (Celery) and epj_broker (EPJ transport)."""
    settings = deps.settings
    checks = {
        "database": _probe("database", deps.store.ping),
        "epj_broker": _probe("epj_broker", lambda: deps.epj.depth(settings.inbound_queue)),
    }
    if settings.broker_url == settings.epj_url and settings.epj_transport == "kombu":
        checks["broker"] = checks["epj_broker"]  # one broker carries both
    else:
        checks["broker"] = _probe("broker", lambda: _celery_depth(settings.broker_url))
    return checks


def _celery_depth(url: str) -> int:
    broker = KombuTransport(url)
    try:
        return broker.depth(REQUESTS_QUEUE)
    finally:
        broker.close()


def _probe(name: str, call: Callable[[], object]) -> str:
    try:
        call()
    except Exception as exc:  # a probe reports any failure (kombu lets redis' own through)
        log.warning("health: %s unavailable: %s", name, str(exc)[:200])
        return "unavailable"
    return "ok"
