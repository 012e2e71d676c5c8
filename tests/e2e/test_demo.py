"""The demo's whole flow with real processes: worker + simulator + Redis + PostgreSQL."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_URL, ROOT
from worker.domain.booking import State, can_move
from worker.entrypoints import demo
from worker.settings import Settings

pytestmark = pytest.mark.e2e


def test_demo_flow_on_postgres(redis_url: str, pg_schema: str, tmp_path: Path) -> None:
    schema = f"{pg_schema}_demo"
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        settings = Settings(broker_url=redis_url, database_url=PG_URL, database_schema=schema)
        env = demo._env(settings) | {"PYTHONPATH": str(ROOT)}
        out = io.StringIO()
        result = demo.run_flow(settings, env, tmp_path, out)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
    assert result["states"] == result["expected"]
    assert result["lookup"]["gone"] is True  # the booked slot left the next lookup's answer
    kari = sorted(n["event"] for n in result["inbox"][demo.PATIENT.fnr])
    assert kari == sorted(
        [
            "confirmed",
            "confirmed",
            "confirmed",
            "confirmed",
            "confirmed",  # 4 slots + the wish
            "confirmed",  # the slot the opening lookup found
            "changed",  # the wish change
            "cancel_confirmed",  # the patient cancels the in-person time
            "cancelled_by_clinic",  # the clinic cancels the phone time
            "new_appointment",  # booked by phone
            "rejected",  # Helsestasjonen Nord turns the wish down
            "invalid",  # not connected (the bad check digit identifies nobody: no notice)
        ]
    )
    assert [n["event"] for n in result["inbox"][demo.CHILD.fnr]] == ["confirmed"]
    statuses = sorted(a["status"] for a in result["appointments"][demo.PATIENT.fnr])
    assert statuses.count("Avbestilt") == 2
    assert any(
        a["uid"] == result["phone_booked_uid"] for a in result["appointments"][demo.PATIENT.fnr]
    )
    assert "Videotime" in {a["location"] for a in result["appointments"][demo.PATIENT.fnr]}
    assert "->" in out.getvalue()  # progress was shown


def _histories_are_legal(settings: Settings, ids: list[str]) -> None:
    from worker.bootstrap import bootstrap
    from worker.flows import views

    deps = bootstrap(settings)
    try:
        for booking_id in ids:
            path = [h["to"] for h in views.booking(deps, booking_id)["history"]]
            for a, b in itertools.pairwise(path):
                assert can_move(State(a), State(b)), f"{booking_id}: illegal {a} -> {b} in {path}"
    finally:
        deps.store.dispose()


def _run_demo(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.entrypoints.cli", "demo"],
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_starts_a_private_redis_when_none_answers(tmp_path: Path) -> None:
    env = dict(os.environ) | {"TIMEBOK_BROKER_URL": "redis://127.0.0.1:1/0"}
    env.pop("TIMEBOK_EPJ_BROKER_URL", None)
    proc = _run_demo(tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "started a private redis-server" in proc.stdout
    assert "Innboks: Kari Nordmann" in proc.stdout
    assert demo.PATIENT.fnr not in proc.stdout + proc.stderr  # only the masked number
    db = tmp_path / ".timebok" / "demo.db"
    assert db.is_file()
    settings = Settings(database_url=f"sqlite:///{db}")
    from sqlalchemy import create_engine, text

    engine = create_engine(settings.database_url)
    with engine.connect() as conn:
        all_ids = [row[0] for row in conn.execute(text("SELECT id FROM bookings"))]
    engine.dispose()
    assert len(all_ids) == 12  # the 11 scripted requests and the slot found by the lookup
    _histories_are_legal(settings, all_ids)


def test_demo_without_any_redis_fails_in_one_clear_line(tmp_path: Path) -> None:
    env = dict(os.environ) | {"TIMEBOK_BROKER_URL": "redis://127.0.0.1:1/0", "PATH": str(tmp_path)}
    proc = _run_demo(tmp_path, env)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "docker compose up -d redis" in lines[0] and "redis-server" in lines[0]
