"""The address registry: a TOML stand-in for the national address register (HER-id lookups)."""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mappers.codes import REGISTRY_PROCESS, Process
from worker.errors import TimebokError

KNOWN_PROCESSES = frozenset(REGISTRY_PROCESS.values())


class RegistryError(TimebokError):
    """The registry file is missing, not TOML, or breaks the format (names file and entry)."""


@dataclass(frozen=True)
class Unit:
    """A level-2 communication party under a clinic (a practitioner's list, a lab ...)."""

    her_id: str
    name: str


@dataclass(frozen=True)
class Clinic:
    """A level-1 communication party that patients book with."""

    her_id: str
    name: str
    phone: str | None
    processes: frozenset[str]  # registry process names, see mappers.codes.REGISTRY_PROCESS
    units: tuple[Unit, ...] = ()
    # The national-bus transport's public certificates (PEM), resolved against the registry
    # file's folder; None when the clinic has none (it cannot be sent to on `nhn`).
    signing_cert: Path | None = None
    encryption_cert: Path | None = None
    cpa_id: str | None = (
        None  # the collaboration agreement's id, sent as application property cpaId
    )

    @property
    def has_certificates(self) -> bool:
        """Whether the registry names both certificates the `nhn` transport needs."""
        return self.signing_cert is not None and self.encryption_cert is not None

    @property
    def connected(self) -> bool:
        """Whether the clinic takes any digital message at all."""
        return bool(self.processes)

    def supports(self, process: Process) -> bool:
        """Whether the clinic has registered for `process`."""
        name = REGISTRY_PROCESS.get(process)
        return name is not None and name in self.processes


@dataclass(frozen=True)
class Party:
    """A communication party that is not a clinic (the portal itself)."""

    her_id: str
    name: str


class AddressRegistry(Protocol):
    """What the worker needs from an address register."""

    @property
    def clinics(self) -> tuple[Clinic, ...]:
        """Every clinic (for status pages and queue metrics)."""
        ...

    def clinic(self, her_id: str) -> Clinic | None:
        """The clinic with this HER-id, or owning the unit with this HER-id."""
        ...

    def unit(self, her_id: str) -> Unit | None:
        """The level-2 unit with this HER-id."""
        ...

    def supports(self, her_id: str, process: Process) -> bool:
        """Whether the party (clinic or unit) can receive `process`."""
        ...


class Registry:
    """An in-memory address registry, usually loaded from the TOML file."""

    def __init__(self, clinics: Iterable[Clinic], portal: Party | None = None) -> None:
        self._clinics = tuple(clinics)
        self._portal = portal
        self._by_id: dict[str, Clinic] = {}
        self._units: dict[str, Unit] = {}
        for clinic in self._clinics:
            self._index(clinic.her_id, clinic)
            for unit in clinic.units:
                self._index(unit.her_id, clinic)
                self._units[unit.her_id] = unit
        if portal is not None and portal.her_id in self._by_id:
            raise RegistryError(f"her_id {portal.her_id} is both the portal and a clinic")

    def _index(self, her_id: str, clinic: Clinic) -> None:
        if her_id in self._by_id:
            raise RegistryError(f"her_id {her_id} appears more than once")
        self._by_id[her_id] = clinic

    @classmethod
    def load(cls, path: str | Path) -> Registry:
        """Read and check a registry TOML file; RegistryError names the file and the entry."""
        try:
            with Path(path).open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise RegistryError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise RegistryError(f"{path}: not valid TOML: {exc}") from exc
        return cls.from_mapping(data, source=str(path), base=Path(path).resolve().parent)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, object], source: str = "<registry>", base: Path | None = None
    ) -> Registry:
        """Build a registry from parsed TOML; errors are prefixed with `source`.

        Certificate paths are relative to `base` (the registry file's folder; default: the
        current directory).
        """
        try:
            return cls(_clinics(data, base or Path.cwd()), _portal(data))
        except RegistryError as exc:
            raise RegistryError(f"{source}: {exc}") from None

    @property
    def clinics(self) -> tuple[Clinic, ...]:
        """Every clinic, in file order."""
        return self._clinics

    @property
    def portal(self) -> Party | None:
        """The portal's own party, when the file names it."""
        return self._portal

    def clinic(self, her_id: str | int) -> Clinic | None:
        """The clinic with this HER-id, or owning the unit with this HER-id."""
        return self._by_id.get(str(her_id).strip())

    def unit(self, her_id: str | int) -> Unit | None:
        """The level-2 unit with this HER-id."""
        return self._units.get(str(her_id).strip())

    def supports(self, her_id: str | int, process: Process) -> bool:
        """Whether the party (clinic or unit, via its clinic) can receive `process`."""
        clinic = self.clinic(her_id)
        return clinic is not None and clinic.supports(process)

    def name_of(self, her_id: str | int) -> str | None:
        """The name of a clinic, unit or the portal."""
        key = str(her_id).strip()
        if self._portal is not None and self._portal.her_id == key:
            return self._portal.name
        unit = self._units.get(key)
        if unit is not None:
            return unit.name
        clinic = self._by_id.get(key)
        return clinic.name if clinic is not None else None


