"""The read side gives the same views on every way it reads: PostgreSQL through libpq,
through psycopg (no libpq on the system), through the worker's pooled store, and SQLite."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from tests.conftest import PG_URL, ROOT
from worker.adapters.store import libpq
from worker.adapters.store.db import Store
from worker.adapters.store.tables import (
    AppointmentRow,
    Base,
    BookingRow,
    DeadLetterRow,
    HistoryRow,
    MessageRow,
    NotificationRow,
)
from worker.flows import views

pytestmark = pytest.mark.integration
AT = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
FNR = "14838510036"
SENT = next((ROOT / "tests" / "fixtures" / "timereservasjon").glob("*.xml")).read_bytes()


def _rows() -> list[Any]:
    start = (AT + timedelta(days=1)).replace(microsecond=0)
    return [
        BookingRow(
            id="b-1", action="reserve", state="SENT", created_at=AT, updated_at=AT,
            request={"errors": ["x: æøå"]},
        ),
        HistoryRow(booking_id="b-1", source=None, target="REQUESTED", at=AT),
        HistoryRow(booking_id="b-1", source="REQUESTED", target="SENT", reason="r", at=AT),
        MessageRow(
            msg_id="m-1", direction="out", booking_id="b-1", msg_type="DIALOG", xml=SENT,
            status="sent", created_at=AT, sent_at=AT + timedelta(seconds=1),
        ),
        NotificationRow(
            dedupe_key="k1", patient_fnr=FNR, event="confirmed", title="Time bekreftet",
            body="Linje 1\nLinje 2 «sitat»", repliable=False, created_at=AT,
        ),
        NotificationRow(
            dedupe_key="k2", patient_fnr=FNR, event="x", title="t", body="b", repliable=True,
            created_at=AT + timedelta(minutes=1),
        ),
        AppointmentRow(
            uid="a-1", patient_fnr=FNR, clinic_her_id="8090001", clinic_name="Testlegekontoret",
            start=start, end=start + timedelta(minutes=20), appointment_type="in_person",
            location="Her", status="Tildelt", updated_at=AT, practitioner=None,
        ),
        DeadLetterRow(
            kind="message", reason="r", source_queue="q", payload=b"<x>\xc3\xa6</x>",
            headers={"a": "b", "n": 1}, created_at=AT,
        ),
        DeadLetterRow(
            kind="request", reason="r2", source_queue="q", payload=b"{}", headers=None,
            created_at=AT, replayed_at=AT,
        ),
    ]  # fmt: skip


def _views(source: Any) -> dict[str, Any]:
    return {
        "booking": views.booking(source, "b-1"),
        "inbox": views.inbox(source, FNR),
        "appointments": views.appointments(source, FNR),
        "appointment": views.appointment(source, "a-1"),
        "dead_letters": views.dead_letters(source),
        "all_dead_letters": views.dead_letters(source, include_replayed=True),
        "dead_letter": views.dead_letter(source, 1),
    }


@dataclass
class Pooled:
    """The worker's side: its store, read on a pooled connection."""

    store: Store


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Callable[[], Any]]]:
    """The same rows in a PostgreSQL schema and a SQLite file; a source per way of reading."""
    schema = f"timebok_read_{id(tmp_path_factory)}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sqlite = Path(tmp_path_factory.mktemp("read")) / "t.db"
    pg, lite = Store.open(PG_URL, schema), Store.open(f"sqlite:///{sqlite}")
    for store in (pg, lite):
        Base.metadata.create_all(store.engine)
        with Session(store.engine) as s, s.begin():
            s.add_all(_rows())
    yield {
        "libpq": lambda: views.open_store(PG_URL, schema),
        "pooled pg": lambda: Pooled(pg),
        "sqlite": lambda: views.open_store(f"sqlite:///{sqlite}"),
        "pooled sqlite": lambda: Pooled(lite),
    }
    pg.dispose()
    lite.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def test_every_way_of_reading_gives_the_same_views(
    stored: dict[str, Callable[[], Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _views(stored["libpq"]())
    assert expected["booking"]["created_at"] == AT.isoformat()
    assert expected["booking"]["errors"] == ["x: æøå"]
    assert [n["repliable"] for n in expected["inbox"]] == [True, False]
    assert expected["dead_letter"]["headers"] == {"a": "b", "n": 1}
    assert expected["dead_letter"]["payload"] == "<x>æ</x>"
    assert expected["appointment"].start.tzinfo is not None
    for name in ("pooled pg", "sqlite", "pooled sqlite"):
        assert _views(stored[name]()) == expected, name
    monkeypatch.setattr(libpq, "LIBRARIES", ())  # a system without libpq: psycopg
    with pytest.raises(libpq.Missing):
        libpq.connect("postgresql://nobody@127.0.0.1:1/x")
    assert _views(stored["libpq"]()) == expected


def test_on_postgresql_a_read_only_verb_loads_neither_sqlalchemy_nor_psycopg(
    stored: dict[str, Callable[[], Any]],
) -> None:
    from tests.unit.test_cli_imports import NEVER, imports

    source = stored["libpq"]()
    loaded, out = imports(source.store.url, "booking", "b-1", "--json", schema=source.store.schema)
    assert not loaded & (NEVER | {"psycopg", "psycopg_binary"}), sorted(loaded)
    assert '"id": "b-1"' in out
