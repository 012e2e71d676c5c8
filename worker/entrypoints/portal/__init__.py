"""The patient pages (`/portal/`): server-rendered, calling the Portal API over HTTP."""

from fastapi import FastAPI

from worker.entrypoints.portal.app import create_portal, mount
from worker.entrypoints.portal.site import MOUNT

__all__ = ["MOUNT", "create_portal", "include", "mount"]


def include(app: FastAPI) -> None:
    """The API's hook: the pages under /portal, configured from the API's settings."""
    mount(app, app.state.settings)
