"""Reads on the driver's own connection, without SQLAlchemy: the read side of the CLI.

A read-only command (`timebok booking ID`, `inbox`, `dlq list` ...) is called in loops by
operators and scripts, and importing SQLAlchemy costs more than the whole query. This module
opens the database named by the same URL the store uses (`sqlite:///...` or
`postgresql+psycopg://...`) with the driver alone (sqlite3 / psycopg) and gives the values
back as the store's column types do: UTC-aware datetimes, decoded JSON, booleans, bytes.
Inside a process that has the store already, `Store.reader()` runs the same reads on a
pooled connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from worker.errors import StoreUnavailable

Row = dict[str, Any]
_NAMED = re.compile(r"(?<![:\w]):(\w+)")


class Reader:
    """Plain SELECTs on one DBAPI connection, within one read transaction.

    SQL is written with `:name` parameters (SQLite's style); on psycopg they become
    `%(name)s`.
    """

    def __init__(self, dbapi: Any, *, postgres: bool, decodes_json: bool | None = None) -> None:
        self._dbapi = dbapi
        self.postgres = postgres
        self._decodes_json = postgres if decodes_json is None else decodes_json

    def rows(self, sql: str, **params: Any) -> list[Row]:
        """Every row of a query, each as a dict by column name."""
        statement = _NAMED.sub(r"%(\1)s", sql) if self.postgres else sql
        cursor = self._dbapi.cursor()
        try:
            cursor.execute(statement, params)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        finally:
            cursor.close()

    def json(self, value: Any) -> Any:
        """A JSON column's value: SQLite and libpq return its text, psycopg the decoded value."""
        return json.loads(value) if value is not None and not self._decodes_json else value

    def row(self, sql: str, **params: Any) -> Row | None:
        """The first row of a query, or None."""
        found = self.rows(sql, **params)
        return found[0] if found else None


def utc(value: Any) -> datetime | None:
    """A stored timestamp as a UTC-aware datetime (SQLite keeps text without an offset)."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class ReadStore(NamedTuple):
    """The database of a store URL, opened per read by the driver alone (a NamedTuple, not
    a dataclass: `dataclasses` imports `inspect`, a tenth of a read-only verb's start)."""

    url: str
    schema: str | None = None

    @contextmanager
    def reader(self) -> Iterator[Reader]:
        """One read transaction on a new connection, closed afterwards."""
        scheme, _, rest = self.url.partition("://")
        dialect, _, driver = scheme.partition("+")
        if dialect == "sqlite" and driver in ("", "pysqlite"):
            with _sqlite(rest) as reader:
                yield reader
        elif dialect in ("postgresql", "postgres") and driver in ("", "psycopg"):
            with _postgres(f"postgresql://{rest}", self.schema) as reader:
                yield reader
        else:
            raise StoreUnavailable(f"cannot read a {scheme} database without SQLAlchemy")


@contextmanager
def _sqlite(rest: str) -> Iterator[Reader]:
    import sqlite3

    path = unquote(rest[1:].partition("?")[0])  # sqlite:///relative, sqlite:////absolute
    if not path or path == ":memory:":
        raise StoreUnavailable("an in-memory SQLite database has nothing to read")
    try:
        # mode=rw: a mistyped path is an error, not a new empty database
        conn = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, timeout=30)
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(f"database error: {exc} ({path})") from exc
    conn.isolation_level = None  # our own BEGIN: one snapshot for every read (WAL)
    try:
        conn.execute("BEGIN")
        yield Reader(conn, postgres=False)
    except sqlite3.OperationalError as exc:
        raise StoreUnavailable(f"database error: {exc}"[:300]) from exc
    finally:
        conn.close()


@contextmanager
def _postgres(conninfo: str, schema: str | None) -> Iterator[Reader]:
    """libpq itself when the system has it (importing psycopg costs a read-only command
    three times the rest of its start), else psycopg."""
    from worker.adapters.store import libpq

    try:
        conn = libpq.connect(conninfo, schema)
    except libpq.Missing:
        with _psycopg(conninfo, schema) as reader:
            yield reader
        return
    except libpq.Error as exc:
        raise StoreUnavailable(f"database error: {exc!s}"[:300]) from exc
    try:
        yield Reader(conn, postgres=True, decodes_json=False)
    except libpq.Error as exc:
        raise StoreUnavailable(f"database error: {exc!s}"[:300]) from exc
    finally:
        conn.close()


@contextmanager
def _psycopg(conninfo: str, schema: str | None) -> Iterator[Reader]:
    import psycopg

    options: dict[str, Any] = {"options": f"-csearch_path={schema}"} if schema else {}
    try:
        conn = psycopg.connect(conninfo, **options)  # libpq reads the URL as SQLAlchemy does
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"database error: {exc!s}"[:300]) from exc
    try:
        yield Reader(conn, postgres=True)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"database error: {exc!s}"[:300]) from exc
    finally:
        conn.close()  # the read transaction is rolled back with it
