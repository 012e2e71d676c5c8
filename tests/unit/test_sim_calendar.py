"""The simulator's calendar (worker/sim/calendar.py, calendar_config.py): layout from the
registry keys, determinism, the lookup filters, take / free, and the race for one slot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest

from mappers import lookup
from mappers.codes import AppointmentType, ReplyCode
from mappers.model import Lookup, Party, Person, Practitioner, SlotQuery
from worker.adapters.registry import Clinic, Registry, Unit
from worker.sim import calendar as cal
from worker.sim import calendar_config as config
from worker.sim.calendar import OSLO, ClinicCalendar, SlotMismatch, SlotTaken, UnknownSlot
from worker.sim.calendar_config import CalendarConfigError, CalendarSettings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "worker" / "sample" / "registry.toml"
# Tuesday 1 December 2026, 09:05 in Oslo (08:05 UTC).
NOW = datetime(2026, 12, 1, 8, 5, tzinfo=UTC)
TODAY = date(2026, 12, 1)
GP_UNIT, LAB_UNIT = "8090002", "8090003"
CLINIC = Clinic(
    "8090001",
    "Testlegekontoret",
    None,
    frozenset({"timereservasjon"}),
    (Unit(GP_UNIT, "Fastlege August September"), Unit(LAB_UNIT, "Laboratoriet")),
)
REGISTRY_TEXT = """
[[clinic]]
her_id = 8090001
name = "Testlegekontoret"
processes = ["timereservasjon"]

[clinic.sim_calendar]
days_ahead = 10
opening_hours = "08:00-12:00"
slot_minutes = 30
video_share = 0.25
urgent_held_back = 1

[[clinic.unit]]
her_id = 8090002
name = "Fastlege August September"

[clinic.unit.sim_calendar]
practitioner = "August September"
hpr = "9144889"

[[clinic.unit]]
her_id = 8090003
name = "Laboratoriet"

[clinic.unit.sim_calendar]
practitioner = ""
services = ["lab_test"]
slot_minutes = 15
video_share = 0
urgent_held_back = 0
location = "Laboratoriet, 1. etasje"
"""


def calendar(seed: int = 1, text: str = REGISTRY_TEXT) -> ClinicCalendar:
    """The test clinic's calendar from the registry keys above."""
    settings = config.settings_from_registry_text(text)
    return ClinicCalendar(CLINIC.her_id, config.units_of(CLINIC, settings), seed)


def two_weeks() -> SlotQuery:
    return SlotQuery(start=TODAY, end=TODAY + timedelta(days=13))


# ---------------------------------------------------------------------------- settings


def test_unit_settings_inherit_the_clinic_and_override_their_own_keys() -> None:
    settings = config.settings_from_registry_text(REGISTRY_TEXT)
    clinic = settings["8090001"]
    assert (clinic.days_ahead, clinic.slot_minutes, clinic.urgent_held_back) == (10, 30, 1)
    assert (clinic.opens, clinic.closes) == (time(8), time(12))
    assert settings[GP_UNIT] == replace(clinic, practitioner="August September", hpr="9144889")
    lab = settings[LAB_UNIT]
    assert (lab.slot_minutes, lab.services, lab.video_share) == (15, ("lab_test",), 0.0)
    assert lab.days_ahead == 10  # inherited


def test_units_have_their_practitioner_and_place() -> None:
    gp, lab = config.units_of(CLINIC, config.settings_from_registry_text(REGISTRY_TEXT))
    assert gp.practitioner == Practitioner("August September", her_id=GP_UNIT, hpr="9144889")
    assert gp.location == "Testlegekontoret"
    assert lab.practitioner is None
    assert lab.location == "Laboratoriet, 1. etasje"


