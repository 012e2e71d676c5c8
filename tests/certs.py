"""A throw-away test PKI (the one `timebok certs init` writes) and its keys, for CMS tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from worker.adapters import crypto
from worker.adapters.pki import PkiParty, cert_path, key_path, make_test_pki

OWN = "8093244"
CLINIC = "8090001"
STRANGER = "8099999"  # a party with keys of its own that nobody registered for the clinic


@dataclass(frozen=True)
class Pki:
    """Files of a test PKI in `directory`, with loaders."""

    directory: Path

    def keys(self, her_id: str, previous: str | None = None) -> crypto.OwnKeys:
        """A party's private side; `previous` names a PKI dir whose encryption key was before."""
        keys = crypto.load_keys_from_dir(self.directory, her_id)
        if previous is None:
            return keys
        old = crypto.read_private_key(
            key_path(Path(previous), her_id, crypto.ENCRYPTION), "previous key"
        )
        return crypto.OwnKeys(
            keys.signing_key, keys.signing_cert, keys.encryption_key, keys.encryption_cert, old
        )

    def party(self, her_id: str) -> crypto.PartyCerts:
        """A party's public certificates, as the registry would give them."""
        return crypto.load_party_certs(
            self.cert(her_id, "signing"), self.cert(her_id, "encryption")
        )

    def cert(self, her_id: str, role: str) -> Path:
        """`<her_id>-<role>.pem`."""
        return cert_path(self.directory, her_id, role)

    def key(self, her_id: str, role: str) -> Path:
        """`<her_id>-<role>.key`."""
        return key_path(self.directory, her_id, role)

    def env(self, her_id: str) -> dict[str, str]:
        """The TIMEBOK_* settings naming this party's key files."""
        return {
            "TIMEBOK_SIGNING_KEY": str(self.key(her_id, "signing")),
            "TIMEBOK_SIGNING_CERT": str(self.cert(her_id, "signing")),
            "TIMEBOK_ENCRYPTION_KEY": str(self.key(her_id, "encryption")),
            "TIMEBOK_ENCRYPTION_CERT": str(self.cert(her_id, "encryption")),
        }


def make_pki(
    directory: Path,
    her_ids: tuple[str, ...] = (OWN, CLINIC, STRANGER),
    *,
    days: int = 365,
    now: datetime | None = None,
    usage: dict[str, dict[str, bool]] | None = None,
) -> Pki:
    """A CA and signing + encryption pairs for each HER-id."""
    parties = [PkiParty(her_id, f"Party {her_id}") for her_id in her_ids]
    make_test_pki(directory, parties, days=days, now=now or datetime.now(UTC), usage=usage)
    return Pki(directory)
