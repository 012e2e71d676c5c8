"""Alembic environment: runs on the engine handed over by worker.adapters.store.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from worker.adapters.store.tables import Base

engine = context.config.attributes.get("engine")


def run() -> None:
    """Run migrations online on the given engine."""
    if not isinstance(engine, Engine):
        raise RuntimeError("run migrations through `timebok migrate`")
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


run()
