"""The portal's HTTP client of the Portal API: bearer token, `X-Patient-Id`, problem+json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from worker.errors import TimebokError


class ApiProblem(TimebokError):
    """The API answered with an error (RFC 9457 problem), or could not be reached."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status, self.title, self.detail = status, title, detail
        self.errors = errors or []


UNREACHABLE = 0  # the status of an ApiProblem when no answer came at all


@dataclass
class PortalApi:
    """One patient's view of the API: every call carries the token and the patient's id."""

    base_url: str
    token: str
    patient_fnr: str
    timeout: float = 30.0
    transport: httpx.BaseTransport | None = field(default=None, repr=False)

    def _client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}", "X-Patient-Id": self.patient_fnr}
        return httpx.Client(
            base_url=self.base_url, headers=headers, timeout=self.timeout, transport=self.transport
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            with self._client() as client:
                response = client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiProblem(UNREACHABLE, "unreachable", type(exc).__name__) from exc
        if response.status_code >= 400:
            raise _problem(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._call(method, path, **kwargs).json()

    def clinics(self) -> list[dict[str, Any]]:
        """GET /v1/clinics."""
        found = self._json("GET", "/v1/clinics")
        return list(found["clinics"] if isinstance(found, dict) else found)

    def free_slots(self, her_id: str, **query: str) -> dict[str, Any]:
        """GET /v1/clinics/{her_id}/free-slots (HentLedigeTimer)."""
        params = {k: v for k, v in query.items() if v}
        return dict(self._json("GET", f"/v1/clinics/{her_id}/free-slots", params=params))

    def book(self, request: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/bookings: `{"id", "state"}`."""
        return dict(self._json("POST", "/v1/bookings", json=request))

    def booking(self, booking_id: str) -> dict[str, Any]:
        """GET /v1/bookings/{id}."""
        return dict(self._json("GET", f"/v1/bookings/{booking_id}"))

    def inbox(self) -> list[dict[str, Any]]:
        """GET /v1/inbox, newest first."""
        return _listing(self._json("GET", "/v1/inbox"), "notifications")

    def appointments(self) -> list[dict[str, Any]]:
        """GET /v1/appointments."""
        return _listing(self._json("GET", "/v1/appointments"), "appointments")

    def ics(self, uid: str) -> bytes:
        """GET /v1/appointments/{uid}.ics."""
        return self._call("GET", f"/v1/appointments/{uid}.ics").content

    def cancel(self, uid: str, given_name: str, family_name: str) -> dict[str, Any]:
        """POST /v1/appointments/{uid}/cancel: `{"id", "state"}` (names: for a clinic-booked
        appointment, which has no booking to take them from)."""
        body = {"patient": {"given_name": given_name, "family_name": family_name}}
        return dict(self._json("POST", f"/v1/appointments/{uid}/cancel", json=body))


def _listing(found: Any, key: str) -> list[dict[str, Any]]:
    """A list answer, bare or wrapped in an object under `key`."""
    return list(found[key] if isinstance(found, dict) else found)


def _problem(response: httpx.Response) -> ApiProblem:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    errors = body.get("errors")
    return ApiProblem(
        response.status_code,
        str(body.get("title") or response.reason_phrase),
        str(body.get("detail") or ""),
        errors if isinstance(errors, list) else None,
    )
