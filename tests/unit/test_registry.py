"""The TOML address registry: lookups on the sample file and precise errors for broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mappers.codes import Process
from worker.adapters.registry import (
    AddressRegistry,
    Clinic,
    Party,
    Registry,
    RegistryError,
    Unit,
)

SAMPLE = Path(__file__).resolve().parents[2] / "worker" / "sample" / "registry.toml"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load(SAMPLE)


def test_sample_lists_the_clinics_in_file_order(registry: Registry) -> None:
    assert [c.her_id for c in registry.clinics] == ["8090001", "8090010", "8090020", "8090030"]


def test_clinic_is_read_completely(registry: Registry) -> None:
    assert registry.clinic("8090001") == Clinic(
        her_id="8090001",
        name="Testlegekontoret",
        phone="81569069",
        processes=frozenset(
            {"timereservasjon", "timeonske", "avtaleavbestilling", "avtaleutsending"}
        ),
        units=(Unit("8090002", "Fastlege August September"), Unit("8090003", "Laboratoriet")),
    )


@pytest.mark.parametrize(
    ("her_id", "clinic"),
    [
        ("8090001", "Testlegekontoret"),
        (8090001, "Testlegekontoret"),
        ("8090002", "Testlegekontoret"),  # a unit resolves to its clinic
        ("8090003", "Testlegekontoret"),
        ("8090021", "Video Legesenter"),
        (" 8090010 ", "Helsestasjonen Nord"),
        ("8090030", "Frakoblet legekontor"),
    ],
)
def test_clinic_lookup(registry: Registry, her_id: str | int, clinic: str) -> None:
    found = registry.clinic(her_id)
    assert found is not None
    assert found.name == clinic


@pytest.mark.parametrize("her_id", ["9999999", "8093244", "", "abc"])
def test_unknown_or_non_clinic_her_id(registry: Registry, her_id: str) -> None:
    assert registry.clinic(her_id) is None
    assert registry.unit(her_id) is None


def test_unit_lookup(registry: Registry) -> None:
    assert registry.unit("8090002") == Unit("8090002", "Fastlege August September")
    assert registry.unit(8090021) == Unit("8090021", "Videokonsultasjon")
    assert registry.unit("8090001") is None  # a clinic is not a unit


@pytest.mark.parametrize(
    ("her_id", "process", "supported"),
    [
        ("8090001", Process.RESERVATION, True),
        ("8090001", Process.WISH, True),
        ("8090001", Process.CANCELLATION, True),
        ("8090001", Process.PUBLICATION, True),
        ("8090002", Process.RESERVATION, True),  # via the unit's clinic
        ("8090010", Process.RESERVATION, False),
        ("8090010", Process.WISH, True),
        ("8090010", Process.CANCELLATION, True),
        ("8090010", Process.PUBLICATION, True),
        ("8090021", Process.RESERVATION, True),
        ("8090030", Process.RESERVATION, False),
        ("8090030", Process.WISH, False),
        ("9999999", Process.WISH, False),
        ("8090001", Process.APPREC, False),  # not a registry process
    ],
)
def test_supports(registry: Registry, her_id: str, process: Process, supported: bool) -> None:
    assert registry.supports(her_id, process) is supported


def test_not_connected_clinic_keeps_its_phone(registry: Registry) -> None:
    clinic = registry.clinic("8090030")
    assert clinic is not None
    assert not clinic.connected
    assert clinic.phone == "22334455"
    assert clinic.processes == frozenset()


def test_clinic_without_phone(registry: Registry) -> None:
    clinic = registry.clinic("8090010")
    assert clinic is not None
    assert clinic.phone is None
    assert clinic.connected


def test_portal_party(registry: Registry) -> None:
    assert registry.portal == Party("8093244", "Helsenorge.no")
    assert registry.name_of("8093244") == "Helsenorge.no"
    assert registry.name_of(8090003) == "Laboratoriet"
    assert registry.name_of("8090020") == "Video Legesenter"
    assert registry.name_of("1") is None


def test_registry_satisfies_the_protocol(registry: Registry) -> None:
    port: AddressRegistry = registry
    assert port.supports("8090001", Process.WISH)


GOOD_CLINIC = 'her_id = 1\nname = "A"\nprocesses = ["timeonske"]\n'


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "[[clinic]]\n" + GOOD_CLINIC + "[[clinic]]\nher_id = 2\nprocesses = []\n",
            "clinic[1] (her_id 2): missing key 'name'",
        ),
        ('[[clinic]]\nname = "A"\nprocesses = []\n', "clinic[0]: missing key 'her_id'"),
        ('[[clinic]]\nher_id = 1\nname = "A"\n', "clinic[0] (her_id 1): missing key 'processes'"),
        (
            "[[clinic]]\n" + GOOD_CLINIC + '[[clinic.unit]]\nname = "U"\n',
            "clinic[0] (her_id 1).unit[0]: missing key 'her_id'",
        ),
        (
            "[[clinic]]\n" + GOOD_CLINIC + "[[clinic.unit]]\nher_id = 3\n",
            "clinic[0] (her_id 1).unit[0]: missing key 'name'",
        ),
        (
            '[[clinic]]\nher_id = "A1"\nname = "A"\nprocesses = []\n',
            "clinic[0] (her_id A1): 'her_id' must be a positive integer or a string of digits",
        ),
        (
            '[[clinic]]\nher_id = 1\nname = ""\nprocesses = []\n',
            "clinic[0] (her_id 1): 'name' must be a non-empty string",
        ),
        (
            '[[clinic]]\nher_id = 1\nname = "A"\nphone = 815\nprocesses = []\n',
            "clinic[0] (her_id 1): 'phone' must be a non-empty string",
        ),
        (
            '[[clinic]]\nher_id = 1\nname = "A"\nprocesses = "timeonske"\n',
            "clinic[0] (her_id 1): 'processes' must be a list of strings",
        ),
        (
            '[[clinic]]\nher_id = 1\nname = "A"\nprocesses = ["timebestilling"]\n',
            "clinic[0] (her_id 1): unknown process 'timebestilling' (known: avtaleavbestilling, "
            "avtaleutsending, timeonske, timereservasjon)",
        ),
        (
            "[[clinic]]\n" + GOOD_CLINIC + "[[clinic]]\n" + GOOD_CLINIC,
            "her_id 1 appears more than once",
        ),
        (
            "[[clinic]]\n" + GOOD_CLINIC + '[[clinic.unit]]\nher_id = 1\nname = "U"\n',
            "her_id 1 appears more than once",
        ),
        (
            '[portal]\nher_id = 1\nname = "P"\n[[clinic]]\n' + GOOD_CLINIC,
            "her_id 1 is both the portal and a clinic",
        ),
        ('[portal]\nname = "P"\n[[clinic]]\n' + GOOD_CLINIC, "portal: missing key 'her_id'"),
        ('title = "empty"\n', "no [[clinic]] entries"),
        ('clinic = "A"\n', "'clinic' must be an array of tables ([[clinic]])"),
        ("clinic = [1]\n", "clinic[0]: must be a table"),
        (
            "[[clinic]]\n" + GOOD_CLINIC + 'unit = "U"\n',
            "clinic[0] (her_id 1): 'unit' must be an array of tables ([[clinic.unit]])",
        ),
        (
            "[[clinic]]\n" + GOOD_CLINIC + 'signing_cert = "certs/1-signing.pem"\n',
            "clinic[0] (her_id 1): 'signing_cert' without 'encryption_cert': give both or neither",
        ),
        (
            "[[clinic]]\n" + GOOD_CLINIC + 'encryption_cert = "certs/1-encryption.pem"\n',
            "clinic[0] (her_id 1): 'encryption_cert' without 'signing_cert': give both or neither",
        ),
        (
            "[[clinic]]\n" + GOOD_CLINIC + 'signing_cert = ""\nencryption_cert = "e.pem"\n',
            "clinic[0] (her_id 1): 'signing_cert' must be a non-empty string",
        ),
        (
            "[[clinic]]\n" + GOOD_CLINIC + 'cpa_id = "5f7e3c1a"\n',
            "clinic[0] (her_id 1): 'cpa_id' must be a UUID (got '5f7e3c1a')",
        ),
    ],
)
def test_broken_file_names_file_entry_and_key(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RegistryError) as caught:
        Registry.load(path)
    assert str(caught.value) == f"{path}: {problem}"


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[clinic]\nher_id = 1\n", encoding="utf-8")
    with pytest.raises(RegistryError, match=r"bad\.toml: not valid TOML: .*line 1"):
        Registry.load(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(RegistryError, match=r"nowhere\.toml: cannot read: No such file"):
        Registry.load(path)


def test_extra_keys_are_ignored_and_digit_strings_accepted(tmp_path: Path) -> None:
    path = tmp_path / "extra.toml"
    path.write_text(
        'version = 2\n[[clinic]]\nher_id = "42"\nname = " B "\nprocesses = []\nweb = "https://b.no"\n'
        '[[clinic.unit]]\nher_id = 43\nname = "U"\nkind = "lab"\n',
        encoding="utf-8",
    )
    registry = Registry.load(path)
    assert registry.clinics == (Clinic("42", "B", None, frozenset(), (Unit("43", "U"),)),)
    assert registry.portal is None


def test_built_in_code() -> None:
    clinic = Clinic("5", "C", None, frozenset({"timeonske"}))
    registry = Registry([clinic])
    assert registry.clinic("5") is clinic
    assert clinic.supports(Process.WISH)
    assert not clinic.supports(Process.RESERVATION)


def test_certificates_and_cpa_id_resolve_against_the_registry_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "registry.toml"
    path.write_text(
        "[[clinic]]\n" + GOOD_CLINIC + 'signing_cert = "certs/1-signing.pem"\n'
        'encryption_cert = "/abs/1-encryption.pem"\n'
        'cpa_id = "5F7E3C1A-2B4D-4E6F-8A9B-0C1D2E3F4A5B"\n',
        encoding="utf-8",
    )
    clinic = Registry.load(path).clinic("1")
    assert clinic is not None
    assert clinic.signing_cert == folder.resolve() / "certs" / "1-signing.pem"
    assert clinic.encryption_cert == Path("/abs/1-encryption.pem")
    assert clinic.cpa_id == "5F7E3C1A-2B4D-4E6F-8A9B-0C1D2E3F4A5B"  # sent as written
    assert clinic.has_certificates


def test_a_clinic_without_certificates(registry: Registry) -> None:
    clinic = registry.clinic("8090001")
    assert clinic is not None
    assert (clinic.signing_cert, clinic.encryption_cert, clinic.cpa_id) == (None, None, None)
    assert not clinic.has_certificates
