"""The read side's own access to the store: the environment read as Settings reads it, the
store URL opened by the driver alone, values given back as the ORM's column types do."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from worker.adapters.store.read import Reader, ReadStore, utc
from worker.errors import StoreUnavailable
from worker.settings import Settings
from worker.storeenv import store_location

ENVIRONMENTS = [
    {},
    {"TIMEBOK_DATABASE_URL": "postgresql+psycopg://u@h:5432/db"},
    {"TIMEBOK_DATABASE_URL": "sqlite:////tmp/x.db", "TIMEBOK_DATABASE_SCHEMA": "s1"},
    {"timebok_database_url": "sqlite:///lower.db"},
    {"Timebok_Database_Schema": ""},
    {"TIMEBOK_DATABASE_URL": "sqlite:///first.db", "timebok_database_url": "sqlite:///last.db"},
    {"TIMEBOK_DATABASE_URLS": "sqlite:///not-it.db", "DATABASE_URL": "sqlite:///nor-this.db"},
]


@pytest.mark.parametrize("environ", ENVIRONMENTS)
def test_the_store_location_is_what_settings_read(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("TIMEBOK_"):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert store_location() == (settings.database_url, settings.database_schema)
    assert store_location(environ) == (settings.database_url, settings.database_schema)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("2026-12-01 12:48:16.757644", datetime(2026, 12, 1, 12, 48, 16, 757644, tzinfo=UTC)),
        ("2026-12-01 13:00:00.000000", datetime(2026, 12, 1, 13, 0, tzinfo=UTC)),
        ("2026-12-01 12:48:16.757644+00:00", datetime(2026, 12, 1, 12, 48, 16, 757644, UTC)),
        (
            datetime(2026, 12, 1, 14, 0, tzinfo=timezone(timedelta(hours=1))),
            datetime(2026, 12, 1, 13, 0, tzinfo=UTC),
        ),
        (None, None),
    ],
)
def test_timestamps_come_back_utc_aware(stored: object, expected: datetime | None) -> None:
    got = utc(stored)
    assert got == expected
    assert got is None or got.utcoffset() == timedelta(0)


def test_postgres_parameters_are_rewritten_and_sqlite_ones_kept() -> None:
    seen: list[tuple[str, dict[str, object]]] = []

    class Cursor:
        description = (("n",),)

        def execute(self, sql: str, params: dict[str, object]) -> None:
            seen.append((sql, params))

        def fetchall(self) -> list[tuple[int]]:
            return [(1,)]

        def close(self) -> None:
            pass

    class Connection:
        def cursor(self) -> Cursor:
            return Cursor()

    sql = "SELECT n FROM t WHERE a = :a AND b = :bee AND c = '12:30'"
    assert Reader(Connection(), postgres=True).rows(sql, a=1, bee=2) == [{"n": 1}]
    assert Reader(Connection(), postgres=False).row(sql, a=1, bee=2) == {"n": 1}
    assert seen[0][0] == "SELECT n FROM t WHERE a = %(a)s AND b = %(bee)s AND c = '12:30'"
    assert seen[1][0] == sql
    assert Reader(Connection(), postgres=False).json('{"a": [1]}') == {"a": [1]}
    assert Reader(Connection(), postgres=True).json("already decoded") == "already decoded"


def test_a_sqlite_url_opens_that_file_and_never_creates_one(tmp_path: Path) -> None:
    path = tmp_path / "some dir" / "t.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (n INTEGER)")
        conn.execute("INSERT INTO t VALUES (7)")
    with ReadStore(f"sqlite:///{path}").reader() as r:
        assert r.rows("SELECT n FROM t") == [{"n": 7}]
    missing = tmp_path / "missing.db"
    with pytest.raises(StoreUnavailable), ReadStore(f"sqlite:///{missing}").reader():
        pass
    assert not missing.exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://h/db"])
def test_urls_the_read_side_cannot_open_are_a_clear_error(url: str) -> None:
    with pytest.raises(StoreUnavailable), ReadStore(url).reader():
        pass