def _clinics(data: Mapping[str, object], base: Path) -> list[Clinic]:
    """Every [[clinic]] entry, checked."""
    entries = data.get("clinic")
    if entries is None:
        raise RegistryError("no [[clinic]] entries")
    if not isinstance(entries, list):
        raise RegistryError("'clinic' must be an array of tables ([[clinic]])")
    return [_clinic(entry, f"clinic[{index}]", base) for index, entry in enumerate(entries)]


def _clinic(entry: object, where: str, base: Path) -> Clinic:
    """One [[clinic]] table."""
    table = _table(entry, where)
    if "her_id" in table:
        where = f"{where} (her_id {table['her_id']})"
    units = table.get("unit", [])
    if not isinstance(units, list):
        raise RegistryError(f"{where}: 'unit' must be an array of tables ([[clinic.unit]])")
    return Clinic(
        her_id=_her_id(table, where),
        name=_text(table, "name", where),
        phone=_phone(table, where),
        processes=_processes(table, where),
        units=tuple(_unit(unit, f"{where}.unit[{i}]") for i, unit in enumerate(units)),
        signing_cert=_cert_path(table, "signing_cert", where, base),
        encryption_cert=_cert_path(table, "encryption_cert", where, base),
        cpa_id=_cpa_id(table, where),
    )


def _unit(entry: object, where: str) -> Unit:
    """One [[clinic.unit]] table."""
    table = _table(entry, where)
    return Unit(her_id=_her_id(table, where), name=_text(table, "name", where))


def _portal(data: Mapping[str, object]) -> Party | None:
    """The optional [portal] table: the portal's own communication party."""
    if "portal" not in data:
        return None
    table = _table(data["portal"], "portal")
    return Party(her_id=_her_id(table, "portal"), name=_text(table, "name", "portal"))


def _table(entry: object, where: str) -> Mapping[str, object]:
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: must be a table")
    return entry


def _required(table: Mapping[str, object], key: str, where: str) -> object:
    if key not in table:
        raise RegistryError(f"{where}: missing key '{key}'")
    return table[key]


def _her_id(table: Mapping[str, object], where: str) -> str:
    """A HER-id: a positive integer or a string of digits, kept as str."""
    value = _required(table, "her_id", where)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return value
    raise RegistryError(f"{where}: 'her_id' must be a positive integer or a string of digits")


def _text(table: Mapping[str, object], key: str, where: str) -> str:
    value = _required(table, key, where)
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def _phone(table: Mapping[str, object], where: str) -> str | None:
    """Optional here although the contract lists it: None means 'not known' in patient texts."""
    if "phone" not in table:
        return None
    return _text(table, "phone", where)


def _cert_path(table: Mapping[str, object], key: str, where: str, base: Path) -> Path | None:
    """An optional certificate file, relative to the registry file; both or neither."""
    other = "encryption_cert" if key == "signing_cert" else "signing_cert"
    if key not in table:
        if other in table:
            raise RegistryError(f"{where}: '{other}' without '{key}': give both or neither")
        return None
    return base / _text(table, key, where)


def _cpa_id(table: Mapping[str, object], where: str) -> str | None:
    """The optional collaboration agreement id: a UUID, as the address register issues them."""
    if "cpa_id" not in table:
        return None
    value = _text(table, "cpa_id", where)
    try:
        uuid.UUID(value)
    except ValueError:
        raise RegistryError(f"{where}: 'cpa_id' must be a UUID (got '{value}')") from None
    return value


def _processes(table: Mapping[str, object], where: str) -> frozenset[str]:
    """The registry process names; [] means the clinic is not connected."""
    value = _required(table, "processes", where)
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise RegistryError(f"{where}: 'processes' must be a list of strings")
    unknown = sorted(set(value) - KNOWN_PROCESSES)
    if unknown:
        known = ", ".join(sorted(KNOWN_PROCESSES))
        raise RegistryError(f"{where}: unknown process '{unknown[0]}' (known: {known})")
    return frozenset(value)


def with_certificates(registry_text: str, certs: Path) -> str:
    """A registry file's text with each [[clinic]]'s signing_cert / encryption_cert lines
    added, naming the files `timebok certs init` writes into `certs` (demo and bench); a
    registry that names certificates already is kept as it is."""
    if "signing_cert" in registry_text:
        return registry_text
    lines, table = [], ""
    for line in registry_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            table = stripped
        lines.append(line)
        key, _, value = stripped.partition("=")
        if table == "[[clinic]]" and key.strip() == "her_id":
            her_id = value.split("#")[0].strip().strip('"')
            lines.append(f'signing_cert = "{certs / f"{her_id}-signing.pem"}"')
            lines.append(f'encryption_cert = "{certs / f"{her_id}-encryption.pem"}"')
    return "\n".join(lines) + "\n"
