"""The signed session cookie (which demo user is logged in) and signed slot tokens."""

from __future__ import annotations

import secrets
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer, URLSafeTimedSerializer

COOKIE = "timebok_portal"
MAX_AGE = 8 * 3600  # seconds a login lasts


class Signer:
    """Signs the session cookie and the slot a patient picked (so neither can be forged)."""

    def __init__(self, secret: str | None) -> None:
        key = secret or secrets.token_urlsafe(32)  # no secret set: logins last one process
        self._session = URLSafeTimedSerializer(key, salt="portal-session")
        self._slot = URLSafeSerializer(key, salt="portal-slot")

    def session(self, user_key: str) -> str:
        """The cookie value for a logged-in user."""
        return self._session.dumps({"user": user_key})

    def user_key(self, cookie: str | None) -> str | None:
        """The user a cookie names, or None (absent, forged or expired)."""
        if not cookie:
            return None
        try:
            data = self._session.loads(cookie, max_age=MAX_AGE)
        except BadSignature:
            return None
        return str(data["user"]) if isinstance(data, dict) and "user" in data else None

    def slot_token(self, slot: dict[str, Any]) -> str:
        """A free slot as a token the next pages carry."""
        return self._slot.dumps(slot)

    def slot(self, token: str) -> dict[str, Any] | None:
        """The slot a token carries, or None when it was tampered with."""
        try:
            data = self._slot.loads(token)
        except BadSignature:
            return None
        return data if isinstance(data, dict) else None
