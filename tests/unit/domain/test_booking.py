"""Every legal and illegal move of the booking state machine."""

from __future__ import annotations

import itertools

import pytest

from worker.domain.booking import (
    TERMINAL,
    TRANSITIONS,
    Action,
    Booking,
    InvalidTransition,
    State,
    can_move,
)

LEGAL = {
    (State.REQUESTED, State.SENT),
    (State.REQUESTED, State.INVALID),
    (State.REQUESTED, State.FAILED),
    (State.SENT, State.DELIVERED),
    (State.SENT, State.CONFIRMED),
    (State.SENT, State.REJECTED),
    (State.SENT, State.CANCELLED),
    (State.SENT, State.FAILED),
    (State.SENT, State.EXPIRED),
    (State.DELIVERED, State.CONFIRMED),
    (State.DELIVERED, State.REJECTED),
    (State.DELIVERED, State.CANCELLED),
    (State.DELIVERED, State.FAILED),
    (State.DELIVERED, State.EXPIRED),
    (State.CONFIRMED, State.CONFIRMED),
    (State.CONFIRMED, State.CANCEL_REQUESTED),
    (State.CONFIRMED, State.CANCELLED),
    (State.CANCEL_REQUESTED, State.CANCELLED),
    (State.CANCEL_REQUESTED, State.CONFIRMED),
}

# The method that asks for each target state.
MOVES = {
    State.SENT: lambda b: b.mark_sent(),
    State.DELIVERED: lambda b: b.mark_delivered(),
    State.CONFIRMED: lambda b: b.confirm(),
    State.REJECTED: lambda b: b.reject("nei"),
    State.CANCEL_REQUESTED: lambda b: b.request_cancel(),
    State.CANCELLED: lambda b: b.cancel("clinic"),
    State.FAILED: lambda b: b.fail("E21"),
    State.EXPIRED: lambda b: b.expire("no reply"),
    State.INVALID: lambda b: b.invalidate("subject: too long"),
}


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s, t in itertools.product(State, State) if t is not State.REQUESTED],
    ids=lambda s: s.value,
)
def test_every_pair(source: State, target: State) -> None:
    booking = Booking("b1", Action.RESERVE, source)
    if (source, target) in LEGAL:
        MOVES[target](booking)
        assert booking.state is target
        [event] = booking.events
        assert (event.source, event.target, event.booking_id) == (source, target, "b1")
    else:
        with pytest.raises(InvalidTransition) as info:
            MOVES[target](booking)
        assert booking.state is source and booking.events == []
        assert f"{source} -> {target}" in str(info.value)


def test_table_matches_the_legal_set() -> None:
    table = {(s, t) for s, targets in TRANSITIONS.items() for t in targets}
    assert table == LEGAL
    assert all(can_move(s, t) == ((s, t) in LEGAL) for s in State for t in State)


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()
        assert Booking("x", Action.WISH, state).terminal


def test_reason_is_recorded() -> None:
    booking = Booking("b2", Action.RESERVE)
    booking.invalidate("patient.fnr: check digit 2 does not match")
    assert booking.reason == "patient.fnr: check digit 2 does not match"
    assert booking.events[0].reason == booking.reason
    booking2 = Booking("b3", Action.RESERVE, State.CONFIRMED)
    booking2.cancel("clinic", "Legen er syk")
    assert booking2.reason == "cancelled by clinic: Legen er syk"
