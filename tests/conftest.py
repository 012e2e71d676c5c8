"""Shared fixtures: real Redis DB and PostgreSQL schema per test run, worker processes."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
REDIS_BASE = os.environ.get("TIMEBOK_TEST_REDIS", "redis://127.0.0.1:6379")
PG_URL = os.environ.get("TIMEBOK_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _free_redis_db() -> int:
    """A Redis DB number no other run is using right now (claimed with a TTL'd key)."""
    with redis.Redis.from_url(f"{REDIS_BASE}/0") as client:
        for db in range(2, 16):
            if client.set(f"timebok-test-claim:{db}", os.getpid(), nx=True, ex=3600):
                return db
    raise RuntimeError("no free Redis DB for this test run (16 DBs all claimed)")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """redis://.../<db> private to this test run, flushed before and after."""
    db = _free_redis_db()
    url = f"{REDIS_BASE}/{db}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    yield url
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    with redis.Redis.from_url(f"{REDIS_BASE}/0") as client:
        client.delete(f"timebok-test-claim:{db}")


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """A PostgreSQL schema private to this test run, dropped afterwards."""
    name = f"timebok_test_{os.getpid()}_{secrets.token_hex(3)}"
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    yield name
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    engine.dispose()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll until predicate() is truthy; return its value or fail with `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


class WorkerProcess:
    """A real `timebok worker` subprocess with its own environment."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 2) -> None:
        self.env, self.log, self.concurrency = env, log, concurrency
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start and wait until it consumes."""
        out = self._out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker.entrypoints.cli",
                "worker",
                f"--concurrency={self.concurrency}",
                "--loglevel=INFO",
            ],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        wait_for(lambda: b"ready." in self.log.read_bytes(), 30, 0.2, "worker ready")
        return self

    def stop(self) -> None:
        """Warm shutdown, then kill if it hangs."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
        self._out.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked on_request run only when picked with -k (e.g. `make chaos-nhn`): a plain
    `pytest` (`make test`) deselects them, and says so in its summary."""
    if config.option.keyword:
        return
    wanted = [item for item in items if item.get_closest_marker("on_request") is None]
    if len(wanted) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in wanted])
        items[:] = wanted
