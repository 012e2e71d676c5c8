"""A simulated clinic's calendar: free slots per unit, answering the lookups (pure, thread-safe).

Every weekday within `days_ahead` has slots of `slot_minutes` between the opening hours. Which
are video and which are held back as urgent (offered only to a lookup asking for Hastetime) is
drawn from a generator seeded with (seed, unit, date), so the same seed and date always give
the same calendar, in every process. A reservation takes a slot (it disappears from later
answers, and taking it again fails: Svar 06); a cancellation frees it again.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from mappers import lookup
from mappers.codes import AppointmentType, ReplyCode, RequestCode
from mappers.lookup import SERVICE_NAMES
from mappers.model import Lookup, LookupAnswer, Practitioner, Slot, SlotQuery
from worker.adapters.registry import Clinic
from worker.errors import PermanentError
from worker.sim.calendar_config import CalendarSettings, UnitCalendar, slot_times, units_of
from worker.sim.policy import REJECT_TEXTS

OSLO = ZoneInfo("Europe/Oslo")
DEFAULT_PERIOD_DAYS = 14  # a lookup without TilDato asks about two weeks (the CLI's default)
VIDEO_LOCATION = "Videotime"  # the place of attendance the portal shows for video
# The types an ordinary lookup (no type asked) is offered: held-back urgent slots are not.
_UNASKED = frozenset({AppointmentType.ORDINARY, AppointmentType.VIDEO})
_IDS = uuid.UUID("5e0c7a1d-2b1f-4d8e-9c3a-7f6b0d1e2a45")  # namespace of the slot ids


class CalendarError(PermanentError):
    """A calendar operation that cannot succeed."""


class SlotUnavailable(CalendarError):
    """The slot cannot be reserved (the simulator answers Svar 06, Time ikke tilgjengelig)."""


class SlotTaken(SlotUnavailable):
    """Someone else reserved the slot first."""


class UnknownSlot(SlotUnavailable):
    """No slot with this id is offered (never was, already started, or beyond the horizon)."""


class SlotMismatch(SlotUnavailable):
    """The reservation names the slot's id with another time than the slot has."""


# ---------------------------------------------------------------------------- the day's slots


@lru_cache(maxsize=8192)
def day_slots(unit: UnitCalendar, seed: int, day: date) -> tuple[Slot, ...]:
    """Every slot of `unit` on `day`, taken or not (none at weekends): a pure function."""
    if day.weekday() >= 5:
        return ()
    rng = random.Random(f"{seed}/{unit.her_id}/{day.isoformat()}")  # noqa: S311 - not security
    times = slot_times(unit.settings)
    held = set(rng.sample(range(len(times)), min(unit.settings.urgent_held_back, len(times))))
    slots = []
    for n, (start, end) in enumerate(times):
        kind = _kind(n in held, rng.random(), unit.settings.video_share)
        service = rng.choice(unit.settings.services)
        slots.append(_slot(unit, seed, datetime.combine(day, start, OSLO), end, kind, service))
    return tuple(slots)


def _kind(held: bool, draw: float, video_share: float) -> AppointmentType:
    """Urgent when held back, else video with the configured share, else ordinary."""
    if held:
        return AppointmentType.URGENT
    return AppointmentType.VIDEO if draw < video_share else AppointmentType.ORDINARY


def _slot(
    unit: UnitCalendar, seed: int, start: datetime, end: time, kind: AppointmentType, service: str
) -> Slot:
    """One slot; its id is a UUID derived from seed, unit and start, the same in every run."""
    who = unit.practitioner
    summary = SERVICE_NAMES[service] + (f" hos {who.name}" if who is not None else "")
    return Slot(
        id=str(uuid.uuid5(_IDS, f"{seed}/{unit.her_id}/{start.isoformat()}")),
        start=start,
        end=datetime.combine(start.date(), end, OSLO),
        appointment_type=kind,
        service=service,
        practitioner=who,
        unit_her_id=unit.her_id,
        location=VIDEO_LOCATION if kind is AppointmentType.VIDEO else unit.location,
        summary=summary,
    )


# ---------------------------------------------------------------------------- the calendar


