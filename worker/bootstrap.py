"""Wire the dependencies in one place, from settings, never at import time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mappers.model import Party
from worker.adapters.registry import AddressRegistry, Registry
from worker.adapters.store.db import Store
from worker.adapters.store.marks import Marks
from worker.adapters.transports.kombu import EpjTransport, KombuTransport
from worker.settings import Settings


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
        epj=KombuTransport(cfg.epj_url),
        registry=Registry.load(cfg.registry_file),
    )
