"""`timebok demo --portal` (`make portal`): starts everything, prints the URL, serves the pages,
stops everything on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, wait_for
from tests.servers import free_port, listening
from worker import texts

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]  # the stack starts in the first


def test_demo_portal_serves_the_pages_and_stops(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "out.log"
    env = {**os.environ, "TIMEBOK_BROKER_URL": redis_url, "PYTHONPATH": str(ROOT)}
    env.pop("TIMEBOK_DATABASE_URL", None)
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker.entrypoints.cli",
                "demo",
                "--portal",
                "--port",
                str(port),
            ],
            env=env,
            cwd=tmp_path,  # its store goes to ./.timebok/portal.db
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            found = wait_for(
                lambda: re.search(rb"open (http://\S+/portal/)", out.read_bytes()),
                120,
                0.3,
                "the URL line",
            )
            url = found.group(1).decode()
            assert url == f"http://127.0.0.1:{port}/portal/"
            with httpx.Client(base_url=url.rstrip("/"), timeout=30) as client:
                login = client.get("/", follow_redirects=True)
                assert texts.PORTAL.login_title in login.text
                client.post("/logg-inn", data={"person": "kari"})
                calendar = client.get(
                    "/bestill/kalender?for=0&clinic=8090001&service=consultation&unit=8090002"
                )
            assert calendar.status_code == 200
            assert "Ledige timer " in calendar.text  # the simulator answered the lookup
            assert (tmp_path / ".timebok" / "portal.db").exists()
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
    assert code == 0, out.read_text()
    assert "stopped" in out.read_text()
    assert not listening(port)
