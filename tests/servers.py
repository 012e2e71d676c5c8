"""Servers of a test's own: a RabbitMQ vhost (and user) on the shared node, a RabbitMQ node, a
PostgreSQL database, a PostgreSQL cluster. Each is removed afterwards; nothing here disturbs
other test runs on the shared servers."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import create_engine, make_url, text

from tests.conftest import PG_URL

AMQP_URL = os.environ.get("TIMEBOK_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def rabbitmqctl(*args: str, node: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run rabbitmqctl (on the shared node unless `node`), returning its output."""
    cmd = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Vhost:
    """A vhost of this run on the shared RabbitMQ: URLs for guest and for a restricted user."""

    name: str
    user: str
    password: str

    def url(self, *, restricted: bool = False) -> str:
        """amqp:// URL of the vhost, as guest or as the restricted user."""
        base = urlsplit(AMQP_URL)
        who = f"{self.user}:{self.password}" if restricted else "guest:guest"
        return f"amqp://{who}@{base.hostname}:{base.port or 5672}/{self.name}"


@contextmanager
def rabbit_vhost(write: str = ".*") -> Iterator[Vhost]:
    """A vhost (guest: all rights) and a user whose write permission is the regex `write`."""
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    vhost = Vhost(f"timebok-test-{tag}", f"timebok-test-{tag}", secrets.token_hex(8))
    rabbitmqctl("add_vhost", vhost.name)
    try:
        rabbitmqctl("set_permissions", "-p", vhost.name, "guest", ".*", ".*", ".*")
        rabbitmqctl("add_user", vhost.user, vhost.password)
        rabbitmqctl("set_permissions", "-p", vhost.name, vhost.user, ".*", write, ".*")
        yield vhost
    finally:
        with suppress(RuntimeError):
            rabbitmqctl("delete_user", vhost.user)
        rabbitmqctl("delete_vhost", vhost.name)


def rabbit_queues(vhost: str, node: str | None = None) -> dict[str, tuple[str, int]]:
    """Queues of a vhost: name -> (type, messages)."""
    out = rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "type", "messages", node=node)
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    return {r[0]: (r[1], int(r[2])) for r in rows if r[0] != "name"}


@contextmanager
def private_database(**settings: str) -> Iterator[str]:
    """A PostgreSQL database of its own (ALTER DATABASE SET for each setting), dropped after."""
    name = f"timebok_db_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
        for key, value in settings.items():
            conn.execute(text(f"ALTER DATABASE \"{name}\" SET {key} = '{value}'"))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": name},
            )
            conn.execute(text(f'DROP DATABASE "{name}"'))
        admin.dispose()


def _service_dir(prefix: str) -> Path:
    """A fresh directory a service user can enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def _give(path: Path, user: str) -> None:
    """Hand a directory tree to a service user (when running as root)."""
    if os.geteuid() != 0:
        return
    for p in [path, *path.rglob("*")]:
        shutil.chown(p, user, user)


class RabbitNode:
    """A RabbitMQ node of its own: own node name, ports, data and log directories."""

    def __init__(self, plugins: tuple[str, ...] = ()) -> None:
        self.dir = _service_dir("timebok-rabbitmq-")
        self.port, self.dist_port = free_port(), free_port()
        self.node = f"timebok-chaos-{os.getpid()}-{self.port}@localhost"
        self.plugins = plugins  # e.g. rabbitmq_amqp1_0 (the national bus, same port)

    def url(self, vhost: str = "") -> str:
        """amqp:// URL (guest) of a vhost on this node."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    def env(self) -> dict[str, str]:
        """The environment rabbitmq-server and rabbitmqctl need for this node."""
        return os.environ | {
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            # No management / prometheus plugins: the node only speaks AMQP (0-9-1, and 1.0
            # with the rabbitmq_amqp1_0 plugin).
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
        }

    def start(self, timeout: float = 90.0) -> RabbitNode:
        """Start (or restart, same data) and wait until it accepts connections."""
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.dir / "enabled_plugins").write_text(f"[{','.join(self.plugins)}].\n")
        _give(self.dir, "rabbitmq")
        subprocess.run(["rabbitmq-server", "-detached"], env=self.env(), check=True, timeout=60)
        _wait(lambda: listening(self.port), timeout, f"RabbitMQ node {self.node}")
        return self

    def pid(self) -> int | None:
        """The node's OS process id (from its pid file)."""
        with suppress(OSError, ValueError):
            return int((self.dir / "pid").read_text().strip())
        return None

    def kill(self) -> None:
        """kill -9 the node: what it confirmed is on disk, the rest is gone."""
        pid = self.pid()
        if pid:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait(lambda: not listening(self.port), 30, "RabbitMQ to go")

    def stop(self) -> None:
        """Stop the node (rabbitmqctl stop, kill -9 if that fails), remove its directory."""
        try:
            rabbitmqctl("stop", node=self.node, env=self.env())
        except (RuntimeError, subprocess.TimeoutExpired):
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PgCluster:
    """A PostgreSQL cluster of its own: initdb in a directory, its own port, trust auth."""

    def __init__(self) -> None:
        self.dir = _service_dir("timebok-postgresql-")
        self.port = free_port()
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        self.bin = Path(found[-1]) if found else Path(shutil.which("pg_ctl") or "pg_ctl").parent

    def url(self, db: str = "postgres") -> str:
        """SQLAlchemy URL of a database in this cluster."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{db}"

    def _run(self, program: str, *args: str) -> None:
        cmd = [str(self.bin / program), *args]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program}: {done.stderr.strip() or done.stdout.strip()}")

    def _ctl(self, action: str, *extra: str) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
        data, log = str(self.dir / "data"), str(self.dir / "pg.log")
        self._run("pg_ctl", "-D", data, "-l", log, "-o", opts, "-w", "-t", "60", action, *extra)

    def start(self) -> PgCluster:
        """initdb and start."""
        _give(self.dir, "postgres")
        self._run("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust")
        self._ctl("start")
        return self

    def restart(self) -> None:
        """A restart as `pg_ctlcluster ... restart` does it (fast shutdown, start)."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        """Fast shutdown, remove its directory."""
        with suppress(RuntimeError):
            self._ctl("stop", "-m", "fast")
        shutil.rmtree(self.dir, ignore_errors=True)
