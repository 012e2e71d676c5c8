"""CMS payload protection on the national message bus: sign (SignedData), then encrypt.

What Helsenorge.Messaging's SignThenEncryptMessageProtection does, in Python: the UTF-8 XML is
signed (content attached, SHA-256, the signing certificate embedded) and the DER of that
SignedData is encrypted for the receiver (AES-256-CBC, the content key wrapped with RSA PKCS#1
v1.5). Signing and encryption use `cryptography`'s PKCS#7 builders; decryption and signature
verification are done here over the parsed structures (asn1crypto), because `cryptography` does
not verify SignedData and its decryption needs the certificate of every key we try.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Protocol

from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature as _BadSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs7

from worker.errors import PermanentError

CONTENT_TYPE = "application/pkcs7-mime; smime-type=signed-and-enveloped-data"
SIGNING = "signing"
ENCRYPTION = "encryption"

_OID_DATA = "1.2.840.113549.1.7.1"
_OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
_OID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
_OID_RSA = "1.2.840.113549.1.1.1"
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
_OID_CONTENT_TYPE_ATTR = "1.2.840.113549.1.9.3"
_OID_MESSAGE_DIGEST_ATTR = "1.2.840.113549.1.9.4"
# Digests accepted on receipt; we send SHA-256. SHA-1 and MD5 are refused: forgeable.
_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
# rsaEncryption (what .NET and openssl write) or sha*WithRSAEncryption naming the same digest.
_RSA_SIGNATURES: dict[str, str | None] = {
    _OID_RSA: None,
    "1.2.840.113549.1.1.11": "2.16.840.1.101.3.4.2.1",
    "1.2.840.113549.1.1.12": "2.16.840.1.101.3.4.2.2",
    "1.2.840.113549.1.1.13": "2.16.840.1.101.3.4.2.3",
}
_AES256_KEY_BYTES = 32
_AES_BLOCK_BYTES = 16
# What asn1crypto raises for bytes that do not fit the structure.
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, OverflowError)


class CryptoError(PermanentError):
    """A payload or certificate problem; `condition` is the errorCondition for the sender."""

    error_condition: ClassVar[str] = "transport:invalid-certificate"

    @property
    def condition(self) -> str:
        """The errorCondition to report (an instance may refine its class's)."""
        return self.error_condition


class CannotDecrypt(CryptoError):
    """Not CMS EnvelopedData for one of our keys (Helsenorge.Messaging: a SecurityException)."""

    error_condition = "transport:invalid-certificate"


class UnsupportedProtection(CryptoError):
    """Well-formed CMS, but an algorithm we do not accept (e.g. 3DES content encryption)."""

    error_condition = "transport:unsupported-message"


class InvalidSignature(CryptoError):
    """Missing, malformed or wrong signature, or the digest does not match the content."""

    error_condition = "transport:invalid-certificate"


class UnknownSigner(CryptoError):
    """Signed by a certificate other than the one registered for fromHerId."""

    error_condition = "transport:invalid-certificate"


class CertificateProblem(CryptoError):
    """A certificate that cannot be used: missing, expired, not yet valid, wrong key usage."""

    error_condition = "transport:invalid-certificate"

    def __init__(self, message: str, condition: str | None = None, *, local: bool = False) -> None:
        super().__init__(message)
        self._condition = condition or self.error_condition
        # local: one of OUR certificates or keys; not the sender's fault, so not theirs to be told
        self.local = local

    @property
    def condition(self) -> str:
        """`transport:expired-certificate`, `transport:missing-certificate` or the class default."""
        return self._condition


@dataclass(frozen=True)
class PartyCerts:
    """The public certificates of another communication party (from the address registry)."""

    signing: x509.Certificate
    encryption: x509.Certificate


@dataclass(frozen=True)
class OwnKeys:
    """Our own keys and certificates (from settings)."""

    signing_key: rsa.RSAPrivateKey
    signing_cert: x509.Certificate
    encryption_key: rsa.RSAPrivateKey
    encryption_cert: x509.Certificate
    previous_encryption_key: rsa.RSAPrivateKey | None = None

    @property
    def decryption_keys(self) -> tuple[rsa.RSAPrivateKey, ...]:
        """The keys a message to us may be encrypted for, current first."""
        if self.previous_encryption_key is None:
            return (self.encryption_key,)
        return (self.encryption_key, self.previous_encryption_key)


class KeySettings(Protocol):
    """The part of worker.settings.Settings that names our key files."""

    signing_key: Path | None
    signing_cert: Path | None
    encryption_key: Path | None
    encryption_cert: Path | None
    previous_encryption_key: Path | None


# --- certificates -------------------------------------------------------------------------------


def check_certificate(cert: x509.Certificate, role: str, now: datetime, *, local: bool) -> None:
    """Refuse a certificate outside its validity period or without the key usage of `role`.

    What never changes about a certificate (its dates, key usage and key type) is read once
    per certificate (`_facts`); each call compares the dates with `now` again.
    """
    facts = _facts(cert)
    if now < facts.not_before:
        raise CertificateProblem(
            f"{role} certificate {describe(cert)} is not valid before {facts.not_before:%Y-%m-%d}",
            "transport:expired-certificate",
            local=local,
        )
    if now > facts.not_after:
        raise CertificateProblem(
            f"{role} certificate {describe(cert)} expired on {facts.not_after:%Y-%m-%d}",
            "transport:expired-certificate",
            local=local,
        )
    if not (facts.signs if role == SIGNING else facts.encrypts):
        wanted = "nonRepudiation" if role == SIGNING else "keyEncipherment"
        raise CertificateProblem(
            f"{role} certificate {describe(cert)} lacks the key usage {wanted}", local=local
        )
    if facts.rsa_key is None:
        raise CertificateProblem(f"{role} certificate {describe(cert)} has no RSA key", local=local)


@dataclass(frozen=True)
class _CertFacts:
    """What the CMS code reads of a certificate on every message, parsed once."""

    not_before: datetime
    not_after: datetime
    signs: bool  # key usage nonRepudiation
    encrypts: bool  # key usage keyEncipherment
    rsa_key: rsa.RSAPublicKey | None
    der: bytes
    issuer_and_serial: bytes  # DER of the CMS IssuerAndSerialNumber naming it
    subject_key_id: bytes | None


@lru_cache(maxsize=1024)  # certificates hash and compare by their DER
def _facts(cert: x509.Certificate) -> _CertFacts:
    key = cert.public_key()
    try:
        ski: bytes | None = cert.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value.digest
    except x509.ExtensionNotFound:
        ski = None
    issuer = asn1_x509.Name.load(cert.issuer.public_bytes())
    ias = asn1_cms.IssuerAndSerialNumber({"issuer": issuer, "serial_number": cert.serial_number})
    return _CertFacts(
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        signs=has_key_usage(cert, SIGNING),
        encrypts=has_key_usage(cert, ENCRYPTION),
        rsa_key=key if isinstance(key, rsa.RSAPublicKey) else None,
        der=cert.public_bytes(serialization.Encoding.DER),
        issuer_and_serial=ias.dump(),
        subject_key_id=ski,
    )


def has_key_usage(cert: x509.Certificate, role: str) -> bool:
    """nonRepudiation for a signing certificate, keyEncipherment for an encryption one."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False  # as Helsenorge.Messaging: no KeyUsage extension is the wrong usage
    return bool(usage.content_commitment if role == SIGNING else usage.key_encipherment)


def describe(cert: x509.Certificate) -> str:
    """Subject and serial number, for error messages and logs."""
    return f"'{cert.subject.rfc4514_string()}' (serial {cert.serial_number:x})"


def read_certificate(path: Path, role: str, *, local: bool) -> x509.Certificate:
    """One PEM (or DER) certificate from a file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateProblem(
            f"{role} certificate {path}: cannot read: {exc.strerror or exc}",
            "transport:missing-certificate",
            local=local,
        ) from exc
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateProblem(
            f"{role} certificate {path}: not a certificate", local=local
        ) from exc


def read_private_key(path: Path, what: str) -> rsa.RSAPrivateKey:
    """An unencrypted PEM RSA private key (PKCS#8 or PKCS#1)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateProblem(
            f"{what} {path}: cannot read: {exc.strerror or exc}",
            "transport:missing-certificate",
            local=True,
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateProblem(
            f"{what} {path}: not an unencrypted PEM private key", local=True
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateProblem(f"{what} {path}: not an RSA key", local=True)
    return key


def load_own_keys(settings: KeySettings, now: datetime | None = None) -> OwnKeys:
    """Our keys from TIMEBOK_SIGNING_KEY / _CERT, _ENCRYPTION_KEY / _CERT (+ the previous key)."""
    paths = {
        "TIMEBOK_SIGNING_KEY": settings.signing_key,
        "TIMEBOK_SIGNING_CERT": settings.signing_cert,
        "TIMEBOK_ENCRYPTION_KEY": settings.encryption_key,
        "TIMEBOK_ENCRYPTION_CERT": settings.encryption_cert,
    }
    unset = [name for name, path in paths.items() if path is None]
    if unset:
        raise CertificateProblem(
            f"{', '.join(unset)} not set (`timebok certs init DIR` makes a test PKI)",
            "transport:missing-certificate",
            local=True,
        )
    signing_key, signing_cert, encryption_key, encryption_cert = (
        Path(str(path)) for path in paths.values()
    )
    return load_keys(
        signing_key,
        signing_cert,
        encryption_key,
        encryption_cert,
        previous_encryption_key=settings.previous_encryption_key,
        now=now,
    )


def load_keys_from_dir(directory: Path, her_id: str, now: datetime | None = None) -> OwnKeys:
    """A party's keys from the files `timebok certs init` names (the simulated clinics use this)."""
    return load_keys(
        key_path(directory, her_id, SIGNING),
        cert_path(directory, her_id, SIGNING),
        key_path(directory, her_id, ENCRYPTION),
        cert_path(directory, her_id, ENCRYPTION),
        now=now,
    )


def load_keys(
    signing_key_path: Path,
    signing_cert_path: Path,
    encryption_key_path: Path,
    encryption_cert_path: Path,
    *,
    previous_encryption_key: Path | None = None,
    now: datetime | None = None,
) -> OwnKeys:
    """Keys and certificates from files, each certificate checked and matched with its key."""
    now = now or datetime.now(UTC)
    signing_key = read_private_key(signing_key_path, "signing key")
    signing_cert = read_certificate(signing_cert_path, SIGNING, local=True)
    encryption_key = read_private_key(encryption_key_path, "encryption key")
    encryption_cert = read_certificate(encryption_cert_path, ENCRYPTION, local=True)
    previous = None
    if previous_encryption_key is not None:
        previous = read_private_key(previous_encryption_key, "previous encryption key")
    _same_key(signing_key, signing_cert, signing_key_path, signing_cert_path)
    _same_key(encryption_key, encryption_cert, encryption_key_path, encryption_cert_path)
    check_certificate(signing_cert, SIGNING, now, local=True)
    check_certificate(encryption_cert, ENCRYPTION, now, local=True)
    return OwnKeys(signing_key, signing_cert, encryption_key, encryption_cert, previous)


def key_path(directory: Path, her_id: str, role: str) -> Path:
    """`<her_id>-<role>.key`, as `timebok certs init` names a private key."""
    return Path(directory) / f"{her_id}-{role}.key"


def cert_path(directory: Path, her_id: str, role: str) -> Path:
    """`<her_id>-<role>.pem`, as `timebok certs init` names a certificate."""
    return Path(directory) / f"{her_id}-{role}.pem"


def _same_key(
    key: rsa.RSAPrivateKey, cert: x509.Certificate, key_file: Path, cert_file: Path
) -> None:
    """A key and certificate that do not belong together would sign what no one can verify."""
    if key.public_key().public_numbers() != _rsa_public(cert).public_numbers():
        raise CertificateProblem(f"{key_file} is not the key of {cert_file}", local=True)


def load_party_certs(
    signing_path: Path, encryption_path: Path, now: datetime | None = None
) -> PartyCerts:
    """Another party's certificates, checked for validity now and key usage."""
    now = now or datetime.now(UTC)
    signing = read_certificate(Path(signing_path), SIGNING, local=False)
    encryption = read_certificate(Path(encryption_path), ENCRYPTION, local=False)
    check_certificate(signing, SIGNING, now, local=False)
    check_certificate(encryption, ENCRYPTION, now, local=False)
    return PartyCerts(signing=signing, encryption=encryption)


class ClinicCertificates(Protocol):
    """What the registry holds for a clinic's certificates (worker.adapters.registry.Clinic)."""

    her_id: str
    signing_cert: Path | None
    encryption_cert: Path | None


class CertificateBook:
    """Each party's certificates from the registry, read on first use and kept for the process.

    Validity is checked again on every `protect` / `unprotect`, so a certificate that expires
    while the process runs is refused from then on.
    """

    def __init__(self, lookup: Callable[[str], ClinicCertificates | None]) -> None:
        self._lookup = lookup
        self._loaded: dict[str, PartyCerts] = {}
        self._lock = threading.Lock()

    def party(self, her_id: str, now: datetime | None = None) -> PartyCerts:
        """The certificates of `her_id` (a clinic or a unit of it); CertificateProblem if none."""
        with self._lock:
            known = self._loaded.get(her_id)
        if known is not None:
            return known
        clinic = self._lookup(her_id)
        if clinic is None or clinic.signing_cert is None or clinic.encryption_cert is None:
            raise CertificateProblem(
                f"party {her_id} has no signing_cert / encryption_cert in the address registry",
                "transport:missing-certificate",
            )
        certs = load_party_certs(clinic.signing_cert, clinic.encryption_cert, now)
        with self._lock:
            self._loaded[her_id] = certs
        return certs


# --- protect ------------------------------------------------------------------------------------


def protect(xml: bytes, own: OwnKeys, recipient: PartyCerts, now: datetime) -> bytes:
    """DER ContentInfo(EnvelopedData(SignedData(xml))): signed by us, encrypted for `recipient`."""
    check_certificate(own.signing_cert, SIGNING, now, local=True)
    check_certificate(recipient.encryption, ENCRYPTION, now, local=False)
    signed = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(xml)
        .add_signer(own.signing_cert, own.signing_key, hashes.SHA256())
        # Binary: the XML bytes are signed as they are (no MIME line-ending canonicalisation);
        # no S/MIME capabilities: nothing on the bus reads them, Helsenorge.Messaging sends none.
        .sign(
            serialization.Encoding.DER,
            [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.NoCapabilities],
        )
    )
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(signed)
        .add_recipient(recipient.encryption)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


