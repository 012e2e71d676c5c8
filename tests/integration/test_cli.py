"""The `timebok` command line against the real stack: the --json contracts."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mappers.model import Person
from tests.conftest import ROOT, wait_for
from tests.integration.conftest import Stack
from tests.support import avtale, fnr, headers, request

pytestmark = pytest.mark.integration


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.entrypoints.cli", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def booking_json(stack: Stack, booking_id: str) -> dict | None:  # type: ignore[type-arg]
    proc = cli(stack.env, "booking", booking_id, "--json")
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def test_submit_file_and_booking_json(stack: Stack, tmp_path: Path) -> None:
    req = request("reserve", patient_n=69, subject="x" * 51)  # fnr(1)'s inbox is counted elsewhere
    path = tmp_path / "req.json"
    path.write_text(json.dumps(req), encoding="utf-8")
    proc = cli(stack.env, "submit", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["booking_id"] == req["request_id"]
    data = wait_for(lambda: booking_json(stack, req["request_id"]), what="booking")
    assert data["state"] == "INVALID"
    assert data["reason"] == "subject: at most 50 characters (got 51)"
    assert [h["to"] for h in data["history"]] == ["REQUESTED", "INVALID"]
    assert all(h["at"] for h in data["history"])
    assert data["messages"] == []
    assert set(data) >= {"id", "state", "reason", "history", "messages"}


def test_submit_stdin_valid_request_shows_its_message(stack: Stack) -> None:
    req = request("wish", patient_n=70)
    proc = cli(stack.env, "submit", "-", stdin=json.dumps(req))
    assert proc.returncode == 0, proc.stderr
    assert req["request_id"] in proc.stdout

    def sent() -> dict | None:  # type: ignore[type-arg]
        data = booking_json(stack, req["request_id"])
        return data if data and data["state"] == "SENT" else None

    data = wait_for(sent, what="SENT")
    assert data["reason"] is None
    [msg] = data["messages"]
    assert msg["direction"] == "out" and msg["type"] == "DIALOG_INNBYGGER_TIMEONSKE"
    assert msg["status"] == "sent" and uuid.UUID(msg["msg_id"])
    stack.drain("8090001_async", 1)


def test_malformed_json_file(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"request_id": ', encoding="utf-8")
    proc = cli(stack.env, "submit", str(path), "--json")
    booking_id = json.loads(proc.stdout)["booking_id"]
    data = wait_for(lambda: booking_json(stack, booking_id), what="booking")
    assert data["state"] == "INVALID" and data["reason"].startswith("$: ")


def test_unknown_booking_is_a_clear_error(stack: Stack) -> None:
    proc = cli(stack.env, "booking", "no-such-id", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {"error": "no booking with id no-such-id"}


def test_inbox_and_appointments_json(stack: Stack) -> None:
    patient = Person(fnr(71), "Per", "Telefon")
    uid = str(uuid.uuid4())
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
    body = avtale(patient, uid=uid, start=start)
    stack.publish_raw(body, headers(str(uuid.uuid4()), "DIALOG_INNBYGGER_AVTALEUTSENDING"))
    stack.drain("8090001_async", 1)

    def inbox() -> list | None:  # type: ignore[type-arg]
        items = json.loads(cli(stack.env, "inbox", patient.fnr, "--json").stdout)
        return items or None

    [note] = wait_for(inbox, what="inbox")
    assert note["event"] == "new_appointment" and note["appointment_uid"] == uid
    assert note["repliable"] is False and note["body"].endswith(
        "Denne meldingen kan ikke besvares."
    )
    assert note["title"] and note["created_at"]
    [appt] = json.loads(cli(stack.env, "appointments", patient.fnr, "--json").stdout)
    assert appt["uid"] == uid and appt["status"] == "Tildelt"
    assert datetime.fromisoformat(appt["start"]) == start
    assert {"end", "practitioner", "location", "appointment_type"} <= set(appt)
    ics = cli(stack.env, "ics", uid)
    assert ics.returncode == 0 and f"UID:{uid}" in ics.stdout


def test_worker_refuses_an_unmigrated_database(tmp_path: Path, redis_url: str) -> None:
    import os

    env = dict(os.environ) | {
        "TIMEBOK_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}",
        "TIMEBOK_BROKER_URL": redis_url,
    }
    proc = cli(env, "worker")
    assert proc.returncode == 2
    assert "run `timebok migrate` first" in proc.stderr
    migrated = cli(env, "migrate")
    assert migrated.returncode == 0 and "database at migration" in migrated.stdout


def test_validate_explains(tmp_path: Path) -> None:
    import os

    good = next((ROOT / "tests" / "fixtures" / "timereservasjon").glob("*.xml"))
    assert cli(dict(os.environ), "validate", str(good)).stdout.strip() == "valid"
    bad = tmp_path / "bad.xml"
    bad.write_bytes(
        good.read_bytes().replace(b"<MsgId>", b"<MsgIdX>").replace(b"</MsgId>", b"</MsgIdX>")
    )
    proc = cli(dict(os.environ), "validate", str(bad), "--json")
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["valid"] is False
    assert any("MsgIdX" in e and "line" in e for e in data["errors"])
