"""bench.broker's harness: its tables, ratios and aims, --report-only, its flags, and the
peer drivers against real redis-server and nats-server processes (tiny sizes, nothing
timed: the benchmark itself needs a quiet machine; this only checks the pieces work)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import broker
from bench._common import write_results
from bench.broker_systems import (
    JetStream,
    Redis,
    connected,
    durabilities,
    nats_server,
    nats_supports_sync_always,
    nats_version,
    redis_server,
)

NATS = shutil.which("nats-server") or ("/usr/sbin/nats-server"
                                       if Path("/usr/sbin/nats-server").exists() else None)


def _produce(durability: str, system: str, batch: int, rate: float,
             cpu_s: float = 5.0) -> dict[str, Any]:
    labels = {"ours": "ours (raw stubs)", "ours-sdk": "ours (SDK)", "redis": "Redis Streams",
              "jetstream": "NATS JetStream"}
    return {"durability": durability, "system": system, "label": labels[system],
            "batch": batch, "records_per_s": rate, "mb_per_s": rate * 1024 / 1e6,
            "server_cpu_pct": cpu_s * rate / 1e4, "cpu_s_per_million": cpu_s}


def _latency(durability: str, system: str, p50: float, p99: float) -> dict[str, Any]:
    return {"durability": durability, "system": system, "label": system, "rate": 2000.0,
            "p50_ms": p50, "p99_ms": p99, "server_cpu_pct": 20.0}


def sample_result() -> dict[str, Any]:
    """A result as bench.broker writes it: ours 2.5x the faster peer at batch 1,000, 1.5x
    at batch 100; consume 3x; p99 below JetStream's; JetStream left out of 'batch'."""
    ds = [d.as_dict() for d in durabilities(1000, False, "2.9.10")]
    produce = [
        _produce("interval", "ours", 1, 5_000), _produce("interval", "redis", 1, 6_000),
        _produce("interval", "jetstream", 1, 7_000),
        _produce("interval", "ours", 100, 60_000), _produce("interval", "redis", 100, 40_000),
        _produce("interval", "jetstream", 100, 30_000),
        _produce("interval", "ours", 1000, 150_000),
        _produce("interval", "ours-sdk", 1000, 90_000),
        _produce("interval", "redis", 1000, 60_000),
        _produce("interval", "jetstream", 1000, 45_000),
        _produce("batch", "ours", 1000, 100_000), _produce("batch", "redis", 1000, 20_000),
    ]
    consume = [_produce("interval", "ours", 1000, 300_000),
               _produce("interval", "redis", 1000, 100_000),
               _produce("interval", "jetstream", 1000, 50_000)]
    for cell in consume:
        cell["records"] = 100_000
    latency = [_latency("interval", "ours", 1.0, 4.0),
               _latency("interval", "jetstream", 1.5, 8.0),
               _latency("interval", "redis", 0.8, 3.0)]
    settings = vars(broker.parse_args([]))
    return {"benchmark": "broker", "settings": settings, "elapsed_s": 200.0,
            "machine": {"cpu_model": "test cpu", "nproc": 2, "python": "3.11",
                        "packages": {"grpcio": "1"}, "date": "2026-01-01"},
            "nats": {"binary": "nats-server", "version": "2.9.10", "sync_always": False},
            "durabilities": ds, "produce": produce, "consume": consume, "latency": latency,
            "skipped": [{"durability": "batch", "system": "jetstream",
                         "why": "n/a: nats-server 2.9.10 has no sync_interval option"}]}


def test_report_gives_each_row_its_fsync_policy_and_the_ratios_to_each_peer() -> None:
    text = broker.report(sample_result())
    rows = [line for line in text.splitlines()
            if line.startswith("| every 1,000 ms / appendfsync everysec / every 2 min | 1,000")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    # batch, ours, SDK, Redis, JetStream, ours/Redis, ours/JetStream, ours/faster, SDK/faster
    assert cells[1:] == ["1,000", "150,000 (153.6)", "90,000 (92.2)", "60,000 (61.4)",
                         "45,000 (46.1)", "2.50x", "3.33x", "2.50x", "1.50x"]
    assert "| per batch / appendfsync always / n/a | 1,000 |" in text
    assert "**Consume throughput**" in text and "3.00x" in text
    assert "| 1.00 / 4.00 |" in text  # ours p50 / p99 at 2,000 records/s
    assert "0.50x" in text  # p99 ours / JetStream
    assert "Not measured: NATS JetStream under 'per batch / appendfsync always / n/a'" in text


def test_aims_are_checked_against_the_faster_peer_and_jetstreams_p99() -> None:
    notes = broker.aims(sample_result())
    met = {n.split(":")[0]: not n.endswith("not met") for n in notes}
    assert met["produce, batch 1,000, every 1,000 ms / appendfsync everysec / every 2 min"]
    assert not met["produce, batch 100, every 1,000 ms / appendfsync everysec / every 2 min"]
    assert met["produce, batch 1,000, per batch / appendfsync always / n/a"]  # vs Redis only
    assert met["consume, every 1,000 ms / appendfsync everysec / every 2 min"]
    assert any(n.startswith("latency p99") and not n.endswith("not met") for n in notes)


def test_report_only_rewrites_just_its_section_from_the_results(tmp_path: Path) -> None:
    results, md = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nkept above\n\n<!-- broker:begin -->\nold\n"
                  "<!-- broker:end -->\n\nkept below\n")
    write_results("broker", sample_result(), results)
    broker.rerender(results, md)
    first = md.read_text()
    assert "kept above" in first and "kept below" in first and "\nold\n" not in first
    section = first.split("<!-- broker:begin -->")[1].split("<!-- broker:end -->")[0]
    assert section.strip().startswith(broker.TITLE)
    assert "**Produce throughput**" in section
    broker.rerender(results, md)
    assert md.read_text() == first  # from the same results, the same text