# --- unprotect ----------------------------------------------------------------------------------


def unprotect(blob: bytes, own: OwnKeys, sender: PartyCerts, now: datetime) -> bytes:
    """Decrypt (current key, then the previous one), verify the sender's signature: the XML."""
    check_certificate(sender.signing, SIGNING, now, local=False)
    check_certificate(own.encryption_cert, ENCRYPTION, now, local=True)
    signed = decrypt(blob, own)
    return verify(signed, sender.signing)


def decrypt(blob: bytes, own: OwnKeys) -> Any:
    """The parsed SignedData inside an EnvelopedData for one of our keys."""
    try:
        return _decrypt(blob, own)
    except _MALFORMED as exc:  # asn1crypto parses lazily: a bad field surfaces where it is read
        raise CannotDecrypt("malformed CMS EnvelopedData") from exc


def _decrypt(blob: bytes, own: OwnKeys) -> Any:
    enveloped = _enveloped(blob)
    content_key_attempts = _key_attempts(enveloped, own)
    iv, ciphertext = _encrypted_content(enveloped["encrypted_content_info"])
    for key in content_key_attempts:
        signed = _try_content_key(key, iv, ciphertext)
        if signed is not None:
            return signed
    # One message for every failure: which step failed would tell an attacker too much.
    raise CannotDecrypt("cannot decrypt: not encrypted for our encryption certificate")