def test_a_clinic_without_units_is_its_own_calendar_with_defaults() -> None:
    alone = Clinic("8090020", "Video Legesenter", None, frozenset({"timereservasjon"}))
    [unit] = config.units_of(alone, {})
    assert unit.her_id == "8090020"
    assert unit.settings == CalendarSettings()
    assert unit.practitioner == Practitioner("Video Legesenter", her_id="8090020")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("days_ahead = 0", "days_ahead: must be a whole number from 1 to 366"),
        ("days_ahead = true", "days_ahead: must be a whole number"),
        ('opening_hours = "8-16"', 'must look like "08:00-15:30"'),
        ('opening_hours = "16:00-08:00"', "must open before it closes"),
        ("slot_minutes = 4", "slot_minutes: must be a whole number from 5"),
        ("video_share = 1.5", "video_share: must be a number from 0 to 1"),
        ("urgent_held_back = -1", "urgent_held_back: must be a whole number"),
        ('services = ["pizza"]', "services: must be a non-empty list of consultation"),
        ("services = []", "services: must be a non-empty list"),
        ('hpr = "91x"', "hpr: must be digits"),
        ('location = " "', "location: must be a non-empty string"),
        ("video_shares = 0.2", "unknown sim_calendar key 'video_shares'"),
        ('opening_hours = "08:00-08:10"', "no slot fits between the opening hours"),
    ],
)
def test_bad_settings_name_the_clinic_and_key(keys: str, message: str) -> None:
    text = f'[[clinic]]\nher_id = 7\nname = "A"\nprocesses = []\n[clinic.sim_calendar]\n{keys}\n'
    with pytest.raises(CalendarConfigError, match="clinic 7") as caught:
        config.settings_from_registry_text(text)
    assert message in str(caught.value)


def test_bad_unit_settings_name_the_unit() -> None:
    text = REGISTRY_TEXT.replace('services = ["lab_test"]', "services = 3")
    with pytest.raises(CalendarConfigError, match="clinic 8090001 unit 8090003: sim_calendar"):
        config.settings_from_registry_text(text)


def test_sim_calendar_must_be_a_table_and_the_registry_toml() -> None:
    with pytest.raises(CalendarConfigError, match="must be a table"):
        config.settings_from_registry_text('[[clinic]]\nher_id = 7\nsim_calendar = "yes"\n')
    with pytest.raises(CalendarConfigError, match="not valid TOML"):
        config.settings_from_registry_text("[[clinic]\n")


def test_the_sample_registry_gives_every_connected_clinic_free_slots() -> None:
    registry = Registry.load(SAMPLE)
    settings = config.settings_from_registry_text(SAMPLE.read_text(encoding="utf-8"))
    calendars = cal.calendars(registry.clinics, settings, seed=3)
    for clinic in registry.clinics:
        assert calendars[clinic.her_id].free_slots(two_weeks(), now=NOW), clinic.her_id
    lab = calendars["8090001"].free_slots(replace(two_weeks(), service="lab_test"), now=NOW)
    assert lab and all(s.practitioner is None and s.unit_her_id == LAB_UNIT for s in lab)


# ---------------------------------------------------------------------------- the layout


def test_weekdays_only_within_the_opening_hours() -> None:
    slots = calendar().free_slots(two_weeks(), now=NOW)
    assert slots
    for slot in slots:
        start, end = slot.start.astimezone(OSLO), slot.end.astimezone(OSLO)
        assert start.weekday() < 5
        assert time(8) <= start.time() and end.time() <= time(12)
        length = 15 if slot.unit_her_id == LAB_UNIT else 30
        assert end - start == timedelta(minutes=length)


def test_a_day_has_every_slot_between_opening_and_closing() -> None:
    gp, lab = calendar().units
    day = date(2026, 12, 3)
    assert len(cal.day_slots(gp, 1, day)) == 8  # 08:00-12:00 in 30 minutes
    assert len(cal.day_slots(lab, 1, day)) == 16  # in 15 minutes
    assert cal.day_slots(gp, 1, date(2026, 12, 5)) == ()  # a Saturday
    assert cal.day_slots(gp, 1, date(2026, 12, 6)) == ()  # a Sunday


