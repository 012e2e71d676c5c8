"""The EPJ transport on RabbitMQ (amqp://) while Celery stays on Redis: the whole round trip."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection, Queue

from mappers import incoming
from mappers.codes import AppRecStatus, ReplyCode
from mappers.model import AppRec, DialogMessage, Party
from tests.conftest import PG_URL, ROOT, WorkerProcess, wait_for
from tests.support import apprec_for, confirmed_event, reply, request
from worker.adapters.store.migrate import upgrade
from worker.adapters.transports.kombu import Envelope, KombuTransport
from worker.bootstrap import bootstrap
from worker.constants import REQUESTS_QUEUE, SUBMIT_TASK
from worker.entrypoints.app import create_app
from worker.flows import views
from worker.settings import Settings

pytestmark = pytest.mark.integration
AMQP_URL = os.environ.get("TIMEBOK_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")


def _rabbit_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def ids() -> Iterator[tuple[str, str]]:
    """A clinic and an own HER-id unique to this run (RabbitMQ is shared by every run)."""
    clinic, own = str(random.randint(10**8, 10**9)), str(random.randint(10**8, 10**9))
    yield clinic, own
    with Connection(AMQP_URL) as conn:
        for name in (f"{clinic}_async", f"{own}_async"):
            Queue(name, durable=True)(conn.default_channel).delete()


def _drain(queue: str, n: int) -> list[bytes]:
    got: list[bytes] = []
    with Connection(AMQP_URL) as conn:
        simple = conn.SimpleQueue(Queue(queue, durable=True))

        def take() -> bool:
            try:
                m = simple.get(block=True, timeout=0.3)
            except simple.Empty:
                return len(got) >= n
            got.append(m.body if isinstance(m.body, bytes) else m.body.encode())
            m.ack()
            return len(got) >= n

        wait_for(take, 30, 0, f"{n} message(s) on {queue} (RabbitMQ)")
        simple.close()
    return got


def test_round_trip_over_rabbitmq(
    ids: tuple[str, str], redis_url: str, pg_schema: str, tmp_path: Path
) -> None:
    assert _rabbit_up(), "RabbitMQ must run on 127.0.0.1:5672 (.ci/run starts it)"
    clinic, own = ids
    registry = tmp_path / "registry.toml"
    registry.write_text(
        f'[[clinic]]\nher_id = {clinic}\nname = "Kaninlegene"\nphone = "12345678"\n'
        'processes = ["timereservasjon", "timeonske", "avtaleavbestilling", "avtaleutsending"]\n',
        encoding="utf-8",
    )
    schema = f"{pg_schema}_amqp"
    settings = Settings(
        broker_url=redis_url,
        epj_broker_url=AMQP_URL,
        database_url=PG_URL,
        database_schema=schema,
        own_her_id=own,
        registry_file=registry,
    )
    deps = bootstrap(settings)
    with deps.store.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    env = dict(os.environ) | {
        "TIMEBOK_BROKER_URL": redis_url,
        "TIMEBOK_EPJ_BROKER_URL": AMQP_URL,
        "TIMEBOK_DATABASE_URL": PG_URL,
        "TIMEBOK_DATABASE_SCHEMA": schema,
        "TIMEBOK_OWN_HER_ID": own,
        "TIMEBOK_REGISTRY_FILE": str(registry),
        "PYTHONPATH": str(ROOT),
    }
    worker = None
    try:
        upgrade(deps.store.engine)
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        req = request("reserve", clinic={"her_id": clinic, "name": "Kaninlegene"})
        create_app(settings).send_task(SUBMIT_TASK, args=[req], queue=REQUESTS_QUEUE)
        [body] = _drain(f"{clinic}_async", 1)
        doc = incoming.parse_any(body)
        assert isinstance(doc, DialogMessage)
        assert doc.envelope.receiver.her_id == clinic and doc.envelope.sender.her_id == own
        # The clinic answers on RabbitMQ: AppRec OK, then the confirmation.
        transport = KombuTransport(AMQP_URL)
        headers = {"fromHerId": clinic, "toHerId": own, "type": "APPREC"}
        transport.publish(Envelope(f"{own}_async", apprec_for(doc, AppRecStatus.OK), headers))
        answer = reply(doc, ReplyCode.CONFIRMED, event=confirmed_event(doc))
        headers = {"fromHerId": clinic, "toHerId": own, "type": doc.envelope.process.value}
        transport.publish(Envelope(f"{own}_async", answer, headers))
        transport.close()

        def state() -> str | None:
            return str(views.booking(deps, req["request_id"])["state"])

        wait_for(lambda: state() == "CONFIRMED", 30, 0.2, "CONFIRMED")
        [receipt] = _drain(f"{clinic}_async", 1)
        rec = incoming.parse_any(receipt)
        assert isinstance(rec, AppRec) and rec.status is AppRecStatus.OK
        assert rec.receiver == Party(clinic, rec.receiver.name)
    finally:
        if worker is not None:
            worker.stop()
        with deps.store.engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        deps.store.dispose()