def _enveloped(blob: bytes) -> Any:
    """ContentInfo(EnvelopedData), with the fields that nothing authenticates checked strictly."""
    info = _load_content_info(blob, CannotDecrypt, "not CMS (DER ContentInfo)")
    if info["content_type"].dotted != _OID_ENVELOPED_DATA:
        raise CannotDecrypt(f"not CMS EnvelopedData (content type {info['content_type'].dotted})")
    try:
        enveloped = info["content"]
        recipients = list(enveloped["recipient_infos"])
        has_originator = bool(enveloped["originator_info"].contents)
        version = enveloped["version"].native
    except _MALFORMED as exc:
        raise CannotDecrypt("malformed CMS EnvelopedData") from exc
    if has_originator:
        raise UnsupportedProtection("EnvelopedData with originator info (key agreement)")
    if not recipients or any(r.name != "ktri" for r in recipients):
        raise UnsupportedProtection("only key-transport (RSA) recipients are accepted")
    expected = "v2" if any(r.chosen["version"].native != "v0" for r in recipients) else "v0"
    if version != expected:
        raise CannotDecrypt(f"EnvelopedData version {version}, expected {expected}")
    return enveloped


def _load_content_info(blob: bytes, error: type[CryptoError], what: str) -> Any:
    try:
        check_der(blob)
        info = asn1_cms.ContentInfo.load(bytes(blob), strict=True)
        _ = info["content"]  # asn1crypto parses lazily: force the outer layer now
    except _MALFORMED as exc:
        raise error(what) from exc
    return info


