"""Sentry: init from settings, tags, and no FNR / name / free text in what leaves the process."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from tests.support import fnr
from worker import observability
from worker.adapters.store.migrate import upgrade
from worker.bootstrap import bootstrap
from worker.observability import SCRUBBED, init_sentry, scrub_event, scrub_text
from worker.settings import Settings

FNR = fnr(77)
NAME = "Gudbrandine"
FAMILY = "Kvakkestad"
DSN = "http://public@127.0.0.1:1/1"


class Recorder(Transport):
    """A transport that keeps every envelope instead of sending it."""

    envelopes: ClassVar[list[Envelope]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        """Record; nothing leaves the process."""
        Recorder.envelopes.append(envelope)


def events() -> list[dict[str, Any]]:
    sentry_sdk.flush()
    return [
        item.payload.json
        for env in Recorder.envelopes
        for item in env.items
        if item.type == "event" and item.payload.json is not None
    ]


@pytest.fixture
def sentry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Sentry initialised through init_sentry with the recording transport; torn down after."""
    Recorder.envelopes.clear()
    settings = Settings(sentry_dsn=DSN, environment="test")
    assert init_sentry(settings, transport=Recorder)
    yield settings
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    monkeypatch.setattr(observability, "_initialised", False)
    Recorder.envelopes.clear()


def test_off_without_dsn() -> None:
    assert init_sentry(Settings(sentry_dsn=None)) is False
    observability.tag(booking_id="b", msg_id="m")  # a no-op, never an error
    with observability.scope(msg_id="m"):
        pass


def _fail_with_pii() -> None:
    patient = {"fnr": FNR, "given_name": NAME, "family_name": FAMILY}
    subject = f"Vondt i kneet, spør etter {NAME}"  # noqa: F841 - a local that must not leak
    raise ValueError(f"no slot for {patient!r} (fnr {FNR})")


def test_captured_exception_holds_no_fnr_and_no_name(
    sentry: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="timebok.test")
    log = logging.getLogger("timebok.test")
    log.info("looking up %s", FNR, extra={"patient": {"given_name": NAME, "fnr": FNR}})
    with sentry_sdk.isolation_scope():
        observability.tag(booking_id="booking-1", msg_id="msg-1")
        sentry_sdk.set_extra("request", {"patient": {"family_name": FAMILY}, "subject": NAME})
        try:
            _fail_with_pii()
        except ValueError:
            sentry_sdk.capture_exception()
    [event] = events()
    raw = json.dumps(event, ensure_ascii=False)
    for secret in (FNR, NAME, FAMILY):
        assert secret not in raw, secret
    assert event["tags"]["booking_id"] == "booking-1" and event["tags"]["msg_id"] == "msg-1"
    assert event["environment"] == "test" and event["release"].startswith("timebok@")
    assert not sentry_sdk.get_client().should_send_default_pii()
    [exc] = event["exception"]["values"]
    assert exc["type"] == "ValueError" and "[fnr]" in exc["value"] and SCRUBBED in exc["value"]
    frames = exc["stacktrace"]["frames"]
    assert frames and all("vars" not in f for f in frames)
    crumbs = event["breadcrumbs"]["values"]
    assert any(c.get("message", "").startswith("looking up [fnr]") for c in crumbs)
    assert event["extra"]["request"]["subject"] == SCRUBBED


def test_error_log_becomes_an_event_warning_does_not(
    sentry: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="timebok.inbound")
    log = logging.getLogger("timebok.inbound")
    log.info("booking invalid", extra={"booking_id": "b"})
    log.warning("unreadable message rejected", extra={"msg_id": "m"})
    assert events() == []
    log.error("outgoing document failed validation", extra={"booking_id": "b"})
    [event] = events()
    assert event["level"] == "error"


