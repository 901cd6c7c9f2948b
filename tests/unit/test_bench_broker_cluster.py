"""bench.broker_cluster's harness: its tables and ratios, --report-only, its flags, the ack
latency window, and one tiny run of the whole benchmark against real processes (three
brokers and one on a fresh etcd, a JetStream cluster, Redis with replicas, one leader
kill; nothing timed: the benchmark itself needs a quiet machine, this only checks that
the pieces work together)."""

from __future__ import annotations

import math
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from bench import broker_cluster as bc
from bench._common import latency_summary, write_results
from bench.broker_systems import Driver, durabilities

NATS = shutil.which("nats-server") or ("/usr/sbin/nats-server"
                                       if Path("/usr/sbin/nats-server").exists() else None)


def _produce(system: str, acks: str, batch: int, rate: float) -> dict[str, Any]:
    return {"system": system, "acks": acks, "batch": batch, "label": system,
            "records_per_s": rate, "mb_per_s": rate * 1024 / 1e6, "server_cpu_pct": 50.0,
            "cpu_s_per_million": 50.0 / 100 / rate * 1e6,
            "drain_s_rounds": [0.5] if system.startswith("ours") else [math.nan]}


def _latency(system: str, acks: str, ack_p99: float, e2e_p99: float) -> dict[str, Any]:
    return {"system": system, "acks": acks, "rate": 2000.0,
            "ack": {"p50_ms": ack_p99 / 4, "p99_ms": ack_p99},
            "e2e": {"p50_ms": e2e_p99 / 4, "p99_ms": e2e_p99}}


def _kill(n: int, failover_s: float) -> dict[str, Any]:
    return {"kill": n, "partition": n % 3, "victim": 1 + n % 2, "victim_was_controller": n == 1,
            "failover_s": failover_s, "elected_s": failover_s - 0.01,
            "restart_ready_s": 0.4, "rejoin_s": 0.5, "all_rejoin_s": 0.6,
            "isr_full_after_kill_s": failover_s + 0.5}


def _summary(kills: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: latency_summary([k[key] for k in kills])
            for key in ("failover_s", "elected_s", "restart_ready_s", "rejoin_s",
                        "all_rejoin_s", "isr_full_after_kill_s")}


def sample_result() -> dict[str, Any]:
    """A result as bench.broker_cluster writes it: RF 3 at half RF 1's rate under acks ALL
    and 2x the faster peer (Redis), four kills of 2.0-2.6 s."""
    produce = [
        _produce("ours-rf3", "all", 1000, 40_000), _produce("ours-rf1", "all", 1000, 80_000),
        _produce("jetstream-r3", "all", 1000, 10_000), _produce("redis-r3", "all", 1000, 20_000),
        _produce("ours-rf3", "none", 1000, 90_000), _produce("ours-rf1", "none", 1000, 100_000),
        _produce("ours-rf3", "leader", 1000, 60_000),
        _produce("redis-r3", "leader", 1000, 30_000),
    ]
    latency = [_latency("ours-rf3", "all", 8.0, 9.0), _latency("jetstream-r3", "all", 6.0, 7.0)]
    kills = [_kill(n, s) for n, s in enumerate((2.0, 2.2, 2.4, 2.6), 1)]
    failover = {"partitions": 3, "lease_s": 2.0, "kills": kills, "failed": 0,
                "summary": _summary(kills), "summary_controller": _summary(kills[:1]),
                "summary_other": _summary(kills[1:])}
    settings = {k: str(v) if isinstance(v, Path) else v
                for k, v in vars(bc.parse_args([])).items()}
    return {"benchmark": bc.NAME, "settings": settings, "elapsed_s": 300.0,
            "machine": {"cpu_model": "test cpu", "nproc": 2, "python": "3.11",
                        "packages": {"grpcio": "1"}, "date": "2026-01-01"},
            "nats": {"binary": "nats-server", "version": "2.9.10", "sync_always": False},
            "durability": durabilities(1000, False, "2.9.10")[1].as_dict(),
            "produce": produce, "latency": latency, "failover": failover, "skipped": []}


def _row(text: str, start: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith(start)]
    assert len(rows) == 1, (start, rows)
    return [c.strip() for c in rows[0].strip("|").split("|")]


def test_report_sets_three_replicas_beside_one_node_and_the_faster_peer() -> None:
    text = bc.report(sample_result())
    # acks, batch, RF 3, RF 1, JetStream, Redis, RF 3 / RF 1, RF 3 / faster peer
    assert _row(text, "| ALL | 1,000 |")[2:] == [
        "40,000 (41.0)", "80,000 (81.9)", "10,000 (10.2)", "20,000 (20.5)", "0.50x", "2.00x"]
    assert _row(text, "| NONE | 1,000 |")[-2:] == ["0.90x", "-"]  # no peer has acks NONE
    assert _row(text, "| LEADER | 1,000 |")[4:] == ["-", "30,000 (30.7)", "-", "2.00x"]
    assert "| ALL | 2.00 / 8.00 | - | 1.50 / 6.00 | - |" in text  # ack latency
    assert "| ALL | 2.25 / 9.00 | - | 1.75 / 7.00 | - |" in text  # end to end
    assert "ours, 3 brokers (RF 3) acks NONE 0.50 s" in text