def _key_attempts(enveloped: Any, own: OwnKeys) -> Iterator[bytes]:
    """Content keys unwrapped by our current key (its recipient entry), then by the previous key."""
    recipients = [r.chosen for r in enveloped["recipient_infos"]]
    for ktri in recipients:
        if _names_certificate(ktri, own.encryption_cert):
            key = _unwrap(ktri, own.encryption_key)
            if key is not None:
                yield key
    if own.previous_encryption_key is not None:
        # Without the previous certificate we cannot match its recipient entry: try each.
        for ktri in recipients:
            key = _unwrap(ktri, own.previous_encryption_key)
            if key is not None:
                yield key


def _names_certificate(ktri: Any, cert: x509.Certificate) -> bool:
    """Whether a recipient entry names `cert` (issuer and serial, or subject key identifier)."""
    try:
        rid = ktri["rid"]
        version = ktri["version"].native
        if rid.name == "issuer_and_serial_number":
            return bool(version == "v0" and _is_issuer_and_serial(rid.chosen, cert))
        return bool(version == "v2" and rid.chosen.native == _subject_key_id(cert))
    except _MALFORMED:
        return False


def _is_issuer_and_serial(ias: Any, cert: x509.Certificate) -> bool:
    # Byte for byte: the message passed the strict DER check, so equal bytes are exactly an
    # equal issuer name and serial number.
    return bool(ias.dump() == _facts(cert).issuer_and_serial)


