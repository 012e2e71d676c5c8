"""Golden files: every produced message equals its fixture (C14N), and parses back to its input.

After an intended change, regenerate them: `TIMEBOK_REGEN_GOLDEN=1 pytest tests/unit/mappers`.
"""

from __future__ import annotations

import pytest

from mappers import incoming
from mappers.model import AppRec, DialogMessage
from tests.unit.mappers.lookup_cases import LOOKUP_CASES
from tests.unit.mappers.mappers_cases import ALL, REGEN, build, canonical, golden_path, pretty


@pytest.mark.parametrize("name", sorted(ALL))
def test_build_matches_golden_file(name: str) -> None:
    produced = build(ALL[name])
    path = golden_path(name)
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pretty(produced))
    assert path.exists(), f"no golden file {path}; run with TIMEBOK_REGEN_GOLDEN=1"
    assert canonical(produced) == canonical(path.read_bytes())


@pytest.mark.parametrize("name", sorted(ALL))
def test_parse_of_build_gives_back_the_input(name: str) -> None:
    case = ALL[name]
    assert incoming.parse_any(build(case)) == case


@pytest.mark.parametrize("name", sorted(ALL))
def test_golden_file_parses_to_the_input(name: str) -> None:
    parsed = incoming.parse_any(golden_path(name).read_bytes())
    assert parsed == ALL[name]
    assert isinstance(parsed, AppRec | DialogMessage)


def test_every_golden_file_has_a_case() -> None:
    fixtures = golden_path("x").parent
    families = ("timereservasjon", "timeonske", "avtaleavbestilling", "avtaleutsending", "apprec")
    on_disk = {
        f"{family}/{path.stem}" for family in families for path in (fixtures / family).glob("*.xml")
    }
    assert on_disk == set(ALL) | set(LOOKUP_CASES)  # lookups: test_mappers_lookup.py
