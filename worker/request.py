"""The intake contract: a booking request from the portal, validated into pydantic models."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import ErrorDetails, PydanticCustomError

from mappers.codes import Process, RelationCode, Urgency
from worker import fnr as fnrs
from worker.domain.booking import Action
from worker.errors import RejectedRequest
from worker.kinds import AppointmentKind
from worker.logs import scrub

SCHEMA_ID: Final = "urn:timebok:schema:booking-request:v1"
SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
SUBJECT_MAX: Final = 50
MESSAGE_MAX: Final = 250
REF_MAX: Final = 64  # booking id, appointment uid and slot id share the store's 64-char columns
HER_ID_MAX_DIGITS: Final = 20
_RULE: Final = "timebok"  # pydantic error type of our own rules
_PHONE_CHARS: Final = frozenset("0123456789 ")


class RelationKind(StrEnum):
    """How the requester relates to the patient (the contract's `requester.relation`)."""

    SELF = "self"  # the patient books for themself
    POWER_OF_ATTORNEY = "power_of_attorney"  # fullmakt (7611 FU)
    GUARDIAN = "guardian"  # vergemål (7611 VE)
    PARENTAL_RESPONSIBILITY = "parental_responsibility"  # foreldreansvar (7611 FO)


class Service(StrEnum):
    """What the appointment is for."""

    CONSULTATION = "consultation"  # consultation with the GP / practitioner
    LAB_TEST = "lab_test"  # laboratory test
    VACCINATION = "vaccination"  # vaccine
    OTHER = "other"  # anything else


# Fields that must be present (not null) for an action, beyond the always-required ones.
REQUIRED_FOR: Final[Mapping[str, frozenset[Action]]] = {
    "practitioner": frozenset({Action.RESERVE}),
    "service": frozenset({Action.RESERVE, Action.WISH, Action.CHANGE_WISH}),
    "slot": frozenset({Action.RESERVE}),
    "subject": frozenset({Action.RESERVE, Action.WISH}),
    "message": frozenset({Action.WISH, Action.CHANGE_WISH}),
    "booking_ref": frozenset({Action.CANCEL, Action.CHANGE_WISH}),
}

# Fields that only mean something for some actions: elsewhere they would be dropped, so a
# request carrying one is refused rather than sent without it.
ONLY_FOR: Final[Mapping[str, frozenset[Action]]] = {
    "slot": frozenset({Action.RESERVE}),
    "booking_ref": frozenset({Action.CANCEL, Action.CHANGE_WISH}),
}

_RELATION_CODES: Final[Mapping[RelationKind, RelationCode | None]] = {
    RelationKind.SELF: None,
    RelationKind.POWER_OF_ATTORNEY: RelationCode.POWER_OF_ATTORNEY,
    RelationKind.GUARDIAN: RelationCode.GUARDIAN,
    RelationKind.PARENTAL_RESPONSIBILITY: RelationCode.PARENT,
}


def _rule(message: str, **ctx: str) -> PydanticCustomError:
    """A pydantic error carrying our exact message (ctx 'field' moves it to a child field)."""
    return PydanticCustomError(_RULE, message.replace("{", "(").replace("}", ")"), ctx or None)


def _blank_to_none(value: object) -> object:
    """Optional strings: treat "" and whitespace as absent."""
    return None if isinstance(value, str) and not value.strip() else value


def _digits_id(value: object) -> object:
    """HER-id / HPR number: a positive int or a digit string, normalised to str."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        value = str(value)
    if not isinstance(value, str):
        raise _rule("must be digits (a positive number or a string of digits)")
    value = value.strip()
    if value and not (value.isascii() and value.isdigit()):
        raise _rule("must be digits (a positive number or a string of digits)")
    if len(value) > HER_ID_MAX_DIGITS:
        raise _rule(f"at most {HER_ID_MAX_DIGITS} digits (got {len(value)})")
    return value


def _check_fnr(value: str) -> str:
    """A valid fødselsnummer / D-number; the reason never contains the number."""
    try:
        fnrs.check(value)
    except ValueError as exc:
        raise _rule(str(exc)) from None
    return value


def _check_phone(value: str) -> str:
    """A phone number: digits and spaces, optionally a leading +."""
    body = value.removeprefix("+")
    if not body or not set(body) <= _PHONE_CHARS or sum(c.isdigit() for c in body) < 3:
        raise _rule("must be a phone number (digits and spaces, optionally a leading +)")
    return value


def _check_uuid(value: str) -> str:
    """A UUID, normalised to the canonical lower-case 36-character form."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _rule("must be a UUID") from None


def _iso_datetime(value: object) -> object:
    """Only ISO 8601 text (or a datetime): no Unix timestamps."""
    if isinstance(value, str | datetime):
        return value
    raise _rule("must be an ISO 8601 date-time string with a UTC offset")


_DIGITS_SCHEMA: Final = {
    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^[0-9]+$"}]
}

_OFFSET_PATTERN: Final[JsonDict] = {"pattern": "(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"}

Text = Annotated[str, Field(min_length=1)]
DigitsId = Annotated[
    str, BeforeValidator(_digits_id), Field(min_length=1), WithJsonSchema(_DIGITS_SCHEMA)
]
OptionalDigitsId = Annotated[DigitsId | None, BeforeValidator(_blank_to_none)]
Fnr = Annotated[
    str,
    AfterValidator(_check_fnr),
    WithJsonSchema({"type": "string", "pattern": "^[0-9]{11}$"}),
]
PhoneNumber = Annotated[
    str,
    AfterValidator(_check_phone),
    WithJsonSchema({"type": "string", "pattern": r"^\+?[0-9 ]+$"}),
]
Ref = Annotated[str, Field(min_length=1, max_length=REF_MAX)]
OptionalRef = Annotated[Ref | None, BeforeValidator(_blank_to_none)]
Instant = Annotated[AwareDatetime, BeforeValidator(_iso_datetime)]


def _add_action_rules(schema: dict[str, Any]) -> None:
    """Express REQUIRED_FOR in the JSON Schema as if/then clauses (one per action)."""
    rules: list[dict[str, Any]] = []
    for action in Action:
        fields = [name for name, actions in REQUIRED_FOR.items() if action in actions]
        properties: dict[str, Any] = {name: {"not": {"type": "null"}} for name in fields}
        properties |= {
            name: {"type": "null"} for name, actions in ONLY_FOR.items() if action not in actions
        }
        rules.append(
            {
                "if": {"properties": {"action": {"const": action.value}}, "required": ["action"]},
                "then": {"required": fields, "properties": properties},
            }
        )
    schema["allOf"] = rules


class _Model(BaseModel):
    """Shared config: immutable, stripped strings, unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class Patient(_Model):
    """The person the appointment is for."""

    fnr: Fnr = Field(repr=False, description="Fødselsnummer or D-number, 11 digits, mod-11 valid")
    given_name: Text = Field(description="Given name(s)")
    family_name: Text = Field(description="Family name")
    phone: Annotated[PhoneNumber | None, BeforeValidator(_blank_to_none)] = Field(
        default=None, description="Mobile phone number"
    )


class Requester(_Model):
    """The person sending the request when it is not the patient."""

    fnr: Fnr = Field(repr=False, description="The requester's fødselsnummer or D-number")
    given_name: Text = Field(description="Given name(s)")
    family_name: Text = Field(description="Family name")
    relation: RelationKind = Field(description="Relation to the patient (code list 7611)")


class ClinicRef(_Model):
    """The clinic (communication party) the request goes to."""

    her_id: DigitsId = Field(description="The clinic's HER-id (integer or digit string)")
    name: Text = Field(description="The clinic's name as shown to the patient")
    unit_her_id: OptionalDigitsId = Field(
        default=None, description="HER-id of a level-2 unit (a practitioner's list, a lab ...)"
    )


class PractitionerRef(_Model):
    """The practitioner a slot belongs to."""

    name: Text = Field(description="The practitioner's full name")
    her_id: OptionalDigitsId = Field(default=None, description="The practitioner's HER-id")
    hpr: OptionalDigitsId = Field(default=None, description="HPR number (Helsepersonellregisteret)")


class Slot(_Model):
    """A time slot: ISO 8601 with a UTC offset, start before end, not in the past."""

    id: OptionalRef = Field(default=None, description="The clinic's id of the free slot")
    start: Instant = Field(
        description="Start, ISO 8601 with UTC offset", json_schema_extra=_OFFSET_PATTERN
    )
    end: Instant = Field(
        description="End, ISO 8601 with UTC offset", json_schema_extra=_OFFSET_PATTERN
    )

    @field_validator("start")
    @classmethod
    def _not_past(cls, value: datetime, info: ValidationInfo) -> datetime:
        """Checked only with `now` in the context (parse_request), not when reloading a request."""
        now = info.context.get("now") if isinstance(info.context, dict) else None
        if isinstance(now, datetime) and value < now:
            raise _rule("is in the past")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Slot:
        if self.start >= self.end:
            raise _rule("must be before slot.end", field="start")
        return self


class QuestionAnswer(_Model):
    """One answered question of the clinic's questionnaire."""

    question: Text = Field(description="The question as shown to the patient")
    answer: Text = Field(description="The patient's answer")


class BookingRequest(_Model):
    """A booking request from the portal (task `timebok.submit_booking`)."""

    model_config = ConfigDict(
        title="BookingRequest",
        json_schema_extra=_add_action_rules,
    )

    request_id: Annotated[str, AfterValidator(_check_uuid)] = Field(
        description="Idempotency key: the same id twice creates one booking",
        json_schema_extra={"format": "uuid"},
    )
    action: Action = Field(description="What the patient asks for")
    patient: Patient = Field(description="The patient the appointment is for")
    requester: Requester | None = Field(
        default=None, description="Who sends the request when acting for the patient"
    )
    clinic: ClinicRef = Field(description="The receiving clinic (must support the process)")
    practitioner: PractitionerRef | None = Field(
        default=None, validate_default=True, description="The practitioner; required for reserve"
    )
    service: Service | None = Field(
        default=None, validate_default=True, description="The service; required except for cancel"
    )
    appointment_type: AppointmentKind = Field(
        default=AppointmentKind.IN_PERSON, description="How the patient attends"
    )
    slot: Slot | None = Field(
        default=None, validate_default=True, description="The requested slot; required for reserve"
    )
    subject: Annotated[Text, Field(max_length=SUBJECT_MAX)] | None = Field(
        default=None,
        validate_default=True,
        description="What it is about; required for reserve/wish",
    )
    message: Annotated[Text, Field(max_length=MESSAGE_MAX)] | None = Field(
        default=None,
        validate_default=True,
        description="Suggested times and reason; required for wish/change_wish",
    )
    questionnaire: tuple[QuestionAnswer, ...] = Field(
        default=(), description="Answers to the clinic's questionnaire"
    )
    booking_ref: Ref | None = Field(
        default=None,
        validate_default=True,
        description="Booking id or appointment uid; required for cancel/change_wish",
    )

    @field_validator("requester")
    @classmethod
    def _requester_matches(cls, value: Requester | None, info: ValidationInfo) -> Requester | None:
        patient = info.data.get("patient")
        if value is None or not isinstance(patient, Patient):
            return value
        is_self = value.relation is RelationKind.SELF
        if is_self and value.fnr != patient.fnr:
            raise _rule("must equal patient.fnr when relation is 'self'", field="fnr")
        if not is_self and value.fnr == patient.fnr:
            raise _rule(
                f"must differ from patient.fnr when relation is '{value.relation}'", field="fnr"
            )
        return value

    @field_validator(*REQUIRED_FOR)
    @classmethod
    def _required_for_action(cls, value: object, info: ValidationInfo) -> object:
        action = info.data.get("action")
        if value is None and info.field_name and action in REQUIRED_FOR[info.field_name]:
            raise _rule(f"required when action is '{action}'")
        return value

    @field_validator(*ONLY_FOR)
    @classmethod
    def _only_for_action(cls, value: object, info: ValidationInfo) -> object:
        action = info.data.get("action")
        allowed = ONLY_FOR[info.field_name or ""]
        if value is not None and isinstance(action, Action) and action not in allowed:
            names = ", ".join(f"'{a}'" for a in sorted(allowed))
            raise _rule(f"only allowed when action is {names} (it would not reach the clinic)")
        return value

    @property
    def acting_person(self) -> Requester | Patient:
        """Who sent the request: the requester when present, else the patient."""
        return self.requester if self.requester is not None else self.patient


@dataclass(frozen=True)
class FieldError:
    """One broken rule: a dotted path into the request and a precise English message."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidRequest(RejectedRequest):
    """The request broke one or more rules; `errors` says which, field by field."""

    def __init__(self, errors: tuple[FieldError, ...]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors

    def __str__(self) -> str:
        return "; ".join(str(e) for e in self.errors)


def parse_request(data: object, *, now: datetime) -> BookingRequest:
    """Validate a request (dict, JSON text or bytes) against the contract at time `now`."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if isinstance(data, str | bytes | bytearray):
        data = _load_json(data)
    try:
        return BookingRequest.model_validate(data, context={"now": now})
    except ValidationError as exc:
        errors = _field_errors(exc)
    # Raised outside the except block: the ValidationError (which holds the raw input,
    # fødselsnummer included) must not travel along as __context__ into logs or Sentry.
    raise InvalidRequest(errors)


def _load_json(text: str | bytes | bytearray) -> object:
    """JSON text to Python; malformed input becomes InvalidRequest on field '$'."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        problem = f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    except _DuplicateKey as exc:
        problem = f"malformed JSON: duplicate key '{exc.key}'"
    except UnicodeDecodeError as exc:
        problem = f"malformed JSON: not UTF-8 text ({exc.reason} at byte {exc.start})"
    except RecursionError:
        problem = "malformed JSON: nested too deeply"
    raise InvalidRequest((FieldError("$", problem),))


class _DuplicateKey(Exception):
    """A JSON object names the same key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key[:40]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: refuse duplicate keys instead of silently keeping the last."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _field_errors(exc: ValidationError) -> tuple[FieldError, ...]:
    """Pydantic errors as FieldErrors in our own words, without any input values."""
    seen: dict[tuple[str, str], None] = {}
    for err in exc.errors(include_url=False):
        seen[(_path(err), _message(err))] = None
    return tuple(FieldError(field, message) for field, message in seen)


def _path(err: ErrorDetails) -> str:
    """The error location as `patient.fnr` / `questionnaire[0].answer`; '$' for the root."""
    loc: list[int | str] = list(err["loc"])
    ctx = err.get("ctx") or {}
    if err["type"] == _RULE and "field" in ctx:
        loc.append(str(ctx["field"]))
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" not in part:  # pydantic adds validator labels like "function-after[...]"
            part = scrub(part[:40])  # an unknown key is input: short, and never an FNR
            path += f".{part}" if path else part
    return path or "$"


_TYPE_MESSAGES: Final[Mapping[str, str]] = {
    "missing": "is required",
    "extra_forbidden": "is not an allowed field",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "timezone_aware": "must include a UTC offset",
    "datetime_type": "must be an ISO 8601 date-time string with a UTC offset",
    "datetime_parsing": "must be an ISO 8601 date-time string with a UTC offset",
    "datetime_from_date_parsing": "must be an ISO 8601 date-time string with a UTC offset",
}


def _message(err: ErrorDetails) -> str:
    """One error in our words; pydantic's text only as a fallback (it never echoes input)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    if kind == "string_too_long":
        got = len(err["input"].strip()) if isinstance(err["input"], str) else "more"
        return f"at most {ctx['max_length']} characters (got {got})"
    if kind in ("enum", "literal_error"):
        return f"must be one of {ctx['expected']}"
    return err["msg"]


def relation_code(relation: RelationKind | str) -> RelationCode | None:
    """Code list 7611 for a requester relation; None when the patient acts for themself."""
    return _RELATION_CODES[RelationKind(relation)]


def urgency(kind: AppointmentKind | str) -> Urgency:
    """Foresporsel/Hastegrad for the contract's appointment_type: urgent or not."""
    return Urgency.URGENT if AppointmentKind(kind) is AppointmentKind.URGENT else Urgency.NORMAL


def process_for(action: Action | str) -> Process:
    """The MsgHead process of a request; a cancel defaults to the reservation process."""
    action = Action(action)
    if action in (Action.WISH, Action.CHANGE_WISH):
        return Process.WISH
    return Process.RESERVATION


def cancel_process(original_action: Action | str | None) -> Process:
    """The process that cancels a booking made by `original_action`.

    A reserved slot is cancelled in the reservation process (7601 ART), a wish in the wish
    process (7601 OAT). None means the appointment was not booked through timebok (the clinic
    published it): that is cancelled in the avtaleavbestilling process.
    """
    if original_action is None:
        return Process.CANCELLATION
    action = Action(original_action)
    if action is Action.CANCEL:
        raise ValueError("a cancellation cannot itself be cancelled")
    return Process.RESERVATION if action is Action.RESERVE else Process.WISH


def json_schema() -> dict[str, Any]:
    """The contract as JSON Schema (draft 2020-12), as stored in schemas/."""
    schema = BookingRequest.model_json_schema()
    for model in (schema, *schema["$defs"].values()):
        for name, prop in model.get("properties", {}).items():
            prop.setdefault("title", name.replace("_", " ").title())  # pydantic omits it on $ref
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID, **schema}


def json_schema_text() -> str:
    """The JSON Schema as the exact text of schemas/booking-request.schema.json."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    """Print the JSON Schema (`python -m worker.request > schemas/booking-request.schema.json`)."""
    print(json_schema_text(), end="")


if __name__ == "__main__":
    main()
