"""The simulator on the national bus: the clinics' keys, the portal's registered certificates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.adapters import crypto
from worker.adapters.registry import Clinic
from worker.adapters.transports.base import Transport
from worker.adapters.transports.kombu import KombuTransport


@dataclass
class _Certs:  # not frozen: crypto.ClinicCertificates has plain attributes
    her_id: str
    signing_cert: Path | None
    encryption_cert: Path | None


def keys_folder(settings: Any, given: Path | None) -> Path | None:
    """`--keys DIR`, else the folder of TIMEBOK_SIGNING_CERT (where `certs init` put them all)."""
    if given is not None:
        return given
    cert = getattr(settings, "signing_cert", None)
    return Path(cert).parent if cert else None


# The simulator holds each message unsettled until its reply is out (`--delay` seconds), as
# it holds it unacked on kombu, where nothing limits how many: the worker's link credit
# (one more per settlement) would cap it at LINK_CREDIT / delay messages a second.
SIM_LINK_CREDIT = 1000


def make_transport(settings: Any, clinics: Sequence[Clinic], keys: Path | None) -> Transport:
    """kombu as the worker has it, or nhn speaking for every simulated clinic with its keys."""
    if getattr(settings, "epj_transport", "kombu") != "nhn":
        return KombuTransport(settings.epj_url)
    from worker.adapters.transports.cms import CmsProtection
    from worker.adapters.transports.nhn import NhnTransport

    if keys is None:
        raise ValueError("on nhn the simulator needs the clinics' keys: --keys DIR")
    own = {
        c.her_id: crypto.load_keys_from_dir(keys, c.her_id)
        for c in clinics
        if crypto.key_path(keys, c.her_id, crypto.SIGNING).exists()
    }
    portal = _Certs(settings.own_her_id, settings.signing_cert, settings.encryption_cert)

    def lookup(her_id: str) -> crypto.ClinicCertificates | None:
        return portal if her_id == portal.her_id else None

    protection = CmsProtection(own, crypto.CertificateBook(lookup))
    return NhnTransport(settings.epj_url, protection, credit=SIM_LINK_CREDIT)
