"""The pure parts of `timebok bench`: percentiles, rates, the name=value lines, the JSON file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from worker.bench.data import booking_request, patient_fnr, reservation
from worker.bench.rig import pace, succeeded_at
from worker.bench.run import (
    REQUIRED,
    Drained,
    format_lines,
    latency_ms,
    parse_sections,
    per_second,
    percentile,
    scenarios,
    write_json,
)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.0),  # order does not matter
        ([1.0, 2.0, 3.0, 4.0], 75, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 1001)], 99, 990.0),
        ([1.0, 2.0], 0, 1.0),
    ],
)
def test_percentile_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_percentile_of_nothing() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_per_second_counts_intervals_between_first_and_last() -> None:
    assert per_second([10.0, 10.5, 11.0]) == 2.0
    assert per_second([3.0, 1.0, 2.0]) == 1.0
    with pytest.raises(ValueError, match="two completions"):
        per_second([1.0])
    with pytest.raises(ValueError, match="two completions"):
        per_second([1.0, 1.0])


def test_latency_from_a_common_start_or_per_item() -> None:
    assert latency_ms({"a": 1.5, "b": 2.0}, 1.0) == [500.0, 1000.0]
    assert latency_ms({"a": 1.5, "b": 2.0}, {"a": 1.0, "b": 1.99}) == pytest.approx([500.0, 10.0])


def test_lines_have_the_required_names_in_order_then_extras() -> None:
    results = {name: 1.0 for name in reversed(REQUIRED)}
    results |= {"outbound_p99_half_rate_ms": 12.345, "outbound_ratio": 0.51234}
    results |= {"inbound_worker_cpu_ms": 4.567}
    lines = format_lines(results)
    extras = ["outbound_p99_half_rate_ms", "inbound_worker_cpu_ms"]
    assert [line.split("=")[0] for line in lines] == [*REQUIRED, *extras]
    assert "outbound_ratio=0.512" in lines  # ratios: three decimals
    assert "inbound_worker_cpu_ms=4.57" in lines  # CPU milliseconds: two
    assert "outbound_p99_half_rate_ms=12.3" in lines  # everything else: one
    assert all(line.count("=") == 1 and " " not in line for line in lines)


def test_json_holds_the_same_figures(tmp_path: Path) -> None:
    results = {name: 2.0 for name in REQUIRED} | {"noop_per_s": 1400.04, "extra": 3.0}
    path = tmp_path / "bench-results.json"
    write_json(results, path)
    data = json.loads(path.read_text("utf-8"))
    assert list(data) == [line.split("=")[0] for line in format_lines(results)]
    assert data["noop_per_s"] == 1400.0
    assert data["extra"] == 3.0


def _event_message(events: object) -> bytes:
    """An event as kombu's Redis transport publishes it (base64 body in a JSON envelope)."""
    body = base64.b64encode(json.dumps(events).encode()).decode()
    return json.dumps({"body": body, "properties": {"body_encoding": "base64"}}).encode()


def test_succeeded_at_reads_single_events_and_batches() -> None:
    ok = {"type": "task-succeeded", "timestamp": 12.5, "uuid": "a"}
    other = {"type": "task-received", "timestamp": 11.0, "uuid": "a"}
    assert succeeded_at(_event_message(ok)) == [12.5]
    assert succeeded_at(_event_message([other, ok, ok | {"timestamp": 13.0}])) == [12.5, 13.0]
    assert succeeded_at(_event_message([other])) == []


def test_pace_sends_every_item_in_order() -> None:
    sent: list[int] = []

    def send(item: int) -> tuple[str, float]:
        sent.append(item)
        return str(item), float(item)

    assert pace(10_000.0, [3, 1, 2], send) == {"3": 3.0, "1": 1.0, "2": 2.0}
    assert sent == [3, 1, 2]


def test_bench_data_is_valid_for_the_worker() -> None:
    from datetime import UTC, datetime

    from mappers import message as dialog_message
    from worker.request import parse_request

    req = parse_request(booking_request(7), now=datetime.now(UTC))
    assert req.patient.fnr == patient_fnr(7) != patient_fnr(8)
    assert dialog_message.build(reservation(7)).startswith(b"<?xml")


