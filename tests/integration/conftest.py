"""A real stack: Redis DB + PostgreSQL schema + a `timebok worker` subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kombu import Connection, Queue

from tests.api_server import ApiProcess
from tests.conftest import PG_URL, ROOT, WorkerProcess, wait_for
from worker.adapters.store.migrate import upgrade
from worker.bootstrap import Deps, bootstrap
from worker.settings import Settings


@dataclass
class Stack:
    """Settings, in-process deps (for assertions) and the worker subprocess."""

    settings: Settings
    deps: Deps
    env: dict[str, str]
    worker: WorkerProcess

    def drain(
        self, queue: str, expect: int, timeout: float = 20.0
    ) -> list[tuple[bytes, dict[str, object]]]:
        """Take exactly `expect` raw messages off a queue (fails on timeout)."""
        got: list[tuple[bytes, dict[str, object]]] = []
        with Connection(self.settings.epj_url) as conn:
            simple = conn.SimpleQueue(Queue(queue, durable=True), no_ack=False)

            def take() -> bool:
                try:
                    m = simple.get(block=True, timeout=0.2)
                except simple.Empty:
                    return len(got) >= expect
                got.append(
                    (m.body if isinstance(m.body, bytes) else m.body.encode(), dict(m.headers))
                )
                m.ack()
                return len(got) >= expect

            wait_for(take, timeout, 0, f"{expect} message(s) on {queue}")
            simple.close()
        return got

    def depth(self, queue: str) -> int:
        """Messages waiting on a queue."""
        return self.deps.epj.depth(queue)

    def publish_raw(self, body: bytes, headers: dict[str, str]) -> None:
        """Put raw bytes on our inbound queue, as an EPJ system would."""
        from worker.adapters.transports.kombu import Envelope

        self.deps.epj.publish(Envelope(self.settings.inbound_queue, body, headers))


@pytest.fixture(scope="module")
def stack(
    redis_url: str, pg_schema: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Migrated PostgreSQL schema + worker process on a private Redis DB."""
    env = {
        **os.environ,
        "TIMEBOK_BROKER_URL": redis_url,
        "TIMEBOK_DATABASE_URL": PG_URL,
        "TIMEBOK_DATABASE_SCHEMA": pg_schema,
        "TIMEBOK_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    settings = Settings(broker_url=redis_url, database_url=PG_URL, database_schema=pg_schema)
    deps = bootstrap(settings)
    upgrade(deps.store.engine)
    log = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    worker = WorkerProcess(env, log).start()
    try:
        yield Stack(settings, deps, env, worker)
    finally:
        worker.stop()
        deps.store.dispose()


@pytest.fixture(scope="module")
def clinic_sim(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`timebok epj-sim` playing clinic 8090001, answering at once (its log file)."""
    log = Path(tmp_path_factory.mktemp("sim")) / "sim.log"
    out = log.open("ab")
    cmd = [sys.executable, "-m", "worker.entrypoints.cli", "epj-sim", "--clinic", "8090001"]
    proc = subprocess.Popen(
        [*cmd, "--delay", "0", "--seed", "16"],
        env=stack.env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    wait_for(lambda: b"consuming" in log.read_bytes(), 60, 0.1, "simulator consuming")
    try:
        yield log
    finally:
        proc.terminate()
        proc.wait(15)
        out.close()


@pytest.fixture(scope="module")
def api(
    stack: Stack, clinic_sim: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """`timebok api` on the stack's database and brokers (lookups time out after 2 s)."""
    log = Path(tmp_path_factory.mktemp("api")) / "api.log"
    env = {**stack.env, "TIMEBOK_SYNC_TIMEOUT": "2", "TIMEBOK_LOOKUP_CACHE_TTL": "0"}
    server = ApiProcess(env, log).start()
    try:
        yield server
    finally:
        server.stop()
