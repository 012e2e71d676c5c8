"""EPJ simulator policy: what a simulated clinic answers (pure functions, no I/O)."""

from __future__ import annotations

import random
import re
import sys
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from mappers import apprec as apprec_mapper
from mappers import message as dialog_message
from mappers.codes import (
    APPREC_ERROR_NAMES,
    AppointmentType,
    AppRecStatus,
    Function,
    Process,
    ReplyCode,
    RequestCode,
)
from mappers.errors import MapperError
from mappers.model import (
    AppRec,
    DialogMessage,
    Event,
    OriginalMsgRef,
    Party,
    Practitioner,
    ReceiptError,
)

Policy = Literal["confirm", "reject", "random"]
POLICIES: tuple[Policy, ...] = ("confirm", "reject", "random")
POLICY_KEY = "sim_policy"  # extra key on a registry [[clinic]] table
CONFIRM_PROBABILITY = 0.7  # the `random` policy's chance of confirming
OSLO = ZoneInfo("Europe/Oslo")
PROPOSAL_HOUR = 9  # proposed appointments start at 09:00 Oslo time
PROPOSAL_LENGTH = timedelta(minutes=20)
RETRY_AFTER = 2.0  # seconds before a reply the broker refused is tried again
MAX_WAIT = 0.5  # seconds one drain_events may block, so stop requests are seen quickly
CONFIRMED, CANCELLED = "CONFIRMED", "CANCELLED"

REJECT_TEXTS: Mapping[ReplyCode, str] = {
    ReplyCode.NOT_AVAILABLE: "Timen er allerede reservert.",
    ReplyCode.REJECTED: "Vi kan ikke tilby time ut fra ønsket ditt. Ta kontakt med legekontoret.",
    ReplyCode.CHANGE_REFUSED: "Timen kan ikke endres. Ta kontakt med legekontoret.",
    ReplyCode.NOT_OFFERED: "Legekontoret tilbyr ikke denne tjenesten digitalt.",
}
_APPREC_ROOT = re.compile(rb"<([A-Za-z_][\w.-]*:)?AppRec[\s>/]")
_ELEVEN_DIGITS = re.compile(r"(?<!\d)(\d{6})\d{5}(?!\d)")


def new_uid() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- policy (pure)


@dataclass(frozen=True)
class Decision:
    """The business reply a simulated EPJ gives to one request."""

    code: ReplyCode
    text: str | None = None
    event: Event | None = None
    practitioner: Practitioner | None = None


def confirms(policy: Policy, rng: random.Random) -> bool:
    """Whether a policy confirms this time (`random` draws once from `rng`)."""
    if policy == "random":
        return rng.random() < CONFIRM_PROBABILITY
    return policy == "confirm"


def decide(
    msg: DialogMessage,
    clinic: Party,
    *,
    policy: Policy,
    rng: random.Random,
    now: datetime,
    offered: bool = True,
    new_uid: Callable[[], str] = new_uid,
) -> Decision | None:
    """The reply to a business message; None when it needs none (a reply, an Avtale)."""
    request = msg.request
    if request is None or request.code is RequestCode.APPOINTMENT:
        return None
    if request.code in _CANCELS:
        return _cancel(msg)  # always accepted, and draws nothing from `rng`
    decider = _DECIDERS.get(request.code)
    if not offered or decider is None:
        return Decision(ReplyCode.NOT_OFFERED, REJECT_TEXTS[ReplyCode.NOT_OFFERED])
    return decider(msg, clinic, confirms(policy, rng), now, new_uid)


def _reserve(
    msg: DialogMessage, clinic: Party, confirm: bool, now: datetime, new_uid: Callable[[], str]
) -> Decision:
    """ReserverAvtale: 05 with the booked slot as a new appointment, or 06."""
    slot, request = msg.event, msg.request
    if not confirm or slot is None:
        return Decision(ReplyCode.NOT_AVAILABLE, REJECT_TEXTS[ReplyCode.NOT_AVAILABLE])
    uid = new_uid()
    event = replace(
        slot,
        uid=uid,
        related_to=slot.related_to or slot.uid,
        contact=clinic.her_id,
        location=slot.location or clinic.name,
        status=CONFIRMED,
        url=slot.url
        or (video_link(uid) if slot.appointment_type is AppointmentType.VIDEO else None),
    )
    practitioner = request.practitioner if request is not None else None
    return Decision(ReplyCode.CONFIRMED, None, event, practitioner)


def video_link(uid: str) -> str:
    """The link a confirmed video appointment carries (the patient's "Start video")."""
    return f"https://video.example.org/rom/{uid}"


def _wish(
    msg: DialogMessage, clinic: Party, confirm: bool, now: datetime, new_uid: Callable[[], str]
) -> Decision:
    """OnskeReserver: 05 proposing the next weekday 09:00, or 26."""
    if not confirm:
        return Decision(ReplyCode.REJECTED, REJECT_TEXTS[ReplyCode.REJECTED])
    start = next_weekday_start(now)
    event = Event(
        uid=new_uid(),
        start=start,
        end=start + PROPOSAL_LENGTH,
        contact=clinic.her_id,
        summary=msg.request.subject if msg.request is not None else None,
        location=clinic.name,
        appointment_type=_wanted_type(msg) or AppointmentType.ORDINARY,
        service=msg.request.service if msg.request is not None else None,
        status=CONFIRMED,
    )
    return Decision(ReplyCode.CONFIRMED, None, event, _practitioner(msg))


