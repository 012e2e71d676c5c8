"""Wire the dependencies in one place, from settings, never at import time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mappers.model import Party
from worker.adapters.registry import AddressRegistry, Registry
from worker.adapters.store.db import Store
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.adapters.store.marks import Marks
    from worker.adapters.transports.kombu import Envelope, EpjTransport, KombuTransport


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    """Everything a handler needs, built once per process."""

    settings: Settings
    store: Store
    epj: EpjTransport
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
    cfg = settings or Settings()
    store = Store.open(cfg.database_url, cfg.database_schema)
    return Deps(
        settings=cfg,
        store=store,
        epj=LazyTransport(cfg.epj_url),
        registry=Registry.load(cfg.registry_file),
    )


class LazyTransport:
    """The kombu EPJ transport, built (and kombu imported) on first use.

    A read-only command (`timebok booking ID`) never publishes; importing kombu and its
    Redis client cost most of such a command's start.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._real: KombuTransport | None = None

    def _transport(self) -> KombuTransport:
        if self._real is None:
            from worker.adapters.transports.kombu import KombuTransport

            self._real = KombuTransport(self.url)
        return self._real

    def publish(self, item: Envelope) -> None:
        """Put one document on its queue; raise EpjUnavailable when the broker is down."""
        self._transport().publish(item)

    def depth(self, queue: str) -> int:
        """How many messages wait on a queue."""
        return self._transport().depth(queue)

    def close(self) -> None:
        """Drop the connection, if one was made."""
        if self._real is not None:
            self._real.close()
