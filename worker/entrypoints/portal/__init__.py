"""The patient pages (`/portal/`): server-rendered, calling the Portal API over HTTP."""

from worker.entrypoints.portal.app import create_portal, mount
from worker.entrypoints.portal.site import MOUNT

__all__ = ["MOUNT", "create_portal", "mount"]