def _subject_key_id(cert: x509.Certificate) -> bytes | None:
    return _facts(cert).subject_key_id


def _unwrap(ktri: Any, key: rsa.RSAPrivateKey) -> bytes | None:
    """The content key from one recipient entry, or None."""
    try:
        algorithm = ktri["key_encryption_algorithm"]
        if algorithm["algorithm"].dotted != _OID_RSA or not _null_or_absent(algorithm):
            return None
        wrapped = ktri["encrypted_key"].native
        # OpenSSL's implicit rejection answers a wrong key with random bytes, not an error:
        # the length check and the inner parse below are what tell.
        content_key = key.decrypt(wrapped, padding.PKCS1v15())
    except _MALFORMED:
        return None
    return content_key if len(content_key) == _AES256_KEY_BYTES else None


def _null_or_absent(algorithm: Any) -> bool:
    params = algorithm["parameters"]
    return params.contents is None or params.dump() == b"\x05\x00"


def _encrypted_content(info: Any) -> tuple[bytes, bytes]:
    """IV and ciphertext of the EncryptedContentInfo (AES-256-CBC, content type data only)."""
    try:
        content_type = info["content_type"].dotted
        algorithm = info["content_encryption_algorithm"]
        oid = algorithm["algorithm"].dotted
        iv = algorithm["parameters"].native if oid == _OID_AES256_CBC else None
        ciphertext = info["encrypted_content"].native
    except _MALFORMED as exc:
        raise CannotDecrypt("malformed CMS EncryptedContentInfo") from exc
    if oid != _OID_AES256_CBC:
        raise UnsupportedProtection(f"content encryption {oid} refused: AES-256-CBC only")
    if content_type != _OID_DATA:
        raise CannotDecrypt(f"encrypted content type {content_type}, expected data")
    if not isinstance(iv, bytes) or len(iv) != _AES_BLOCK_BYTES:
        raise CannotDecrypt("AES-256-CBC without a 16-byte IV")
    if not isinstance(ciphertext, bytes) or not ciphertext or len(ciphertext) % _AES_BLOCK_BYTES:
        raise CannotDecrypt("no encrypted content, or not whole AES blocks")
    return iv, ciphertext