def test_urgent_slots_are_held_back_from_an_ordinary_lookup() -> None:
    clinic = calendar()
    gp_days = Counter(
        s.start.date()
        for s in clinic.free_slots(
            replace(two_weeks(), appointment_type=AppointmentType.URGENT), now=NOW
        )
    )
    # one per weekday of the GP's list (the lab holds none back); today's may have passed
    assert set(gp_days.values()) == {1}
    assert len(gp_days) >= 6
    ordinary = clinic.free_slots(two_weeks(), now=NOW)
    assert all(s.appointment_type is not AppointmentType.URGENT for s in ordinary)


def test_the_share_of_video_slots() -> None:
    text = REGISTRY_TEXT.replace("days_ahead = 10", "days_ahead = 200")
    year = SlotQuery(start=TODAY, end=TODAY + timedelta(days=199))
    slots = calendar(text=text).free_slots(replace(year), now=NOW)
    gp = [s for s in slots if s.unit_her_id == GP_UNIT]
    video = sum(s.appointment_type is AppointmentType.VIDEO for s in gp) / len(gp)
    assert 0.18 < video < 0.32  # 0.25 configured, over ~1000 slots
    assert all(s.location == "Videotime" for s in gp if s.appointment_type is AppointmentType.VIDEO)
    lab = [s for s in slots if s.unit_her_id == LAB_UNIT]
    assert all(s.appointment_type is AppointmentType.ORDINARY for s in lab)  # video_share 0


def test_nothing_beyond_the_horizon_or_before_now() -> None:
    slots = calendar().free_slots(
        SlotQuery(start=TODAY - timedelta(days=3), end=date(2027, 6, 1)), now=NOW
    )
    assert min(s.start for s in slots) > NOW
    assert max(s.start.astimezone(OSLO).date() for s in slots) == date(2026, 12, 10)  # 10 days


def test_the_same_seed_and_date_give_the_same_calendar_and_another_seed_another() -> None:
    first = calendar(seed=5).free_slots(two_weeks(), now=NOW)
    assert calendar(seed=5).free_slots(two_weeks(), now=NOW) == first
    other = calendar(seed=6).free_slots(two_weeks(), now=NOW)
    assert {s.id for s in other}.isdisjoint({s.id for s in first})
    assert [s.appointment_type for s in other] != [s.appointment_type for s in first]


_IN_A_PROCESS = """
import json
from tests.unit.test_sim_calendar import NOW, calendar, two_weeks
slots = calendar(seed=5).free_slots(two_weeks(), now=NOW)
print(json.dumps([[s.id, s.appointment_type, s.start.isoformat()] for s in slots]))
"""


def test_the_calendar_is_the_same_in_every_process() -> None:
    runs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", _IN_A_PROCESS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=True,
        )
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1]
    assert len(runs[0]) > 50


def test_slot_ids_are_uuids_unique_over_the_horizon() -> None:
    slots = calendar().free_slots(two_weeks(), now=NOW)
    ids = [s.id for s in slots]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 36 and i.count("-") == 4 for i in ids)


# ---------------------------------------------------------------------------- filters


def test_period_filter() -> None:
    one_day = SlotQuery(start=date(2026, 12, 3), end=date(2026, 12, 3))
    slots = calendar().free_slots(one_day, now=NOW)
    assert {s.start.astimezone(OSLO).date() for s in slots} == {date(2026, 12, 3)}
    assert (
        calendar().free_slots(SlotQuery(start=date(2026, 12, 5), end=date(2026, 12, 6)), now=NOW)
        == []
    )


def test_no_end_means_two_weeks_from_the_start() -> None:
    text = REGISTRY_TEXT.replace("days_ahead = 10", "days_ahead = 60")
    slots = calendar(text=text).free_slots(SlotQuery(start=date(2026, 12, 7)), now=NOW)
    days = {s.start.astimezone(OSLO).date() for s in slots}
    assert min(days) == date(2026, 12, 7)
    assert max(days) == date(2026, 12, 18)  # the Friday of the second week (20th is a Sunday)


