"""The EPJ simulator's decisions (pure) and its message handling against a recording transport."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from mappers import apprec as apprec_mapper
from mappers import incoming
from mappers import message as dialog_message
from mappers.codes import AppointmentType, AppRecError, AppRecStatus, Function, ReplyCode, Urgency
from mappers.errors import SchemaInvalid
from mappers.model import (
    AppRec,
    ConversationRef,
    DialogMessage,
    Event,
    OriginalMsgRef,
    Party,
    Person,
    Practitioner,
)
from mappers.outgoing import Wanted, compose
from worker import fnr as fnrs
from worker import sim
from worker.adapters.registry import Registry
from worker.adapters.transports.base import Delivery, Outcome
from worker.adapters.transports.kombu import Envelope as Item
from worker.sim.policy import video_link

CLINIC = Party("8090001", "Testlegekontoret")
PORTAL = Party("8093244", "Helsenorge.no")
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # a Thursday
START = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
PATIENT = Person(fnrs.make(date(1980, 5, 17), 123), "Kari", "Nordmann")
NEW_UID = "00000000-0000-4000-8000-000000000001"


def _uid() -> str:
    return NEW_UID


def slot(related_to: str | None = "slot-42", uid: str = "req-uid") -> Event:
    return Event(
        uid=uid,
        start=START,
        end=START + timedelta(minutes=20),
        contact=CLINIC.her_id,
        related_to=related_to,
        summary="Magesmerter",
        location="Testlegekontoret, 2. etasje",
        appointment_type=AppointmentType.VIDEO,
    )


def request(
    function: Function,
    event: Event | None = None,
    conversation: ConversationRef | None = None,
) -> DialogMessage:
    return compose(
        function,
        msg_id=str(uuid.uuid4()),
        gen_date=NOW,
        sender=PORTAL,
        receiver=CLINIC,
        patient=PATIENT,
        subject="Kontroll",
        text="Helst formiddag",
        practitioner=Practitioner("August September", "8090002"),
        event=event,
        conversation=conversation,
    )


def decide(msg: DialogMessage, policy: sim.Policy, seed: int = 1) -> sim.Decision | None:
    return sim.decide(msg, CLINIC, policy=policy, rng=random.Random(seed), now=NOW, new_uid=_uid)


# ---------------------------------------------------------------------------- policies


def test_confirm_and_reject_policies_never_draw() -> None:
    rng = random.Random(7)
    state = rng.getstate()
    assert sim.confirms("confirm", rng) is True
    assert sim.confirms("reject", rng) is False
    assert rng.getstate() == state


def test_random_policy_is_reproducible_and_confirms_about_70_percent() -> None:
    rng_a, rng_b = random.Random(42), random.Random(42)
    run_a = [sim.confirms("random", rng_a) for _ in range(2000)]
    run_b = [sim.confirms("random", rng_b) for _ in range(2000)]
    assert run_a == run_b
    assert 0.65 < sum(run_a) / len(run_a) < 0.75


def test_random_policy_decisions_follow_the_seed() -> None:
    msg = request(Function.RESERVE, slot())

    def codes(seed: int) -> list[ReplyCode]:
        rng = random.Random(seed)
        return [
            d.code
            for d in (sim.decide(msg, CLINIC, policy="random", rng=rng, now=NOW) for _ in range(50))
            if d is not None
        ]

    assert codes(9) == codes(9)
    assert set(codes(9)) == {ReplyCode.CONFIRMED, ReplyCode.NOT_AVAILABLE}


@pytest.mark.parametrize("value", ["confirm", "reject", "random"])
def test_check_policy_accepts_the_three_names(value: str) -> None:
    assert sim.check_policy(value) == value


@pytest.mark.parametrize("value", ["Confirm", "", None, 1])
def test_check_policy_refuses_anything_else(value: object) -> None:
    with pytest.raises(ValueError, match="policy must be one of"):
        sim.check_policy(value)


# ---------------------------------------------------------------------------- ReserverAvtale


def test_reserve_confirmed_is_05_with_a_new_appointment_for_the_slot() -> None:
    msg = request(Function.RESERVE, slot())
    decision = decide(msg, "confirm")
    assert decision is not None
    assert decision.code is ReplyCode.CONFIRMED
    assert decision.text is None
    assert decision.practitioner == Practitioner("August September", "8090002")
    assert decision.event == Event(
        uid=NEW_UID,
        start=START,
        end=START + timedelta(minutes=20),
        contact=CLINIC.her_id,
        related_to="slot-42",
        summary="Magesmerter",
        location="Testlegekontoret, 2. etasje",
        appointment_type=AppointmentType.VIDEO,
        status="CONFIRMED",
        url=video_link(NEW_UID),  # the patient's "Start video"
    )


def test_an_in_person_reservation_carries_no_video_link() -> None:
    in_person = replace(slot(), appointment_type=AppointmentType.ORDINARY)
    decision = decide(request(Function.RESERVE, in_person), "confirm")
    assert decision is not None
    assert decision.event is not None
    assert decision.event.url is None


def test_reserve_without_slot_id_relates_to_the_requested_uid() -> None:
    decision = decide(request(Function.RESERVE, slot(related_to=None)), "confirm")
    assert decision is not None
    assert decision.event is not None
    assert decision.event.related_to == "req-uid"
    assert decision.event.uid == NEW_UID


def test_reserve_rejected_is_06_with_a_reason_and_no_event() -> None:
    decision = decide(request(Function.RESERVE, slot()), "reject")
    assert decision == sim.Decision(
        ReplyCode.NOT_AVAILABLE, sim.REJECT_TEXTS[ReplyCode.NOT_AVAILABLE]
    )


def test_reserve_not_offered_by_the_clinic_is_33() -> None:
    msg = request(Function.RESERVE, slot())
    decision = sim.decide(
        msg, CLINIC, policy="confirm", rng=random.Random(), now=NOW, offered=False
    )
    assert decision is not None
    assert decision.code is ReplyCode.NOT_OFFERED


# ---------------------------------------------------------------- OnskeReserver / OnskeEndring


def test_wish_confirmed_proposes_next_weekday_0900_oslo_for_20_minutes() -> None:
    decision = decide(request(Function.WISH), "confirm")
    assert decision is not None
    assert decision.event is not None
    event = decision.event
    assert decision.code is ReplyCode.CONFIRMED
    assert (event.uid, event.contact, event.status) == (NEW_UID, CLINIC.her_id, "CONFIRMED")
    assert event.start == datetime(2026, 11, 27, 8, 0, tzinfo=UTC)  # Friday 09:00 CET
    assert event.end - event.start == timedelta(minutes=20)
    assert event.summary == "Kontroll"


@pytest.mark.parametrize(
    "kind", [AppointmentType.URGENT, AppointmentType.VIDEO, AppointmentType.PHONE]
)
def test_wish_confirmed_gives_the_wanted_type_and_service(kind: AppointmentType) -> None:
    wanted = Wanted(kind, Urgency.URGENT, "vaccination")
    msg = incoming.parse_any(dialog_message.build(_wish(wanted)))
    assert isinstance(msg, DialogMessage)  # read back from the XML, as the simulator gets it
    decision = decide(msg, "confirm")
    assert decision is not None and decision.event is not None
    assert decision.event.appointment_type is kind
    assert decision.event.service == "vaccination"


def test_change_wish_confirmed_moves_to_the_wanted_type() -> None:
    appointment = replace(
        slot(related_to=None, uid="appt-1"), appointment_type=AppointmentType.ORDINARY
    )
    msg = compose(
        Function.WISH_CHANGE,
        msg_id=str(uuid.uuid4()),
        gen_date=NOW,
        sender=PORTAL,
        receiver=CLINIC,
        patient=PATIENT,
        wanted=Wanted(AppointmentType.VIDEO, Urgency.NORMAL, "consultation"),
        event=appointment,
    )
    decision = decide(msg, "confirm")
    assert decision is not None and decision.event is not None
    assert decision.event.uid == "appt-1"
    assert decision.event.appointment_type is AppointmentType.VIDEO
    assert decision.event.service == "consultation"


def _wish(wanted: Wanted) -> DialogMessage:
    return compose(
        Function.WISH,
        msg_id=str(uuid.uuid4()),
        gen_date=NOW,
        sender=PORTAL,
        receiver=CLINIC,
        patient=PATIENT,
        subject="Kontroll",
        text="Helst formiddag",
        wanted=wanted,
    )


def test_wish_rejected_is_26_with_a_reason() -> None:
    decision = decide(request(Function.WISH), "reject")
    assert decision is not None
    assert decision.code is ReplyCode.REJECTED
    assert decision.text
    assert decision.event is None


def test_change_wish_confirmed_keeps_the_appointment_uid() -> None:
    appointment = slot(uid="appt-7")
    decision = decide(request(Function.WISH_CHANGE, appointment), "confirm")
    assert decision is not None
    assert decision.event is not None
    assert decision.code is ReplyCode.CHANGE_CONFIRMED
    assert decision.event.uid == "appt-7"
    assert decision.event.status == "CONFIRMED"
    assert decision.event.start > appointment.start
    assert decision.event.start.astimezone(sim.OSLO).hour == 9


def test_change_wish_without_an_appointment_gets_a_new_uid() -> None:
    decision = decide(request(Function.WISH_CHANGE), "confirm")
    assert decision is not None
    assert decision.event is not None
    assert decision.event.uid == NEW_UID


def test_change_wish_rejected_is_34() -> None:
    decision = decide(request(Function.WISH_CHANGE, slot()), "reject")
    assert decision is not None
    assert (decision.code, decision.event) == (ReplyCode.CHANGE_REFUSED, None)


# ---------------------------------------------------------------------------- cancellations


@pytest.mark.parametrize("function", [Function.CANCEL, Function.WISH_CANCEL])
@pytest.mark.parametrize("policy", ["confirm", "reject", "random"])
def test_cancellations_are_always_confirmed_without_drawing(
    function: Function, policy: sim.Policy
) -> None:
    rng = random.Random(5)
    state = rng.getstate()
    msg = request(function, slot(uid="appt-9"))
    decision = sim.decide(msg, CLINIC, policy=policy, rng=rng, now=NOW)
    assert decision is not None
    assert decision.event is not None
    assert decision.code is ReplyCode.CANCEL_CONFIRMED
    assert (decision.event.uid, decision.event.status) == ("appt-9", "CANCELLED")
    assert rng.getstate() == state


def test_cancellation_without_vevent_is_08_without_event() -> None:
    decision = decide(request(Function.WISH_CANCEL), "reject")
    assert decision == sim.Decision(
        ReplyCode.CANCEL_CONFIRMED, practitioner=Practitioner("August September", "8090002")
    )


# ---------------------------------------------------------------------------- no reply


def test_an_avtale_or_a_reply_gets_no_business_reply() -> None:
    reply = sim.reply_message(
        request(Function.RESERVE, slot()),
        CLINIC,
        sim.Decision(ReplyCode.CONFIRMED),
        msg_id="r",
        now=NOW,
    )
    assert decide(reply, "confirm") is None


# ---------------------------------------------------------------------------- next weekday


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-11-26T10:00:00+00:00", "2026-11-27T09:00:00+01:00"),  # Thu -> Fri
        ("2026-11-27T10:00:00+00:00", "2026-11-30T09:00:00+01:00"),  # Fri -> Mon
        ("2026-11-28T10:00:00+00:00", "2026-11-30T09:00:00+01:00"),  # Sat -> Mon
        ("2026-11-26T23:30:00+00:00", "2026-11-30T09:00:00+01:00"),  # already Fri in Oslo
        ("2026-03-27T12:00:00+00:00", "2026-03-30T09:00:00+02:00"),  # across summer time
    ],
)
def test_next_weekday_start(now: str, expected: str) -> None:
    start = sim.next_weekday_start(datetime.fromisoformat(now))
    assert start == datetime.fromisoformat(expected)
    assert start.utcoffset() == datetime.fromisoformat(expected).utcoffset()


# ---------------------------------------------------------------------------- messages


def test_reply_message_answers_the_request_from_the_clinic() -> None:
    msg = request(Function.RESERVE, slot())
    decision = decide(msg, "confirm")
    assert decision is not None
    reply = sim.reply_message(msg, CLINIC, decision, msg_id=str(uuid.uuid4()), now=NOW)
    env = reply.envelope
    assert (env.sender, env.receiver, env.patient) == (CLINIC, PORTAL, PATIENT)
    assert env.process is msg.envelope.process
    assert env.conversation == ConversationRef(msg.envelope.msg_id, msg.envelope.msg_id)
    assert reply.reply is not None
    assert reply.reply.request == msg.request
    parsed = incoming.parse_any(dialog_message.build(reply))
    assert isinstance(parsed, DialogMessage)
    assert parsed.reply is not None
    assert parsed.reply.code is ReplyCode.CONFIRMED
    assert parsed.event is not None
    assert parsed.event.related_to == "slot-42"


def test_reply_in_an_open_conversation_keeps_its_opener() -> None:
    msg = request(Function.WISH_CANCEL, conversation=ConversationRef("parent", "opener"))
    reply = sim.reply_message(
        msg, CLINIC, sim.Decision(ReplyCode.CANCEL_CONFIRMED), msg_id="x", now=NOW
    )
    assert reply.envelope.conversation == ConversationRef(msg.envelope.msg_id, "opener")


def test_receipt_ok_points_at_the_request() -> None:
    msg = request(Function.RESERVE, slot())
    rec = sim.receipt_ok(msg, CLINIC, NOW)
    assert (rec.status, rec.sender, rec.receiver) == (AppRecStatus.OK, CLINIC, PORTAL)
    env = msg.envelope
    assert rec.original == OriginalMsgRef(env.process.value, env.gen_date, env.msg_id)


def test_receipt_refused_without_msghead_uses_the_transport_headers() -> None:
    exc = SchemaInvalid(["MsgHead/MsgInfo is missing"])
    rec = sim.receipt_refused(exc, CLINIC, PORTAL, {"msgId": "m-1", "type": "X"}, NOW)
    assert rec.status is AppRecStatus.REJECTED
    assert rec.original.msg_id == "m-1"
    assert rec.errors[0].code == AppRecError.NOT_VALID
    assert apprec_mapper.parse(apprec_mapper.build(rec)).errors[0].code == AppRecError.NOT_VALID


@pytest.mark.parametrize(
    ("data", "headers", "expected"),
    [
        (b"<AppRec xmlns='x'>", {}, True),
        (b"<?xml version='1.0'?>\n<ar:AppRec xmlns:ar='x'/>", {}, True),
        (b"garbage", {"type": "APPREC"}, True),
        (b"<MsgHead><AppRecX/></MsgHead>", {}, False),
        (b"<MsgHead/>", {"type": "DIALOG_INNBYGGER_TIMERESERVASJON"}, False),
    ],
)
def test_is_apprec(data: bytes, headers: dict[str, str], expected: bool) -> None:
    assert sim.is_apprec(data, headers) is expected


def test_read_policies_reads_sim_policy_per_clinic(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text(
        '[[clinic]]\nher_id = 1\nname = "A"\nprocesses = []\nsim_policy = "reject"\n'
        '[[clinic]]\nher_id = "2"\nname = "B"\nprocesses = []\n',
        encoding="utf-8",
    )
    assert sim.read_policies(path) == {"1": "reject"}
    assert sim.read_policies(tmp_path / "missing.toml") == {}


def test_read_policies_refuses_an_unknown_policy(tmp_path: Path) -> None:
    path = tmp_path / "registry.toml"
    path.write_text('[[clinic]]\nher_id = 1\nsim_policy = "maybe"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="maybe"):
        sim.read_policies(path)


# ---------------------------------------------------------------------------- Simulator.handle


class RecordingTransport:
    """Records what would have been published."""

    def __init__(self) -> None:
        self.items: list[Item] = []

    def publish(self, item: Item) -> None:
        self.items.append(item)

    def depth(self, queue: str) -> int:
        return sum(1 for i in self.items if i.queue == queue)

    def open(self, delivery: Delivery) -> bytes:
        return delivery.body


REGISTRY = Registry.from_mapping(
    {
        "clinic": [
            {"her_id": 8090001, "name": "Testlegekontoret", "processes": ["timereservasjon"]},
            {"her_id": 8090010, "name": "Helsestasjonen", "processes": ["timeonske"]},
            {"her_id": 8090030, "name": "Frakoblet", "processes": []},
        ]
    }
)
CONFIG = SimpleNamespace(
    epj_url="memory://",
    own_her_id=PORTAL.her_id,
    own_name=PORTAL.name,
    registry_file=Path("/nonexistent.toml"),
)


def simulator(**options: object) -> tuple[sim.Simulator, RecordingTransport, list[str]]:
    transport, lines = RecordingTransport(), list[str]()
    simulator = sim.Simulator(
        CONFIG,
        REGISTRY,
        transport=transport,
        echo=lines.append,
        **options,  # type: ignore[arg-type]
    )
    return simulator, transport, lines


def parsed(items: list[Item]) -> list[DialogMessage | AppRec]:
    return [incoming.parse_any(i.body) for i in items]


def test_default_clinics_are_the_connected_ones() -> None:
    s, _, _ = simulator()
    assert [c.her_id for c in s.clinics] == ["8090001", "8090010"]


def test_unknown_clinic_is_refused() -> None:
    with pytest.raises(ValueError, match="not a clinic"):
        simulator(clinics=["1234567"])


def test_policy_override_per_clinic() -> None:
    s, _, _ = simulator(policy="confirm", policies={"8090001": "reject"})
    assert (s.policy_for("8090001"), s.policy_for("8090010")) == ("reject", "confirm")


def test_handle_sends_apprec_then_the_scheduled_reply() -> None:
    s, transport, lines = simulator()
    msg = request(Function.RESERVE, slot())
    s.handle("8090001", dialog_message.build(msg), {})
    assert len(transport.items) == 1
    assert s.pending == 1
    assert s.flush_due() == 1
    rec, reply = parsed(transport.items)
    assert isinstance(rec, AppRec)
    assert rec.original.msg_id == msg.envelope.msg_id
    assert isinstance(reply, DialogMessage)
    assert reply.reply is not None
    assert reply.reply.code is ReplyCode.CONFIRMED
    item = transport.items[1]
    assert item.queue == "8093244_async"
    assert item.headers["fromHerId"] == "8090001"
    assert item.headers["toHerId"] == "8093244"
    assert item.headers["refToParent"] == msg.envelope.msg_id
    assert item.headers["msgId"] == reply.envelope.msg_id
    assert all(PATIENT.fnr not in line for line in lines)
    assert any(PATIENT.fnr[:6] + "*****" in line for line in lines)


def test_a_delayed_reply_waits_for_its_time() -> None:
    s, transport, _ = simulator(delay=60)
    s.handle("8090001", dialog_message.build(request(Function.RESERVE, slot())), {})
    assert s.flush_due() == 0
    assert len(transport.items) == 1
    assert s.pending == 1


def test_process_the_clinic_does_not_take_is_answered_33() -> None:
    s, transport, _ = simulator()
    s.handle("8090010", dialog_message.build(request(Function.RESERVE, slot())), {})
    s.flush_due()
    reply = parsed(transport.items)[1]
    assert isinstance(reply, DialogMessage)
    assert reply.reply is not None
    assert reply.reply.code is ReplyCode.NOT_OFFERED
    assert reply.envelope.sender == Party("8090010", "Helsestasjonen")


def test_invalid_document_gets_apprec_avvist_to_the_header_sender() -> None:
    s, transport, _ = simulator()
    s.handle("8090001", b"<oops", {"fromHerId": "8093244", "msgId": "m-1"})
    (rec,) = parsed(transport.items)
    assert isinstance(rec, AppRec)
    assert rec.status is AppRecStatus.REJECTED
    assert rec.errors[0].code == AppRecError.NOT_XML
    assert rec.receiver.her_id == "8093244"
    assert rec.original.msg_id == "m-1"


def test_an_apprec_is_never_answered() -> None:
    s, transport, lines = simulator()
    msg = request(Function.RESERVE, slot())
    rec = sim.receipt_ok(msg, PORTAL, NOW)
    s.handle("8090001", apprec_mapper.build(rec), {})
    s.handle("8090001", b"<AppRec>broken", {})
    s.flush_due()
    assert transport.items == []
    assert s.stats["apprec_in"] == 1
    assert s.stats["invalid"] == 1
    assert "not answered" in lines[-1]


def test_chaos_drops_apprecs_and_duplicates_replies() -> None:
    s, transport, lines = simulator(drop_apprec_rate=1.0, duplicate_rate=1.0)
    s.handle("8090001", dialog_message.build(request(Function.RESERVE, slot())), {})
    s.flush_due()
    first, second = transport.items
    assert first == second
    assert isinstance(parsed([first])[0], DialogMessage)
    assert s.stats["apprec_dropped"] == 1
    assert any("DROPPED" in line for line in lines)


def test_publish_and_cancel_appointment_build_avtale_messages() -> None:
    s, transport, _ = simulator()
    start = START
    uid = s.publish_appointment(
        "8090001", PATIENT, start, start + timedelta(minutes=30), "Rita Lin", "video"
    )
    s.cancel_appointment("8090001", uid, PATIENT, start, start + timedelta(minutes=30))
    new, cancelled = parsed(transport.items)
    assert isinstance(new, DialogMessage)
    assert isinstance(cancelled, DialogMessage)
    assert new.event is not None
    assert cancelled.event is not None
    assert (new.event.uid, new.event.status, new.event.appointment_type) == (
        uid,
        "CONFIRMED",
        AppointmentType.VIDEO,
    )
    assert (cancelled.event.uid, cancelled.event.status) == (uid, "CANCELLED")
    assert transport.items[0].queue == "8093244_async"


def test_on_the_bus_a_message_is_settled_only_once_its_reply_is_out() -> None:
    """As on kombu: killed between its AppRec and its reply, the simulator gets it again."""
    s, transport, _ = simulator(delay=60)
    settled: list[Outcome] = []
    body = dialog_message.build(request(Function.RESERVE, slot()))
    delivery = Delivery("8090001_async", body, {}, settled.append)
    assert s._on_delivery(delivery) is None  # the handler leaves it unsettled
    assert len(transport.items) == 1 and settled == []  # AppRec out, reply scheduled
    s.delay = 0
    s._due = [(0.0, seq, out) for _at, seq, out in s._due]  # its time has come
    assert s.flush_due() == 1
    assert len(transport.items) == 2 and settled == [Outcome.ACCEPT]


def test_on_the_bus_an_apprec_is_settled_at_once() -> None:
    s, _, _ = simulator()
    msg = request(Function.RESERVE, slot())
    receipt = apprec_mapper.build(sim.receipt_ok(msg, PORTAL, NOW))
    settled: list[Outcome] = []
    assert s._on_delivery(Delivery("8090001_async", receipt, {}, settled.append)) is Outcome.ACCEPT
