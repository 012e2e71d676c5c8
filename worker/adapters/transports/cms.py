"""CMS protection for the nhn transport: our keys, the parties' registered certificates."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from worker.adapters import crypto
from worker.adapters.transports.base import INVALID_FIELD_VALUE, BusRefusal, Unsendable
from worker.errors import EpjUnavailable


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CmsProtection:
    """Sign-then-encrypt for the parties we speak for; the others' certificates by HER-id.

    timebok speaks for one party (its own keys from settings); the EPJ simulator speaks for
    every simulated clinic (keys from a `timebok certs init` folder).
    """

    def __init__(
        self,
        own: Mapping[str, crypto.OwnKeys] | Callable[[], Mapping[str, crypto.OwnKeys]],
        book: crypto.CertificateBook,
        cpa_ids: Callable[[str], str | None] = lambda _her_id: None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        # A callable is read on first use: `timebok status` must run when our keys are bad.
        self._own_source = own
        self._own: dict[str, crypto.OwnKeys] | None = None
        self._lock = threading.Lock()
        self.book = book
        self.cpa_ids = cpa_ids
        self.clock = clock

    @property
    def own(self) -> dict[str, crypto.OwnKeys]:
        """Our keys by HER-id (loaded once; CertificateProblem, local, when they are bad)."""
        with self._lock:
            if self._own is None:
                source = self._own_source
                self._own = dict(source() if callable(source) else source)
            return self._own

    def seal(self, xml: bytes, from_her_id: str, to_her_id: str) -> bytes:
        """Sign as `from_her_id`, encrypt for `to_her_id`; Unsendable, nothing sent, if not."""
        now = self.clock()
        try:
            own = self.own.get(from_her_id)
            if own is None:
                raise Unsendable(f"no keys of our own for sender {from_her_id}: nothing sent")
            recipient = self.book.party(to_her_id, now)
            return crypto.protect(xml, own, recipient, now)
        except crypto.CertificateProblem as exc:
            if exc.local:  # our key or certificate: the message waits until it is fixed
                raise EpjUnavailable(f"our own certificate: {exc}") from exc
            raise Unsendable(f"cannot protect for {to_her_id}: {exc}; nothing sent") from exc
        except crypto.CryptoError as exc:
            raise Unsendable(f"cannot protect for {to_her_id}: {exc}; nothing sent") from exc

    def unseal(self, blob: bytes, from_her_id: str, to_her_id: str) -> bytes:
        """Decrypt for `to_her_id`, verify that `from_her_id`'s registered cert signed it."""
        own = self.own.get(to_her_id)
        if own is None:
            raise BusRefusal(INVALID_FIELD_VALUE, f"toHerId {to_her_id} is not a party of ours")
        now = self.clock()
        try:
            sender = self.book.party(from_her_id, now)
            return crypto.unprotect(blob, own, sender, now)
        except crypto.CryptoError as exc:
            if isinstance(exc, crypto.CertificateProblem) and exc.local:
                raise  # our own key or certificate: not the sender's fault, retried later
            raise BusRefusal(exc.condition, str(exc)) from exc

    def cpa_id(self, her_id: str) -> str | None:
        """The registered collaboration agreement id with `her_id`."""
        return self.cpa_ids(her_id)
