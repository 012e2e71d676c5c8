"""xCal (RFC 6321): appointment `Event`s as icalendar/vcalendar/vevent (one, or a lookup's list)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache

from lxml import etree

from mappers.codes import NS_XCAL, AppointmentType, appointment_type
from mappers.errors import SchemaInvalid
from mappers.model import Event
from mappers.xmlsafe import child, clone, format_datetime, guarded, new_root, parse_datetime, sub

PRODID = "-//timebok//NONSGML timebok//NB"
VERSION = "2.0"
# [our choice] the appointment type as categories "7617:<code>", the code as published
CATEGORY_PREFIX = "7617:"


def q(name: str) -> str:
    """A qualified xCal element name."""
    return f"{{{NS_XCAL}}}{name}"


ICALENDAR = q("icalendar")
_VCALENDAR, _VEVENT = q("vcalendar"), q("vevent")
_PROPERTIES, _COMPONENTS = q("properties"), q("components")
_TEXT, _DATE_TIME, _URI = q("text"), q("date-time"), q("uri")


# ---------------------------------------------------------------------------- build
# Speed: the whole icalendar tree for a given set of properties is built once and cached;
# a message clones it and fills the values in, instead of creating ~30 elements.

_OPTIONAL = (
    "related-to",
    "summary",
    "description",
    "location",
    "categories",
    "status",
    "url",
    "x-servicetype",
)
_KINDS = {"url": _URI, "dtstamp": _DATE_TIME, "dtstart": _DATE_TIME, "dtend": _DATE_TIME}


# How an appointment type becomes the text after "7617:" and back (lookups pass their own).
TypeCode = Callable[[AppointmentType], str]
TypeReader = Callable[[str], AppointmentType | None]


@guarded
def build(event: Event, *, stamp: datetime | None = None) -> etree._Element:
    """An icalendar root with one vevent; `stamp` becomes DTSTAMP (when the event was sent)."""
    return _vcalendar(event, stamp, str)


@guarded
def build_all(
    events: Sequence[Event], *, stamp: datetime | None = None, type_code: TypeCode = str
) -> etree._Element:
    """An icalendar root with one vevent per event, in order (RFC 5545 needs at least one)."""
    if not events:
        raise ValueError("a vcalendar carries at least one vevent")  # InvalidInput via guarded
    root, *rest = (_vcalendar(event, stamp, type_code) for event in events)
    components = root[0][1]
    for other in rest:
        components.append(other[0][1][0])
    return root


def _vcalendar(event: Event, stamp: datetime | None, type_code: TypeCode) -> etree._Element:
    """A filled copy of the cached icalendar template for one event."""
    values = _values(event, stamp, type_code)
    root = clone(_calendar(tuple(name for name, _ in values)))
    props = root[0][1][0][0]  # vcalendar/components/vevent/properties
    for prop, (_, value) in zip(props, values, strict=True):
        prop[0].text = value
    return root


def _values(event: Event, stamp: datetime | None, type_code: TypeCode) -> list[tuple[str, str]]:
    """(property, value) pairs in document order; RFC 6321 has no empty values, so an empty
    optional text is left out."""
    kind = event.appointment_type
    category = None if kind is None else CATEGORY_PREFIX + type_code(kind)
    optional = (
        event.related_to,
        event.summary,
        event.description,
        event.location,
        category,
        event.status,
        event.url,
        event.service,
    )
    values = [("uid", event.uid)]
    if stamp is not None:
        values.append(("dtstamp", format_datetime(stamp, "dtstamp")))
    values.append(("dtstart", format_datetime(event.start, "dtstart")))
    values.append(("dtend", format_datetime(event.end, "dtend")))
    values.append(("contact", event.contact))
    values.extend((name, value) for name, value in zip(_OPTIONAL, optional, strict=True) if value)
    return values


@lru_cache(maxsize=256)
def _calendar(names: tuple[str, ...]) -> etree._Element:
    """icalendar/vcalendar (prodid, version) with one vevent holding empty `names` properties."""
    root = new_root(ICALENDAR, NS_XCAL)
    vcalendar = sub(root, _VCALENDAR)
    calendar_properties = sub(vcalendar, _PROPERTIES)
    sub(sub(calendar_properties, q("prodid")), _TEXT, PRODID)
    sub(sub(calendar_properties, q("version")), _TEXT, VERSION)
    props = sub(sub(sub(vcalendar, _COMPONENTS), _VEVENT), _PROPERTIES)
    for name in names:
        sub(sub(props, q(name)), _KINDS.get(name, _TEXT))
    return root


# ---------------------------------------------------------------------------- parse


def parse(root: etree._Element) -> Event:
    """The one Event of a schema-valid icalendar root (aware datetimes, zone as sent)."""
    vevents = _vevents(root)
    if len(vevents) != 1:
        # The profile allows many (lookup answers); a booking message still carries one.
        raise SchemaInvalid([f"vcalendar carries {len(vevents)} vevents; this message has one"])
    return _event(vevents[0], _appointment_type)


def parse_all(root: etree._Element, *, read_type: TypeReader | None = None) -> tuple[Event, ...]:
    """Every Event of a schema-valid icalendar root, in document order."""
    reader = _appointment_type if read_type is None else _categories(read_type)
    return tuple(_event(vevent, reader) for vevent in _vevents(root))


def _vevents(root: etree._Element) -> list[etree._Element]:
    """The vevent elements of vcalendar/components."""
    return list(child(child(root, _VCALENDAR), _COMPONENTS).iterchildren(_VEVENT))


def _categories(read_type: TypeReader) -> Callable[[str | None], AppointmentType | None]:
    """A categories reader using `read_type` for the code after "7617:"."""

    def read(category: str | None) -> AppointmentType | None:
        """The appointment type of one categories value."""
        if category is None or not category.startswith(CATEGORY_PREFIX):
            return None
        return read_type(category.removeprefix(CATEGORY_PREFIX))

    return read


def _event(
    vevent: etree._Element, read_type: Callable[[str | None], AppointmentType | None]
) -> Event:
    """An Event from one vevent."""
    values = {
        etree.QName(prop).localname: (prop[0].text or "") if len(prop) else ""
        for prop in child(vevent, _PROPERTIES)
    }
    get: Callable[[str], str | None] = values.get
    return Event(
        uid=_required(values, "uid"),
        start=parse_datetime(_required(values, "dtstart"), "vevent/dtstart"),
        end=parse_datetime(_required(values, "dtend"), "vevent/dtend"),
        contact=_required(values, "contact"),
        related_to=get("related-to"),
        summary=get("summary"),
        description=get("description"),
        location=get("location"),
        appointment_type=read_type(get("categories")),
        service=get("x-servicetype"),
        status=get("status"),
        url=get("url"),
    )


def _required(values: dict[str, str], name: str) -> str:
    """A property the profile requires."""
    value = values.get(name)
    if not value:
        raise SchemaInvalid([f"vevent/{name} is missing"])
    return value


def _appointment_type(category: str | None) -> AppointmentType | None:
    """The 7617 appointment type from categories.

    A code outside timebok's subset (vaccine, lab, group ...) is still a real appointment
    the clinic published, so it is read as "no known type" rather than refused. The numeric
    codes of earlier releases (`7617:1`..`7617:4`) are still read.
    """
    if category is None or not category.startswith(CATEGORY_PREFIX):
        return None
    return appointment_type(category.removeprefix(CATEGORY_PREFIX))
