"""Read-only verbs import only what they need: never Celery, kombu, a transport, SQLAlchemy,
pydantic or cryptography (a property of the import set, not a timing)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from worker.adapters.store.tables import (
    AppointmentRow,
    Base,
    BookingRow,
    DeadLetterRow,
    HistoryRow,
    MessageRow,
    NotificationRow,
)

ROOT = Path(__file__).resolve().parents[2]
SENT = next((ROOT / "tests" / "fixtures" / "timereservasjon").glob("*.xml"))
# Top-level packages no read-only verb may load (the worker's machinery).
NEVER = frozenset(
    {
        "celery",
        "kombu",
        "amqp",
        "billiard",
        "proton",
        "redis",
        "sqlalchemy",
        "alembic",
        "pydantic",
        "pydantic_core",
        "pydantic_settings",
        "cryptography",
        "prometheus_client",
        "icalendar",
    }
)
XML = frozenset({"lxml", "mappers"})  # only for the verbs that read a stored document
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| *([\w.]+)$", re.MULTILINE)
AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FNR = "14838510036"


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store with one booking, its sent message, an inbox note, an appointment and a
    dead letter."""
    path = tmp_path_factory.mktemp("cli") / "timebok.db"
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add(BookingRow(id="b-1", action="reserve", state="SENT", created_at=AT, updated_at=AT))
        s.flush()
        s.add(HistoryRow(booking_id="b-1", source=None, target="REQUESTED", at=AT))
        s.add(_message(SENT.read_bytes()))
        s.add(
            NotificationRow(
                dedupe_key="k",
                patient_fnr=FNR,
                event="confirmed",
                title="t",
                body="b",
                repliable=False,
                created_at=AT,
            )
        )
        s.add(_appointment())
        s.add(
            DeadLetterRow(
                kind="message",
                reason="r",
                source_queue="q",
                payload=b"<x/>",
                headers={"a": "b"},
                created_at=AT,
            )
        )
    engine.dispose()
    return f"sqlite:///{path}"


def _message(xml: bytes) -> MessageRow:
    return MessageRow(
        msg_id="m-1",
        direction="out",
        booking_id="b-1",
        msg_type="DIALOG_INNBYGGER_TIMERESERVASJON",
        xml=xml,
        status="sent",
        created_at=AT,
    )


def _appointment() -> AppointmentRow:
    return AppointmentRow(
        uid="a-1",
        patient_fnr=FNR,
        clinic_her_id="8090001",
        clinic_name="Testlegekontoret",
        start=AT + timedelta(days=1),
        end=AT + timedelta(days=1, minutes=20),
        appointment_type="in_person",
        location="Her",
        status="Tildelt",
        updated_at=AT,
    )


def imports(database: str, *verb: str, schema: str | None = None) -> tuple[set[str], str]:
    """The top-level packages `timebok VERB` imports, and what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("TIMEBOK_")}
    env["TIMEBOK_DATABASE_URL"] = database
    if schema:
        env["TIMEBOK_DATABASE_SCHEMA"] = schema
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "worker.entrypoints.cli", *verb],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {name.split(".")[0] for name in IMPORTED.findall(proc.stderr)}, proc.stdout


@pytest.mark.parametrize(
    ("verb", "reads_xml"),
    [
        (("booking", "b-1", "--json"), True),
        (("booking", "b-1"), True),
        (("inbox", FNR, "--json"), False),
        (("inbox", FNR), False),
        (("appointments", FNR, "--json"), False),
        (("dlq", "list", "--json"), False),
        (("dlq", "show", "1", "--json"), True),
    ],
)
def test_a_read_only_verb_loads_none_of_the_workers_machinery(
    database: str, verb: tuple[str, ...], reads_xml: bool
) -> None:
    loaded, out = imports(database, *verb)
    assert not loaded & NEVER, f"timebok {' '.join(verb)} imports {sorted(loaded & NEVER)}"
    assert bool(loaded & XML) is reads_xml
    assert out.strip()


def test_the_read_path_still_answers_what_the_store_holds(database: str) -> None:
    """The guard runs the real verbs: their answers are the stored rows."""
    _, out = imports(database, "booking", "b-1", "--json")
    shown = json.loads(out)
    assert shown["state"] == "SENT" and shown["created_at"] == AT.isoformat()
    assert [m["msg_id"] for m in shown["messages"]] == ["m-1"]
    assert shown["appointment_type"] is not None  # read back from the sent document
    [note] = json.loads(imports(database, "inbox", FNR, "--json")[1])
    assert note["repliable"] is False and note["created_at"] == AT.isoformat()
    [letter] = json.loads(imports(database, "dlq", "list", "--json")[1])
    assert letter["size"] == 4 and "headers" not in letter
    shown_letter = json.loads(imports(database, "dlq", "show", "1", "--json")[1])
    assert shown_letter["headers"] == {"a": "b"} and shown_letter["payload"] == "<x/>"


def test_ics_loads_its_calendar_library_but_not_the_worker(database: str) -> None:
    loaded, out = imports(database, "ics", "a-1")
    assert not loaded & (NEVER - {"icalendar"})
    assert "UID:a-1" in out
