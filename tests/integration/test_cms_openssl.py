"""Interop with an implementation we did not write: the `openssl cms` command line.

What timebok sends, openssl decrypts (with the clinic's key) and verifies (against the CA);
what openssl signs and encrypts the way Helsenorge.Messaging does, timebok accepts; what
openssl signs with a key other than the registered one, timebok refuses.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.certs import CLINIC, OWN, STRANGER, Pki, make_pki
from worker.adapters import crypto

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")

XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">'
    '<MsgInfo><Type V="DIALOG_INNBYGGER_TIMERESERVASJON"/></MsgInfo>'
    "<Tekst>Time hos fastlegen, blåbær og rødgrøt\r\n</Tekst></MsgHead>\n"
).encode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def openssl(*args: str | Path, data: bytes | None = None) -> bytes:
    """Run `openssl ARGS`; fail the test with its stderr when it exits non-zero."""
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, *map(str, args)], input=data, capture_output=True, timeout=30, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"openssl {' '.join(map(str, args))} failed: {done.stderr.decode()}")
    return done.stdout


def openssl_protect(
    pki: Pki, signer: str, recipient: str, content: bytes, tmp: Path, *extra: str | Path
) -> bytes:
    """Sign (attached, binary, SHA-256; `extra` options) then encrypt (AES-256-CBC) with openssl."""
    source = tmp / "content.xml"
    source.write_bytes(content)
    signed = tmp / "signed.der"
    openssl(
        "cms", "-sign", "-binary", "-md", "sha256", "-nodetach", "-outform", "DER",
        "-in", source, "-out", signed,
        "-signer", pki.cert(signer, "signing"), "-inkey", pki.key(signer, "signing"), *extra,
    )  # fmt: skip
    enveloped = tmp / "enveloped.der"
    openssl(
        "cms", "-encrypt", "-binary", "-aes256", "-outform", "DER",
        "-in", signed, "-out", enveloped, pki.cert(recipient, "encryption"),
    )  # fmt: skip
    return enveloped.read_bytes()


def test_openssl_decrypts_and_verifies_what_timebok_sends(pki: Pki, tmp_path: Path) -> None:
    blob = tmp_path / "from-timebok.der"
    blob.write_bytes(crypto.protect(XML, pki.keys(OWN), pki.party(CLINIC), datetime.now(UTC)))
    signed = tmp_path / "signed.der"
    openssl(
        "cms", "-decrypt", "-binary", "-inform", "DER", "-in", blob, "-out", signed,
        "-recip", pki.cert(CLINIC, "encryption"), "-inkey", pki.key(CLINIC, "encryption"),
    )  # fmt: skip
    signer = tmp_path / "signer.pem"
    content = openssl(
        "cms", "-verify", "-binary", "-inform", "DER", "-in", signed,
        "-CAfile", pki.directory / "ca.pem", "-signer", signer,
    )  # fmt: skip
    assert content == XML
    # the certificate openssl found the signature made with is our registered signing one
    assert signer.read_bytes().strip() == pki.cert(OWN, "signing").read_bytes().strip()
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", blob).decode()
    assert "aes-256-cbc" in printed
    assert "rsaEncryption" in printed


def test_openssl_refuses_what_timebok_sent_when_a_byte_is_flipped(pki: Pki, tmp_path: Path) -> None:
    """The check is not ours alone: openssl's verification fails on a changed signed byte."""
    signed = crypto.decrypt(
        crypto.protect(XML, pki.keys(OWN), pki.party(CLINIC), datetime.now(UTC)),
        pki.keys(CLINIC),
    )
    der = bytearray(signed_der(signed))
    where = der.index("blåbær".encode())
    der[where] ^= 0x01
    path = tmp_path / "tampered.der"
    path.write_bytes(bytes(der))
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(path),
         "-CAfile", str(pki.directory / "ca.pem")],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert b"Verification failure" in done.stderr or b"digest failure" in done.stderr


