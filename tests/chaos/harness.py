"""Process harness for the crash and chaos tests: a private Redis with AOF, a private PostgreSQL
schema, and `timebok worker` / `beat` / `epj-sim` subprocesses that can be killed and restarted."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import create_engine, text

from tests.conftest import PG_URL, ROOT
from worker.adapters.store.db import make_engine
from worker.adapters.store.migrate import upgrade

SAMPLE_CLINIC = "8090001"
PROCESSES = '["timereservasjon", "timeonske", "avtaleavbestilling", "avtaleutsending"]'


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """A Redis URL on a port where nothing answers (connection refused at once)."""
    return f"redis://127.0.0.1:{free_port()}/0"


def poll(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> None:
    """Wait until predicate() is truthy, else raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def unique_her_id() -> str:
    """A HER-id no other test run uses, so queues of parallel runs never meet."""
    return str(70_000_000 + secrets.randbelow(20_000_000))


def write_registry(path: Path, clinic: str, name: str = "Krasjklinikken") -> Path:
    """A one-clinic address registry (phone known) that supports every process."""
    path.write_text(
        f'[[clinic]]\nher_id = "{clinic}"\nname = "{name}"\nphone = "81549300"\n'
        f"processes = {PROCESSES}\n",
        encoding="utf-8",
    )
    return path


@contextmanager
def private_schema(prefix: str = "timebok_crash", url: str = PG_URL) -> Iterator[str]:
    """A migrated PostgreSQL schema of its own (in the database at `url`), dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    engine = make_engine(url, name)
    try:
        upgrade(engine)
        engine.dispose()
        yield name
    finally:
        engine.dispose()
        admin.dispose()  # a fresh connection: the server may have restarted meanwhile
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def children_of(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc)."""
    found: list[int] = []
    with suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Send `sig` to one process we started; False when it was already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


