"""Who calls: a portal with a bearer token, vouching for one citizen (X-Patient-Id)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from worker import fnr as fnrs
from worker.entrypoints.api.problems import ApiProblem

PATIENT_HEADER = "X-Patient-Id"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="timebok"'}

# auto_error=False: a missing or malformed header is answered by us, as a problem.
bearer = HTTPBearer(auto_error=False, description="A token from TIMEBOK_API_TOKENS")


def token_matches(given: str, tokens: tuple[str, ...]) -> bool:
    """True when `given` is one of `tokens`; compares with every one, in constant time each."""
    raw = given.encode()
    found = False
    for token in tokens:  # no early exit: the time taken does not tell which one matched
        found |= hmac.compare_digest(raw, token.encode())
    return found


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """401 unless the request carries `Authorization: Bearer <a configured token>`."""
    tokens: tuple[str, ...] = request.app.state.tokens
    if credentials is None:
        raise ApiProblem(
            401,
            "Authorization: Bearer <token> is required",
            slug="unauthorized",
            headers=_CHALLENGE,
        )
    if not token_matches(credentials.credentials, tokens):
        headers = {"WWW-Authenticate": 'Bearer realm="timebok", error="invalid_token"'}
        raise ApiProblem(401, "the bearer token is not valid", slug="unauthorized", headers=headers)


def patient_id(
    x_patient_id: Annotated[
        str | None,
        Header(
            alias=PATIENT_HEADER,
            description="The citizen the portal vouches for: a fødselsnummer or D-number",
            json_schema_extra={"pattern": "^[0-9]{11}$"},
        ),
    ] = None,
) -> str:
    """The citizen's fødselsnummer from X-Patient-Id; 400 when missing or not valid."""
    if not x_patient_id:
        raise ApiProblem(400, f"the header {PATIENT_HEADER} is required", slug="patient-required")
    value = x_patient_id.strip()
    try:
        fnrs.check(value)
    except ValueError as exc:
        # The reason never contains the number (worker.fnr words it so).
        raise ApiProblem(400, f"{PATIENT_HEADER}: {exc}", slug="patient-required") from None
    return value


PatientId = Annotated[str, Depends(patient_id)]