def _wanted_type(msg: DialogMessage) -> AppointmentType | None:
    """The type a wish asks for (its KodetOpplysning), else the vevent's."""
    if msg.request is not None and msg.request.appointment_type is not None:
        return msg.request.appointment_type
    return msg.event.appointment_type if msg.event is not None else None


def _change(
    msg: DialogMessage, clinic: Party, confirm: bool, now: datetime, new_uid: Callable[[], str]
) -> Decision:
    """OnskeEndring: 07 moving the appointment (same uid when given) to a later weekday, or 34."""
    if not confirm:
        return Decision(ReplyCode.CHANGE_REFUSED, REJECT_TEXTS[ReplyCode.CHANGE_REFUSED])
    old = msg.event
    start = next_weekday_start(max(now, old.start) if old is not None else now)
    base = old or Event(new_uid(), start, start, clinic.her_id, location=clinic.name)
    event = replace(
        base,
        start=start,
        end=start + PROPOSAL_LENGTH,
        contact=clinic.her_id,
        summary=base.summary or (msg.request.subject if msg.request else None),
        appointment_type=_wanted_type(msg),
        service=(msg.request.service if msg.request else None) or base.service,
        status=CONFIRMED,
    )
    return Decision(ReplyCode.CHANGE_CONFIRMED, None, event, _practitioner(msg))


def _cancel(msg: DialogMessage) -> Decision:
    """AvbestillAvtale / OnskeAvbestill: always 08, the vevent CANCELLED when one was sent."""
    event = replace(msg.event, status=CANCELLED) if msg.event is not None else None
    return Decision(ReplyCode.CANCEL_CONFIRMED, None, event, _practitioner(msg))


def _practitioner(msg: DialogMessage) -> Practitioner | None:
    return msg.request.practitioner if msg.request is not None else None


_Decider = Callable[[DialogMessage, Party, bool, datetime, Callable[[], str]], Decision]
_DECIDERS: Mapping[RequestCode, _Decider] = {
    RequestCode.RESERVE: _reserve,
    RequestCode.WISH: _wish,
    RequestCode.WISH_CHANGE: _change,
}
_CANCELS = frozenset({RequestCode.CANCEL, RequestCode.WISH_CANCEL})


def next_weekday_start(after: datetime) -> datetime:
    """09:00 Europe/Oslo on the first Monday-Friday after the Oslo date of `after`."""
    day = after.astimezone(OSLO).date() + timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, PROPOSAL_HOUR, tzinfo=OSLO)


def reply_message(
    request: DialogMessage, clinic: Party, decision: Decision, *, msg_id: str, now: datetime
) -> DialogMessage:
    """The business reply (MsgHead + Notat + xCal) to `request`, sent by `clinic`."""
    reply = dialog_message.reply_to(
        request,
        decision.code,
        msg_id=msg_id,
        gen_date=now,
        text=decision.text,
        event=decision.event,
        practitioner=decision.practitioner,
    )
    return replace(reply, envelope=replace(reply.envelope, sender=clinic))


def receipt_ok(request: DialogMessage, clinic: Party, now: datetime) -> AppRec:
    """AppRec 1.1 OK for a business message, from `clinic`."""
    rec = apprec_mapper.receipt_for(request.envelope, msg_id=new_uid(), gen_date=now)
    return replace(rec, sender=clinic)


def receipt_refused(
    exc: MapperError, clinic: Party, to: Party, headers: Mapping[str, str], now: datetime
) -> AppRec:
    """AppRec 1.1 Avvist with the mapper error's 8221 code, from `clinic` to `to`."""
    rec = apprec_mapper.rejection(exc, msg_id=new_uid(), gen_date=now)
    if rec is None:  # no readable MsgHead: point at what the transport headers say
        original = OriginalMsgRef(
            headers.get("type") or "Ukjent", now, headers.get("msgId") or new_uid()
        )
        error = ReceiptError(exc.code, APPREC_ERROR_NAMES.get(exc.code, ""), str(exc))
        rec = AppRec(new_uid(), now, clinic, to, AppRecStatus.REJECTED, original, (error,))
    return replace(rec, sender=clinic, receiver=to)


def reply_function(request: DialogMessage) -> Function:
    """SvarAvtaleReservasjon / SvarOnske / SvarAvbestilling for a request."""
    code = request.request.code if request.request is not None else None
    if code in _CANCELS:
        return Function.CANCELLATION_REPLY
    if request.envelope.process is Process.WISH:
        return Function.WISH_REPLY
    return Function.RESERVATION_REPLY


def is_apprec(data: bytes, headers: Mapping[str, str]) -> bool:
    """Whether a document is (or claims to be) an AppRec, which is never answered."""
    return headers.get("type") == Process.APPREC.value or bool(_APPREC_ROOT.search(data[:4096]))


def read_policies(path: str | Path) -> dict[str, Policy]:
    """The per-clinic `sim_policy` overrides of a registry TOML file ({} when unreadable)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}
    entries = data.get("clinic")
    found: dict[str, Policy] = {}
    for entry in entries if isinstance(entries, list) else []:
        value = entry.get(POLICY_KEY) if isinstance(entry, dict) else None
        if value is not None:
            found[str(entry.get("her_id"))] = check_policy(value)
    return found


def check_policy(value: object) -> Policy:
    """A policy name, or ValueError."""
    if value not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)} (got {value!r})")
    return value


def mask_fnrs(text: str) -> str:
    """`text` with every 11-digit number cut to its first 6 digits + "*****" (log lines)."""
    return _ELEVEN_DIGITS.sub(r"\1*****", text)
