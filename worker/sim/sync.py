"""The simulated clinics' side of the synchronous lookups and of their calendars.

Answers HentLedigeTimer / HentPlanlagteTimer from each clinic's calendar on its `_sync`
queue (no AppRec either way), takes a reserved slot and frees a cancelled one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from mappers import lookup
from mappers.codes import ReplyCode, RequestCode
from mappers.errors import MapperError
from mappers.model import DialogMessage
from worker.adapters.registry import Clinic
from worker.adapters.transports.base import Envelope, Transport, transport_headers
from worker.sim.calendar import ClinicCalendar, SlotUnavailable, UnknownSlot, answer_lookup
from worker.sim.calendar import calendars as make_calendars
from worker.sim.calendar_config import CalendarSettings, settings_from_registry_text
from worker.sim.policy import REJECT_TEXTS, Decision, new_uid


class SyncDesk:
    """Each simulated clinic's calendar, and the answers it gives from it."""

    def __init__(
        self,
        clinics: Sequence[Clinic],
        registry_file: Path | None,
        *,
        seed: int,
        clock: Callable[[], datetime],
        say: Callable[[str], None],
    ) -> None:
        self.clock, self.say = clock, say
        self.calendars: dict[str, ClinicCalendar] = make_calendars(
            clinics, _settings(registry_file), seed
        )

    def answer(
        self,
        transport: Transport,
        her_id: str,
        body: bytes,
        reply_to: str | None,
        correlation_id: str | None,
    ) -> bool:
        """Answer one lookup on the reply-to queue; False when it could not be (dropped)."""
        try:
            asked = lookup.parse_lookup(body)
        except MapperError as exc:
            self.say(f"{her_id} <- unreadable lookup ({exc.code}); dropped, no answer")
            return False
        if not reply_to:
            self.say(f"{her_id} <- lookup {asked.envelope.msg_id[:8]} without reply-to; dropped")
            return False
        answer = answer_lookup(
            self.calendars.get(her_id), asked, now=self.clock(), msg_id=new_uid()
        )
        env = answer.envelope
        headers = transport_headers(
            from_her_id=env.sender.her_id,
            to_her_id=env.receiver.her_id,
            msg_id=env.msg_id,
            msg_type=env.process.value,
            ref_to_parent=asked.envelope.msg_id,
            ref_to_conversation=asked.envelope.msg_id,
        )
        item = Envelope(
            reply_to,
            lookup.build_answer(answer),
            headers,
            correlation_id=correlation_id or asked.envelope.msg_id,
        )
        transport.publish(item)
        name = "HentPlanlagteTimer" if asked.code is RequestCode.LIST_BOOKED else "HentLedigeTimer"
        self.say(f"{her_id} <- {name} -> {len(answer.slots)} slot(s) to {reply_to}")
        return True

    def reserve(self, her_id: str, msg: DialogMessage, decision: Decision) -> Decision:
        """A confirmed ReserverAvtale takes its slot; a taken slot makes it Svar 06."""
        calendar = self.calendars.get(her_id)
        slot = msg.event
        if calendar is None or slot is None or decision.code is not ReplyCode.CONFIRMED:
            return decision
        slot_id = slot.related_to or slot.uid
        patient = msg.envelope.patient.fnr if msg.envelope.patient is not None else None
        uid = decision.event.uid if decision.event is not None else None
        try:
            calendar.take(
                slot_id,
                now=self.clock(),
                patient=patient,
                appointment_uid=uid,
                start=slot.start,
                end=slot.end,
            )
        except UnknownSlot:
            return decision  # a time the calendar never offered: the policy decides alone
        except SlotUnavailable as exc:
            self.say(f"{her_id}: slot {slot_id} not available ({exc})")
            return Decision(ReplyCode.NOT_AVAILABLE, REJECT_TEXTS[ReplyCode.NOT_AVAILABLE])
        return decision

    def cancelled(self, her_id: str, msg: DialogMessage) -> None:
        """A cancelled appointment's slot is free again."""
        if msg.event is not None:
            self.free(her_id, msg.event.uid, msg.event.related_to)

    def free(self, her_id: str, uid: str, related_to: str | None = None) -> None:
        """Free the slot of an appointment (the patient or the clinic cancelled it)."""
        calendar = self.calendars.get(her_id)
        if calendar is None:
            return
        freed = calendar.free(uid)
        if freed is None and related_to:
            freed = calendar.free(related_to)
        if freed is not None:
            self.say(f"{her_id}: slot {freed.id} free again")


def _settings(registry_file: Path | None) -> dict[str, CalendarSettings]:
    """The `sim_calendar` keys of the registry (defaults when there is no file)."""
    if registry_file is None or not Path(registry_file).is_file():
        return {}
    return settings_from_registry_text(Path(registry_file).read_text(encoding="utf-8"))


__all__ = ["SyncDesk"]
