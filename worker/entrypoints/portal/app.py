"""The patient pages' web app, mounted under `/portal` in `timebok api`.

Every page is rendered on the server from the Portal API's answers (over HTTP, with the
portal's bearer token and the patient's `X-Patient-Id`); the pages never read the store.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from worker import texts
from worker.entrypoints.portal import booking, pages
from worker.entrypoints.portal.client import UNREACHABLE, ApiProblem
from worker.entrypoints.portal.common import LoginRequired
from worker.entrypoints.portal.session import Signer
from worker.entrypoints.portal.site import HERE, MOUNT, Portal
from worker.settings import Settings


def api_base_url(settings: Settings) -> str:
    """Where the pages reach the API: TIMEBOK_PORTAL_API_URL, else the API's own address."""
    if settings.portal_api_url:
        return settings.portal_api_url.rstrip("/")
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host  # noqa: S104
    return f"http://{host}:{settings.api_port}"


def api_token(settings: Settings) -> str:
    """TIMEBOK_PORTAL_API_TOKEN, else the first of TIMEBOK_API_TOKENS."""
    if settings.portal_api_token:
        return settings.portal_api_token
    tokens = settings.api_token_list
    return tokens[0] if tokens else ""


def create_portal(settings: Settings, transport: httpx.BaseTransport | None = None) -> FastAPI:
    """The patient pages as an app of their own (mounted at MOUNT); `transport`: tests only."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # httpx logs every call at INFO: the API's own access log already has them.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    signer = Signer(settings.portal_secret)
    portal = Portal(api_base_url(settings), api_token(settings), signer, env, transport)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.portal = portal
    app.include_router(pages.router)
    app.include_router(booking.router)

    @app.exception_handler(ApiProblem)
    def _problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiProblem)
        return portal.render(
            request,
            "error.html",
            status=_status(exc),
            user=portal.current(request),
            message=problem_text(exc),
            details=[texts.field_problem(*_field(e)) for e in exc.errors],
        )

    @app.exception_handler(LoginRequired)
    def _login(_request: Request, _exc: Exception) -> Response:
        return RedirectResponse(f"{MOUNT}/logg-inn", status_code=303)

    return app


def mount(app: FastAPI, settings: Settings) -> None:
    """Put the patient pages under /portal of the API app (the hook in create_app)."""
    app.mount(MOUNT, create_portal(settings))


_PROBLEM_TEXTS = {
    UNREACHABLE: texts.PORTAL.problem_unavailable,
    404: texts.PORTAL.problem_not_found,
    409: texts.PORTAL.problem_not_reservable,
    422: texts.PORTAL.problem_invalid,
    429: texts.PORTAL.problem_busy,
    503: texts.PORTAL.problem_busy,
    504: texts.PORTAL.problem_timeout,
}


def problem_text(exc: ApiProblem) -> str:
    """The patient's message for an API error."""
    return _PROBLEM_TEXTS.get(exc.status, texts.PORTAL.problem_other)


def _status(exc: ApiProblem) -> int:
    return 502 if exc.status == UNREACHABLE or exc.status < 400 else exc.status


def _field(error: dict[str, Any]) -> tuple[str, str]:
    where = error.get("field") or error.get("loc") or ""
    if isinstance(where, list):
        where = ".".join(str(p) for p in where)
    return str(where), str(error.get("message") or error.get("msg") or "")
