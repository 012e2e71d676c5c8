"""The portal -> EPJ functions: which process and 7601 code each travels with, and a composer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from mappers.codes import AppointmentType, Function, Process, RequestCode, Urgency
from mappers.errors import InvalidInput
from mappers.model import (
    ConversationRef,
    DialogMessage,
    Envelope,
    Event,
    Party,
    Person,
    Practitioner,
    Relation,
    Request,
)

FUNCTIONS: dict[Function, tuple[Process, RequestCode]] = {
    Function.RESERVE: (Process.RESERVATION, RequestCode.RESERVE),
    # [our choice] cancelling an appointment opens the cancellation process (reply:
    # SvarAvbestilling 08/09); see ALSO_IN for cancelling inside a reservation dialogue.
    Function.CANCEL: (Process.CANCELLATION, RequestCode.CANCEL),
    Function.WISH: (Process.WISH, RequestCode.WISH),
    Function.WISH_CHANGE: (Process.WISH, RequestCode.WISH_CHANGE),
    Function.WISH_CANCEL: (Process.WISH, RequestCode.WISH_CANCEL),
}

# Other processes a function may travel in: a reservation still pending can be cancelled
# within its own timereservasjon conversation.
ALSO_IN: dict[Function, tuple[Process, ...]] = {
    Function.CANCEL: (Process.RESERVATION,),
}


@dataclass(frozen=True)
class Wanted:
    """What a wish asks for (Formål, Hastegrad, KodetOpplysning of its Foresporsel)."""

    appointment_type: AppointmentType | None = None
    urgency: Urgency | None = None
    service: str | None = None


def processes(function: Function) -> tuple[Process, ...]:
    """Every process `function` may travel in, the default first."""
    return (FUNCTIONS[function][0], *ALSO_IN.get(function, ()))


def function_for(process: Process, code: RequestCode) -> Function | None:
    """The portal -> EPJ function a (process, 7601 code) pair carries, if any."""
    for function, (_, function_code) in FUNCTIONS.items():
        if function_code is code and process in processes(function):
            return function
    return None


def compose(
    function: Function | str,
    *,
    msg_id: str,
    gen_date: datetime,
    sender: Party,
    receiver: Party,
    patient: Person,
    subject: str | None = None,
    text: str | None = None,
    practitioner: Practitioner | None = None,
    wanted: Wanted | None = None,
    event: Event | None = None,
    relation: Relation | None = None,
    conversation: ConversationRef | None = None,
    process: Process | None = None,
) -> DialogMessage:
    """The DialogMessage for one portal -> EPJ function (`message.build` turns it into XML)."""
    chosen = _function(function)
    allowed = processes(chosen)
    if process is not None and process not in allowed:
        raise InvalidInput(f"{chosen} does not travel in {process}")
    env = Envelope(
        process=process or allowed[0],
        msg_id=msg_id,
        gen_date=gen_date,
        sender=sender,
        receiver=receiver,
        patient=patient,
        conversation=conversation,
    )
    request = Request(FUNCTIONS[chosen][1], subject, text, practitioner)
    if wanted is not None:
        request = replace(
            request,
            appointment_type=wanted.appointment_type,
            urgency=wanted.urgency,
            service=wanted.service,
        )
    return DialogMessage(envelope=env, request=request, event=event, relation=relation)


def _function(name: Function | str) -> Function:
    """A portal -> EPJ function by name."""
    try:
        function = Function(name)
    except ValueError as exc:
        raise InvalidInput(f"unknown function {name!r}") from exc
    if function not in FUNCTIONS:
        raise InvalidInput(f"{function} is not a portal -> EPJ function")
    return function
