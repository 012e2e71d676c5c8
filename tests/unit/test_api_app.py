"""The portal API's factory and CLI verb, in process (SQLite; nothing is connected to)."""

from __future__ import annotations

import importlib.machinery
import types
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from worker.entrypoints.api import app as api_app
from worker.entrypoints.api import create_app
from worker.entrypoints.cli import main
from worker.settings import Settings


def _settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'api.db'}", api_tokens="t")


def test_the_portal_package_plugs_in_when_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    included: list[FastAPI] = []
    portal = types.ModuleType(api_app.PORTAL_PACKAGE)
    portal.__spec__ = importlib.machinery.ModuleSpec(api_app.PORTAL_PACKAGE, None)
    portal.include = included.append  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, api_app.PORTAL_PACKAGE, portal)
    app = create_app(_settings(tmp_path))
    assert included == [app]
    assert app.state.tokens == ("t",)
    assert app.state.deps.settings is app.state.settings


def test_openapi_is_built_once_and_lists_every_route(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))
    spec: dict[str, Any] = app.openapi()
    assert app.openapi() is spec
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == {
        "/v1/bookings",
        "/v1/bookings/{booking_id}",
        "/v1/clinics",
        "/v1/clinics/{her_id}/free-slots",
        "/v1/inbox",
        "/v1/appointments",
        "/v1/appointments/{uid}.ics",
        "/v1/appointments/{uid}/cancel",
        "/healthz",
    }
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_api_verb_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["api", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for word in ("--host", "--port", "TIMEBOK_API_TOKENS", "X-Patient-Id", "/openapi.json"):
        assert word in out
