"""A test PKI for the national-bus transport: a CA and signing + encryption key pairs per party."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from worker.adapters.crypto import ENCRYPTION, SIGNING, cert_path, key_path

CA_NAME = "ca"
KEY_BITS = 2048  # what the bus' enterprise certificates use
ORGANISATION = "timebok test PKI"
_NO_USAGE = {
    "digital_signature": False,
    "content_commitment": False,
    "key_encipherment": False,
    "data_encipherment": False,
    "key_agreement": False,
    "key_cert_sign": False,
    "crl_sign": False,
    "encipher_only": False,
    "decipher_only": False,
}
# signing: nonRepudiation only, as the bus' enterprise signing certificates; encryption:
# keyEncipherment (the content key is wrapped with RSA).
_USAGE = {SIGNING: {"content_commitment": True}, ENCRYPTION: {"key_encipherment": True}}


@dataclass(frozen=True)
class PkiParty:
    """A party to make key pairs for."""

    her_id: str
    name: str


@dataclass
class PkiResult:
    """What `make_test_pki` wrote (or kept because it was there already)."""

    directory: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def make_test_pki(
    directory: Path,
    parties: Iterable[PkiParty],
    *,
    days: int = 365,
    force: bool = False,
    now: datetime | None = None,
    usage: dict[str, dict[str, bool]] | None = None,
) -> PkiResult:
    """Write a CA and, per party, `<her_id>-signing.{key,pem}` and `<her_id>-encryption.{key,pem}`.

    Pairs already there are kept (so a party added to the registry later gets its own without
    replacing anyone's), unless `force`. `usage` overrides key usages (tests of wrong usage).
    """
    now = now or datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    result = PkiResult(directory=directory)
    ca_key, ca_cert = _ca(directory, now, force, result)
    for party in parties:
        for role in (SIGNING, ENCRYPTION):
            key_file, cert_file = (
                key_path(directory, party.her_id, role),
                cert_path(directory, party.her_id, role),
            )
            if not force and key_file.exists() and cert_file.exists():
                result.kept += [key_file, cert_file]
                continue
            key = _new_key()
            roles = (usage or _USAGE)[role]
            cert = _leaf(party, role, key, ca_key, ca_cert, now, days, roles)
            _write_key(key_file, key)
            _write_cert(cert_file, cert)
            result.written += [key_file, cert_file]
    return result


def _ca(
    directory: Path, now: datetime, force: bool, result: PkiResult
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key_file, cert_file = directory / f"{CA_NAME}.key", directory / f"{CA_NAME}.pem"
    if not force and key_file.exists() and cert_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            result.kept += [key_file, cert_file]
            return key, x509.load_pem_x509_certificate(cert_file.read_bytes())
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{ORGANISATION} CA"),
        ]
    )
    usage = _NO_USAGE | {"key_cert_sign": True, "crl_sign": True}
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_file, key)
    _write_cert(cert_file, cert)
    result.written += [key_file, cert_file]
    return key, cert


def _leaf(
    party: PkiParty,
    role: str,
    key: rsa.RSAPrivateKey,
    ca_key: rsa.RSAPrivateKey,
    ca_cert: x509.Certificate,
    now: datetime,
    days: int,
    roles: dict[str, bool],
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{party.name} ({party.her_id}) {role}"),
        ]
    )
    # A negative `days` makes an already expired certificate (for tests and drills).
    not_after = now + timedelta(days=days)
    not_before = min(now - timedelta(minutes=5), not_after - timedelta(days=1))
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**(_NO_USAGE | roles)), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    """PKCS#8 PEM, unencrypted, readable by the owner only."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