def _try_content_key(key: bytes, iv: bytes, ciphertext: bytes) -> Any:
    """The SignedData the content key reveals, or None when it is not the right key."""
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = sym_padding.PKCS7(128).unpadder()
    try:
        plain = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        return None
    try:
        info = _load_content_info(plain, CannotDecrypt, "")
    except CannotDecrypt:
        return None
    if info["content_type"].dotted != _OID_SIGNED_DATA:
        return None
    return info["content"]


# --- strict DER ---------------------------------------------------------------------------------

_CONSTRUCTED = 0x20
_UNIVERSAL_INTEGER = 0x02
_UNIVERSAL_BOOLEAN = 0x01
_UNIVERSAL_NULL = 0x05
_HIGH_TAG = 0x1F
_INDEFINITE = 0x80


def check_der(data: bytes) -> None:
    """Refuse all but strict DER: minimal definite lengths and integers, primitive strings.

    asn1crypto reads BER: a length byte 0x01 flipped to 0x81 before a 0x00 still parses, to the
    same value. The envelope's fields are not covered by the signature, so only a strict reading
    makes a flipped byte there fail.
    """
    end = _check_tlvs(memoryview(data), 0, len(data), depth=0)
    if end != len(data):
        raise ValueError("trailing bytes after the DER structure")


def _check_tlvs(data: memoryview, start: int, end: int, depth: int) -> int:
    """Walk the TLVs in data[start:end]; return where the walk stopped (== end when clean)."""
    if depth > 64:
        raise ValueError("DER nested too deep")
    pos = start
    while pos < end:
        tag = data[pos]
        if tag & _HIGH_TAG == _HIGH_TAG:
            raise ValueError("multi-byte DER tags are not used in CMS")
        length, pos = _der_length(data, pos + 1, end)
        if pos + length > end:
            raise ValueError("DER length past the end")
        if tag & _CONSTRUCTED:
            if tag & 0xC0 == 0 and tag & _HIGH_TAG in (0x03, 0x04, 0x0C, 0x13, 0x16, 0x1E):
                raise ValueError("constructed string: BER, not DER")
            _check_tlvs(data, pos, pos + length, depth + 1)
        elif tag == _UNIVERSAL_INTEGER:
            _check_integer(data[pos : pos + length])
        elif tag == _UNIVERSAL_BOOLEAN and (length != 1 or data[pos] not in (0x00, 0xFF)):
            raise ValueError("DER BOOLEAN must be one byte, 00 or FF")
        elif tag == _UNIVERSAL_NULL and length:
            raise ValueError("DER NULL must be empty")
        pos += length
    return pos