class _ScriptedRig:
    """Drains that report rates from a script, for the selection logic of `scenarios`."""

    def __init__(self, noops: list[float], outs: list[float], ins: list[float]) -> None:
        self.noops, self.outs, self.ins = noops, outs, ins
        self.worker = self
        self.paced: list[float] = []

    def noop(self, n: int) -> Drained:
        rate = self.noops.pop(0)
        return Drained(rate, [], [], cpu_ms=2_000 / rate)

    def outbound(self, n: int) -> Drained:
        rate = self.outs.pop(0)
        return Drained(rate, [rate], [], cpu_ms=2_000 / rate)

    def inbound(self, docs: list[object]) -> Drained:
        rate = self.ins.pop(0)
        return Drained(rate, [rate], [], cpu_ms=2_000 / rate)

    def frozen(self, fn: object) -> float:
        return 12_000.0

    def cli_start(self) -> tuple[float, float]:
        return 150.0, 120.0

    def paced_outbound(self, rate: float, seconds: float) -> Drained:
        self.paced.append(rate)
        return Drained(rate, [1.0], [])

    def paced_inbound(self, docs: list[object], rate: float) -> Drained:
        self.paced.append(rate)
        return Drained(rate, [2.0], [])

    def peak_rss_mb(self) -> list[float]:
        return [100.0, 90.0]


def test_each_drain_counts_its_best_round() -> None:
    rig = _ScriptedRig(noops=[800.0, 1000.0], outs=[500.0, 400.0], ins=[300.0, 450.0])
    got = scenarios(rig, 1000, rounds=2)  # type: ignore[arg-type]
    assert (got["noop_per_s"], got["outbound_per_s"], got["inbound_per_s"]) == (1000, 500, 450)
    assert got["outbound_ratio"] == 0.5 and got["inbound_ratio"] == 0.45
    assert got["outbound_p99_ms"] == 500.0 and got["inbound_p99_ms"] == 450.0  # best run's
    assert rig.paced == [250.0, 225.0]  # half of the best rates
    assert rig.noops == rig.outs == rig.ins == []  # every round ran
    assert got["rounds"] == 2 and got["worker_rss_mb"] == 100.0
    # the CPU per item of the round that counted
    assert (got["noop_worker_cpu_ms"], got["outbound_worker_cpu_ms"]) == (2.0, 4.0)
    assert got["inbound_worker_cpu_ms"] == 2_000 / 450


def test_cms_figures_are_in_the_results_and_measure_real_work() -> None:
    rig = _ScriptedRig(noops=[1000.0], outs=[500.0], ins=[450.0])
    got = scenarios(rig, 1000, rounds=1)  # type: ignore[arg-type]
    assert got["cms_sign_encrypt_per_s"] == got["cms_decrypt_verify_per_s"] == 12_000.0

    from worker.bench import cms

    assert 4_500 <= cms.message_bytes() <= 5_500  # the "about 5 KB dialog message"
    assert cms.sign_encrypt_rate(seconds=0.01) > 0
    assert cms.decrypt_verify_rate(seconds=0.01) > 0


def test_sections_of_only_in_run_order() -> None:
    assert parse_sections("nhn") == ("nhn",)
    assert parse_sections("lookups, kombu") == ("kombu", "lookups")
    assert parse_sections("kombu,nhn,lookups,nhn") == ("kombu", "nhn", "lookups")
    for bad in ("nhm", "", "kombu,x"):
        with pytest.raises(ValueError, match="unknown section"):
            parse_sections(bad)


class _Drains:
    """One side's drains, logging their order into a shared list."""

    def __init__(self, name: str, log: list[str], outs: list[float], ins: list[float]) -> None:
        self.name, self.log, self.outs, self.ins = name, log, outs, ins

    def outbound(self, n: int) -> Drained:
        self.log.append(f"{self.name} out")
        rate = self.outs.pop(0)
        return Drained(rate, [], [], cpu_ms=1_000 / rate)

    def inbound(self, docs: list[object]) -> Drained:
        self.log.append(f"{self.name} in")
        rate = self.ins.pop(0)
        return Drained(rate, [], [], cpu_ms=1_000 / rate)


def test_nhn_drains_alternate_with_kombus_and_divide_by_them() -> None:
    from worker.bench.nhn import nhn_scenarios

    log: list[str] = []
    kombu = _Drains("kombu", log, outs=[100.0, 200.0], ins=[300.0, 250.0])
    bus = _Drains("nhn", log, outs=[90.0, 60.0], ins=[100.0, 150.0])
    got = nhn_scenarios(bus, kombu, 300, 2, kombu_figures=True)  # type: ignore[arg-type]
    assert log == ["kombu out", "nhn out", "kombu in", "nhn in"] * 2
    assert got["nhn_outbound_ratio"] == 90.0 / 200.0  # best of each side
    assert got["nhn_inbound_ratio"] == 150.0 / 300.0
    assert got["outbound_per_s"] == got["nhn_kombu_outbound_per_s"] == 200.0
    assert got["nhn_inbound_worker_cpu_ms"] == 1_000 / 150.0
    alone = nhn_scenarios(
        _Drains("nhn", [], [50.0], [40.0]),
        _Drains("kombu", [], [100.0], [80.0]),
        300,
        1,  # type: ignore[arg-type]
    )
    assert "outbound_per_s" not in alone and alone["nhn_outbound_ratio"] == 0.5