def signed_der(signed: object) -> bytes:
    """DER ContentInfo(SignedData) around a parsed SignedData."""
    from asn1crypto import cms as asn1_cms

    return bytes(asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def test_timebok_accepts_what_openssl_signs_and_encrypts(pki: Pki, tmp_path: Path) -> None:
    blob = openssl_protect(pki, CLINIC, OWN, XML, tmp_path)
    assert crypto.unprotect(blob, pki.keys(OWN), pki.party(CLINIC), datetime.now(UTC)) == XML


def test_timebok_refuses_what_openssl_signs_with_another_key(pki: Pki, tmp_path: Path) -> None:
    blob = openssl_protect(pki, STRANGER, OWN, XML, tmp_path)
    with pytest.raises(crypto.UnknownSigner):
        crypto.unprotect(blob, pki.keys(OWN), pki.party(CLINIC), datetime.now(UTC))


def test_timebok_refuses_what_openssl_encrypts_for_someone_else(pki: Pki, tmp_path: Path) -> None:
    blob = openssl_protect(pki, CLINIC, STRANGER, XML, tmp_path)
    with pytest.raises(crypto.CannotDecrypt):
        crypto.unprotect(blob, pki.keys(OWN), pki.party(CLINIC), datetime.now(UTC))


def test_timebok_refuses_openssl_3des(pki: Pki, tmp_path: Path) -> None:
    """Helsenorge.Messaging can be told to refuse 3DES; timebok always does."""
    signed = tmp_path / "signed.der"
    source = tmp_path / "content.xml"
    source.write_bytes(XML)
    openssl(
        "cms", "-sign", "-binary", "-md", "sha256", "-nodetach", "-outform", "DER",
        "-in", source, "-out", signed,
        "-signer", pki.cert(CLINIC, "signing"), "-inkey", pki.key(CLINIC, "signing"),
    )  # fmt: skip
    blob = openssl(
        "cms", "-encrypt", "-binary", "-des3", "-outform", "DER", "-in", signed,
        pki.cert(OWN, "encryption"),
    )  # fmt: skip
    with pytest.raises(crypto.UnsupportedProtection):
        crypto.unprotect(blob, pki.keys(OWN), pki.party(CLINIC), datetime.now(UTC))


def test_timebok_accepts_openssl_with_a_ca_chain_and_key_identifiers(
    pki: Pki, tmp_path: Path
) -> None:
    """Senders bundle the CA certificate and may name keys by subject key identifier."""
    source = tmp_path / "content.xml"
    source.write_bytes(XML)
    signed = tmp_path / "signed.der"
    openssl(
        "cms", "-sign", "-binary", "-md", "sha256", "-nodetach", "-outform", "DER", "-keyid",
        "-in", source, "-out", signed, "-certfile", pki.directory / "ca.pem",
        "-signer", pki.cert(CLINIC, "signing"), "-inkey", pki.key(CLINIC, "signing"),
    )  # fmt: skip
    blob = openssl(
        "cms", "-encrypt", "-binary", "-aes256", "-keyid", "-outform", "DER", "-in", signed,
        pki.cert(OWN, "encryption"),
    )  # fmt: skip
    assert crypto.unprotect(blob, pki.keys(OWN), pki.party(CLINIC), datetime.now(UTC)) == XML


@pytest.mark.parametrize("bundle_ca", [False, True], ids=["signer-only", "with-ca-chain"])
def test_every_flipped_byte_of_an_openssl_message_is_refused(
    pki: Pki, tmp_path: Path, bundle_ca: bool
) -> None:
    """Not only our own layout: what openssl writes is covered byte for byte too, CA included."""
    extra = ("-certfile", pki.directory / "ca.pem") if bundle_ca else ()
    blob = openssl_protect(pki, CLINIC, OWN, XML, tmp_path, *extra)
    keys, sender, now = pki.keys(OWN), pki.party(CLINIC), datetime.now(UTC)
    assert crypto.unprotect(blob, keys, sender, now) == XML
    accepted = []
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01 if position % 2 else 0x80
        try:
            crypto.unprotect(bytes(tampered), keys, sender, now)
        except crypto.CryptoError:
            continue
        accepted.append(position)
    assert accepted == []


def test_timebok_refuses_a_bundled_certificate_outside_the_signer_chain(
    pki: Pki, tmp_path: Path
) -> None:
    blob = openssl_protect(
        pki, CLINIC, OWN, XML, tmp_path, "-certfile", pki.cert(STRANGER, "signing")
    )
    with pytest.raises(crypto.InvalidSignature, match="not the signer's chain"):
        crypto.unprotect(blob, pki.keys(OWN), pki.party(CLINIC), datetime.now(UTC))