@dataclass(frozen=True)
class Booking:
    """A taken slot: who took it and the appointment it became."""

    slot: Slot
    patient: str | None = None  # the patient's FNR, for HentPlanlagteTimer
    appointment_uid: str | None = None  # the uid of the confirmed appointment


@dataclass
class _State:
    """What changes: the taken slots and the slots seen so far, by id."""

    taken: dict[str, Booking] = field(default_factory=dict)  # by slot id
    by_appointment: dict[str, str] = field(default_factory=dict)  # appointment uid -> slot id
    known: dict[str, Slot] = field(default_factory=dict)  # every generated slot, by id


class ClinicCalendar:
    """One clinic's calendar over its units; safe to share between threads."""

    def __init__(self, her_id: str, units: Sequence[UnitCalendar], seed: int = 0) -> None:
        self.her_id, self.units, self.seed = her_id, tuple(units), seed
        self._lock = threading.Lock()
        self._state = _State()

    def free_slots(self, query: SlotQuery, *, now: datetime, unit: str | None = None) -> list[Slot]:
        """The free slots a HentLedigeTimer is answered with, soonest first."""
        wanted = _UNASKED if query.appointment_type is None else {query.appointment_type}
        found = [
            slot
            for slot in self._slots(query, now, unit)
            if slot.appointment_type in wanted
            and (query.service is None or slot.service == query.service)
        ]
        with self._lock:
            return [slot for slot in found if slot.id not in self._state.taken]

    def planned(self, patient: str, query: SlotQuery | None = None, *, now: datetime) -> list[Slot]:
        """A patient's appointments that have not started (HentPlanlagteTimer), soonest first."""
        query = query or SlotQuery()
        with self._lock:
            booked = [b for b in self._state.taken.values() if b.patient == patient]
        found = [
            replace(b.slot, id=b.appointment_uid or b.slot.id)
            for b in booked
            if b.slot.start > now and _in_period(b.slot, query)
        ]
        return sorted(found, key=_order)

    def take(
        self,
        slot_id: str,
        *,
        now: datetime,
        patient: str | None = None,
        appointment_uid: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> Slot:
        """Reserve a slot for a ReserverAvtale; SlotTaken when it already is, UnknownSlot when
        no such slot is offered, SlotMismatch when `start` / `end` are not the slot's."""
        slot = self._find(slot_id, now)
        if (start is not None and start != slot.start) or (end is not None and end != slot.end):
            raise SlotMismatch(f"slot {slot_id} is {slot.start.isoformat()}-{slot.end.isoformat()}")
        with self._lock:
            held = self._state.taken.get(slot_id)
            if held is not None and patient is not None and held.patient == patient:
                # The same patient's request again (a resend with its MsgId, a redelivery):
                # the same reservation, answered the same way, never a Svar 06 to itself.
                return slot
            if held is not None:
                raise SlotTaken(f"slot {slot_id} is already reserved")
            self._state.taken[slot_id] = Booking(slot, patient, appointment_uid)
            if appointment_uid is not None:
                self._state.by_appointment[appointment_uid] = slot_id
        return slot

    def free(self, key: str) -> Slot | None:
        """Free the slot of a cancelled appointment (by slot id or appointment uid); the freed
        slot, or None when nothing was taken under that key."""
        with self._lock:
            slot_id = self._state.by_appointment.pop(key, key)
            booking = self._state.taken.pop(slot_id, None)
            if booking is not None and booking.appointment_uid is not None:
                self._state.by_appointment.pop(booking.appointment_uid, None)
        return None if booking is None else booking.slot

    def is_taken(self, slot_id: str) -> bool:
        """Whether the slot is reserved."""
        with self._lock:
            return slot_id in self._state.taken

    def _slots(self, query: SlotQuery, now: datetime, unit: str | None) -> list[Slot]:
        """Every slot (taken or not) of the matching units in the period, soonest first."""
        found: list[Slot] = []
        for party in self._units(unit, query.practitioner):
            first, last = _period(query, now, party.settings.days_ahead)
            found.extend(slot for day in _days(first, last) for slot in self._day(party, day))
        return sorted((s for s in found if s.start > now and _in_period(s, query)), key=_order)

    def _day(self, unit: UnitCalendar, day: date) -> tuple[Slot, ...]:
        """The unit's slots of one day, remembered by id so a later `take` finds them."""
        slots = day_slots(unit, self.seed, day)
        with self._lock:
            known = self._state.known
            if slots and slots[0].id not in known:
                known.update((slot.id, slot) for slot in slots)
        return slots

    def _units(self, unit: str | None, who: Practitioner | None) -> list[UnitCalendar]:
        """The units a lookup is about: the one asked for (the clinic: all), the practitioner's."""
        chosen = [u for u in self.units if unit in (None, self.her_id, u.her_id)]
        return [u for u in chosen if who is None or _same_practitioner(u.practitioner, who)]

    def _find(self, slot_id: str, now: datetime) -> Slot:
        """The offered slot with this id (generating the horizon once if it was never seen)."""
        with self._lock:
            slot = self._state.known.get(slot_id)
        if slot is None:
            for party in self.units:
                first, last = _period(SlotQuery(), now, party.settings.days_ahead, whole=True)
                for day in _days(first, last):
                    self._day(party, day)
            with self._lock:
                slot = self._state.known.get(slot_id)
        if slot is None or slot.start <= now:
            raise UnknownSlot(f"slot {slot_id} is not offered")
        return slot


def _period(
    query: SlotQuery, now: datetime, days_ahead: int, *, whole: bool = False
) -> tuple[date, date]:
    """The days asked about, cut to [today, today + days_ahead - 1]."""
    today = now.astimezone(OSLO).date()
    horizon = today + timedelta(days=days_ahead - 1)
    if whole:
        return today, horizon
    first = max(query.start or today, today)
    last = query.end or (first + timedelta(days=DEFAULT_PERIOD_DAYS - 1))
    return first, min(last, horizon)


def _days(first: date, last: date) -> Iterator[date]:
    """Every date from first to last, inclusive."""
    for n in range((last - first).days + 1):
        yield first + timedelta(days=n)


def _in_period(slot: Slot, query: SlotQuery) -> bool:
    """Whether the slot's (Oslo) date lies in the query's period."""
    day = slot.start.astimezone(OSLO).date()
    return (query.start is None or day >= query.start) and (query.end is None or day <= query.end)


def _order(slot: Slot) -> tuple[datetime, str]:
    """Soonest first, then by unit."""
    return slot.start, slot.unit_her_id


def _same_practitioner(mine: Practitioner | None, asked: Practitioner) -> bool:
    """A practitioner asked for by HER-id, else HPR number, else name."""
    if mine is None:
        return False
    if asked.her_id:
        return mine.her_id == asked.her_id
    if asked.hpr:
        return mine.hpr == asked.hpr
    return mine.name.casefold() == asked.name.strip().casefold()


# ---------------------------------------------------------------------------- every clinic


def calendars(
    clinics: Iterable[Clinic], settings: Mapping[str, CalendarSettings], seed: int = 0
) -> dict[str, ClinicCalendar]:
    """A calendar for each clinic, by HER-id."""
    return {c.her_id: ClinicCalendar(c.her_id, units_of(c, settings), seed) for c in clinics}


# ---------------------------------------------------------------------------- answering


def answer_lookup(
    calendar: ClinicCalendar | None, asked: Lookup, *, now: datetime, msg_id: str
) -> LookupAnswer:
    """The clinic's SvarLedigeTimer / SvarPlanlagteTimer from its calendar (None: not offered,
    answered 33 Tjeneste tilbys ikke)."""
    if calendar is None:
        text = REJECT_TEXTS[ReplyCode.NOT_OFFERED]
        return lookup.answer_to(
            asked, (), msg_id=msg_id, gen_date=now, code=ReplyCode.NOT_OFFERED, text=text
        )
    receiver = asked.envelope.receiver
    if asked.code is RequestCode.LIST_BOOKED and asked.envelope.patient is not None:
        slots = calendar.planned(asked.envelope.patient.fnr, asked.query, now=now)
    else:
        unit = receiver.unit.her_id if receiver.unit is not None else None
        slots = calendar.free_slots(asked.query, now=now, unit=unit)
    return lookup.answer_to(asked, slots, msg_id=msg_id, gen_date=now)
