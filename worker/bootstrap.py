"""Wire the dependencies in one place, from settings, never at import time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, cast

from mappers.model import Party
from worker.adapters.registry import AddressRegistry, Registry
from worker.adapters.transports.base import Transport
from worker.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from worker.adapters import crypto
    from worker.adapters.store.db import Store
    from worker.adapters.store.marks import Marks
    from worker.adapters.transports.base import (
        Delivery,
        Envelope,
        Handler,
        Handoff,
        Subscription,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    """Everything a handler needs, built once per process."""

    settings: Settings
    store: Store
    epj: Transport
    registry: AddressRegistry
    clock: Callable[[], datetime] = field(default=_utcnow)
    # Marks of published leased rows, written in batches (the worker on PostgreSQL);
    # None: each is written as soon as its row is published.
    marks: Marks | None = None

    @property
    def own_party(self) -> Party:
        """Our own communication party (sender of everything we publish)."""
        return Party(her_id=self.settings.own_her_id, name=self.settings.own_name)


def bootstrap(settings: Settings | None = None) -> Deps:
    """Build the store, transport and registry from settings."""
    from worker.adapters.store.db import Store

    cfg = settings or Settings()
    store = Store.open(cfg.database_url, cfg.database_schema)
    registry = Registry.load(cfg.registry_file)
    return Deps(
        settings=cfg,
        store=store,
        epj=make_transport(cfg, registry),
        registry=registry,
    )


class LightDeps:
    """What a synchronous lookup needs: the database is opened only if a dead letter must be
    written, so `timebok slots` never loads the database layer on its usual path."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = Registry.load(settings.registry_file)
        self.epj = make_transport(settings, self.registry)
        self.clock: Callable[[], datetime] = _utcnow
        self._store: Store | None = None

    @property
    def own_party(self) -> Party:
        """Our own communication party."""
        return Party(her_id=self.settings.own_her_id, name=self.settings.own_name)

    @property
    def store(self) -> Store:
        """The store, opened on first use."""
        if self._store is None:
            from worker.adapters.store.db import Store

            self._store = Store.open(self.settings.database_url, self.settings.database_schema)
        return self._store


def make_transport(cfg: Settings, registry: Registry) -> Transport:
    """The EPJ transport TIMEBOK_EPJ_TRANSPORT names (nhn: with our keys, checked now).

    With a shared Redis (TIMEBOK_CACHE_URL, or a redis:// broker) the answers to lookups
    are handed between the processes reading our `_syncreply` queue through it.
    """
    handoff = make_handoff(cfg)
    if cfg.epj_transport != "nhn":
        return LazyTransport(cfg.epj_url, handoff)
    from worker.adapters import crypto
    from worker.adapters.transports.cms import CmsProtection
    from worker.adapters.transports.nhn import NhnTransport

    def own() -> dict[str, crypto.OwnKeys]:
        return {cfg.own_her_id: crypto.load_own_keys(cfg)}

    book = crypto.CertificateBook(partial(_clinic, registry))
    protection = CmsProtection(own, book, cpa_ids=partial(_cpa_id, registry))
    return NhnTransport(cfg.epj_url, protection, handoff=handoff, credit=cfg.nhn_credit)


def make_handoff(cfg: Settings) -> Handoff | None:
    """The hand-off of synchronous answers between processes (None without a shared Redis)."""
    url = cfg.lookup_cache_url
    if url is None:
        return None
    from worker.adapters.handoff import RedisHandoff

    return RedisHandoff(url)


def _clinic(registry: Registry, her_id: str) -> crypto.ClinicCertificates | None:
    # A frozen Clinic has read-only fields, which the Protocol's plain attributes reject.
    return cast("crypto.ClinicCertificates | None", registry.clinic(her_id))


def _cpa_id(registry: Registry, her_id: str) -> str | None:
    clinic = registry.clinic(her_id)
    return clinic.cpa_id if clinic is not None else None


class LazyTransport:
    """The kombu EPJ transport, built (and kombu imported) on first use.

    A read-only command (`timebok booking ID`) never publishes; importing kombu and its
    Redis client cost most of such a command's start.
    """

    name = "kombu"

    def __init__(self, url: str, handoff: Handoff | None = None) -> None:
        self.url = url
        self.handoff = handoff
        self._real: Transport | None = None

    def _transport(self) -> Transport:
        if self._real is None:
            from worker.adapters.transports.kombu import KombuTransport

            self._real = KombuTransport(self.url, self.handoff)
        return self._real

    def publish(self, item: Envelope) -> None:
        """Put one document on its queue; raise EpjUnavailable when the broker is down."""
        self._transport().publish(item)

    def depth(self, queue: str) -> int:
        """How many messages wait on a queue."""
        return self._transport().depth(queue)

    def subscribe(self, queues: Sequence[str], handler: Handler) -> Subscription:
        """Consume from queues; the handler's outcome settles each delivery."""
        return self._transport().subscribe(queues, handler)

    def request(self, item: Envelope, reply_queue: str, timeout: float) -> Delivery | None:
        """Send a synchronous request and wait for its correlated answer."""
        return self._transport().request(item, reply_queue, timeout)

    def open(self, delivery: Delivery) -> bytes:
        """The document a delivery carries."""
        return self._transport().open(delivery)

    def close(self) -> None:
        """Drop the connection, if one was made."""
        if self._real is not None:
            self._real.close()

    def stop_replies(self) -> None:
        """Stop the reply consumer of synchronous requests, if one was started."""
        if self._real is not None:
            from worker.adapters.transports.base import stop_replies

            stop_replies(self._real)
