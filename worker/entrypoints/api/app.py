"""The portal API's app factory and server (`timebok api`)."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from worker.bootstrap import Deps, bootstrap
from worker.entrypoints.api import problems, routes
from worker.entrypoints.api.auth import PATIENT_HEADER
from worker.entrypoints.api.middleware import AccessLog, BodyLimit
from worker.request import BookingRequest
from worker.settings import Settings

log = logging.getLogger("timebok.api")

TITLE = "timebok portal API"
VERSION = "1"
DESCRIPTION = (
    "Booking, lookups, inbox and appointments for patient portals. Every /v1 call needs "
    "`Authorization: Bearer <token>`; calls about one citizen also need `X-Patient-Id`. "
    "Errors are RFC 9457 `application/problem+json`."
)
PORTAL_PACKAGE = "worker.entrypoints.portal"


def create_app(settings: Settings | None = None, deps: Deps | None = None) -> FastAPI:
    """The ASGI app: routes, problem handlers, body limit, access log, metrics, OpenAPI.

    `deps` defaults to `bootstrap(settings)`; no connection is opened here.
    """
    cfg = settings or (deps.settings if deps is not None else Settings())
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # Swagger UI would load scripts from elsewhere: /openapi.json only
        redoc_url=None,
        redirect_slashes=False,  # "/v1/bookings/" is 404, never a redirect
    )
    app.state.settings = cfg
    app.state.tokens = cfg.api_token_list
    app.state.deps = deps if deps is not None else bootstrap(cfg)
    if not app.state.tokens:
        log.warning("TIMEBOK_API_TOKENS is empty: every /v1 call is answered 401")
    problems.install(app)
    app.include_router(routes.router)
    app.include_router(routes.public)
    app.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)
    _mount_portal(app)
    # Added last = outermost: the access log sees every answer, the 413 of the limit too.
    app.add_middleware(BodyLimit, limit=cfg.api_max_body_bytes)
    app.add_middleware(AccessLog)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _mount_portal(app: FastAPI) -> None:
    """THE place the patient pages plug in: `worker.entrypoints.portal.include(app)`.

    Only when that package exists; it adds its own router (under /portal/) to this app and
    uses `app.state.deps`, `app.state.settings` like the API routes do.
    """
    if importlib.util.find_spec(PORTAL_PACKAGE) is None:
        return
    portal = importlib.import_module(PORTAL_PACKAGE)
    portal.include(app)


def _metrics() -> Response:
    """Prometheus exposition of this process (no token: see README 'Portal API')."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from worker.metrics import exposition_registry

    return Response(generate_latest(exposition_registry()), media_type=CONTENT_TYPE_LATEST)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """OpenAPI 3.1 with the intake contract's own model and the problem schema added."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (BookingRequest, problems.Problem):
        _add_model(components, model)
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            _fix_operation(operation)
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422, replaced
        components.pop(name, None)
    app.openapi_schema = schema
    return schema


def _fix_operation(operation: dict[str, Any]) -> None:
    """FastAPI's own 422 is answered as a problem; X-Patient-Id is required (else 400)."""
    answers = operation.get("responses", {})
    if "422" in answers:
        answers["422"] = problems.responses(422)[422]
    for param in operation.get("parameters", ()):
        if param.get("in") == "header" and param.get("name") == PATIENT_HEADER:
            param["required"] = True


def _add_model(components: dict[str, Any], model: type[BaseModel]) -> None:
    """A pydantic model and the models it refers to, as OpenAPI components."""
    found = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in found.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components[model.__name__] = found


def serve(settings: Settings) -> int:
    """Run the API with uvicorn until SIGINT / SIGTERM (then finish requests in flight)."""
    import uvicorn

    deps = bootstrap(settings)
    deps.store.check_migrated()
    app = create_app(settings, deps)
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # our logging (worker.logs): JSON, fødselsnumre masked
        access_log=False,  # uvicorn's would print paths and query strings: ours does not
        server_header=False,
        timeout_keep_alive=5,  # idle keep-alive connections are closed after 5 s
        timeout_graceful_shutdown=max(10, int(settings.sync_timeout) + 5),  # a lookup finishes
        h11_max_incomplete_event_size=16 * 1024,  # request line + headers
    )
    return 0
