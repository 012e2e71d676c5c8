"""SQLAlchemy 2 table models: bookings, history, messages, outbox, dead letters, inbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with stable constraint names for migrations."""

    metadata = MetaData(naming_convention=NAMING)


class BookingRow(Base):
    """One booking request (its id is the portal's request_id) and where it stands."""

    __tablename__ = "bookings"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    action: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(24), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    patient_fnr: Mapped[str | None] = mapped_column(String(11), index=True)
    clinic_her_id: Mapped[str | None] = mapped_column(String(20), index=True)
    process: Mapped[str | None] = mapped_column(String(64))
    conversation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    appointment_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    slot_id: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(36), index=True)
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    resends: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    deadline_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)


class HistoryRow(Base):
    """One state change of a booking."""

    __tablename__ = "booking_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    booking_id: Mapped[str] = mapped_column(ForeignKey("bookings.id"), index=True)
    source: Mapped[str | None] = mapped_column(String(24))
    target: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class MessageRow(Base):
    """Every message in or out, keyed by its MsgId."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    msg_id: Mapped[str] = mapped_column(String(64), unique=True)
    direction: Mapped[str] = mapped_column(String(3))  # "out" | "in"
    booking_id: Mapped[str | None] = mapped_column(ForeignKey("bookings.id"), index=True)
    msg_type: Mapped[str] = mapped_column(String(64))
    function: Mapped[str | None] = mapped_column(String(16))
    sender_her_id: Mapped[str | None] = mapped_column(String(20))
    receiver_her_id: Mapped[str | None] = mapped_column(String(20))
    ref_to_parent: Mapped[str | None] = mapped_column(String(64), index=True)
    ref_to_conversation: Mapped[str | None] = mapped_column(String(64), index=True)
    xml: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(24))
    error_code: Mapped[str | None] = mapped_column(String(8))
    error_text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class OutboxRow(Base):
    """A committed message waiting to be (re)published to a queue."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "published_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    queue: Mapped[str] = mapped_column(String(64))
    headers: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Until then the process that wrote the row publishes it; other relays leave it alone.
    leased_until: Mapped[datetime | None] = mapped_column(UtcDateTime())


class DeadLetterRow(Base):
    """Something that could not be processed, kept with its raw payload for replay."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # request | message | outgoing | task
    reason: Mapped[str] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(8))
    source_queue: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    booking_id: Mapped[str | None] = mapped_column(String(36), index=True)
    msg_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class NotificationRow(Base):
    """A non-repliable message in the patient's inbox; one per (subject, event)."""

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("dedupe_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(200))
    patient_fnr: Mapped[str] = mapped_column(String(11), index=True)
    booking_id: Mapped[str | None] = mapped_column(String(36), index=True)
    event: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    appointment_uid: Mapped[str | None] = mapped_column(String(64))
    repliable: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AppointmentRow(Base):
    """An appointment as the patient sees it under Timeavtaler."""

    __tablename__ = "appointments"

    uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    booking_id: Mapped[str | None] = mapped_column(String(36), index=True)
    patient_fnr: Mapped[str] = mapped_column(String(11), index=True)
    clinic_her_id: Mapped[str] = mapped_column(String(20))
    clinic_name: Mapped[str] = mapped_column(Text)
    practitioner: Mapped[str | None] = mapped_column(Text)
    start: Mapped[datetime] = mapped_column(UtcDateTime())
    end: Mapped[datetime] = mapped_column(UtcDateTime())
    appointment_type: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(24))
    video_url: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
