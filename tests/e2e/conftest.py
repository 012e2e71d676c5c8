"""The patient pages end to end: a real `timebok api`, worker and `timebok epj-sim` on the
run's Redis DB and PostgreSQL schema, driven through Debian's Chromium with Playwright."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import PG_URL, ROOT, WorkerProcess, wait_for
from tests.e2e.browser import chromium
from tests.servers import free_port
from worker.adapters.store.migrate import upgrade
from worker.bootstrap import bootstrap
from worker.settings import Settings

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@dataclass(frozen=True)
class PortalStack:
    """Where the pages are, and the logs of the processes behind them."""

    url: str  # .../portal
    api_url: str
    token: str
    logs: Path


class Service:
    """A `timebok ...` subprocess writing to its own log."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.entrypoints.cli", *args],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._out.close()


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def portal_stack(
    redis_url: str, pg_schema: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PortalStack]:
    """Migrated schema, a worker, the simulator (every clinic, confirming) and the API.

    Module-scoped: its worker and simulator consume the run's Redis DB, so they must be
    gone before the integration tests start stacks of their own on it (they would take
    those stacks' requests and clinic messages).
    """
    schema = f"{pg_schema}_portal"
    from sqlalchemy import create_engine, text

    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    logs = Path(tmp_path_factory.mktemp("portal"))
    port, token = free_port(), secrets.token_urlsafe(16)
    env = {
        **os.environ,
        "TIMEBOK_BROKER_URL": redis_url,
        "TIMEBOK_DATABASE_URL": PG_URL,
        "TIMEBOK_DATABASE_SCHEMA": schema,
        "TIMEBOK_LOG_FORMAT": "json",
        "TIMEBOK_API_HOST": "127.0.0.1",
        "TIMEBOK_API_PORT": str(port),
        "TIMEBOK_API_TOKENS": token,
        "TIMEBOK_PORTAL_SECRET": secrets.token_urlsafe(16),
        "TIMEBOK_LOOKUP_CACHE_TTL": "0",  # a booked slot leaves the very next lookup
        "PYTHONPATH": str(ROOT),
    }
    settings = Settings(broker_url=redis_url, database_url=PG_URL, database_schema=schema)
    deps = bootstrap(settings)
    upgrade(deps.store.engine)
    deps.store.dispose()
    worker = WorkerProcess(env, logs / "worker.log").start()
    sim = Service(["epj-sim", "--delay", "0.2", "--seed", "11"], env, logs / "sim.log")
    api = Service(["api"], env, logs / "api.log")
    try:
        wait_for(lambda: b"consuming" in sim.log.read_bytes(), 30, 0.2, "simulator consuming")
        api_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(api_url), 60, 0.3, "timebok api healthy")
        yield PortalStack(f"{api_url}/portal", api_url, token, logs)
    finally:
        api.stop()
        sim.stop()
        worker.stop()
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (own cookies) per test; a screenshot when the test failed."""
    context = browser.new_context(locale="nb-NO", timezone_id="Europe/Oslo", accept_downloads=True)
    context.set_default_timeout(30_000)
    p = context.new_page()
    try:
        yield p
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            with_step = getattr(request.node, "step", "end")
            shot = ARTIFACTS / f"{request.node.name}-{with_step}.png"
            p.screenshot(path=str(shot), full_page=True)
            (ARTIFACTS / f"{request.node.name}.html").write_text(p.content(), encoding="utf-8")
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the item, for the screenshot above."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
