"""Plain SELECTs on PostgreSQL through the system's libpq (ctypes), for the read side.

Importing psycopg costs a read-only command (`timebok booking ID`) three times the rest of
its start; loading libpq costs a few milliseconds. Only what `read.Reader` uses is here: one
connection in one read transaction, text-format results turned into the values psycopg
gives (bool, int, float, bytes, UTC-aware datetimes; JSON stays text, `Reader.json` decodes
it). Without a loadable libpq, `connect` raises `Missing` and the caller uses psycopg.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

LIBRARIES = ("libpq.so.5", "libpq.5.dylib", "libpq.so")
_CONNECTION_OK = 0
_COMMAND_OK, _TUPLES_OK = 1, 2
_PYFORMAT = re.compile(r"%\((\w+)\)s")
# Session settings the text parsing below relies on, whatever the server's defaults are.
_SESSION = "-c TimeZone=UTC -c DateStyle=ISO -c bytea_output=hex -c extra_float_digits=3"


class Missing(Exception):
    """No libpq could be loaded on this system."""


class Error(Exception):
    """libpq reported an error (connecting or running a statement)."""


def _bytea(text: str) -> bytes:
    return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()


_PARSERS: dict[int, Callable[[str], Any]] = {
    16: lambda t: t == "t",  # bool
    17: _bytea,
    20: int,  # int8
    21: int,  # int2
    23: int,  # int4
    26: int,  # oid
    700: float,
    701: float,
    1114: datetime.fromisoformat,  # timestamp
    1184: datetime.fromisoformat,  # timestamptz (TimeZone=UTC, DateStyle=ISO)
}


def _library() -> Any:
    for name in LIBRARIES:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        return _declare(lib)
    raise Missing("no libpq on this system")


def _declare(lib: Any) -> Any:
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    strings = ctypes.POINTER(s)
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "PQconnectdbParams": (p, [strings, strings, i]),
        "PQstatus": (i, [p]),
        "PQerrorMessage": (s, [p]),
        "PQfinish": (None, [p]),
        "PQexecParams": (p, [p, s, i, p, strings, p, p, i]),
        "PQresultStatus": (i, [p]),
        "PQresultErrorMessage": (s, [p]),
        "PQntuples": (i, [p]),
        "PQnfields": (i, [p]),
        "PQfname": (s, [p, i]),
        "PQftype": (ctypes.c_uint, [p, i]),
        "PQgetisnull": (i, [p, i, i]),
        "PQgetvalue": (s, [p, i, i]),
        "PQclear": (None, [p]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def _strings(values: Sequence[str | None]) -> Any:
    array = (ctypes.c_char_p * (len(values) + 1))()
    for n, value in enumerate(values):
        array[n] = None if value is None else value.encode()
    return array


def connect(conninfo: str, schema: str | None = None) -> Connection:
    """Connect (a libpq URI or key=value string), begin a read transaction."""
    lib = _library()
    options = _SESSION + (f" -csearch_path={schema}" if schema else "")
    keywords = ["dbname", "options", "client_encoding"]
    handle = lib.PQconnectdbParams(
        _strings([*keywords, None]), _strings([conninfo, options, "UTF8", None]), 1
    )
    conn = Connection(lib, handle)
    if not handle or lib.PQstatus(handle) != _CONNECTION_OK:
        message = conn.error()
        conn.close()
        raise Error(message or "cannot connect")
    conn.execute("BEGIN", {})
    return conn


class Connection:
    """One libpq connection; closing it ends (rolls back) its read transaction."""

    def __init__(self, lib: Any, handle: Any) -> None:
        self._lib, self._handle = lib, handle

    def error(self) -> str:
        """The connection's last error message."""
        raw = self._lib.PQerrorMessage(self._handle) if self._handle else None
        return raw.decode("utf-8", "replace").strip() if raw else ""

    def execute(self, sql: str, params: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one statement (`%(name)s` parameters); its column names and rows."""
        order: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in order:
                order.append(match.group(1))
            return f"${order.index(match.group(1)) + 1}"

        statement = _PYFORMAT.sub(number, sql)
        values = [None if params[k] is None else str(params[k]) for k in order]
        lib = self._lib
        res = lib.PQexecParams(
            self._handle, statement.encode(), len(values), None, _strings(values), None, None, 0
        )
        try:
            status = lib.PQresultStatus(res) if res else -1
            if status not in (_COMMAND_OK, _TUPLES_OK):
                raw = lib.PQresultErrorMessage(res) if res else None
                raise Error((raw or b"").decode("utf-8", "replace").strip() or self.error())
            return _result(lib, res)
        finally:
            if res:
                lib.PQclear(res)

    def cursor(self) -> Cursor:
        """A DBAPI-like cursor (what `read.Reader` uses of one)."""
        return Cursor(self)

    def close(self) -> None:
        """Close the connection."""
        if self._handle:
            self._lib.PQfinish(self._handle)
            self._handle = None


def _result(lib: Any, res: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns = range(lib.PQnfields(res))
    names = [lib.PQfname(res, c).decode() for c in columns]
    parsers = [_PARSERS.get(int(lib.PQftype(res, c)), str) for c in columns]
    rows = []
    for r in range(lib.PQntuples(res)):
        row = tuple(
            None
            if lib.PQgetisnull(res, r, c)
            else parsers[c](lib.PQgetvalue(res, r, c).decode("utf-8"))
            for c in columns
        )
        rows.append(row)
    return names, rows


class Cursor:
    """execute / description / fetchall / close over a Connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.description: list[tuple[str]] = []
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: dict[str, Any]) -> None:
        """Run a statement."""
        names, self._rows = self._conn.execute(sql, params)
        self.description = [(name,) for name in names]

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Every row of the last statement."""
        return self._rows

    def close(self) -> None:
        """Nothing to release: results are read in full."""
