"""Certificates for operators: `timebok certs init` (a test PKI) and their expiry for `status`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from worker.adapters.crypto import (
    ENCRYPTION,
    SIGNING,
    CertificateExpiry,
    CertificateFile,
    CertificateProblem,
    cert_path,
    certificate_expiry,
    key_path,
    load_own_keys,
)
from worker.adapters.pki import PkiParty, make_test_pki
from worker.adapters.registry import AddressRegistry, Registry
from worker.settings import Settings

EXPIRY_WARNING_DAYS = 30  # `timebok status` needs attention this long before an expiry


def init(
    settings: Settings, directory: Path, days: int = 365, force: bool = False
) -> dict[str, Any]:
    """Write the PKI into `directory`; return what was written and the settings / registry lines."""
    registry = Registry.load(settings.registry_file)
    directory = directory.resolve()
    own = PkiParty(settings.own_her_id, settings.own_name)
    clinics = [PkiParty(c.her_id, c.name) for c in registry.clinics]
    result = make_test_pki(directory, [own, *clinics], days=days, force=force)
    base = Path(settings.registry_file).resolve().parent
    return {
        "directory": str(directory),
        "ca": str(directory / "ca.pem"),
        "written": [str(p) for p in result.written],
        "kept": [str(p) for p in result.kept],
        "settings": {
            "TIMEBOK_SIGNING_KEY": str(key_path(directory, own.her_id, SIGNING)),
            "TIMEBOK_SIGNING_CERT": str(cert_path(directory, own.her_id, SIGNING)),
            "TIMEBOK_ENCRYPTION_KEY": str(key_path(directory, own.her_id, ENCRYPTION)),
            "TIMEBOK_ENCRYPTION_CERT": str(cert_path(directory, own.her_id, ENCRYPTION)),
        },
        "registry_file": str(base / Path(settings.registry_file).name),
        "registry": [
            {
                "her_id": party.her_id,
                "name": party.name,
                "signing_cert": _relative(cert_path(directory, party.her_id, SIGNING), base),
                "encryption_cert": _relative(cert_path(directory, party.her_id, ENCRYPTION), base),
            }
            for party in clinics
        ],
    }


def _relative(path: Path, base: Path) -> str:
    """`path` as the registry writes it: relative to the registry file's folder when inside it."""
    if path.is_relative_to(base):
        return path.relative_to(base).as_posix()
    return str(path)  # an absolute path is kept as it is by the registry


def configured(settings: Settings, registry: AddressRegistry) -> list[CertificateFile]:
    """Every certificate timebok is set up to use: ours (settings), the clinics' (registry)."""
    own = settings.own_her_id
    files = [
        CertificateFile(own, role, path, own=True)
        for role, path in ((SIGNING, settings.signing_cert), (ENCRYPTION, settings.encryption_cert))
        if path is not None
    ]
    for clinic in registry.clinics:
        for role, path in ((SIGNING, clinic.signing_cert), (ENCRYPTION, clinic.encryption_cert)):
            if path is not None:
                files.append(CertificateFile(clinic.her_id, role, path, own=False))
    return files


def status(
    settings: Settings, registry: AddressRegistry, now: datetime
) -> tuple[list[dict[str, Any]], list[str]]:
    """The `certificates` of `timebok status` and what about them needs attention.

    Nothing is checked (and nothing needs attention) on the kombu transport without any
    certificate configured: there the payloads are not protected.
    """
    files = configured(settings, registry)
    nhn = settings.epj_transport == "nhn"
    if not files and not nhn:
        return [], []
    rows = certificate_expiry(files, now)
    attention = [_warning(row) for row in rows if _needs_attention(row)]
    if nhn or any(f.own for f in files):
        attention += _own_keys(settings, rows, now)
    if nhn:
        attention += [
            f"clinic {c.her_id}: no signing_cert / encryption_cert in the registry "
            "(nothing can be sent to it on nhn)"
            for c in registry.clinics
            if c.connected and not c.has_certificates
        ]
    return [row.as_dict() for row in rows], attention


def _needs_attention(row: CertificateExpiry) -> bool:
    return row.problem is not None or (
        row.days_left is not None and row.days_left < EXPIRY_WARNING_DAYS
    )


def _warning(row: CertificateExpiry) -> str:
    whose = "our" if row.own else f"party {row.her_id}'s"
    if row.problem is not None:
        return f"{whose} {row.role} certificate: {row.problem}"
    assert row.not_after is not None  # a certificate that was read has its expiry
    return (
        f"{whose} {row.role} certificate {row.path} expires in {row.days_left} days "
        f"({row.not_after:%Y-%m-%d})"
    )


def _own_keys(settings: Settings, rows: list[CertificateExpiry], now: datetime) -> list[str]:
    """Our keys as the transport loads them, unless a certificate row already says what is wrong."""
    if any(row.own and row.problem for row in rows):
        return []
    try:
        load_own_keys(settings, now)
    except CertificateProblem as exc:
        return [f"our keys: {exc}"]
    return []
