"""Lookup figures: `lookup_p50_ms` / `lookup_p99_ms` (uncached, against a real `epj-sim`
process), `lookup_cached_per_s`, and beside them the floor: the same transport's bare
request/reply round trip (`lookup_floor_p50_ms` / `_p99_ms`, an echo in the same process);
each again on nhn as `nhn_lookup_*`.

Run alone with `python -m worker.bench.lookups [N]` (kombu on a private Redis DB, nhn on a
private RabbitMQ vhost); `timebok bench` includes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import IO

from worker.adapters.transports.base import (
    Delivery,
    Envelope,
    Outcome,
    Transport,
    transport_headers,
)
from worker.adapters.transports.kombu import KombuTransport
from worker.bench.env import redis_db
from worker.bench.run import percentile, say
from worker.bootstrap import LightDeps
from worker.flows import lookups
from worker.settings import Settings

CLINIC = "8090001"  # the sample registry's clinic with two units
LOOKUPS = 200  # uncached lookups, one after another
CACHED_SECONDS = 2.0
ROOT = Path(__file__).resolve().parents[2]


def lookup_figures(settings: Settings, n: int = LOOKUPS) -> dict[str, float]:
    """Every lookup figure, on a private Redis DB with the simulator in its own process."""
    with redis_db(settings.broker_url) as url:
        cfg = settings.model_copy(
            update={
                "broker_url": url,
                "epj_broker_url": url,
                "epj_transport": "kombu",
                "lookup_cache_ttl": 0.0,
                "lookup_max_in_flight": 1000,
            }
        )
        with _simulator(url, {}):
            deps = LightDeps(cfg)
            try:
                out = _uncached(deps, n)
                out |= _floor(KombuTransport(url), KombuTransport(url), n)
                out["lookup_cached_per_s"] = _cached(LightDeps(cfg), url)
            finally:
                deps.epj.close()
        out |= {f"nhn_{k}": v for k, v in _on_the_bus(settings, url, n).items()}
    out["lookup_n"] = float(n)
    return out


def _on_the_bus(settings: Settings, redis_url: str, n: int) -> dict[str, float]:
    """The uncached figures again on nhn: a RabbitMQ vhost, a test PKI, CMS both ways."""
    from worker.adapters import crypto
    from worker.adapters.pki import PkiParty, make_test_pki
    from worker.adapters.registry import Registry, with_certificates
    from worker.adapters.topology import declare
    from worker.adapters.transports.nhn import BusAddress
    from worker.bench.nhn import NAMESPACE, vhost

    with vhost() as host, tempfile.TemporaryDirectory(prefix="timebok-bench-") as tmp:
        folder, own = Path(tmp), settings.own_her_id
        registry = Registry.load(settings.registry_file)
        parties = [PkiParty(own, settings.own_name)]
        parties += [PkiParty(c.her_id, c.name) for c in registry.clinics]
        pki = folder / "pki"
        make_test_pki(pki, parties)
        text = Path(settings.registry_file).read_text(encoding="utf-8")
        (folder / "registry.toml").write_text(with_certificates(text, pki), "utf-8")
        url = f"amqp://guest:guest@127.0.0.1:5672/{NAMESPACE}?vhost={host}"
        bus = BusAddress.parse(url)
        declare(bus.amqp091_url(), bus.namespace, [p.her_id for p in parties])
        cfg = settings.model_copy(
            update={
                "broker_url": redis_url,
                "epj_transport": "nhn",
                "epj_broker_url": url,
                "registry_file": folder / "registry.toml",
                "signing_key": crypto.key_path(pki, own, crypto.SIGNING),
                "signing_cert": crypto.cert_path(pki, own, crypto.SIGNING),
                "encryption_key": crypto.key_path(pki, own, crypto.ENCRYPTION),
                "encryption_cert": crypto.cert_path(pki, own, crypto.ENCRYPTION),
                "lookup_cache_ttl": 0.0,
                "lookup_max_in_flight": 1000,
            }
        )
        env = {
            "TIMEBOK_EPJ_TRANSPORT": "nhn",
            "TIMEBOK_EPJ_BROKER_URL": url,
            "TIMEBOK_REGISTRY_FILE": str(folder / "registry.toml"),
            "TIMEBOK_SIGNING_CERT": str(cfg.signing_cert),
            "TIMEBOK_ENCRYPTION_CERT": str(cfg.encryption_cert),
        }
        with _simulator(redis_url, env, keys=pki):
            deps = LightDeps(cfg)
            try:
                out = _uncached(deps, n)
                echo, ours = _bare(url), _bare(url)
                out |= _floor(echo, ours, n, protect=False)
                # The cache is the same Redis on both transports: what differs is the one
                # lookup that fills it (over the bus, CMS both ways).
                out["lookup_cached_per_s"] = _cached(LightDeps(cfg), redis_url)
            finally:
                deps.epj.close()
    return out


def _bare(url: str) -> Transport:
    """An nhn transport for the floor: envelopes sent without CMS (protect=False)."""
    from worker.adapters.transports.nhn import NhnTransport

    class _None:
        def seal(self, xml: bytes, from_her_id: str, to_her_id: str) -> bytes:
            return xml

        def unseal(self, blob: bytes, from_her_id: str, to_her_id: str) -> bytes:
            return blob

        def cpa_id(self, her_id: str) -> str | None:
            return None

    return NhnTransport(url, _None())


def _uncached(deps: LightDeps, n: int) -> dict[str, float]:
    """Sequential free-slot lookups, a different period each (the clinic answers each)."""
    today = date.today()
    lookups.free_slots(deps, lookups.SlotsQuery(CLINIC))  # connections and reply consumer up
    took: list[float] = []
    for i in range(n):
        query = lookups.SlotsQuery(CLINIC, start=today + timedelta(days=i % 14))
        began = time.perf_counter()
        lookups.free_slots(deps, query)
        took.append((time.perf_counter() - began) * 1000)
    say(f"{n} uncached lookups: p50 {percentile(took, 50):.1f} ms")
    out = {"lookup_p50_ms": percentile(took, 50), "lookup_p99_ms": percentile(took, 99)}
    # The same with a small answer (one unit, one weekday: some 20 slots, not 600): what a
    # lookup costs beyond building and reading the clinic's answer document.
    small: list[float] = []
    day = today + timedelta(days=(7 - today.weekday()) % 7 or 7)  # next Monday
    for _ in range(n):
        query = lookups.SlotsQuery(CLINIC, unit="8090002", start=day, end=day)
        began = time.perf_counter()
        lookups.free_slots(deps, query)
        small.append((time.perf_counter() - began) * 1000)
    out["lookup_one_day_p50_ms"] = percentile(small, 50)
    out["lookup_one_day_p99_ms"] = percentile(small, 99)
    return out


def _cached(deps: LightDeps, url: str) -> float:
    """Cached answers per second for CACHED_SECONDS (one caller)."""
    cached = deps.settings.model_copy(update={"lookup_cache_ttl": 60.0, "cache_url": url})
    deps.settings = cached
    query = lookups.SlotsQuery(CLINIC)
    lookups.invalidate(deps, CLINIC)  # the other transport's run cached the same question
    assert lookups.free_slots(deps, query)["cached"] is False
    count, end = 0, time.perf_counter() + CACHED_SECONDS
    while time.perf_counter() < end:
        if not lookups.free_slots(deps, query)["cached"]:
            raise RuntimeError("a lookup that should have been cached went to the clinic")
        count += 1
    deps.epj.close()
    return count / CACHED_SECONDS


def _floor(clinic: Transport, ours: Transport, n: int, *, protect: bool = True) -> dict[str, float]:
    """The transport's bare synchronous round trip: an echo answering at once."""
    # Queues of two parties nobody plays here (on nhn only declared queues can be used).
    sync, reply = "8090010_sync", "8090020_syncreply"
    if clinic.name == "kombu":  # private queues: nothing else reads them
        sync, reply = (
            f"floor-{uuid.uuid4().hex[:8]}_sync",
            f"floor-{uuid.uuid4().hex[:8]}_syncreply",
        )
    stop = threading.Event()

    def echo(d: Delivery) -> Outcome:
        answer = Envelope(d.reply_to or reply, b"<A/>", d.headers, None, d.correlation_id)
        clinic.publish(replace(answer, protect=protect))
        return Outcome.ACCEPT

    sub = clinic.subscribe([sync], echo)
    thread = threading.Thread(target=lambda: [sub.drain(0.2) for _ in iter(stop.is_set, True)])
    thread.start()
    took: list[float] = []
    try:
        for i in range(n + 1):
            headers = transport_headers(
                from_her_id="1", to_her_id="2", msg_id=str(uuid.uuid4()), msg_type="T"
            )
            began = time.perf_counter()
            asked = Envelope(sync, b"<Q/>", headers, protect=protect)
            if ours.request(asked, reply, 10) is None:
                raise RuntimeError("the echo did not answer")
            if i:  # the first sets up the reply consumer
                took.append((time.perf_counter() - began) * 1000)
    finally:
        stop.set()
        thread.join(5)
        sub.close()
        clinic.close()
        ours.close()
    return {
        "lookup_floor_p50_ms": percentile(took, 50),
        "lookup_floor_p99_ms": percentile(took, 99),
    }


