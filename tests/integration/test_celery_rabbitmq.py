"""Celery on RabbitMQ, the production broker: quorum queues, the intake end to end, and a
task whose retry the broker refuses is dead-lettered where `timebok dlq` sees it, not dropped.

Each test has a vhost of its own on the shared RabbitMQ (and a restricted user where it needs
one), removed afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kombu import Connection
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)
from sqlalchemy import text

from tests.chaos import harness as h
from tests.conftest import ROOT
from tests.servers import private_database, rabbit_queues, rabbit_vhost
from tests.support import request
from worker.adapters.store.db import make_engine
from worker.adapters.store.migrate import upgrade
from worker.constants import DEAD_LETTER_QUEUE, MAINTENANCE_QUEUE, REQUESTS_QUEUE
from worker.entrypoints.app import create_app, send_booking
from worker.settings import Settings

pytestmark = pytest.mark.integration

# Where Celery publishes a retry with a countdown on quorum queues (native delayed delivery).
RETRIES_EXCHANGE = "celery_delayed_27"


def _migrated(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()


def _count(url: str, sql: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


def _timebok(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.entrypoints.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(120)
def test_intake_on_quorum_queues(tmp_path: Path) -> None:
    with rabbit_vhost() as vhost, private_database() as db:
        _migrated(db)
        env = h.timebok_env(vhost.url(), "", database_url=db)
        worker = h.worker(env, tmp_path / "worker.log").start()
        try:
            sample = tmp_path / "request.json"
            sample.write_text(json.dumps(request(patient_n=3)), encoding="utf-8")
            done = _timebok(env, "submit", str(sample))
            assert done.returncode == 0, done.stderr
            h.poll(lambda: _count(db, "SELECT count(*) FROM bookings") == 1, 30, "the booking")
        finally:
            worker.stop()
        queues = rabbit_queues(vhost.name)
    for name in (REQUESTS_QUEUE, MAINTENANCE_QUEUE, DEAD_LETTER_QUEUE):
        assert queues[name][0] == "quorum", queues


@pytest.mark.timeout(180)
def test_a_retry_the_broker_refuses_is_dead_lettered_not_dropped(tmp_path: Path) -> None:
    # The worker's user may do everything but publish a retry; the database makes every
    # intake wait for a lock and give up (a transient error: the task wants a retry).
    with (
        rabbit_vhost(write=f"^(?!{RETRIES_EXCHANGE}$).*") as vhost,
        private_database(lock_timeout="300ms") as db,
    ):
        _migrated(db)
        _declare_as_guest(vhost.url(), delivery_limit=2)
        env = h.timebok_env(
            vhost.url(restricted=True),
            "",
            database_url=db,
            delivery_limit=2,
            task_max_retries=30,
            retry_backoff_max=1,
        )
        worker = h.worker(env, tmp_path / "worker.log").start()
        lock_engine = make_engine(db)
        locker = lock_engine.connect()
        try:
            locker.execute(text("SET lock_timeout = 0"))
            locker.execute(text("LOCK TABLE bookings IN ACCESS EXCLUSIVE MODE"))
            payload = request(patient_n=7)
            portal = Settings(broker_url=vhost.url(), database_url=db, delivery_limit=2)
            send_booking(create_app(portal), payload)
            h.poll(
                lambda: _count(db, "SELECT count(*) FROM dead_letters") == 1,
                90,
                "the task in the dead-letter store",
            )
            locker.rollback()  # the database works again
            listed = _timebok(env, "dlq", "list", "--json")
            [dead] = json.loads(listed.stdout)
            replayed = _timebok(env, "dlq", "replay", str(dead["id"]))
            assert replayed.returncode == 0, replayed.stderr
        finally:
            locker.close()
            lock_engine.dispose()
            worker.stop()
        bookings = _count(db, f"SELECT count(*) FROM bookings WHERE id = '{payload['request_id']}'")
    log = worker.text()
    assert "ACCESS_REFUSED" in log  # the retry really was refused by the broker
    assert dead["kind"] == "task"
    assert "delivery_limit" in dead["reason"]
    assert bookings == 1


def _declare_as_guest(url: str, delivery_limit: int) -> None:
    """The queues and the delayed-delivery topology, which the restricted user cannot bind."""
    app = create_app(Settings(broker_url=url, delivery_limit=delivery_limit))
    with Connection(url) as conn:
        declare_native_delayed_delivery_exchanges_and_queues(conn, "quorum")
        for queue in app.conf.task_queues:
            queue(conn.default_channel).declare()
            bind_queue_to_native_delayed_delivery_exchange(conn, queue)
