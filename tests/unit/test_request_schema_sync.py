"""schemas/booking-request.schema.json must be exactly what worker.request generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.request import SCHEMA_DIALECT, SCHEMA_ID, json_schema_text

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schemas" / "booking-request.schema.json"
SAMPLES = sorted((ROOT / "worker" / "sample").glob("*.json"))
REGENERATE = ".venv/bin/python -m worker.request > schemas/booking-request.schema.json"


def test_exported_schema_is_up_to_date() -> None:
    stored = SCHEMA_FILE.read_text(encoding="utf-8")
    assert stored == json_schema_text(), (
        f"{SCHEMA_FILE.relative_to(ROOT)} is out of date with worker/request.py; "
        f"regenerate it with: {REGENERATE}"
    )


def test_schema_identifies_itself() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["$schema"] == SCHEMA_DIALECT
    assert schema["$id"] == SCHEMA_ID
    assert schema["additionalProperties"] is False
    for name, prop in schema["properties"].items():
        assert prop.get("title"), name
        assert prop.get("description"), name


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.name for p in SAMPLES])
def test_samples_validate_against_the_exported_schema(sample: Path) -> None:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(json.loads(sample.read_text("utf-8")))
