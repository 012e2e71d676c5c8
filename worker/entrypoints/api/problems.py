"""RFC 9457 problem details: every error the API answers is `application/problem+json`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.errors import NotFound, TransientError
from worker.logs import scrub

log = logging.getLogger("timebok.api")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "urn:timebok:problem:"  # + a slug; "about:blank" when the status says it all
RETRY_AFTER_SECONDS = 5  # what a 503 asks a portal to wait before trying again


class FieldProblem(BaseModel):
    """One broken rule: a dotted path into the request and a precise English message."""

    field: str = Field(description="Dotted path, e.g. `patient.fnr`; `$` for the whole body")
    message: str = Field(description="What is wrong (never echoes the value)")


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field(default="about:blank", description="URI identifying the problem type")
    title: str = Field(description="Short summary of the problem type")
    status: int = Field(description="The HTTP status code")
    detail: str | None = Field(default=None, description="This occurrence, in plain English")
    instance: str | None = Field(default=None, description="The request path (no query string)")
    errors: list[FieldProblem] | None = Field(
        default=None, description="Field errors (422 on a booking request or parameters)"
    )
    booking_id: str | None = Field(
        default=None, description="The booking stored for this request (an INVALID intake)"
    )


class ProblemResponse(JSONResponse):
    """A JSON response with the problem media type."""

    media_type = PROBLEM_JSON


class ApiProblem(Exception):
    """An error answered as a problem (raised by routes and dependencies)."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        slug: str | None = None,
        errors: Sequence[FieldProblem] = (),
        headers: Mapping[str, str] | None = None,
        booking_id: str | None = None,
    ) -> None:
        super().__init__(detail or HTTPStatus(status).phrase)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.errors = list(errors)
        self.headers = dict(headers or {})
        self.booking_id = booking_id


class BodyTooLarge(StarletteHTTPException):
    """The request body is larger than TIMEBOK_API_MAX_BODY_BYTES (raised while reading it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


def problem(
    request: Request | None,
    status: int,
    detail: str | None = None,
    *,
    slug: str | None = None,
    errors: Sequence[FieldProblem] = (),
    headers: Mapping[str, str] | None = None,
    booking_id: str | None = None,
) -> ProblemResponse:
    """The problem response for a status (title: the status phrase unless a slug names it)."""
    body = Problem(
        type=f"{TYPE_BASE}{slug}" if slug else "about:blank",
        title=_TITLES.get(slug or "", HTTPStatus(status).phrase),
        status=status,
        detail=detail,
        instance=request.url.path if request is not None else None,
        errors=list(errors) or None,
        booking_id=booking_id,
    )
    return ProblemResponse(
        body.model_dump(mode="json", exclude_none=True), status_code=status, headers=headers
    )


_TITLES = {
    "invalid-request": "The booking request breaks the contract",
    "invalid-parameters": "Request parameters are invalid",
    "unauthorized": "A valid bearer token is required",
    "patient-required": "X-Patient-Id must be a valid fødselsnummer",
    "patient-mismatch": "The request is for another citizen than X-Patient-Id",
    "unknown-clinic": "The clinic is not in the address registry",
    "not-supported": "The clinic does not take timereservasjon",
    "busy": "Too many lookups to this clinic at once",
    "no-answer": "The clinic did not answer in time",
    "lookup-failed": "The clinic's answer could not be used",
    "unavailable": "A dependency (database or broker) is unavailable",
    "too-large": "The request body is too large",
    "id-taken": "The request_id belongs to another request",
}


def install(app: FastAPI) -> None:
    """Answer every error, FastAPI's and Starlette's own included, as a problem."""
    app.add_exception_handler(ApiProblem, _on_problem)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(NotFound, _on_not_found)  # type: ignore[arg-type]
    app.add_exception_handler(TransientError, _on_unavailable)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_bug)


async def _on_problem(request: Request, exc: ApiProblem) -> ProblemResponse:
    return problem(
        request,
        exc.status,
        exc.detail,
        slug=exc.slug,
        errors=exc.errors,
        headers=exc.headers,
        booking_id=exc.booking_id,
    )


async def _on_http(request: Request, exc: StarletteHTTPException) -> ProblemResponse:
    # Starlette's own: 404 for an unknown route, 405, 413 from the body limit.
    given = exc.detail if isinstance(exc.detail, str) else None
    detail = None if given == HTTPStatus(exc.status_code).phrase else given
    slug = "too-large" if exc.status_code == 413 else None
    return problem(request, exc.status_code, detail, slug=slug, headers=exc.headers)


async def _on_validation(request: Request, exc: RequestValidationError) -> ProblemResponse:
    errors = list(field_problems(exc.errors()))
    return problem(
        request,
        422,
        "; ".join(f"{e.field}: {e.message}" for e in errors),
        slug="invalid-parameters",
        errors=errors,
    )


async def _on_not_found(request: Request, exc: NotFound) -> ProblemResponse:
    return problem(request, 404, str(exc))


async def _on_unavailable(request: Request, exc: TransientError) -> ProblemResponse:
    log.warning("%s unavailable: %s", type(exc).__name__, str(exc)[:300])
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    detail = "the database or a broker is unavailable; try again shortly"
    return problem(request, 503, detail, slug="unavailable", headers=retry)


async def _on_bug(request: Request, exc: Exception) -> ProblemResponse:
    log.error("unhandled error in %s %s", request.method, _route(request), exc_info=exc)
    return problem(request, 500)


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "-"))


def field_problems(errors: Iterable[Any]) -> Iterable[FieldProblem]:
    """FastAPI's validation errors as field problems, without the input values."""
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        field = ".".join(loc) or "$"
        yield FieldProblem(field=scrub(field[:80]), message=scrub(str(err.get("msg", "invalid"))))


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the problems a route can answer."""
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            **({"headers": _RETRY_AFTER} if status == 503 else {}),
        }
        for status in statuses
    }


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer"},
    }
}
