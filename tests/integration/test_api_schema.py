"""Schemathesis against a real `timebok api` process: generated requests for every operation
of /openapi.json; no answer may be a 5xx, and every answer must be one the schema documents
(status code, content type, headers, body).

Bounded and repeatable: deterministic generation (hypothesis' derandomize), 30 cases per
operation (under 300 in all), no example database, no shrinking.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_server import TOKEN, ApiProcess
from tests.support import fnr
from worker.entrypoints.api import routes

pytestmark = pytest.mark.integration

SEED = 20261201
EXAMPLES_PER_OPERATION = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
PATIENTS = [fnr(401), fnr(402), fnr(403)]
SEEN: Counter[str] = Counter()  # answers by "METHOD path status", for the summary test


@pytest.fixture(scope="module")
def api_schema(api: ApiProcess) -> Any:
    """The live server's own /openapi.json."""
    config = SchemathesisConfig.from_dict({"seed": SEED})
    return schemathesis.openapi.from_url(f"{api.url}/openapi.json", config=config)


def _operations() -> list[tuple[str, str]]:
    """Every documented operation of the app (what /openapi.json lists)."""
    found = []
    for router in (routes.router, routes.public):
        for route in router.routes:
            if isinstance(route, APIRoute) and route.include_in_schema:
                found += [(method, route.path) for method in sorted(route.methods)]
    return found


def _vouch(case: Any) -> None:
    """Most cases as a valid citizen (else nearly all would stop at X-Patient-Id's check)."""
    headers = case.headers if case.headers is not None else {}
    given = headers.get("X-Patient-Id")
    if isinstance(given, str) and given.isdigit() and len(given) == 11 and given[-1] not in "01":
        pid = PATIENTS[int(given[-2]) % len(PATIENTS)]
        headers["X-Patient-Id"] = pid
        body = case.body
        if isinstance(body, dict) and isinstance(body.get("patient"), dict):
            body["patient"]["fnr"] = pid  # the request is then the citizen's own
            body.pop("requester", None)
    case.headers = headers


@pytest.mark.parametrize(("method", "path"), _operations())
def test_every_answer_is_documented_and_none_is_a_server_error(
    api_schema: Any, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,  # the same cases on every run (CI included)
        database=None,
        deadline=None,
        phases=[Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def run(case: Any) -> None:
        _vouch(case)
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS
        )
        SEEN[f"{method} {path} {response.status_code}"] += 1

    run()


def test_the_run_reached_past_the_checks(api: ApiProcess) -> None:
    """The generated cases got answers beyond 400/401 (the run tested the routes, not only
    the header checks); runs after the parametrized test above in this module."""
    if not SEEN:
        pytest.fail("the schemathesis test did not run first in this module")
    total = sum(SEEN.values())
    ok = sum(n for key, n in SEEN.items() if key.endswith((" 200", " 202")))
    print(f"schemathesis: {total} cases, {ok} answered 2xx; {sorted(SEEN.items())}")
    assert 100 <= total <= 600
    assert ok >= 20
    assert any(k.startswith("POST /v1/bookings 422") for k in SEEN)
