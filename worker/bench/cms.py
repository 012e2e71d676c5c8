"""`timebok bench` CMS figures: sign + encrypt, decrypt + verify of a 5 KB message, one core."""

from __future__ import annotations

import dataclasses
import tempfile
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from worker.adapters import crypto
from worker.adapters.pki import PkiParty, make_test_pki
from worker.bench.data import CLINIC, PORTAL, reservation

CMS_SECONDS = 1.5
DISTINCT = 100  # distinct messages (and blobs): nothing a cache could remember
# A patient's own words: with them a ReserverAvtale is about 5 KB, a typical dialog message.
_TEXT = "Jeg har hatt vondt i magen i tre uker, verst om morgenen og etter måltider. " * 28


@dataclasses.dataclass(frozen=True)
class CmsParties:
    """Keys of both ends, and what each sends the other."""

    portal: crypto.OwnKeys
    clinic: crypto.OwnKeys
    portal_certs: crypto.PartyCerts
    clinic_certs: crypto.PartyCerts


@cache
def parties() -> CmsParties:
    """A throw-away test PKI for the portal and the clinic (made once per process)."""
    with tempfile.TemporaryDirectory(prefix="timebok-bench-pki-") as tmp:
        folder = Path(tmp)
        make_test_pki(folder, [PkiParty(PORTAL.her_id, PORTAL.name), PkiParty(CLINIC.her_id, "x")])
        portal = crypto.load_keys_from_dir(folder, PORTAL.her_id)
        clinic = crypto.load_keys_from_dir(folder, CLINIC.her_id)
    return CmsParties(
        portal,
        clinic,
        crypto.PartyCerts(portal.signing_cert, portal.encryption_cert),
        crypto.PartyCerts(clinic.signing_cert, clinic.encryption_cert),
    )


@cache
def documents() -> tuple[bytes, ...]:
    """DISTINCT ReserverAvtale documents of about 5 KB."""
    from mappers import message as dialog_message

    out = []
    for i in range(DISTINCT):
        doc = reservation(i)
        assert doc.request is not None  # a ReserverAvtale always has its request
        request = dataclasses.replace(doc.request, text=_TEXT)
        out.append(dialog_message.build(dataclasses.replace(doc, request=request)))
    return tuple(out)


def sign_encrypt_rate(seconds: float = CMS_SECONDS) -> float:
    """`crypto.protect` per second: what the portal sends the clinic."""
    from worker.bench.run import rate_of

    keys, now = parties(), datetime.now(UTC)
    return rate_of(
        "CMS sign + encrypt",
        list(documents()),
        lambda xml: crypto.protect(xml, keys.portal, keys.clinic_certs, now),
        seconds,
    )


def decrypt_verify_rate(seconds: float = CMS_SECONDS) -> float:
    """`crypto.unprotect` per second: what the portal receives from the clinic."""
    from worker.bench.run import rate_of

    keys, now = parties(), datetime.now(UTC)
    blobs = [crypto.protect(xml, keys.clinic, keys.portal_certs, now) for xml in documents()]
    return rate_of(
        "CMS decrypt + verify",
        blobs,
        lambda blob: crypto.unprotect(blob, keys.portal, keys.clinic_certs, now),
        seconds,
    )


def message_bytes() -> float:
    """The mean size of the measured documents (for the record)."""
    docs = documents()
    return sum(len(d) for d in docs) / len(docs)
