"""The private stack `timebok bench` runs on: a Redis DB, a PostgreSQL schema, the worker."""

from __future__ import annotations

import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from worker.bench.run import BenchError, say
from worker.settings import Settings

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
CLAIM_KEY = "timebok-test-claim:{db}"  # shared with tests/conftest.py: runs never share a DB


def _redis_base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return DEFAULT_REDIS
    return f"{parts.scheme}://{parts.netloc}"


def _claim(client: redis.Redis[bytes], db: int) -> bool:
    """Claim DB `db` for an hour (as tests/conftest.py does), unless another run has it."""
    return bool(client.set(CLAIM_KEY.format(db=db), os.getpid(), nx=True, ex=3600))


@contextmanager
def redis_db(broker_url: str) -> Iterator[str]:
    """redis://.../<db> claimed for this run (never DB 0 or 1), flushed before and after."""
    base = _redis_base(broker_url)
    shown = base.rsplit("@", 1)[-1]
    with redis.Redis.from_url(f"{base}/0", socket_connect_timeout=3) as client:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise BenchError(f"Redis at {shown} is unreachable: {exc}") from exc
        db = next((d for d in range(2, 16) if _claim(client, d)), None)
        if db is None:
            raise BenchError(f"no free Redis DB on {shown} (DBs 2-15 are all claimed)")
        url = f"{base}/{db}"
        say(f"Redis DB {db} on {shown}")
        try:
            with redis.Redis.from_url(url) as private:
                private.flushdb()
            yield url
        finally:
            with redis.Redis.from_url(url) as private:
                private.flushdb()
            client.delete(CLAIM_KEY.format(db=db))


@contextmanager
def pg_schema(database_url: str) -> Iterator[tuple[str, str]]:
    """(url, schema): a fresh migrated PostgreSQL schema, dropped afterwards."""
    from worker.adapters.store.db import make_engine
    from worker.adapters.store.migrate import upgrade

    url = database_url if make_url(database_url).get_backend_name() == "postgresql" else DEFAULT_PG
    shown = make_url(url).render_as_string(hide_password=True)
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    name = f"timebok_bench_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise BenchError(f"PostgreSQL at {shown} is unreachable: {reason}") from exc
    say(f"PostgreSQL schema {name} on {shown}")
    try:
        migrated = make_engine(url, name)
        upgrade(migrated)
        migrated.dispose()
        yield url, name
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        engine.dispose()


class BenchWorker:
    """`python -m worker.bench.run` in its own process group, so it can be frozen and thawed."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log = proc, log

    def freeze(self) -> None:
        """SIGSTOP the main process and its pool children."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> float:
        """SIGCONT them; returns the wall-clock time they were let go."""
        os.killpg(self.proc.pid, signal.SIGCONT)
        return time.time()

    def check(self) -> None:
        """Fail loudly when the worker died."""
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"the worker exited with status {code}; see {self.log}")

    def pids(self) -> list[int]:
        """The main process and its children."""
        main = self.proc.pid
        return [main, *(pid for pid in _numeric(Path("/proc")) if _ppid(pid) == main)]

    def cpu_seconds(self) -> float:
        """User + system CPU the main process and its pool children have used so far."""
        return sum(_cpu_seconds(pid) for pid in self.pids())

    def peak_rss_mb(self) -> list[float]:
        """VmHWM of every process, in MiB."""
        return [_vm_hwm_kb(pid) / 1024 for pid in self.pids()]

    def stop(self) -> None:
        """Warm shutdown; the whole group is killed if it does not go within 20 s."""
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def _numeric(proc: Path) -> Iterator[int]:
    for entry in proc.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def worker_env(cfg: Settings) -> dict[str, str]:
    """The environment of the bench worker: the private stack, production log settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBOK_")}
    env.update(
        {
            "TIMEBOK_BROKER_URL": cfg.broker_url,
            "TIMEBOK_EPJ_BROKER_URL": cfg.epj_url,
            "TIMEBOK_DATABASE_URL": cfg.database_url,
            "TIMEBOK_DATABASE_SCHEMA": cfg.database_schema or "",
            "TIMEBOK_REGISTRY_FILE": str(cfg.registry_file),
            "TIMEBOK_OWN_HER_ID": cfg.own_her_id,
            "TIMEBOK_OWN_NAME": cfg.own_name,
            "TIMEBOK_LOG_LEVEL": "INFO",
            "TIMEBOK_LOG_FORMAT": "text",
        }
    )
    return env


@contextmanager
def bench_worker(
    cfg: Settings, log: Path, extra: dict[str, str] | None = None
) -> Iterator[BenchWorker]:
    """Start the worker (stopped again on any exit, Ctrl-C included); `extra` environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.bench.run"],
            env=worker_env(cfg) | (extra or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the bench only, which stops the worker
        )
        worker = BenchWorker(proc, log)
        say(f"worker pid {proc.pid} started, log in {log}")
        try:
            yield worker
        finally:
            worker.stop()


CLI_START_RUNS = 9


def cli_start(cfg: Settings, booking_id: str, runs: int = CLI_START_RUNS) -> tuple[float, float]:
    """`timebok booking ID --json` (a read-only verb; a booking that sent a message, so the
    document is read back too) `runs` times after one warm-up: the median wall and CPU
    milliseconds from start to exit, CPU being user + system of the command's process.

    The bytecode is cached (a private PYTHONPYCACHEPREFIX, written by the warm-up) even when
    PYTHONDONTWRITEBYTECODE is set, as an installed timebok has it: otherwise every call
    would also compile the project's sources.
    """
    command = [sys.executable, "-m", "worker.entrypoints.cli", "booking", booking_id, "--json"]
    env = {k: v for k, v in worker_env(cfg).items() if k != "PYTHONDONTWRITEBYTECODE"}
    walls: list[float] = []
    cpus: list[float] = []
    with tempfile.TemporaryDirectory(prefix="timebok-pycache-") as cache:
        env["PYTHONPYCACHEPREFIX"] = cache
        for _ in range(runs + 1):
            before = os.times()
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, timeout=60)
            walls.append((time.perf_counter() - started) * 1000)
            after = os.times()
            cpus.append((after.children_user + after.children_system) * 1000)
            cpus[-1] -= (before.children_user + before.children_system) * 1000
            if done.returncode != 0:
                raise RuntimeError(f"timebok booking failed: {done.stderr.decode()[-500:]}")
    return statistics.median(walls[1:]), statistics.median(cpus[1:])