@contextmanager
def _simulator(url: str, extra: dict[str, str], keys: Path | None = None) -> Iterator[None]:
    """`timebok epj-sim` for the sample clinic, answering at once."""
    env = {**os.environ, "TIMEBOK_BROKER_URL": url, "TIMEBOK_EPJ_BROKER_URL": url}
    env.pop("TIMEBOK_EPJ_TRANSPORT", None)
    env |= extra
    cmd = [sys.executable, "-m", "worker.entrypoints.cli", "epj-sim", "--clinic", CLINIC]
    if keys is not None:
        cmd += ["--keys", str(keys)]
    proc = subprocess.Popen(
        [*cmd, "--delay", "0", "--seed", "1"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "epj-sim: consuming ..." once it listens
        if b"consuming" not in line:
            raise RuntimeError(f"epj-sim did not start: {line!r}")
        log = Path(tempfile.gettempdir()) / f"timebok-bench-sim-{os.getpid()}.log"
        threading.Thread(target=_copy, args=(proc.stderr, log), daemon=True).start()
        yield
    finally:
        proc.terminate()
        proc.wait(15)


def _copy(stream: IO[bytes], path: Path) -> None:
    """Keep the simulator's lines (never let its pipe fill up)."""
    with path.open("ab") as out:
        for line in stream:
            out.write(line)
            out.flush()


def main() -> int:
    """Print the lookup figures as `name=value` lines."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else LOOKUPS
    for name, value in lookup_figures(Settings(), n).items():
        print(f"{name}={value:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