@pytest.mark.parametrize("kind", [AppointmentType.ORDINARY, AppointmentType.VIDEO])
def test_type_filter(kind: AppointmentType) -> None:
    slots = calendar().free_slots(replace(two_weeks(), appointment_type=kind), now=NOW)
    assert slots and all(s.appointment_type is kind for s in slots)


def test_no_phone_slots_unless_offered() -> None:
    query = replace(two_weeks(), appointment_type=AppointmentType.PHONE)
    assert calendar().free_slots(query, now=NOW) == []


def test_service_filter() -> None:
    clinic = calendar()
    lab = clinic.free_slots(replace(two_weeks(), service="lab_test"), now=NOW)
    assert lab and {s.unit_her_id for s in lab} == {LAB_UNIT}
    assert clinic.free_slots(replace(two_weeks(), service="vaccination"), now=NOW) == []


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        (GP_UNIT, {GP_UNIT}),
        (LAB_UNIT, {LAB_UNIT}),
        ("8090001", {GP_UNIT, LAB_UNIT}),
        (None, {GP_UNIT, LAB_UNIT}),
        ("999", set()),
    ],
)
def test_unit_filter(unit: str | None, expected: set[str]) -> None:
    slots = calendar().free_slots(two_weeks(), now=NOW, unit=unit)
    assert {s.unit_her_id for s in slots} == expected


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        (Practitioner("", her_id=GP_UNIT), True),
        (Practitioner("Someone Else", hpr="9144889"), True),
        (Practitioner(" august september "), True),
        (Practitioner("Rita Lin"), False),
        (Practitioner("August September", her_id="1234"), False),
    ],
)
def test_practitioner_filter(asked: Practitioner, found: bool) -> None:
    slots = calendar().free_slots(replace(two_weeks(), practitioner=asked), now=NOW)
    assert bool(slots) is found
    assert all(s.unit_her_id == GP_UNIT for s in slots)


# ---------------------------------------------------------------------------- take / free


def test_a_taken_slot_disappears_and_cannot_be_taken_again() -> None:
    clinic = calendar()
    slot = clinic.free_slots(two_weeks(), now=NOW)[0]
    assert clinic.take(slot.id, now=NOW) == slot
    assert clinic.is_taken(slot.id)
    assert slot.id not in {s.id for s in clinic.free_slots(two_weeks(), now=NOW)}
    with pytest.raises(SlotTaken):
        clinic.take(slot.id, now=NOW)


def test_the_same_patient_taking_a_slot_again_keeps_the_reservation() -> None:
    """A resend of one ReserverAvtale (same MsgId) must not be answered Svar 06 to itself."""
    clinic = calendar()
    slot = clinic.free_slots(two_weeks(), now=NOW)[0]
    clinic.take(slot.id, now=NOW, patient="13116900216")
    assert clinic.take(slot.id, now=NOW, patient="13116900216") == slot
    with pytest.raises(SlotTaken):
        clinic.take(slot.id, now=NOW, patient="01017012345")


def test_a_slot_listed_by_another_process_can_be_taken() -> None:
    slot = calendar().free_slots(two_weeks(), now=NOW)[5]
    fresh = calendar()  # the same seed: a simulator restarted, or one that never listed it
    assert fresh.take(slot.id, now=NOW) == slot


@pytest.mark.parametrize("slot_id", ["no-such-slot", ""])
def test_an_unknown_slot_cannot_be_taken(slot_id: str) -> None:
    with pytest.raises(UnknownSlot):
        calendar().take(slot_id, now=NOW)


def test_a_started_slot_cannot_be_taken() -> None:
    clinic = calendar()
    slot = clinic.free_slots(two_weeks(), now=NOW)[0]
    with pytest.raises(UnknownSlot):
        clinic.take(slot.id, now=slot.start)


