"""What every page shares: the API's address and token, the signer, the templates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment

from worker import texts
from worker.entrypoints.portal.client import PortalApi
from worker.entrypoints.portal.people import User, user
from worker.entrypoints.portal.session import COOKIE, Signer

MOUNT = "/portal"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Portal:
    """What every page needs: where the API is, the token, the signer and the templates."""

    api_url: str
    token: str
    signer: Signer
    env: Environment
    transport: httpx.BaseTransport | None = None  # unit tests: a fake API

    def api(self, u: User, index: int) -> PortalApi:
        """The API as the person `index` of `u` (0 = the user) sees it."""
        return PortalApi(self.api_url, self.token, u.subject(index).fnr, transport=self.transport)

    def sender(self, u: User) -> PortalApi:
        """The API for sending requests: the acting person (the requester) is X-Patient-Id."""
        return PortalApi(self.api_url, self.token, u.person.fnr, transport=self.transport)

    def render(self, request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        """A page from templates/ with the texts and the logged-in user."""
        page = self.env.get_template(name).render(
            t=texts.PORTAL, tx=texts, base=MOUNT, request=request, **ctx
        )
        return HTMLResponse(page, status_code=status)

    def current(self, request: Request) -> User | None:
        """The logged-in demo user, from the signed cookie."""
        return user(self.signer.user_key(request.cookies.get(COOKIE)))
