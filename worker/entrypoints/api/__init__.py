"""The portal API (HTTP, JSON, OpenAPI 3.1): `timebok api`, see README 'Portal API'."""

from __future__ import annotations

from worker.entrypoints.api.app import create_app, serve

__all__ = ["create_app", "serve"]