@pytest.mark.parametrize("by", ["slot", "appointment"])
def test_a_cancelled_appointment_frees_its_slot(by: str) -> None:
    clinic = calendar()
    slot = clinic.free_slots(two_weeks(), now=NOW)[0]
    clinic.take(slot.id, now=NOW, patient="12858010053", appointment_uid="avtale-1")
    assert clinic.free(slot.id if by == "slot" else "avtale-1") == slot
    assert not clinic.is_taken(slot.id)
    assert slot in clinic.free_slots(two_weeks(), now=NOW)
    assert clinic.planned("12858010053", now=NOW) == []
    assert clinic.take(slot.id, now=NOW) == slot  # bookable again


def test_freeing_what_is_not_taken_changes_nothing() -> None:
    clinic = calendar()
    before = clinic.free_slots(two_weeks(), now=NOW)
    assert clinic.free("avtale-unknown") is None
    assert clinic.free(before[0].id) is None
    assert clinic.free_slots(two_weeks(), now=NOW) == before


def test_planned_appointments_of_a_patient() -> None:
    clinic = calendar()
    first, second, third = clinic.free_slots(two_weeks(), now=NOW)[:3]
    clinic.take(second.id, now=NOW, patient="A", appointment_uid="avtale-2")
    clinic.take(first.id, now=NOW, patient="A")
    clinic.take(third.id, now=NOW, patient="B", appointment_uid="avtale-3")
    planned = clinic.planned("A", now=NOW)
    assert [s.id for s in planned] == [first.id, "avtale-2"]  # soonest first; the uid when known
    assert planned[1] == replace(second, id="avtale-2")
    assert [s.id for s in clinic.planned("B", now=NOW)] == ["avtale-3"]
    assert clinic.planned("A", now=second.start) == []  # both have started by then
    next_week = clinic.free_slots(SlotQuery(start=date(2026, 12, 8)), now=NOW)[0]
    clinic.take(next_week.id, now=NOW, patient="A")
    period = SlotQuery(start=date(2026, 12, 8), end=date(2026, 12, 8))
    assert clinic.planned("A", period, now=NOW) == [next_week]


# ---------------------------------------------------------------------------- races


