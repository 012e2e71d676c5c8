"""The log scrubber: FNRs masked everywhere in a record, identifiers left whole."""

from __future__ import annotations

import json
import logging

import pytest

from worker.logs import JsonFormatter, ScrubFilter, scrub

FNR = "13116900216"
# A booking id whose last group holds exactly eleven digits: an id, not an FNR.
BOOKING = "5f0c0e7e-8d3e-4f59-9d21-a12345678901"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (f"patient {FNR} not found", "patient 131169***** not found"),
        (f"fnr={FNR},x", "fnr=131169*****,x"),
        (f"fnr{FNR}x", "fnr131169*****x"),
        (f"booking_id={BOOKING}", f"booking_id={BOOKING}"),
        ("trace 8b12345678901aa5", "trace 8b12345678901aa5"),
        ("twelve 123456789012 ten 1234567890", "twelve 123456789012 ten 1234567890"),
        (f"{BOOKING} {FNR}", f"{BOOKING} 131169*****"),
    ],
)
def test_scrub(text: str, want: str) -> None:
    assert scrub(text) == want


def test_a_json_line_keeps_the_booking_id_and_masks_the_fnr() -> None:
    record = logging.LogRecord("timebok", logging.INFO, __file__, 1, "seen %s", (FNR,), None)
    record.booking_id = BOOKING
    record.patient = FNR
    assert ScrubFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["booking_id"] == BOOKING
    assert line["msg"] == "seen 131169*****" and line["patient"] == "131169*****"
    assert FNR not in json.dumps(line)
