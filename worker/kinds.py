"""The contract's appointment kinds and their code list 7617 codes (no pydantic here: the
read side maps stored messages back to them on every `timebok booking` call)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from mappers.codes import AppointmentType


class AppointmentKind(StrEnum):
    """How the patient attends (the contract's `appointment_type`)."""

    IN_PERSON = "in_person"  # ordinary attendance at the clinic
    VIDEO = "video"  # video consultation
    PHONE = "phone"  # phone consultation
    URGENT = "urgent"  # urgent appointment (hastetime)


APPOINTMENT_CODES: Final[Mapping[AppointmentKind, AppointmentType]] = {
    AppointmentKind.IN_PERSON: AppointmentType.ORDINARY,
    AppointmentKind.URGENT: AppointmentType.URGENT,
    AppointmentKind.VIDEO: AppointmentType.VIDEO,
    AppointmentKind.PHONE: AppointmentType.PHONE,
}


def appointment_type_code(kind: AppointmentKind | str) -> AppointmentType:
    """Code list 7617 for the contract's appointment_type."""
    return APPOINTMENT_CODES[AppointmentKind(kind)]


def appointment_kind(code: AppointmentType) -> AppointmentKind:
    """The contract's appointment_type for a 7617 code timebok books."""
    return next(kind for kind, known in APPOINTMENT_CODES.items() if known is code)
