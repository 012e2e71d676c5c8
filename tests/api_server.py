"""A real `timebok api` process (uvicorn) for integration tests, and a client for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ROOT, wait_for
from tests.servers import free_port, listening

TOKEN = "portal-token-0123456789abcdef"
OTHER_TOKEN = "second-portal-token-fedcba9876543210"


class ApiProcess:
    """`timebok api` on a free port with its own environment and log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = {
            **env,
            "TIMEBOK_API_HOST": "127.0.0.1",
            "TIMEBOK_API_PORT": str(self.port),
            "TIMEBOK_API_TOKENS": f"{TOKEN}, {OTHER_TOKEN}",
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiProcess:
        """Start and wait until it accepts connections."""
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.entrypoints.cli", "api"],
            env=self.env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        wait_for(
            lambda: listening(self.port) or self.proc.poll() is not None,  # type: ignore[union-attr]
            60,
            0.2,
            "timebok api listening",
        )
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def client(self, token: str | None = TOKEN, fnr: str | None = None) -> httpx.Client:
        """An HTTP client with the bearer token and X-Patient-Id (when given)."""
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if fnr is not None:
            headers["X-Patient-Id"] = fnr
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        """SIGTERM (uvicorn finishes requests in flight), then kill if it hangs."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
        self._out.close()
