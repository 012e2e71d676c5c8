"""Where the store is, read from the environment exactly as `Settings` reads it, but
without pydantic: the read-only commands need nothing else, and importing pydantic-settings
costs more than their query."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

PREFIX: Final = "TIMEBOK_"
DEFAULT_DATA_DIR: Final = Path(".timebok")
DEFAULT_DATABASE_URL: Final = f"sqlite:///{DEFAULT_DATA_DIR / 'timebok.db'}"


def store_location(environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """TIMEBOK_DATABASE_URL and TIMEBOK_DATABASE_SCHEMA (names case-insensitive, the last
    spelling in the environment winning, as in pydantic-settings)."""
    env = {k.lower(): v for k, v in (os.environ if environ is None else environ).items()}
    prefix = PREFIX.lower()
    url = env.get(f"{prefix}database_url", DEFAULT_DATABASE_URL)
    return url, env.get(f"{prefix}database_schema")