def test_quick_takes_tiny_sizes_but_flags_given_beside_it_win() -> None:
    args = broker.parse_args(["--quick", "--consume-records", "0"])
    assert args.no_write and args.duration == broker.QUICK["duration"]
    assert args.consume_records == 0
    full = broker.parse_args([])
    assert (full.batches, full.systems, full.durability) == (
        [1, 100, 1000], list(broker.SYSTEMS), ["batch", "interval"])
    assert not full.no_write


@pytest.mark.parametrize("argv, says", [
    (["--systems", "kafka"], "--systems"),
    (["--batches", "0"], "--batches"),
    (["--record-bytes", "4"], "--record-bytes"),
    (["--fsync-interval-ms", "0"], "--fsync-interval-ms"),
])
def test_bad_flags_are_refused_naming_the_flag(argv: list[str], says: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        broker.parse_args(argv)
    assert says in capsys.readouterr().err


def test_jetstream_joins_the_per_batch_policy_only_with_sync_always() -> None:
    without = {d.key: d for d in durabilities(250, False, "2.9.10")}
    assert without["batch"].jetstream_sync_always is None
    assert without["interval"].jetstream_sync_always is False
    assert without["interval"].ours_env == {"GEOPLEX_BROKER_FSYNC": "interval",
                                            "GEOPLEX_BROKER_FSYNC_INTERVAL_MS": "250"}
    assert {d.key: d for d in durabilities(250, True, "2.10.0")}["batch"] \
        .jetstream_sync_always is True


@pytest.mark.skipif(NATS is None, reason="no nats-server (make system-deps installs it)")
def test_the_nats_server_says_whether_it_can_sync_always() -> None:
    assert NATS is not None
    version = nats_version(NATS)
    major, minor = (int(x) for x in re.findall(r"\d+", version)[:2])
    assert nats_supports_sync_always(NATS) == ((major, minor) >= (2, 10))


def _tiny_args() -> argparse.Namespace:
    return broker.parse_args(["--quick", "--rate", "400", "--latency-duration", "0.3",
                              "--latency-warmup", "0.1", "--record-bytes", "256"])


async def _exercise(driver: Redis | JetStream, args: argparse.Namespace) -> None:
    payload = os.urandom(args.record_bytes)
    durability = durabilities(1000, False, "test")[1]
    await driver.fresh("bench-smoke")
    for batch in (1, 10, 100):
        await driver.send([payload] * batch)
    assert await driver.consume(111, 50) == 111
    assert await driver.consume(111, 1000) == 111  # again, from the start
    cell = await broker.measure_latency(driver, durability, args, payload, "smoke")
    assert cell["errors"] == 0
    assert cell["received"] == cell["scheduled"] > 0
    assert cell["measured"] > 0 and cell["p50_ms"] <= cell["p99_ms"]


async def test_the_redis_driver_writes_reads_back_and_tails_records() -> None:
    args = _tiny_args()
    durability = durabilities(1000, False, "test")[1]
    with redis_server(durability) as server:
        async with connected(Redis(server.address, "everysec", [server.pid])) as driver:
            assert isinstance(driver, Redis)
            await _exercise(driver, args)


@pytest.mark.skipif(NATS is None, reason="no nats-server (make system-deps installs it)")
async def test_the_jetstream_driver_writes_reads_back_and_tails_records() -> None:
    assert NATS is not None
    args = _tiny_args()
    with nats_server(NATS, False) as server:
        async with connected(JetStream(server.address, "default", [server.pid])) as driver:
            assert isinstance(driver, JetStream)
            await _exercise(driver, args)
