"""The simulated calendars' layout, read from the registry's `sim_calendar` keys (pure).

A `[clinic.sim_calendar]` table applies to every unit of the clinic; a
`[clinic.unit.sim_calendar]` table under a `[[clinic.unit]]` overrides it for that unit.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from mappers.lookup import SERVICE_NAMES
from mappers.model import Practitioner
from worker.adapters.registry import Clinic

CALENDAR_KEY = "sim_calendar"  # a table under a registry [[clinic]] or [[clinic.unit]]
_HOURS = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")


class CalendarConfigError(ValueError):
    """A `sim_calendar` table of the registry breaks the format (names clinic / unit and key)."""


@dataclass(frozen=True)
class CalendarSettings:
    """How one unit's calendar is laid out (registry keys of `sim_calendar`)."""

    days_ahead: int = 28  # how many days, from today, the calendar is open for booking
    opens: time = time(8, 0)  # opening_hours = "08:00-15:30"
    closes: time = time(15, 30)
    slot_minutes: int = 20
    video_share: float = 0.2  # the share of (not held back) slots that are video
    urgent_held_back: int = 2  # slots per day kept for urgent cases, offered only as Hastetime
    services: tuple[str, ...] = ("consultation",)  # each slot offers one of these
    practitioner: str | None = None  # the name; None: the unit's name; "": no practitioner
    hpr: str | None = None  # the practitioner's HPR number
    location: str | None = None  # the place of attendance; None: the clinic's name


@dataclass(frozen=True)
class UnitCalendar:
    """One bookable party (a unit, or a clinic without units) with its resolved settings."""

    her_id: str
    practitioner: Practitioner | None
    location: str
    settings: CalendarSettings


def settings_from_registry(data: Mapping[str, object]) -> dict[str, CalendarSettings]:
    """Calendar settings per clinic and unit HER-id; a unit inherits its clinic's."""
    found: dict[str, CalendarSettings] = {}
    clinics = data.get("clinic")
    for entry in clinics if isinstance(clinics, list) else []:
        if not isinstance(entry, dict):
            continue
        clinic = _settings(CalendarSettings(), entry, f"clinic {entry.get('her_id')}")
        found[str(entry.get("her_id"))] = clinic
        units = entry.get("unit")
        for unit in units if isinstance(units, list) else []:
            if isinstance(unit, dict):
                where = f"clinic {entry.get('her_id')} unit {unit.get('her_id')}"
                found[str(unit.get("her_id"))] = _settings(clinic, unit, where)
    return found


def settings_from_registry_text(text: str) -> dict[str, CalendarSettings]:
    """Calendar settings from the text of a registry TOML file."""
    try:
        return settings_from_registry(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise CalendarConfigError(f"registry is not valid TOML: {exc}") from exc


def _settings(base: CalendarSettings, table: Mapping[str, Any], where: str) -> CalendarSettings:
    """`base` with the keys of the table's `sim_calendar` applied."""
    keys = table.get(CALENDAR_KEY, {})
    if not isinstance(keys, dict):
        raise CalendarConfigError(f"{where}: '{CALENDAR_KEY}' must be a table")
    changes: dict[str, Any] = {}
    for key, value in keys.items():
        reader = _READERS.get(key)
        if reader is None:
            known = ", ".join(sorted(_READERS))
            raise CalendarConfigError(f"{where}: unknown {CALENDAR_KEY} key '{key}' ({known})")
        try:
            changes.update(reader(value))
        except (TypeError, ValueError) as exc:
            raise CalendarConfigError(f"{where}: {CALENDAR_KEY}.{key}: {exc}") from None
    settings = replace(base, **changes)
    if not slot_times(settings):
        raise CalendarConfigError(f"{where}: no slot fits between the opening hours")
    return settings


_Reader = Callable[[object], dict[str, Any]]


def _integer(name: str, low: int, high: int) -> _Reader:
    """A reader of an integer key within [low, high]."""

    def read(value: object) -> dict[str, Any]:
        """The checked integer."""
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high} (got {value!r})")
        return {name: value}

    return read


def _share(value: object) -> dict[str, Any]:
    """video_share: a number from 0 to 1."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"must be a number from 0 to 1 (got {value!r})")
    return {"video_share": float(value)}


def _hours(value: object) -> dict[str, Any]:
    """opening_hours: "HH:MM-HH:MM", opening before closing."""
    found = _HOURS.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f'must look like "08:00-15:30" (got {value!r})')
    opens = time(int(found.group(1)), int(found.group(2)))
    closes = time(int(found.group(3)), int(found.group(4)))
    if opens >= closes:
        raise ValueError("must open before it closes")
    return {"opens": opens, "closes": closes}


def _services(value: object) -> dict[str, Any]:
    """services: a non-empty list of the contract's service codes."""
    if not isinstance(value, list) or not value or not all(v in SERVICE_NAMES for v in value):
        raise ValueError(f"must be a non-empty list of {', '.join(SERVICE_NAMES)}")
    return {"services": tuple(value)}


def _text(name: str, *, empty: bool = False) -> _Reader:
    """A reader of a string key."""

    def read(value: object) -> dict[str, Any]:
        """The stripped string."""
        if not isinstance(value, str) or (not empty and not value.strip()):
            raise ValueError("must be a non-empty string" if not empty else "must be a string")
        return {name: value.strip()}

    return read


def _hpr(value: object) -> dict[str, Any]:
    """hpr: digits."""
    if not isinstance(value, str | int) or not str(value).isdigit():
        raise ValueError("must be digits")
    return {"hpr": str(value)}


_READERS: dict[str, _Reader] = {
    "days_ahead": _integer("days_ahead", 1, 366),
    "opening_hours": _hours,
    "slot_minutes": _integer("slot_minutes", 5, 480),
    "video_share": _share,
    "urgent_held_back": _integer("urgent_held_back", 0, 100),
    "services": _services,
    "practitioner": _text("practitioner", empty=True),
    "hpr": _hpr,
    "location": _text("location"),
}


def units_of(clinic: Clinic, settings: Mapping[str, CalendarSettings]) -> tuple[UnitCalendar, ...]:
    """The bookable parties of a clinic: each unit, or the clinic itself when it has none."""
    base = settings.get(clinic.her_id, CalendarSettings())
    parties = [(u.her_id, u.name) for u in clinic.units] or [(clinic.her_id, clinic.name)]
    return tuple(
        _unit(her_id, name, clinic.name, settings.get(her_id, base)) for her_id, name in parties
    )


def _unit(her_id: str, name: str, clinic_name: str, settings: CalendarSettings) -> UnitCalendar:
    """A unit with its practitioner (named in the settings, else after the unit)."""
    who = name if settings.practitioner is None else settings.practitioner
    practitioner = Practitioner(who, her_id=her_id, hpr=settings.hpr) if who else None
    return UnitCalendar(her_id, practitioner, settings.location or clinic_name, settings)


def slot_times(settings: CalendarSettings) -> list[tuple[time, time]]:
    """(start, end) of every slot of a day, the last one ending by closing time."""
    step = timedelta(minutes=settings.slot_minutes)
    at = datetime.combine(date(2000, 1, 3), settings.opens)
    closing = datetime.combine(date(2000, 1, 3), settings.closes)
    found = []
    while at + step <= closing:
        found.append((at.time(), (at + step).time()))
        at += step
    return found
