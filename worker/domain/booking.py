"""The booking state machine: every legal move, and nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from worker.domain.events import StateChanged


class State(StrEnum):
    """Where a booking request stands."""

    REQUESTED = "REQUESTED"  # accepted and stored, message not yet on the clinic queue
    SENT = "SENT"  # message published to the clinic's EPJ queue
    DELIVERED = "DELIVERED"  # the EPJ answered with AppRec OK
    CONFIRMED = "CONFIRMED"  # the clinic confirmed (or changed) the appointment
    REJECTED = "REJECTED"  # the clinic said no (business reply)
    CANCEL_REQUESTED = "CANCEL_REQUESTED"  # the patient asked to cancel, waiting for the clinic
    CANCELLED = "CANCELLED"  # the appointment is cancelled (by the patient or the clinic)
    FAILED = "FAILED"  # the message could not be delivered (AppRec Avvist, no receipt)
    EXPIRED = "EXPIRED"  # delivered, but no business reply in time
    INVALID = "INVALID"  # the request broke a rule and was never sent


class Action(StrEnum):
    """What the patient asked for (the intake contract's `action`)."""

    RESERVE = "reserve"  # reserve a free slot
    WISH = "wish"  # appointment wish
    CHANGE_WISH = "change_wish"  # change an earlier wish
    CANCEL = "cancel"  # cancel an appointment or a wish


TERMINAL: frozenset[State] = frozenset(
    {State.REJECTED, State.CANCELLED, State.FAILED, State.EXPIRED, State.INVALID}
)

# Replies may overtake the AppRec, so SENT accepts every outcome DELIVERED accepts.
_OUTCOMES = frozenset({State.CONFIRMED, State.REJECTED, State.CANCELLED, State.EXPIRED})
TRANSITIONS: dict[State, frozenset[State]] = {
    State.REQUESTED: frozenset({State.SENT, State.INVALID, State.FAILED}),
    State.SENT: _OUTCOMES | {State.DELIVERED, State.FAILED},
    State.DELIVERED: _OUTCOMES | {State.FAILED},
    State.CONFIRMED: frozenset({State.CONFIRMED, State.CANCEL_REQUESTED, State.CANCELLED}),
    State.CANCEL_REQUESTED: frozenset({State.CANCELLED, State.CONFIRMED}),
    State.REJECTED: frozenset(),
    State.CANCELLED: frozenset(),
    State.FAILED: frozenset(),
    State.EXPIRED: frozenset(),
    State.INVALID: frozenset(),
}


class InvalidTransition(Exception):
    """A move the state machine does not allow from the current state."""

    def __init__(self, booking_id: str, current: State, target: State) -> None:
        super().__init__(f"booking {booking_id}: {current} -> {target} is not allowed")
        self.booking_id = booking_id
        self.current = current
        self.target = target


def can_move(current: State, target: State) -> bool:
    """Whether `current -> target` is a legal move."""
    return target in TRANSITIONS[current]


@dataclass
class Booking:
    """One booking request and its life, recording a StateChanged event per move."""

    id: str
    action: Action
    state: State = State.REQUESTED
    reason: str | None = None
    events: list[StateChanged] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        """True when no further move is possible."""
        return self.state in TERMINAL

    def _move(self, target: State, reason: str | None = None, now: datetime | None = None) -> None:
        if not can_move(self.state, target):
            raise InvalidTransition(self.id, self.state, target)
        at = now or datetime.now(UTC)
        self.events.append(StateChanged(self.id, self.state, target, reason, at))
        self.state = target
        self.reason = reason

    def mark_sent(self) -> None:
        """The message is on the clinic's queue."""
        self._move(State.SENT)

    def mark_delivered(self) -> None:
        """The clinic's EPJ acknowledged the message (AppRec OK)."""
        self._move(State.DELIVERED)

    def invalidate(self, reason: str) -> None:
        """The request broke a rule; nothing is sent."""
        self._move(State.INVALID, reason)

    def fail(self, reason: str) -> None:
        """Delivery failed for good."""
        self._move(State.FAILED, reason)

    def confirm(self, reason: str | None = None) -> None:
        """The clinic confirmed the appointment (also a change, or a refused cancellation)."""
        self._move(State.CONFIRMED, reason)

    def reject(self, reason: str) -> None:
        """The clinic rejected the request."""
        self._move(State.REJECTED, reason)

    def request_cancel(self) -> None:
        """The patient asked the clinic to cancel."""
        self._move(State.CANCEL_REQUESTED)

    def cancel(self, by: str, reason: str | None = None) -> None:
        """The appointment is cancelled, `by` the patient or the clinic."""
        self._move(State.CANCELLED, f"cancelled by {by}" + (f": {reason}" if reason else ""))

    def expire(self, reason: str) -> None:
        """No business reply arrived in time."""
        self._move(State.EXPIRED, reason)
