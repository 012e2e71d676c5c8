"""Lookup figures: `lookup_p50_ms` / `lookup_p99_ms` (uncached, against a real `epj-sim`
process), `lookup_cached_per_s`, and beside them the floor: the same transport's bare
request/reply round trip (`lookup_floor_p50_ms` / `_p99_ms`, an echo in the same process).

Run alone with `python -m worker.bench.lookups` (kombu on a private Redis DB); `timebok
bench` includes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

from worker.adapters.transports.base import Delivery, Envelope, Outcome, transport_headers
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
        with _simulator(url):
            deps = LightDeps(cfg)
            try:
                out = _uncached(deps, n)
                out |= _floor(url, n)
                out["lookup_cached_per_s"] = _cached(LightDeps(cfg), url)
            finally:
                deps.epj.close()
    out["lookup_n"] = float(n)
    return out


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
    assert lookups.free_slots(deps, query)["cached"] is False
    count, end = 0, time.perf_counter() + CACHED_SECONDS
    while time.perf_counter() < end:
        if not lookups.free_slots(deps, query)["cached"]:
            raise RuntimeError("a lookup that should have been cached went to the clinic")
        count += 1
    deps.epj.close()
    return count / CACHED_SECONDS


def _floor(url: str, n: int) -> dict[str, float]:
    """The transport's bare synchronous round trip: an echo answering at once."""
    clinic, ours = KombuTransport(url), KombuTransport(url)
    sync, reply = f"floor-{uuid.uuid4().hex[:8]}_sync", f"floor-{uuid.uuid4().hex[:8]}_syncreply"
    stop = threading.Event()

    def echo(d: Delivery) -> Outcome:
        clinic.publish(Envelope(d.reply_to or reply, b"<A/>", d.headers, None, d.correlation_id))
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
            if ours.request(Envelope(sync, b"<Q/>", headers), reply, 10) is None:
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
def _simulator(url: str) -> Iterator[None]:
    """`timebok epj-sim` for the sample clinic, answering at once."""
    env = {**os.environ, "TIMEBOK_BROKER_URL": url, "TIMEBOK_EPJ_BROKER_URL": url}
    env.pop("TIMEBOK_EPJ_TRANSPORT", None)
    cmd = [sys.executable, "-m", "worker.entrypoints.cli", "epj-sim", "--clinic", CLINIC]
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
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # never block it
        yield
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> int:
    """Print the lookup figures as `name=value` lines."""
    for name, value in lookup_figures(Settings()).items():
        print(f"{name}={value:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
