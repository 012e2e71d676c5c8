"""`timebok bench`: throughput and latency of the real worker, against Celery's own ceiling.

One run on real Redis and PostgreSQL (a private Redis DB and schema, both removed afterwards)
with one worker subprocess: `timebok worker` exactly (prefork, concurrency 2, the production
Celery settings) plus a bare no-op task. Every drain is measured the same way, so the ratios
are fair: the worker is frozen (SIGSTOP), N messages are pre-enqueued, the worker is thawed
(SIGCONT) and the rate is taken from the first to the last completion. The three drains run
twice, interleaved, and the best rate of each counts (`--rounds`). A drain's latencies
count from the thaw (N arriving as one burst); the paced runs measure enqueue -> result at
half the peak rate.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeVar

from mappers.model import DialogMessage
from worker.bench import cms
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.bench.rig import Rig

REQUIRED = (
    "noop_per_s",
    "outbound_per_s",
    "inbound_per_s",
    "outbound_ratio",
    "inbound_ratio",
    "mapping_per_s",
    "outbound_p50_ms",
    "outbound_p99_ms",
    "inbound_p50_ms",
    "inbound_p99_ms",
    "worker_rss_mb",
    "cli_start_ms",
)
SECTIONS = ("kombu", "nhn", "lookups")  # what `--only` can select; all of them by default
RESULTS_FILE = Path("bench-results.json")
PACED_SECONDS = 3.0  # length of each half-rate run
ROUNDS = 2  # each drain this many times, the best counts
MAPPING_SECONDS = 1.5
T = TypeVar("T")


class BenchError(Exception):
    """The benchmark cannot run here or a scenario did not finish; the message says why."""


# -- pure parts -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def per_second(stamps: Sequence[float]) -> float:
    """Completions per second from the first to the last completion time (seconds)."""
    span = max(stamps) - min(stamps) if len(stamps) > 1 else 0.0
    if span <= 0:
        raise ValueError("need two completions at different times")
    return (len(stamps) - 1) / span


def latency_ms(done: Mapping[str, float], start: Mapping[str, float] | float) -> list[float]:
    """Milliseconds from each item's start (or one common start) to its completion."""
    if isinstance(start, float | int):
        return [(t - start) * 1000 for t in done.values()]
    return [(t - start[key]) * 1000 for key, t in done.items()]


def format_value(name: str, value: float) -> str:
    """Ratios with three decimals, CPU milliseconds with two, everything else with one."""
    if name.endswith("_ratio"):
        return f"{value:.3f}"
    return f"{value:.2f}" if name.endswith("_cpu_ms") else f"{value:.1f}"


def format_lines(results: Mapping[str, float]) -> list[str]:
    """`name=value` lines: the required figures in their order, then any extras."""
    names = [n for n in REQUIRED if n in results] + [n for n in results if n not in REQUIRED]
    return [f"{name}={format_value(name, results[name])}" for name in names]


def write_json(results: Mapping[str, float], path: Path) -> None:
    """The same figures as JSON, rounded as printed."""
    data = {line.split("=", 1)[0]: float(line.split("=", 1)[1]) for line in format_lines(results)}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# -- the command ------------------------------------------------------------------------------


def parse_sections(text: str) -> tuple[str, ...]:
    """`kombu,nhn` -> the sections in their run order; ValueError naming an unknown one."""
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(wanted - set(SECTIONS))
    if unknown or not wanted:
        raise ValueError(f"unknown section {', '.join(unknown) or '(none)'}: {', '.join(SECTIONS)}")
    return tuple(name for name in SECTIONS if name in wanted)


