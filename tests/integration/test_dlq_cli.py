"""`timebok dlq list|show|replay|purge --json` as an operator runs it (a subprocess on the stack's
environment): every dead letter keeps reason, source queue, attempts and the raw payload, and a
replay runs the normal path again, idempotently: replaying twice doubles nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from mappers import apprec as apprec_mapper
from mappers.codes import ReplyCode
from tests.chaos import clinic as epj
from tests.chaos.harness import private_schema, timebok_env, unique_her_id, write_registry
from tests.conftest import PG_URL, ROOT
from tests.support import request
from worker.adapters.store.db import add_dead_letter, get_booking, utcnow
from worker.adapters.store.tables import DeadLetterRow, MessageRow, NotificationRow
from worker.bootstrap import Deps, bootstrap
from worker.constants import REQUESTS_QUEUE
from worker.flows.inbound import receive
from worker.flows.outbound import submit
from worker.settings import Settings, async_queue

pytestmark = pytest.mark.integration


@dataclass
class Ops:
    """In-process deps for setting the scene; the `timebok` CLI for what the operator does."""

    deps: Deps
    env: dict[str, str]
    clinic: str
    url: str

    def cli(self, *args: str, ok: bool = True) -> Any:
        """Run `timebok ARGS` and return its parsed JSON output."""
        proc = subprocess.run(
            [sys.executable, "-m", "worker.entrypoints.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (proc.returncode == 0) is ok, proc.stderr[-3000:]
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def request(self, action: str = "reserve", **over: Any) -> dict[str, Any]:
        """A valid request to our clinic."""
        return request(
            action, **({"clinic": {"her_id": self.clinic, "name": "Krasjklinikken"}} | over)
        )

    def deliver(self, item: tuple[bytes, dict[str, str]]) -> str:
        """A document from the clinic arrives (handled in-process)."""
        return receive(self.deps, item[0], dict(item[1])).outcome

    def notices(self, booking_id: str) -> list[str]:
        """Notification events about a booking."""
        with self.deps.store.transaction() as s:
            stmt = select(NotificationRow.event).where(NotificationRow.booking_id == booking_id)
            return sorted(s.scalars(stmt))

    def state(self, booking_id: str) -> str:
        """A booking's state."""
        with self.deps.store.transaction() as s:
            row = get_booking(s, booking_id)
            assert row is not None
            return row.state

    def count(self, table: type[Any]) -> int:
        """Rows in a table."""
        with self.deps.store.transaction() as s:
            return int(s.scalar(select(func.count()).select_from(table)) or 0)


@pytest.fixture
def ops(redis_url: str, tmp_path: Path) -> Iterator[Ops]:
    clinic = unique_her_id()
    registry = write_registry(tmp_path / "registry.toml", clinic)
    with private_schema("timebok_dlq") as schema:
        settings = Settings(
            broker_url=redis_url,
            database_url=PG_URL,
            database_schema=schema,
            registry_file=registry,
        )
        deps = bootstrap(settings)
        try:
            yield Ops(deps, timebok_env(redis_url, schema, registry), clinic, redis_url)
        finally:
            deps.store.dispose()


def _unreadable(ops: Ops) -> tuple[bytes, dict[str, str]]:
    msg_id = str(uuid.uuid4())
    headers = {"fromHerId": ops.clinic, "msgId": msg_id, "type": "DIALOG_INNBYGGER_TIMEONSKE"}
    return b"<MsgHead><not-closed>", headers


def _task_dead_letter(ops: Ops, payload: dict[str, Any]) -> int:
    """What the submit task writes when it gives up on a transient error."""
    with ops.deps.store.transaction() as s:
        return add_dead_letter(
            s,
            kind="task",
            reason="gave up after 10 retries: cannot publish",
            source_queue=REQUESTS_QUEUE,
            payload=json.dumps(payload).encode(),
            attempts=11,
        ).id


def test_list_and_show_keep_reason_queue_attempts_and_raw_payload(ops: Ops) -> None:
    unknown = ops.request()
    good = unknown["patient"]["fnr"]
    unknown["patient"]["fnr"] = good[:10] + str((int(good[10]) + 1) % 10)  # bad check digit
    assert submit(ops.deps, unknown).state == "INVALID"
    body, headers = _unreadable(ops)
    assert ops.deliver((body, headers)) == "rejected"
    epj.take(ops.url, async_queue(ops.clinic), 1)  # our AppRec Avvist for it
    task_id = _task_dead_letter(ops, ops.request())

    listed = ops.cli("dlq", "list", "--json")
    assert [d["kind"] for d in listed] == ["task", "message", "request"]  # newest first
    for d in listed:
        assert d["reason"] and d["source_queue"] and d["attempts"] >= 1 and d["created_at"]
        assert "payload" not in d  # the list never shows patient data
    task, message, req = listed
    assert task["id"] == task_id and task["attempts"] == 11
    assert task["source_queue"] == REQUESTS_QUEUE == req["source_queue"]
    assert message["source_queue"].endswith("_async") and message["error_code"] == "T01"
    assert message["msg_id"] == headers["msgId"]
    assert "patient.fnr" in req["reason"] and req["booking_id"] == unknown["request_id"]

    shown = ops.cli("dlq", "show", str(message["id"]), "--json")
    assert shown["payload"] == body.decode() and shown["headers"]["msgId"] == headers["msgId"]
    shown = ops.cli("dlq", "show", str(req["id"]), "--json")
    assert json.loads(shown["payload"]) == unknown  # exactly what came in
    missing = ops.cli("dlq", "show", "999999", "--json", ok=False)
    assert "999999" in missing["error"]