def test_invalid_request_is_no_event(sentry: Settings, tmp_path: Path) -> None:
    """An INVALID request is a business outcome: stored, told, never reported as an error."""
    from worker.flows.outbound import submit

    deps = bootstrap(Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}"))
    upgrade(deps.store.engine)
    result = submit(deps, {"request_id": "x", "patient": {"fnr": FNR, "given_name": NAME}})
    assert result.state == "INVALID"
    assert events() == []
    deps.store.dispose()


@pytest.mark.parametrize(
    ("text", "leaks"),
    [
        (f"patient {FNR} not found", [FNR]),
        (
            f"Person(fnr='{FNR}', given_name='{NAME}', family_name=\"{FAMILY}\")",
            [FNR, NAME, FAMILY],
        ),
        (f'{{"given_name": "{NAME}", "subject": "vondt i magen"}}', [NAME, "vondt i magen"]),
        (f"input_value='{NAME} {FAMILY}', input_type=str", [NAME, FAMILY]),
        (f"<ns2:GivenName>{NAME}</ns2:GivenName><FamilyName>{FAMILY}</FamilyName>", [NAME, FAMILY]),
        ("<Sporsmal>Har vondt i ryggen</Sporsmal>", ["vondt i ryggen"]),
        ("<TekstNotatInnhold>Ta med resept</TekstNotatInnhold>", ["resept"]),
    ],
)
def test_scrub_text(text: str, leaks: list[str]) -> None:
    out = scrub_text(text)
    for leak in leaks:
        assert leak not in out


@pytest.mark.parametrize(
    "keep",
    [
        "booking 5f0c0e7e-8d3e-4f59-9d21-7a1c2b3d4e5f HER-id 8090001 state SENT 123456789012",
        "msg_id=5f0c0e7e-8d3e-4f59-9d21-a12345678901",  # a UUID is an id, not an FNR
        "span 8b12345678901aa5 trace 768f804ab3df4268a90ce46ca61f9834",
    ],
)
def test_scrub_text_keeps_what_is_not_pii(keep: str) -> None:
    assert scrub_text(keep) == keep


def test_scrub_text_masks_an_fnr_next_to_letters() -> None:
    assert scrub_text(f"fnr{FNR}x and id:{FNR}") == "fnr[fnr]x and id:[fnr]"


def test_scrub_event_everywhere() -> None:
    event = {
        "message": f"failed for {FNR}",
        "logentry": {"message": "failed for %s", "params": [FNR], "formatted": f"x {FNR}"},
        "breadcrumbs": {
            "values": [
                {"message": f"got {FNR}", "data": {"given_name": NAME, "n": 1}},
                {"category": "celery", "data": {"args": [{"patient": {"fnr": FNR}}]}},
            ]
        },
        "extra": {
            "celery-job": {"task_name": "t", "args": [{"subject": "vondt"}], "kwargs": {}},
            "sys.argv": ["timebok", "inbox", FNR],
            "nested": [{"questionnaire": [{"question": "q", "answer": "hemmelig"}]}],
            FNR: "a key",
        },
        "request": {"data": {"message": "Helst formiddag", "Sporsmal": "s"}},
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": f"bad {FNR}",
                    "stacktrace": {"frames": [{"function": "f", "vars": {"name": NAME}}]},
                }
            ]
        },
        "tags": {"booking_id": "b-1"},
    }
    out = scrub_event(event)
    raw = json.dumps(out, ensure_ascii=False)
    for secret in (FNR, NAME, "vondt", "hemmelig", "Helst formiddag"):
        assert secret not in raw, secret
    assert out["message"] == "failed for [fnr]"  # Sentry's own message: masked, kept
    assert out["breadcrumbs"]["values"][0]["message"] == "got [fnr]"
    assert out["request"]["data"]["message"] == SCRUBBED  # the patient's message: replaced
    assert out["extra"]["celery-job"]["args"] == SCRUBBED
    assert "vars" not in out["exception"]["values"][0]["stacktrace"]["frames"][0]
    assert out["tags"] == {"booking_id": "b-1"}
    assert scrub_event(None) is None
