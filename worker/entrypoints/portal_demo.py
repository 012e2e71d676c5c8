"""`timebok demo --portal` (`make portal`): the patient pages on embedded defaults.

Starts a worker, the EPJ simulator and `timebok api` (which serves /portal/) against
SQLite in `.timebok/portal.db` and the demo's Redis, prints the URL, and runs until Ctrl-C.
"""

from __future__ import annotations

import secrets
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

import httpx

from worker.adapters.store.migrate import upgrade
from worker.bootstrap import bootstrap
from worker.entrypoints.demo import DemoError, _env, _free_port, _wait, broker, process
from worker.settings import DEFAULT_DATA_DIR, Settings

DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Running:
    """The started stack: where the pages are, and the API's token."""

    url: str  # the patient pages, e.g. http://127.0.0.1:8080/portal/
    api_url: str
    token: str
    logs: Path


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def portal_stack(
    settings: Settings, out: TextIO, port: int | None = None, data_dir: Path | None = None
) -> Iterator[Running]:
    """Worker + simulator + API on embedded defaults (a fresh SQLite store each time)."""
    data = (data_dir or DEFAULT_DATA_DIR).resolve()
    data.mkdir(parents=True, exist_ok=True)
    db = data / "portal.db"
    for leftover in data.glob("portal.db*"):
        leftover.unlink()
    port = port or _port()
    token = secrets.token_urlsafe(24)
    with broker(settings, out) as url, ExitStack() as stack:
        cfg = settings.model_copy(
            update={"broker_url": url, "epj_broker_url": url, "database_url": f"sqlite:///{db}"}
        )
        deps = bootstrap(cfg)
        upgrade(deps.store.engine)
        deps.store.dispose()
        env = _env(cfg) | {
            "TIMEBOK_API_HOST": "127.0.0.1",
            "TIMEBOK_API_PORT": str(port),
            "TIMEBOK_API_TOKENS": token,
            "TIMEBOK_PORTAL_SECRET": secrets.token_urlsafe(32),
        }
        worker = ["worker", "--concurrency=2"]
        stack.enter_context(process(worker, env, data / "portal-worker.log", "ready."))
        sim = ["epj-sim", "--policy", "confirm", "--delay", "0.5"]
        stack.enter_context(process(sim, env, data / "portal-epj-sim.log", "consuming"))
        stack.enter_context(process(["api"], env, data / "portal-api.log", None))
        api_url = f"http://127.0.0.1:{port}"
        _wait(lambda: _healthy(api_url), 60, f"`timebok api` on port {port}")
        yield Running(f"{api_url}/portal/", api_url, token, data)


def _port() -> int:
    """8080 when free (the documented default), else any free port."""
    import socket

    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", DEFAULT_PORT)) != 0:
            return DEFAULT_PORT
    return _free_port()


def run(settings: Settings, out: TextIO = sys.stdout, port: int | None = None) -> int:
    """Start everything, print the URL, wait for Ctrl-C / SIGTERM, stop everything."""
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        with portal_stack(settings, out, port) as running:
            print(f"\nThe patient pages: open {running.url}", file=out)
            print("(log in as Kari or Ola Nordmann; Ctrl-C stops everything)", file=out)
            print(f"logs: {running.logs}/portal-*.log", file=out, flush=True)
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass
    except DemoError as exc:
        print(f"timebok demo --portal: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("stopped", file=out)
    return 0