def run(settings: Settings, n: int, rounds: int = ROUNDS, only: Sequence[str] = SECTIONS) -> int:
    """`timebok bench`: print one `name=value` line per figure and write bench-results.json."""
    if n < 20:
        print("timebok bench: --n must be at least 20", file=sys.stderr)
        return 2
    if rounds < 1:
        print("timebok bench: --rounds must be at least 1", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = measure(settings, n, rounds, only)
    except BenchError as exc:
        print(f"timebok bench: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    for line in format_lines(results):
        print(line)
    write_json(results, RESULTS_FILE)
    say(f"wrote {RESULTS_FILE}")
    return 0


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: every started process is stopped


def say(line: str) -> None:
    """Progress on stderr."""
    print(f"bench: {line}", file=sys.stderr, flush=True)


def measure(
    settings: Settings, n: int, rounds: int = ROUNDS, only: Sequence[str] = SECTIONS
) -> dict[str, float]:
    """Set up the private stacks of the selected sections, run their scenarios, tear down.

    The nhn ratios divide by kombu drains run in turn with the nhn ones (both workers up,
    kombu outbound, nhn outbound, kombu inbound, nhn inbound, each round), so a machine
    whose speed drifts from minute to minute weighs on both sides alike. With `nhn` alone
    those kombu drains are the kombu figures printed (no no-op, mapping, half-rate or CLI).
    """
    from worker.bench.nhn import nhn_scenarios, nhn_stack
    from worker.bench.rig import private_stack

    results: dict[str, float] = {}
    with ExitStack() as stack:
        if "kombu" in only or "nhn" in only:
            rig = stack.enter_context(private_stack(settings, n))
            if "kombu" in only:
                results = scenarios(rig, n, rounds)
            if "nhn" in only:
                bus = stack.enter_context(nhn_stack(settings, n))
                results |= nhn_scenarios(bus, rig, n, rounds, "kombu" not in only)
                if "kombu" not in only:
                    results["cms_sign_encrypt_per_s"] = rig.frozen(cms.sign_encrypt_rate)
                    results["cms_decrypt_verify_per_s"] = rig.frozen(cms.decrypt_verify_rate)
                    results["n"], results["rounds"] = float(n), float(rounds)
    if "lookups" in only:
        from worker.bench.lookups import lookup_figures

        results |= lookup_figures(settings)
    return results


def scenarios(rig: Rig, n: int, rounds: int = ROUNDS) -> dict[str, float]:
    """noop, outbound, inbound (`rounds` times, best of each), mapping, half-rate runs, RSS.

    The machine is shared: a drain can lose the CPU to a neighbour. Each of the three drains
    runs `rounds` times, interleaved, and the best rate of each counts (its latencies too),
    the same rule for the no-op ceiling as for timebok's own work.
    """
    noop = rig.noop(n)
    outbound = rig.outbound(n)
    inbound = rig.inbound(outbound.docs)
    for _ in range(rounds - 1):
        noop = max(noop, rig.noop(n), key=_rate)
        out = rig.outbound(n)
        inbound = max(inbound, rig.inbound(out.docs), key=_rate)
        outbound = max(outbound, out, key=_rate)
    results: dict[str, float] = {"noop_per_s": noop.rate}
    results["outbound_per_s"], results["inbound_per_s"] = outbound.rate, inbound.rate
    results["outbound_ratio"] = outbound.rate / noop.rate
    results["inbound_ratio"] = inbound.rate / noop.rate
    results["mapping_per_s"] = rig.frozen(mapping_rate)
    results["lxml_per_s"] = rig.frozen(lxml_rate)
    results["mapping_vs_lxml_ratio"] = results["mapping_per_s"] / results["lxml_per_s"]
    results["cms_sign_encrypt_per_s"] = rig.frozen(cms.sign_encrypt_rate)
    results["cms_decrypt_verify_per_s"] = rig.frozen(cms.decrypt_verify_rate)
    _latencies(results, "outbound", outbound.latencies)
    _latencies(results, "inbound", inbound.latencies)
    paced_out = rig.paced_outbound(outbound.rate / 2, PACED_SECONDS)
    paced_in = rig.paced_inbound(paced_out.docs, inbound.rate / 2)
    _latencies(results, "outbound", paced_out.latencies, "_half_rate")
    _latencies(results, "inbound", paced_in.latencies, "_half_rate")
    for name, drained in (("noop", noop), ("outbound", outbound), ("inbound", inbound)):
        results[f"{name}_worker_cpu_ms"] = drained.cpu_ms
    results["cli_start_ms"], results["cli_start_cpu_ms"] = rig.cli_start()
    rss = rig.worker.peak_rss_mb()
    results["worker_rss_mb"] = max(rss)
    results["worker_rss_sum_mb"] = sum(rss)
    results["n"] = float(n)
    results["rounds"] = float(rounds)
    return results


def _rate(drained: Drained) -> float:
    return drained.rate


def _latencies(out: dict[str, float], name: str, values: list[float], suffix: str = "") -> None:
    out[f"{name}_p50{suffix}_ms"] = percentile(values, 50)
    out[f"{name}_p99{suffix}_ms"] = percentile(values, 99)


@dataclass(frozen=True)
class Drained:
    """One scenario's outcome: rate, per-item latencies, and the documents it produced."""

    rate: float
    latencies: list[float]
    docs: list[DialogMessage]
    cpu_ms: float = 0.0  # the worker's CPU per item (main process + pool), this drain


def mapping_rate(seconds: float = MAPPING_SECONDS, distinct: int = 1000) -> float:
    """ReserverAvtale documents built, validated and serialised per second, in this process.

    The messages (distinct ones: nothing a cache could remember) are made before the clock
    starts, so only the mapper is timed.
    """
    from mappers import message as dialog_message
    from worker.bench.data import reservation

    messages = [reservation(i) for i in range(distinct)]
    dialog_message.build(messages[0])  # compile the schema outside the clock
    return rate_of("mapping", messages, dialog_message.build, seconds)


def lxml_rate(seconds: float = MAPPING_SECONDS, distinct: int = 1000) -> float:
    """The same documents, serialised, parsed and schema-validated by bare lxml per second.

    The machine's own yardstick for `mapping_per_s`, measured in the same run (the issue's
    reference machine does about 34,000 of these per second on one core).
    """
    from lxml import etree

    from mappers import message as dialog_message
    from mappers.xmlsafe import schema
    from worker.bench.data import reservation

    documents = [dialog_message.build(reservation(i)) for i in range(distinct)]
    xsd = schema()

    def check(document: bytes) -> None:
        xsd.assertValid(etree.fromstring(document))

    return rate_of("lxml parse + validate", documents, check, seconds)


def rate_of(what: str, items: Sequence[T], work: Callable[[T], object], seconds: float) -> float:
    """Items through `work` per second, in slices of 100, for about `seconds`."""
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        first = done % len(items)  # len(items) is a multiple of 100: slices stay full
        for item in items[first : first + 100]:
            work(item)
        done += 100
    say(f"{what}: {done} documents in {elapsed:.2f} s")
    return done / elapsed


# -- the bench worker (python -m worker.bench.run) ------------------------------------------------


def noop() -> None:
    """Do nothing: what is left is Celery's own per-task cost."""


def serve(concurrency: int = 2) -> int:
    """`timebok worker` as is, plus the bare no-op task the bench compares against."""
    import argparse

    from celery import shared_task

    from worker.bench.data import NOOP_TASK
    from worker.entrypoints.processes import run_worker
    from worker.logs import setup_logging

    settings = Settings()
    setup_logging(settings)
    shared_task(name=NOOP_TASK, ignore_result=True)(noop)
    args = argparse.Namespace(
        concurrency=concurrency, loglevel="INFO", pool="prefork", hostname="timebok-bench@%h"
    )
    return run_worker(args, settings)


if __name__ == "__main__":
    raise SystemExit(serve())
