"""Domain events: facts the state machine records, for the store and the logs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.domain.booking import State


@dataclass(frozen=True)
class StateChanged:
    """A booking moved from one state to another."""

    booking_id: str
    source: State
    target: State
    reason: str | None
    at: datetime