def test_replay_runs_the_normal_path_and_twice_doubles_nothing(ops: Ops) -> None:
    queue = async_queue(ops.clinic)
    booking_id = submit(ops.deps, ops.request()).booking_id
    [sent] = epj.take(ops.url, queue, 1)
    doc = sent.parsed()
    event = epj.booked(doc)
    # The clinic's cancellation overtakes its confirmation: nothing knows the appointment yet.
    cancel = epj.clinic_cancels(doc, replace(event, related_to=None))
    assert ops.deliver(cancel) == "rejected"
    [avvist] = epj.take(ops.url, queue, 1)
    assert ops.deliver(epj.answer(doc, ReplyCode.CONFIRMED, event=event)) == "processed"
    epj.take(ops.url, queue, 1)
    assert ops.state(booking_id) == "CONFIRMED"
    [dead] = ops.cli("dlq", "list", "--json")
    assert dead["kind"] == "message" and dead["msg_id"] == cancel[1]["msgId"]

    first = ops.cli("dlq", "replay", str(dead["id"]), "--json")
    assert first["replayed"] and first["result"].startswith("processed")
    assert ops.state(booking_id) == "CANCELLED"
    assert ops.notices(booking_id) == ["cancelled_by_clinic", "confirmed"]
    [ok] = epj.take(ops.url, queue, 1)
    assert _status(ok.body) == "1" and _status(avvist.body) == "2"
    assert ops.cli("dlq", "list", "--json") == []
    [done] = ops.cli("dlq", "list", "--all", "--json")
    assert done["replayed_at"] and done["attempts"] == 2

    counts = (ops.count(MessageRow), ops.count(NotificationRow), ops.count(DeadLetterRow))
    second = ops.cli("dlq", "replay", str(dead["id"]), "--json")
    assert second["result"].startswith("duplicate")
    assert (ops.count(MessageRow), ops.count(NotificationRow), ops.count(DeadLetterRow)) == counts
    assert ops.state(booking_id) == "CANCELLED"
    [again] = epj.take(ops.url, queue, 1)  # the same receipt re-sent, not a new one
    assert again.msg_id == ok.msg_id
    # The clinic redelivers its cancellation: it gets that OK receipt again, not the Avvist.
    assert ops.deliver(cancel) == "duplicate"
    [redelivered] = epj.take(ops.url, queue, 1)
    assert redelivered.msg_id == ok.msg_id


def test_replaying_requests_and_tasks_is_idempotent(ops: Ops) -> None:
    queue = async_queue(ops.clinic)
    unknown = ops.request(clinic={"her_id": "99999999", "name": "Ukjent legekontor"})
    submit(ops.deps, unknown)
    payload = ops.request()
    _task_dead_letter(ops, payload)
    for dead in ops.cli("dlq", "list", "--json"):
        for _ in range(2):
            ops.cli("dlq", "replay", str(dead["id"]), "--json")
    assert ops.state(unknown["request_id"]) == "INVALID"  # seen before: stays as it was
    assert ops.notices(unknown["request_id"]) == ["invalid"]
    assert ops.state(payload["request_id"]) == "SENT"  # the task's request, now sent once
    [sent] = epj.take(ops.url, queue, 1)
    assert epj.depth(ops.url, queue) == 0
    with ops.deps.store.transaction() as s:
        stmt = select(MessageRow.msg_id).where(MessageRow.booking_id == payload["request_id"])
        assert list(s.scalars(stmt)) == [sent.msg_id]
    assert ops.count(DeadLetterRow) == 2
    assert ops.cli("dlq", "list", "--json") == []


def test_a_replay_that_fails_again_keeps_one_open_dead_letter(ops: Ops) -> None:
    assert ops.deliver(_unreadable(ops)) == "rejected"
    [dead] = ops.cli("dlq", "list", "--json")
    for attempt in (2, 3):
        result = ops.cli("dlq", "replay", str(dead["id"]), "--json")
        assert not result["replayed"] and result["result"].startswith("rejected")
        [still] = ops.cli("dlq", "list", "--json")
        assert still["id"] == dead["id"] and still["attempts"] == attempt
    assert ops.count(DeadLetterRow) == 1
    epj.take(ops.url, async_queue(ops.clinic), 3)  # an Avvist each time


def test_purge_removes_only_older_dead_letters(ops: Ops) -> None:
    old, new = _task_dead_letter(ops, {"a": 1}), _task_dead_letter(ops, {"b": 2})
    with ops.deps.store.transaction() as s:
        s.execute(
            update(DeadLetterRow)
            .where(DeadLetterRow.id == old)
            .values(created_at=utcnow() - timedelta(days=40))
        )
    assert ops.cli("dlq", "purge", "--older-than", "30d", "--json") == {"purged": 1}
    assert [d["id"] for d in ops.cli("dlq", "list", "--json")] == [new]
    assert ops.cli("dlq", "purge", "--older-than", "30d", "--json") == {"purged": 0}
    ops.cli("dlq", "purge", "--older-than", "soon", ok=False)


def _status(body: bytes) -> str:
    return apprec_mapper.parse(body).status.value
