"""CMS sign-then-encrypt: round trip, tampering, wrong keys, rollover, signer, certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import cms as asn1_cms
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from tests.certs import CLINIC, OWN, STRANGER, Pki, make_pki
from worker.adapters import crypto
from worker.adapters.crypto import (
    CannotDecrypt,
    CertificateProblem,
    CryptoError,
    InvalidSignature,
    UnknownSigner,
    UnsupportedProtection,
)
from worker.adapters.registry import Registry

XML = '<?xml version="1.0" encoding="UTF-8"?><MsgHead><T>Blåbærsyltetøy</T></MsgHead>'.encode()
NOW = datetime.now(UTC)


def _pki(directory: Path, *args: Any, **kwargs: Any) -> Pki:
    """A test PKI whose certificates start before NOW, however long the test run has taken."""
    return make_pki(directory, *args, now=NOW, **kwargs)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def blob(pki: Pki) -> bytes:
    """What we send the clinic."""
    return crypto.protect(XML, pki.keys(OWN), pki.party(CLINIC), NOW)


def _signed(pki: Pki, her_id: str, content: bytes, *options: pkcs7.PKCS7Options) -> bytes:
    keys = pki.keys(her_id)
    return (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(content)
        .add_signer(keys.signing_cert, keys.signing_key, hashes.SHA256())
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary, *options])
    )


def _enveloped(signed: bytes, pki: Pki, to: str, cipher: type = algorithms.AES256) -> bytes:
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(signed)
        .add_recipient(pki.party(to).encryption)
        .set_content_encryption_algorithm(cipher)
        .encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
    )


def test_round_trip_gives_the_xml_bytes_back(pki: Pki, blob: bytes) -> None:
    assert crypto.unprotect(blob, pki.keys(CLINIC), pki.party(OWN), NOW) == XML


def test_the_blob_is_enveloped_data_around_signed_data_with_the_algorithms_of_the_bus(
    pki: Pki, blob: bytes
) -> None:
    info = asn1_cms.ContentInfo.load(blob)
    assert info["content_type"].native == "enveloped_data"
    enveloped = info["content"]
    algorithm = enveloped["encrypted_content_info"]["content_encryption_algorithm"]
    assert algorithm["algorithm"].dotted == "2.16.840.1.101.3.4.1.42"  # AES-256-CBC
    recipient = enveloped["recipient_infos"][0].chosen
    assert recipient["key_encryption_algorithm"]["algorithm"].dotted == "1.2.840.113549.1.1.1"
    assert (
        recipient["rid"].chosen["serial_number"].native
        == pki.party(CLINIC).encryption.serial_number
    )
    signed = crypto.decrypt(blob, pki.keys(CLINIC))
    assert signed["encap_content_info"]["content"].native == XML  # attached
    signer = signed["signer_infos"][0]
    assert signer["digest_algorithm"]["algorithm"].native == "sha256"
    assert signer["sid"].chosen["serial_number"].native == pki.party(OWN).signing.serial_number
    embedded = [c.dump() for c in signed["certificates"]]
    assert embedded == [pki.party(OWN).signing.public_bytes(serialization.Encoding.DER)]


def test_every_single_flipped_byte_is_refused(pki: Pki, blob: bytes) -> None:
    """Anywhere: envelope, wrapped key, IV, ciphertext (the signed data, certificate, XML)."""
    keys, sender = pki.keys(CLINIC), pki.party(OWN)
    accepted, crashed = [], []
    for position in range(len(blob)):
        for mask in (0x01, 0x80) if position % 2 else (0xFF, 0x10):
            tampered = bytearray(blob)
            tampered[position] ^= mask
            try:
                crypto.unprotect(bytes(tampered), keys, sender, NOW)
            except CryptoError:
                continue
            except Exception as exc:
                crashed.append((position, mask, repr(exc)))
                continue
            accepted.append((position, mask))
    assert accepted == []
    assert crashed == []


def test_a_truncated_or_extended_blob_is_refused(pki: Pki, blob: bytes) -> None:
    keys, sender = pki.keys(CLINIC), pki.party(OWN)
    for tampered in (blob[:-1], blob[:-16], blob + b"\x00", b"", blob[: len(blob) // 2]):
        with pytest.raises(CannotDecrypt):
            crypto.unprotect(tampered, keys, sender, NOW)


def test_plain_xml_is_not_cms(pki: Pki) -> None:
    with pytest.raises(CannotDecrypt, match="not CMS"):
        crypto.unprotect(XML, pki.keys(CLINIC), pki.party(OWN), NOW)


def test_a_message_for_another_recipient_cannot_be_decrypted(pki: Pki, blob: bytes) -> None:
    with pytest.raises(CannotDecrypt) as caught:
        crypto.unprotect(blob, pki.keys(STRANGER), pki.party(OWN), NOW)
    assert caught.value.condition == "transport:invalid-certificate"


def test_the_wrong_key_with_our_certificate_cannot_decrypt(pki: Pki, blob: bytes) -> None:
    """The recipient entry names our certificate but the key is another: no garbage comes out."""
    right = pki.keys(CLINIC)
    wrong = crypto.OwnKeys(
        right.signing_key,
        right.signing_cert,
        pki.keys(STRANGER).encryption_key,
        right.encryption_cert,
    )
    with pytest.raises(CannotDecrypt):
        crypto.unprotect(blob, wrong, pki.party(OWN), NOW)


def test_previous_key_is_accepted_during_a_rollover(tmp_path: Path, pki: Pki) -> None:
    """The clinic still encrypts for our old certificate; we have a new one and keep the old key."""
    old_blob = crypto.protect(XML, pki.keys(CLINIC), pki.party(OWN), NOW)
    rolled = _pki(tmp_path / "new", (OWN,))
    new_keys = rolled.keys(OWN, previous=str(pki.directory))
    assert crypto.unprotect(old_blob, new_keys, pki.party(CLINIC), NOW) == XML
    # and a message for the new certificate decrypts with the current key
    new_blob = crypto.protect(XML, pki.keys(CLINIC), rolled.party(OWN), NOW)
    assert crypto.unprotect(new_blob, new_keys, pki.party(CLINIC), NOW) == XML
    # without the previous key the old message is refused
    with pytest.raises(CannotDecrypt):
        crypto.unprotect(old_blob, rolled.keys(OWN), pki.party(CLINIC), NOW)


def test_a_current_key_that_does_not_open_the_message_falls_through_to_the_previous(
    pki: Pki, blob: bytes
) -> None:
    """The recipient entry names our certificate, the current key fails: the previous is tried."""
    right = pki.keys(CLINIC)
    stranger = pki.keys(STRANGER).encryption_key
    keys = crypto.OwnKeys(
        right.signing_key, right.signing_cert, stranger, right.encryption_cert, right.encryption_key
    )
    assert crypto.unprotect(blob, keys, pki.party(OWN), NOW) == XML


def test_previous_key_from_settings(tmp_path: Path, pki: Pki) -> None:
    rolled = _pki(tmp_path / "new", (OWN,))
    settings = _Settings(rolled, OWN, previous=pki.key(OWN, "encryption"))
    keys = crypto.load_own_keys(settings, NOW)
    assert keys.previous_encryption_key is not None
    old_blob = crypto.protect(XML, pki.keys(CLINIC), pki.party(OWN), NOW)
    assert crypto.unprotect(old_blob, keys, pki.party(CLINIC), NOW) == XML


def test_signed_by_another_party_is_an_unknown_signer(pki: Pki) -> None:
    """A stranger signs with its own key and encrypts for us, claiming to be the clinic."""
    forged = crypto.protect(XML, pki.keys(STRANGER), pki.party(OWN), NOW)
    with pytest.raises(UnknownSigner) as caught:
        crypto.unprotect(forged, pki.keys(OWN), pki.party(CLINIC), NOW)
    assert caught.value.condition == "transport:invalid-certificate"


def test_a_signature_without_the_signer_certificate_is_refused(pki: Pki) -> None:
    """As Helsenorge.Messaging: the registered certificate must travel in the message."""
    signed = _signed(pki, CLINIC, XML, pkcs7.PKCS7Options.NoCerts)
    with pytest.raises(UnknownSigner, match="not in the message"):
        crypto.unprotect(_enveloped(signed, pki, OWN), pki.keys(OWN), pki.party(CLINIC), NOW)


def test_content_swapped_under_a_good_signature_fails_the_digest(pki: Pki) -> None:
    info = asn1_cms.ContentInfo.load(_signed(pki, CLINIC, XML))
    info["content"]["encap_content_info"]["content"] = XML.replace(b"Bl", b"Gr")
    blob = _enveloped(info.dump(force=True), pki, OWN)
    with pytest.raises(InvalidSignature, match="digest"):
        crypto.unprotect(blob, pki.keys(OWN), pki.party(CLINIC), NOW)


def test_a_signature_over_other_attributes_fails(pki: Pki) -> None:
    """Signed attributes of one message with the signature value of another."""
    one = asn1_cms.ContentInfo.load(_signed(pki, CLINIC, XML))
    other = asn1_cms.ContentInfo.load(_signed(pki, CLINIC, XML + b" "))
    one["content"]["signer_infos"][0]["signature"] = other["content"]["signer_infos"][0][
        "signature"
    ].native
    blob = _enveloped(one.dump(force=True), pki, OWN)
    with pytest.raises(InvalidSignature, match="does not verify"):
        crypto.unprotect(blob, pki.keys(OWN), pki.party(CLINIC), NOW)


def test_detached_signature_is_refused(pki: Pki) -> None:
    signed = _signed(pki, CLINIC, XML, pkcs7.PKCS7Options.DetachedSignature)
    with pytest.raises(InvalidSignature, match="attached"):
        crypto.unprotect(_enveloped(signed, pki, OWN), pki.keys(OWN), pki.party(CLINIC), NOW)


def test_enveloped_data_that_is_not_signed_is_refused(pki: Pki) -> None:
    blob = _enveloped(XML, pki, OWN)
    with pytest.raises(CannotDecrypt):
        crypto.unprotect(blob, pki.keys(OWN), pki.party(CLINIC), NOW)


def test_aes_128_content_encryption_is_unsupported(pki: Pki) -> None:
    blob = _enveloped(_signed(pki, CLINIC, XML), pki, OWN, cipher=algorithms.AES128)
    with pytest.raises(UnsupportedProtection) as caught:
        crypto.unprotect(blob, pki.keys(OWN), pki.party(CLINIC), NOW)
    assert caught.value.condition == "transport:unsupported-message"


def test_non_der_length_in_the_envelope_is_refused(pki: Pki, blob: bytes) -> None:
    """asn1crypto alone reads `02 81 00` as the INTEGER 0: the strict DER check must not."""
    tampered = bytearray(blob)
    assert tampered[23:26] == b"\x02\x01\x00"  # EnvelopedData version
    tampered[24] = 0x81
    with pytest.raises(CannotDecrypt):
        crypto.unprotect(bytes(tampered), pki.keys(CLINIC), pki.party(OWN), NOW)


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        (b"\x30\x03\x02\x01\x00", True),
        (b"\x30\x03\x02\x81\x00", False),  # long form for a zero length
        (b"\x30\x80\x02\x01\x00\x00\x00", False),  # indefinite length
        (b"\x30\x04\x02\x02\x00\x05", False),  # integer with a needless leading zero
        (b"\x30\x81\x03\x02\x01\x00", False),  # long form for a short length
        (b"\x24\x03\x04\x01\x00", False),  # constructed OCTET STRING
        (b"\x05\x01\x00", False),  # NULL with content
        (b"\x30\x03\x02\x01\x00\x00", False),  # trailing byte
    ],
)
def test_check_der(data: bytes, ok: bool) -> None:
    if ok:
        crypto.check_der(data)
    else:
        with pytest.raises(ValueError):  # noqa: PT011 - the messages vary by rule
            crypto.check_der(data)


# --- certificates ---------------------------------------------------------------------------


class _Settings:
    def __init__(self, pki: Pki, her_id: str, previous: Path | None = None) -> None:
        self.signing_key: Path | None = pki.key(her_id, "signing")
        self.signing_cert: Path | None = pki.cert(her_id, "signing")
        self.encryption_key: Path | None = pki.key(her_id, "encryption")
        self.encryption_cert: Path | None = pki.cert(her_id, "encryption")
        self.previous_encryption_key = previous


def test_load_own_keys_needs_every_setting(pki: Pki) -> None:
    settings = _Settings(pki, OWN)
    settings.encryption_cert = None
    with pytest.raises(CertificateProblem, match="TIMEBOK_ENCRYPTION_CERT") as caught:
        crypto.load_own_keys(settings, NOW)
    assert caught.value.local
    assert caught.value.condition == "transport:missing-certificate"


def test_load_own_keys_refuses_a_key_of_another_certificate(pki: Pki) -> None:
    settings = _Settings(pki, OWN)
    settings.signing_key = pki.key(CLINIC, "signing")
    with pytest.raises(CertificateProblem, match="is not the key of"):
        crypto.load_own_keys(settings, NOW)


def test_missing_certificate_file(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(CertificateProblem, match="cannot read") as caught:
        crypto.load_party_certs(tmp_path / "absent.pem", pki.cert(CLINIC, "encryption"))
    assert caught.value.condition == "transport:missing-certificate"
    assert not caught.value.local


@pytest.fixture(scope="module")
def expired(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _pki(tmp_path_factory.mktemp("expired"), (OWN, CLINIC), days=-1)


def test_expired_certificates_are_refused_on_load(expired: Pki) -> None:
    with pytest.raises(CertificateProblem, match="expired") as caught:
        expired.party(CLINIC)
    assert caught.value.condition == "transport:expired-certificate"
    with pytest.raises(CertificateProblem, match="expired"):
        expired.keys(OWN)


def test_certificate_that_expires_between_load_and_use_is_refused_on_use(
    pki: Pki, blob: bytes
) -> None:
    later = pki.party(OWN).signing.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(CertificateProblem, match="expired") as caught:
        crypto.unprotect(blob, pki.keys(CLINIC), pki.party(OWN), later)
    assert caught.value.condition == "transport:expired-certificate"
    assert not caught.value.local
    with pytest.raises(CertificateProblem, match="expired") as caught:
        crypto.protect(XML, pki.keys(OWN), pki.party(CLINIC), later)
    assert caught.value.local  # our own signing certificate is the first to be checked


def test_our_own_expired_encryption_certificate_is_refused_on_use(pki: Pki, tmp_path: Path) -> None:
    short = _pki(tmp_path, (CLINIC,), days=2)
    blob = crypto.protect(XML, pki.keys(OWN), short.party(CLINIC), NOW)
    keys = short.keys(CLINIC)
    with pytest.raises(CertificateProblem, match=r"encryption certificate .* expired") as caught:
        crypto.unprotect(blob, keys, pki.party(OWN), NOW + timedelta(days=3))
    assert caught.value.local  # ours: not the sender's to be told
    assert crypto.unprotect(blob, keys, pki.party(OWN), NOW + timedelta(days=1)) == XML


def test_not_yet_valid_certificate_is_refused(pki: Pki, blob: bytes) -> None:
    before = pki.party(OWN).signing.not_valid_before_utc - timedelta(seconds=1)
    with pytest.raises(CertificateProblem, match="not valid before"):
        crypto.unprotect(blob, pki.keys(CLINIC), pki.party(OWN), before)


def test_wrong_key_usage_is_refused(tmp_path: Path) -> None:
    # signing certificates with digitalSignature only, encryption ones with dataEncipherment only
    swapped = _pki(
        tmp_path,
        (OWN, CLINIC),
        usage={"signing": {"digital_signature": True}, "encryption": {"data_encipherment": True}},
    )
    with pytest.raises(CertificateProblem, match="nonRepudiation") as caught:
        swapped.party(CLINIC)
    assert caught.value.condition == "transport:invalid-certificate"
    with pytest.raises(CertificateProblem, match="nonRepudiation"):
        swapped.keys(OWN)
    with pytest.raises(CertificateProblem, match="keyEncipherment"):
        crypto.load_party_certs(
            _pki(tmp_path / "ok", (CLINIC,)).cert(CLINIC, "signing"),
            swapped.cert(CLINIC, "encryption"),
        )


def test_certificate_expiry_reports_days_left_and_problems(
    pki: Pki, expired: Pki, tmp_path: Path
) -> None:
    files = [
        crypto.CertificateFile(OWN, "signing", pki.cert(OWN, "signing"), own=True),
        crypto.CertificateFile(CLINIC, "encryption", expired.cert(CLINIC, "encryption"), own=False),
        crypto.CertificateFile(CLINIC, "signing", tmp_path / "absent.pem", own=False),
    ]
    good, old, absent = crypto.certificate_expiry(files, NOW)
    assert good.problem is None
    assert good.days_left in (364, 365)
    assert old.days_left is not None and old.days_left < 0
    assert old.problem is not None and "expired" in old.problem
    assert absent.not_after is None and absent.problem is not None
    assert good.as_dict()["not_after"] == pki.party(OWN).signing.not_valid_after_utc.isoformat()


def test_certificate_book_reads_registered_certificates_once(pki: Pki) -> None:
    registry = Registry.from_mapping(
        {
            "clinic": [
                {
                    "her_id": int(CLINIC),
                    "name": "Testlegekontoret",
                    "processes": ["timeonske"],
                    "signing_cert": str(pki.cert(CLINIC, "signing")),
                    "encryption_cert": str(pki.cert(CLINIC, "encryption")),
                    "unit": [{"her_id": 8090002, "name": "Fastlegen"}],
                },
                {"her_id": 8090010, "name": "Uten sertifikat", "processes": ["timeonske"]},
            ]
        }
    )
    book = crypto.CertificateBook(registry.clinic)
    certs = book.party(CLINIC)
    assert certs == pki.party(CLINIC)
    assert book.party("8090002") is book.party("8090002")  # a unit: its clinic's certificates
    with pytest.raises(CertificateProblem, match="8090010 has no signing_cert") as caught:
        book.party("8090010")
    assert caught.value.condition == "transport:missing-certificate"
    with pytest.raises(CertificateProblem, match="9999999"):
        book.party("9999999")