class RedisServer:
    """A private redis-server with AOF (appendfsync always) in its own directory."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """redis:// URL of one database."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        """Start (or restart on the same port and directory) and wait until it answers."""
        binary = shutil.which("redis-server") or "redis-server"
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--auto-aof-rewrite-percentage",
                "0",  # keep every command in the AOF: the test reads the history back
                "--dir",
                str(self.dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        poll(self.answers, 15, f"redis-server on port {self.port}")
        return self

    def answers(self) -> bool:
        """PING works."""
        try:
            with redis.Redis.from_url(self.url(), socket_timeout=1) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False

    def history(self) -> Iterator[list[bytes]]:
        """Every write command Redis executed, in order, read back from the AOF files."""
        files = sorted(
            self.dir.glob("appendonlydir/*.incr.aof"), key=lambda f: int(f.name.split(".")[-3])
        )
        for path in files:
            yield from _resp_commands(path.read_bytes())

    def kill(self) -> None:
        """kill -9: whatever AOF has is what survives."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        """Terminate (clean shutdown)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None


def _resp_commands(data: bytes) -> Iterator[list[bytes]]:
    """The commands of an AOF file (RESP arrays of bulk strings)."""
    at = 0
    while at < len(data):
        end = data.index(b"\r\n", at)
        count, at = int(data[at + 1 : end]), end + 2
        args = []
        for _ in range(count):
            end = data.index(b"\r\n", at)
            size, at = int(data[at + 1 : end]), end + 2
            args.append(data[at : at + size])
            at += size + 2
        yield args


def popped_never_recorded(history: Iterator[list[bytes]], queues: set[str]) -> list[dict[str, Any]]:
    """Messages taken off `queues` (BRPOP) that never reached kombu's unacked hash.

    kombu's Redis transport pops first and records the delivery second; a consumer that
    dies in between takes the message with it. These are the messages Redis lost that way.
    """
    lists: dict[bytes, deque[bytes]] = {}
    popped: list[tuple[bytes, bytes]] = []
    recorded: set[bytes] = set()
    for args in history:
        op = args[0].upper()
        if op in (b"LPUSH", b"RPUSH"):
            items = lists.setdefault(args[1], deque())
            for value in args[2:]:
                items.appendleft(value) if op == b"LPUSH" else items.append(value)
        elif op == b"RPOP" and lists.get(args[1]):
            popped.append((args[1], lists[args[1]].pop()))
        elif op == b"HSET" and args[1] == b"unacked":
            recorded.add(args[2])
    lost = []
    for queue, raw in popped:
        message = json.loads(raw)
        tag = str(message["properties"]["delivery_tag"]).encode()
        if queue.decode() in queues and tag not in recorded:
            lost.append(message | {"queue": queue.decode()})
    return lost


class Service:
    """One `timebok ...` subprocess with an append-only log that survives restarts."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, ready: bytes) -> None:
        self.args, self.env, self.log, self.ready = args, env, log, ready
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._known: set[int] = set()

    @property
    def pid(self) -> int:
        """The running process id."""
        assert self.proc is not None, f"{self.args[0]} is not running"
        return self.proc.pid

    def running(self) -> bool:
        """Started and not exited."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 40.0) -> Service:
        """Start and wait for the ready marker in the new part of the log."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker.entrypoints.cli", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        self.starts += 1
        poll(
            lambda: self.ready in self._since(offset) or not self.running(),
            timeout,
            f"`timebok {self.args[0]}` ready",
        )
        if not self.running():
            raise RuntimeError(f"`timebok {self.args[0]}` exited: {self.text()[-3000:]}")
        return self

    def _since(self, offset: int) -> bytes:
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read()

    def children(self) -> list[int]:
        """The pool processes (for a worker), remembered so none outlives the test."""
        kids = children_of(self.pid) if self.running() else []
        self._known.update(kids)
        return kids

    def kill(self) -> None:
        """kill -9 the process itself (its children are left to notice on their own)."""
        if self.proc is not None:
            self.children()
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (warm shutdown), SIGKILL after `timeout`; reap any orphaned child."""
        if self.proc is not None:
            self.children()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        self.reap()

    def reap(self, grace: float = 10.0) -> list[int]:
        """Children of earlier runs still alive after `grace` seconds are killed; returns them."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(p) for p in self._known):
            time.sleep(0.1)
        stray = [p for p in self._known if alive(p)]
        for pid in stray:
            kill_pid(pid)
        self._known.clear()
        return stray

    def text(self) -> str:
        """The whole log so far."""
        return self.log.read_text("utf-8", "replace") if self.log.exists() else ""


def timebok_env(
    broker_url: str, schema: str, registry: Path | None = None, **settings: object
) -> dict[str, str]:
    """Environment of a timebok subprocess: TIMEBOK_* from keyword arguments (upper-cased)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBOK_")}
    env |= {
        "TIMEBOK_BROKER_URL": broker_url,
        "TIMEBOK_DATABASE_URL": PG_URL,
        "TIMEBOK_DATABASE_SCHEMA": schema,
        "TIMEBOK_LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    if registry is not None:
        env["TIMEBOK_REGISTRY_FILE"] = str(registry)
    env |= {f"TIMEBOK_{k.upper()}": str(v) for k, v in settings.items()}
    return env


def worker(
    env: dict[str, str], log: Path, concurrency: int = 2, hostname: str | None = None
) -> Service:
    """`timebok worker` (not started); `hostname` tells competing workers apart."""
    args = ["worker", f"--concurrency={concurrency}", "--loglevel=INFO"]
    if hostname is not None:
        args.append(f"--hostname={hostname}")
    return Service(args, env, log, b"ready.")


def beat(env: dict[str, str], log: Path, schedule: Path) -> Service:
    """`timebok beat` (not started)."""
    return Service(["beat", f"--schedule={schedule}"], env, log, b"beat: Starting")


def simulator(env: dict[str, str], log: Path, *options: str) -> Service:
    """`timebok epj-sim OPTIONS` (not started)."""
    return Service(["epj-sim", *options], env, log, b"epj-sim: consuming")