def _race(clinic: ClinicCalendar, slot_id: str, patients: tuple[str, ...]) -> list[str]:
    """Let every patient take the slot at the same moment; each one's outcome."""
    barrier = threading.Barrier(len(patients))
    outcomes: list[str] = []

    def take(patient: str) -> None:
        barrier.wait()
        try:
            clinic.take(slot_id, now=NOW, patient=patient)
            outcomes.append(f"won:{patient}")
        except SlotTaken:
            outcomes.append("taken")

    threads = [threading.Thread(target=take, args=(p,)) for p in patients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_two_takers_of_one_slot_exactly_one_wins() -> None:
    for _ in range(50):
        clinic = calendar()
        slot = clinic.free_slots(two_weeks(), now=NOW)[0]
        outcomes = _race(clinic, slot.id, ("A", "B"))
        assert sorted(o.split(":")[0] for o in outcomes) == ["taken", "won"]
        winner = next(o.split(":")[1] for o in outcomes if o.startswith("won"))
        assert [s.start for s in clinic.planned(winner, now=NOW)] == [slot.start]
        loser = "B" if winner == "A" else "A"
        assert clinic.planned(loser, now=NOW) == []


def test_sixteen_takers_of_one_slot_exactly_one_wins() -> None:
    clinic = calendar()
    slot = clinic.free_slots(two_weeks(), now=NOW)[3]
    outcomes = _race(clinic, slot.id, tuple(f"P{n}" for n in range(16)))
    assert Counter(o.split(":")[0] for o in outcomes) == Counter({"won": 1, "taken": 15})


def test_many_takers_many_slots_each_slot_won_once() -> None:
    clinic = calendar()
    slots = clinic.free_slots(two_weeks(), now=NOW)[:20]
    wins: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait()
        for slot in slots:
            try:
                clinic.take(slot.id, now=NOW)
            except SlotTaken:
                continue
            with lock:
                wins[slot.id] += 1

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins == Counter({slot.id: 1 for slot in slots})
    assert all(clinic.is_taken(slot.id) for slot in slots)


def test_a_reservation_with_another_time_than_the_slot_is_refused() -> None:
    clinic = calendar()
    slot = clinic.free_slots(two_weeks(), now=NOW)[0]
    with pytest.raises(SlotMismatch, match=slot.id):
        clinic.take(slot.id, now=NOW, start=slot.start + timedelta(minutes=5), end=slot.end)
    assert not clinic.is_taken(slot.id)
    same_instant = slot.start.astimezone(UTC)  # the time as it comes back from the XML
    assert clinic.take(slot.id, now=NOW, start=same_instant, end=slot.end) == slot


# ---------------------------------------------------------------------------- answering lookups

PORTAL = Party("8093244", "Helsenorge.no")
PATIENT = Person("12858010053", "Line", "Danser")


def _free_lookup(query: SlotQuery, unit: str | None = None) -> Lookup:
    receiver = Party(CLINIC.her_id, CLINIC.name, Party(unit, "enhet") if unit else None)
    return lookup.free_slots_request(
        msg_id="q-1", gen_date=NOW, sender=PORTAL, receiver=receiver, query=query
    )


def test_a_free_slots_lookup_is_answered_from_the_calendar_and_builds() -> None:
    clinic = calendar()
    asked = _free_lookup(replace(two_weeks(), appointment_type=AppointmentType.VIDEO), GP_UNIT)
    answer = cal.answer_lookup(clinic, asked, now=NOW, msg_id="a-1")
    expected = clinic.free_slots(asked.query, now=NOW, unit=GP_UNIT)
    assert answer.code is ReplyCode.LISTING and answer.slots == tuple(expected)
    assert answer.slots and all(s.unit_her_id == GP_UNIT for s in answer.slots)
    parsed = lookup.parse_answer(lookup.build_answer(answer))
    assert parsed == answer  # the calendar's slots are carried unchanged
    assert answer.envelope.conversation is not None
    assert answer.envelope.conversation.ref_to_parent == "q-1"


def test_a_taken_slot_is_not_in_the_next_answer() -> None:
    clinic = calendar()
    asked = _free_lookup(two_weeks())
    first = cal.answer_lookup(clinic, asked, now=NOW, msg_id="a-1").slots[0]
    clinic.take(first.id, now=NOW)
    again = cal.answer_lookup(clinic, asked, now=NOW, msg_id="a-2")
    assert first.id not in {s.id for s in again.slots}


def test_a_planned_lookup_lists_the_patients_appointments() -> None:
    clinic = calendar()
    slot = clinic.free_slots(two_weeks(), now=NOW)[2]
    clinic.take(slot.id, now=NOW, patient=PATIENT.fnr, appointment_uid="avtale-7")
    asked = lookup.planned_request(
        msg_id="q-2",
        gen_date=NOW,
        sender=PORTAL,
        receiver=Party(CLINIC.her_id, CLINIC.name),
        patient=PATIENT,
    )
    answer = cal.answer_lookup(clinic, asked, now=NOW, msg_id="a-3")
    assert [s.id for s in answer.slots] == ["avtale-7"]
    assert lookup.parse_answer(lookup.build_answer(answer)) == answer
    other = replace(
        asked, envelope=replace(asked.envelope, patient=Person("03918810047", "K", "D"))
    )
    assert cal.answer_lookup(clinic, other, now=NOW, msg_id="a-4").slots == ()


def test_a_clinic_without_a_calendar_answers_not_offered() -> None:
    answer = cal.answer_lookup(None, _free_lookup(two_weeks()), now=NOW, msg_id="a-5")
    assert answer.code is ReplyCode.NOT_OFFERED and answer.slots == ()
    assert lookup.parse_answer(lookup.build_answer(answer)) == answer
