"""Response bodies of the portal API: the CLI's --json objects, described for OpenAPI.

The request body of `POST /v1/bookings` is not defined here: it is
`worker.request.BookingRequest`, the very model the Celery intake validates with.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class Accepted(_Out):
    """A booking request taken in: the booking's id (its request_id) and state."""

    id: str = Field(description="The booking id (the request's request_id)")
    state: str = Field(description="REQUESTED, SENT, ... (see README 'Booking states')")


class FieldErrorOut(_Out):
    """One field error a request was refused for."""

    field: str
    message: str


class HistoryEntry(_Out):
    """One state change of a booking."""

    source: str | None = Field(alias="from", description="The state left (null: created)")
    to: str
    reason: str | None
    at: str | None


class MessageOut(_Out):
    """One EPJ message in or out for a booking."""

    direction: str = Field(description="out | in")
    msg_id: str
    type: str
    function: str | None
    status: str
    error_code: str | None
    ref_to_parent: str | None
    created_at: str | None
    sent_at: str | None


class BookingOut(_Out):
    """What `timebok booking ID --json` prints."""

    id: str
    action: str
    state: str
    reason: str | None
    clinic_her_id: str | None
    appointment_uid: str | None
    booking_ref: str | None
    created_at: str | None
    updated_at: str | None
    errors: list[FieldErrorOut]
    appointment_type: str | None
    service: str | None
    urgent: bool | None
    history: list[HistoryEntry]
    messages: list[MessageOut]


class UnitOut(_Out):
    """A level-2 unit of a clinic."""

    her_id: int
    name: str


class ClinicOut(_Out):
    """A connected clinic of the address registry."""

    her_id: int
    name: str
    phone: str | None
    processes: list[str] = Field(description="timereservasjon, timeonske, ...")
    units: list[UnitOut]


class PractitionerOut(_Out):
    """The practitioner of a slot, as a `reserve` request's `practitioner` takes it."""

    name: str
    her_id: str | None
    hpr: str | None


class SlotOut(_Out):
    """One free slot (`id` is what a `reserve` request puts in `slot.id`)."""

    id: str | None
    start: str
    end: str
    appointment_type: str | None
    service: str | None
    practitioner: PractitionerOut | None
    unit_her_id: int | str
    location: str | None


class SlotsOut(_Out):
    """The `timebok slots --json` object."""

    clinic: int
    start: str = Field(alias="from", description="First day, YYYY-MM-DD")
    end: str = Field(alias="to", description="Last day, YYYY-MM-DD")
    slots: list[SlotOut]
    cached: bool = Field(description="Served from the lookup cache")


class NotificationOut(_Out):
    """One inbox notification (`timebok inbox --json`)."""

    event: str
    title: str
    body: str
    appointment_uid: str | None
    booking_id: str | None
    repliable: bool
    created_at: str | None


class AppointmentOut(_Out):
    """One appointment under Timeavtaler (`timebok appointments --json`)."""

    uid: str
    status: str
    start: str | None
    end: str | None
    duration_minutes: int
    practitioner: str | None
    location: str | None
    appointment_type: str | None
    clinic_her_id: str
    clinic_name: str
    video_url: str | None
    booking_id: str | None


class PersonName(_Out):
    """A patient's names, for an appointment the clinic booked itself."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    given_name: str = Field(min_length=1, max_length=100)
    family_name: str = Field(min_length=1, max_length=100)


class CancelBody(_Out):
    """Optional body of a cancel: its idempotency key and, where needed, the patient's names."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(
        default=None,
        description="Idempotency key of the cancel; default: derived from the appointment "
        "and X-Patient-Id, so the same cancel twice is one request",
        json_schema_extra={"format": "uuid"},
    )
    patient: PersonName | None = Field(
        default=None, description="Needed only for an appointment the clinic booked itself"
    )


class Health(_Out):
    """Whether the database and the brokers answer."""

    status: str = Field(description="ok | unavailable")
    checks: dict[str, str] = Field(description="database, broker, epj_broker: ok | unavailable")
