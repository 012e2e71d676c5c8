"""A worker main process killed with messages in hand: with Redis late ack they come back once
the (short) visibility timeout has passed, to the next worker, within seconds, not minutes. And
a broker restart (a connection lost mid-ack) must not end the worker."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from tests.chaos import harness as h
from tests.conftest import PG_URL
from tests.support import request
from worker.adapters import broker
from worker.bootstrap import Deps, bootstrap
from worker.constants import REQUESTS_QUEUE, SUBMIT_TASK
from worker.entrypoints.app import create_app
from worker.settings import Settings

pytestmark = pytest.mark.e2e

VISIBILITY = 5  # seconds


@pytest.mark.timeout(120)
def test_messages_of_a_killed_worker_come_back_after_the_visibility_timeout(
    tmp_path: Path,
) -> None:
    redis = h.RedisServer(tmp_path / "redis").start()
    try:
        with h.private_schema("timebok_kill") as schema:
            env = h.timebok_env(redis.url(), schema, visibility_timeout=VISIBILITY)
            settings = Settings(broker_url=redis.url(), database_url=PG_URL, database_schema=schema)
            deps = bootstrap(settings)
            try:
                _run(env, settings, deps, tmp_path)
            finally:
                deps.store.dispose()
    finally:
        redis.stop()


def _run(env: dict[str, str], settings: Settings, deps: Deps, tmp: Path) -> None:
    worker = h.worker(env, tmp / "worker.log").start()
    children = worker.children()
    for child in children:  # the pool stops working: tasks stay reserved, unacked, in hand
        h.kill_pid(child, signal.SIGSTOP)
    requests = [request(patient_n=n) for n in range(1, 5)]
    ids = [str(r["request_id"]) for r in requests]
    app = create_app(settings)
    sent = time.monotonic()  # Redis counts the visibility timeout from each delivery, after this
    for payload in requests:
        app.send_task(SUBMIT_TASK, args=[payload], queue=REQUESTS_QUEUE)
    h.poll(lambda: _unacked(settings.broker_url) == len(ids), 20, "the worker to reserve them")
    worker.kill()
    killed = time.monotonic()
    for child in children:
        h.kill_pid(child)
    replacement = h.worker(env, tmp / "worker2.log").start()
    try:
        h.poll(lambda: _stored(deps, ids) == len(ids), 60, "the requests to come back")
        back = time.monotonic()
    finally:
        replacement.stop()
        worker.reap()
    # Redelivered after the visibility timeout, by a sweep that runs every few seconds: kombu's
    # default sweep (every 100 s) would leave them waiting for minutes.
    # The messages were delivered (and their timeout started) between `sent` and the kill.
    assert back - sent >= VISIBILITY, f"came back {back - sent:.1f} s after they were sent"
    assert back - killed < VISIBILITY + 15, f"came back {back - killed:.1f} s after the kill"


def _unacked(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.hlen("unacked"))


def _stored(deps: Deps, ids: list[str]) -> int:
    with deps.store.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM bookings WHERE id = ANY(:ids)"), {"ids": ids}
            ).scalar_one()
        )


# -- a broker restart must not end the worker --------------------------------------------------


class _DeadChannel:
    """A kombu channel after its connection was closed (what a late ack finds)."""

    connection = None
    do_restore = False  # nothing for kombu's at-exit give-back to do

    def conn_or_acquire(self, client: object = None) -> object:
        raise AttributeError("'NoneType' object has no attribute 'hostname'")  # kombu's words


def test_late_ack_on_a_closed_channel_is_a_connection_error() -> None:
    """Celery logs a connection error and carries on; anything else ends the worker."""
    qos = broker.QoS(_DeadChannel())
    errors = broker.Transport.connection_errors
    with pytest.raises(errors):
        qos.ack("tag")
    with pytest.raises(errors):
        qos.reject("tag", requeue=True)


def test_give_back_on_a_lost_connection_leaves_messages_to_the_sweep() -> None:
    qos = broker.QoS(_DeadChannel())
    qos._delivered["tag"] = object()
    qos.restore_unacked()  # no exception: they stay in Redis' unacked hash
    assert not qos._delivered