def test_report_gives_the_failover_times_over_every_kill_and_by_the_victims_role() -> None:
    text = bc.report(sample_result())
    assert "|  | every kill (4) | the controller's broker (1) | another broker (3) |" in text
    cells = _row(text, "| kill -> first acks=ALL produce acknowledged |")
    assert cells[1:] == ["2.30 / 2.59 (2.60)", "2.00 / 2.00 (2.00)", "2.40 / 2.60 (2.60)"]
    assert "4 times the leader" in text and "over 4 kills (1 of the controller's" in text
    assert _row(text, "| restart -> every partition's ISR full again |")[1] == \
        "0.60 / 0.60 (0.60)"


def test_failover_kills_take_turns_between_the_controllers_partitions_and_others() -> None:
    def view(leader: int) -> bc.ClusterView:
        return bc.ClusterView(leader, 0, [1, 2, 3], [1, 2, 3], 2, [1, 2, 3])

    views = {0: view(1), 1: view(2), 2: view(3)}  # broker 2 is the controller
    assert bc.pick_partition(views, controller_led=True) == 1
    assert bc.pick_partition(views, controller_led=False) == 0
    assert bc.pick_partition({0: view(1)}, controller_led=True) == 0  # none led there


def test_report_only_rewrites_just_its_section_after_the_single_node_one(
        tmp_path: Path) -> None:
    results, md = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n<!-- broker:begin -->\nsingle\n<!-- broker:end -->\n")
    write_results(bc.RESULTS, sample_result(), results)
    assert bc.main(["--report-only", "--results-dir", str(results),
                    "--markdown", str(md)]) == 0
    first = md.read_text()
    assert "\nsingle\n" in first
    assert first.index("<!-- broker:end -->") < first.index("<!-- broker-cluster:begin -->")
    section = first.split("<!-- broker-cluster:begin -->")[1].split(
        "<!-- broker-cluster:end -->")[0]
    assert section.strip().startswith(bc.TITLE) and "**Failover**" in section
    bc.rerender(results, md)
    assert md.read_text() == first  # from the same results, the same text


def test_quick_takes_tiny_sizes_but_flags_given_beside_it_win() -> None:
    args = bc.parse_args(["--quick", "--kills", "5"])
    assert args.no_write and args.duration == bc.QUICK["duration"] and args.kills == 5
    assert args.batches == [1000]
    full = bc.parse_args([])
    assert (full.batches, full.systems, full.acks, full.kills, full.durability) == (
        [1, 100, 1000], list(bc.SYSTEMS), ["none", "leader", "all"], 20, "interval")
    assert not full.no_write


@pytest.mark.parametrize("argv, says", [
    (["--systems", "kafka"], "--systems"),
    (["--acks", "some"], "--acks"),
    (["--kills", "-1"], "--kills"),
    (["--lease-seconds", "0.5"], "--lease-seconds"),
    (["--record-bytes", "4"], "--record-bytes"),
])
def test_bad_flags_are_refused_naming_the_flag(argv: list[str], says: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bc.parse_args(argv)
    assert says in capsys.readouterr().err


class _Instant(Driver):
    key = label = "instant"

    def __init__(self) -> None:
        super().__init__("none", [])

    async def fresh(self, name: str) -> None: ...

    async def send(self, values: Any) -> None: ...

    async def consume(self, count: int, batch: int) -> int:
        return 0

    async def receive(self, on_value: Any, started: Any, stop: Any) -> None: ...


async def test_ack_latencies_count_the_records_scheduled_in_the_window() -> None:
    timed = bc.AckTimed(_Instant())
    await timed.send([struct.pack("<q", 0)])  # not recording: not counted
    timed.recording = True
    t0 = 10_000_000_000
    await timed.send([struct.pack("<q", t0 + i * 100_000_000) + b"x" for i in range(20)])
    assert len(timed.acked) == 20
    # the first record marks the start: 0.5 s warm-up, 1 s measured = records 5..14
    assert len(timed.ack_latencies(0.5, 1.0)) == 10
    assert all(x > 0 for x in timed.ack_latencies(0.5, 1.0))


@pytest.mark.slow
@pytest.mark.timeout(110)
async def test_a_tiny_run_measures_every_system_and_times_a_failover() -> None:
    args = bc.parse_args(["--quick", "--acks", "none,all", "--kills", "1", "--batches", "100",
                          "--duration", "0.3",
                          "--latency-duration", "0.3", "--latency-warmup", "0.1",
                          "--rate", "300", "--record-bytes", "256"])
    result = await bc.run(args)
    produced = {(c["system"], c["acks"]) for c in result["produce"]}
    expected = {("ours-rf3", "none"), ("ours-rf3", "all"), ("ours-rf1", "none"),
                ("ours-rf1", "all"), ("redis-r3", "all")}
    if NATS is not None:
        expected.add(("jetstream-r3", "all"))
    assert produced == expected
    assert all(c["errors"] == 0 for c in result["produce"])  # rates: not on a busy machine
    assert all(c["records_per_s"] > 0 for c in result["produce"] if c["system"] != "jetstream-r3")
    for cell in result["latency"]:
        assert cell["errors"] == 0 and cell["received"] == cell["scheduled"] > 0
        assert cell["acks_measured"] > 0 and cell["ack"]["p50_ms"] <= cell["ack"]["p99_ms"]
    (kill,) = result["failover"]["kills"]
    assert kill["new_leader"] not in (-1, kill["victim"])
    assert 0 < kill["failover_s"] <= kill["isr_full_after_kill_s"]
    assert kill["rejoin_s"] <= kill["all_rejoin_s"]
    assert "**Failover**" in bc.report(result)