def _der_length(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    """(length, position after it), refusing the indefinite form and non-minimal long forms."""
    if pos >= end:
        raise ValueError("DER length missing")
    first = data[pos]
    if first < _INDEFINITE:
        return first, pos + 1
    count = first & 0x7F
    if count == 0:
        raise ValueError("indefinite length: BER, not DER")
    if count > 4 or pos + 1 + count > end:
        raise ValueError("DER length too long")
    raw = bytes(data[pos + 1 : pos + 1 + count])
    length = int.from_bytes(raw, "big")
    if raw[0] == 0 or length < _INDEFINITE:
        raise ValueError("DER length not in its shortest form")
    return length, pos + 1 + count


def _check_integer(body: memoryview) -> None:
    if len(body) == 0:
        raise ValueError("empty DER INTEGER")
    if len(body) > 1 and (
        (body[0] == 0x00 and body[1] < 0x80) or (body[0] == 0xFF and body[1] >= 0x80)
    ):
        raise ValueError("DER INTEGER not in its shortest form")


# --- verify -------------------------------------------------------------------------------------


def verify(signed: Any, signer_cert: x509.Certificate) -> bytes:
    """The content of a SignedData whose one signer is `signer_cert` and whose signature holds."""
    try:
        return _verify(signed, signer_cert)
    except _MALFORMED as exc:
        raise InvalidSignature("malformed CMS SignedData") from exc


def verify_der(blob: bytes, signer_cert: x509.Certificate) -> bytes:
    """`verify` for a DER ContentInfo(SignedData) (not encrypted)."""
    info = _load_content_info(blob, InvalidSignature, "not CMS (DER ContentInfo)")
    if info["content_type"].dotted != _OID_SIGNED_DATA:
        raise InvalidSignature("not CMS SignedData")
    return verify(info["content"], signer_cert)


def _verify(signed: Any, signer_cert: x509.Certificate) -> bytes:
    encap = signed["encap_content_info"]
    if encap["content_type"].dotted != _OID_DATA:
        raise InvalidSignature(f"signed content type {encap['content_type'].dotted}, expected data")
    content = encap["content"].native if encap["content"].contents is not None else None
    if not isinstance(content, bytes):
        raise InvalidSignature("signature without the content (detached): content must be attached")
    signers = list(signed["signer_infos"])
    if len(signers) != 1:
        raise InvalidSignature(f"{len(signers)} signers, expected exactly one")
    signer = signers[0]
    _check_signed_data_version(signed, signer)
    _check_signer_identity(signed, signer, signer_cert)
    digest_oid = signer["digest_algorithm"]["algorithm"].dotted
    digest = _DIGESTS.get(digest_oid)
    if digest is None:
        raise InvalidSignature(f"digest algorithm {digest_oid} refused (SHA-256/384/512 only)")
    if digest_oid not in {a["algorithm"].dotted for a in signed["digest_algorithms"]}:
        raise InvalidSignature("signer's digest algorithm missing from SignedData digestAlgorithms")
    signed_bytes = _signed_bytes(signer, content, digest())
    _check_signature(signer, signed_bytes, digest(), digest_oid, signer_cert)
    return content


def _check_signed_data_version(signed: Any, signer: Any) -> None:
    """RFC 5652 5.1: v1 when the signer is named by issuer and serial, v3 by key identifier."""
    by_key_id = signer["sid"].name == "subject_key_identifier"
    expected_signer = "v3" if by_key_id else "v1"
    if signer["version"].native != expected_signer:
        raise InvalidSignature(f"SignerInfo version {signer['version'].native}")
    if signed["version"].native not in ({"v3"} if by_key_id else {"v1", "v3"}):
        raise InvalidSignature(f"SignedData version {signed['version'].native}")


def _check_signer_identity(signed: Any, signer: Any, cert: x509.Certificate) -> None:
    """The signer must be the registered certificate, and so must an embedded copy of it."""
    sid = signer["sid"]
    if sid.name == "issuer_and_serial_number":
        named = _is_issuer_and_serial(sid.chosen, cert)
    else:
        named = sid.chosen.native == _subject_key_id(cert)
    if not named:
        raise UnknownSigner(
            f"signed by another certificate than the registered one {describe(cert)}"
        )
    # As Helsenorge.Messaging: the signer's certificate travels in the message. Here it must be
    # byte for byte the registered one; any others must be its CA chain (checked below).
    registered = _facts(cert).der
    embedded = [c.dump() for c in _embedded_certificates(signed)]
    if registered not in embedded:
        raise UnknownSigner(
            f"the registered signing certificate {describe(cert)} is not in the message"
        )
    others = [x509.load_der_x509_certificate(der) for der in embedded if der != registered]
    if others:
        _check_bundled_chain(cert, others)


def _check_bundled_chain(registered: x509.Certificate, bundled: list[x509.Certificate]) -> None:
    """CA certificates a sender bundles must be the signer's chain, each signature checked.

    They are not trusted for anything (the registered certificate is), but nothing signs them
    either: checking each against what it issued (and a root against itself) is what makes a
    changed byte in them fail. A top certificate whose own issuer is not bundled cannot be
    checked further than its name and key.
    """
    pool = [registered, *bundled]
    for ca in bundled:
        issued = [c for c in pool if c is not ca and c.issuer == ca.subject]
        if ca.issuer == ca.subject:
            issued.append(ca)  # a root signs itself
        if not issued:
            raise InvalidSignature(f"bundled certificate {describe(ca)} is not the signer's chain")
        for child in issued:
            try:
                child.verify_directly_issued_by(ca)
            except (ValueError, TypeError, _BadSignature) as exc:
                raise InvalidSignature(
                    f"bundled certificate {describe(ca)} did not issue {describe(child)}"
                ) from exc


def _embedded_certificates(signed: Any) -> Sequence[Any]:
    certs = signed["certificates"]
    return list(certs) if certs.contents is not None else []


def _signed_bytes(signer: Any, content: bytes, digest: hashes.HashAlgorithm) -> bytes:
    """What the signature covers: the DER of the signed attributes (as a SET), or the content."""
    attrs = signer["signed_attrs"]
    if attrs.contents is None:
        return content  # RFC 5652 allows a signature over the content itself
    seen: dict[str, Any] = {}
    for attr in attrs:
        oid = attr["type"].dotted
        if oid in seen:
            raise InvalidSignature(f"signed attribute {oid} appears twice")
        seen[oid] = attr["values"]
    content_type = seen.get(_OID_CONTENT_TYPE_ATTR)
    if content_type is None or [v.dotted for v in content_type] != [_OID_DATA]:
        raise InvalidSignature("signed attribute content-type missing or not data")
    message_digest = seen.get(_OID_MESSAGE_DIGEST_ATTR)
    if message_digest is None or len(message_digest) != 1:
        raise InvalidSignature("signed attribute message-digest missing")
    hasher = hashes.Hash(digest)
    hasher.update(content)
    if not hmac.compare_digest(message_digest[0].native, hasher.finalize()):
        raise InvalidSignature("message digest does not match the content")
    # The signature is over the attributes' DER with the universal SET tag instead of [0].
    encoded: bytes = attrs.dump()
    return b"\x31" + encoded[1:]


def _check_signature(
    signer: Any,
    signed_bytes: bytes,
    digest: hashes.HashAlgorithm,
    digest_oid: str,
    cert: x509.Certificate,
) -> None:
    algorithm = signer["signature_algorithm"]
    oid = algorithm["algorithm"].dotted
    if oid not in _RSA_SIGNATURES or not _null_or_absent(algorithm):
        raise InvalidSignature(f"signature algorithm {oid} refused (RSA PKCS#1 v1.5 only)")
    named_digest = _RSA_SIGNATURES[oid]
    if named_digest is not None and named_digest != digest_oid:
        raise InvalidSignature("signature algorithm and digest algorithm disagree")
    signature = signer["signature"].native
    try:
        _rsa_public(cert).verify(signature, signed_bytes, padding.PKCS1v15(), digest)
    except _BadSignature as exc:
        raise InvalidSignature("signature does not verify with the registered certificate") from exc


def _rsa_public(cert: x509.Certificate) -> rsa.RSAPublicKey:
    key = _facts(cert).rsa_key
    if key is None:
        raise CertificateProblem(f"certificate {describe(cert)} has no RSA key")
    return key


# --- expiry for `timebok status` ----------------------------------------------------------------


@dataclass(frozen=True)
class CertificateFile:
    """A certificate that timebok is configured to use."""

    her_id: str
    role: str  # signing | encryption
    path: Path
    own: bool


@dataclass(frozen=True)
class CertificateExpiry:
    """One configured certificate's validity, for `timebok status`."""

    her_id: str
    role: str
    path: str
    own: bool
    not_after: datetime | None
    days_left: int | None
    problem: str | None  # None when it can be used now

    def as_dict(self) -> dict[str, Any]:
        """The `certificates` entry of `timebok status --json`."""
        return {
            "her_id": self.her_id,
            "role": self.role,
            "own": self.own,
            "path": self.path,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "days_left": self.days_left,
            "problem": self.problem,
        }


def certificate_expiry(files: Iterable[CertificateFile], now: datetime) -> list[CertificateExpiry]:
    """Validity of each configured certificate: days left, or why it cannot be used."""
    return [_expiry(item, now) for item in files]


def _expiry(item: CertificateFile, now: datetime) -> CertificateExpiry:
    try:
        cert = read_certificate(item.path, item.role, local=item.own)
    except CertificateProblem as exc:
        return CertificateExpiry(
            item.her_id, item.role, str(item.path), item.own, None, None, str(exc)
        )
    not_after = cert.not_valid_after_utc
    days_left = (not_after - now).days
    try:
        check_certificate(cert, item.role, now, local=item.own)
        problem = None
    except CertificateProblem as exc:
        problem = str(exc)
    return CertificateExpiry(
        item.her_id, item.role, str(item.path), item.own, not_after, days_left, problem
    )
