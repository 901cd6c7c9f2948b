"""``geoplex agent`` against a real telemetry server process: samples arrive under
node_exporter's names; through a telemetry outage the agent buffers and then sends the
backlog in order, each sample once; refused batches are dropped and counted; ``--once``
prints a table; SIGTERM flushes and exits 0."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.telemetry import TelemetryClient, series
from geoplex.infra.local import free_port
from geoplex.infra.process import Process
from geoplex.tools.agent.run import Agent, AgentConfig, State
from polling import eventually

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py

CLI = [sys.executable, "-m", "geoplex.tools.cli", "agent"]


def start_telemetry(server_factory: Callable[..., ServerProcess], data_dir: Path,
                    name: str, **env: str) -> ServerProcess:
    """On a fixed port, so that it comes back where the agent looks after a restart."""
    return server_factory("telemetry", {"GEOPLEX_TELEMETRY_PORT": str(free_port()),
                                        "GEOPLEX_TELEMETRY_DATA_DIR": str(data_dir), **env},
                          name)


@pytest.fixture(scope="module")
def telemetry(server_factory: Callable[..., ServerProcess],
              tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    return start_telemetry(server_factory, tmp_path_factory.mktemp("agent-telemetry"),
                           "telemetry-agent")


@pytest.fixture
async def tm(telemetry: ServerProcess) -> AsyncIterator[TelemetryClient]:
    async with TelemetryClient(telemetry.address, ChannelOptions(retry=False)) as client:
        yield client


def new_instance() -> str:
    return f"agent-test-{uuid.uuid4().hex[:8]}"


async def stored(tm: TelemetryClient, selector: str) -> dict[str, list[tuple[int, float]]]:
    """Every sample of the last 10 minutes of the series ``selector`` matches, by series."""
    answer = await tm.query(f"{selector}[10m]")
    out = {}
    for s in answer.matrix:
        labels = {label.name: label.value for label in s.labels}
        key = labels.pop("__name__", "") + str(sorted(labels.items()))
        out[key] = [(p.timestamp_ms, p.value) for p in s.samples]
    return out


async def vector(tm: TelemetryClient, query: str) -> list[dict[str, str]]:
    return [{label.name: label.value for label in s.labels}
            for s in (await tm.query(query)).vector]


@pytest.mark.timeout(180)
async def test_samples_arrive_and_an_outage_backlog_arrives_after_it_once_and_in_order(
        server_factory: Callable[..., ServerProcess],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    server = start_telemetry(server_factory, tmp_path_factory.mktemp("agent-outage"),
                             "telemetry-agent-outage")
    instance = new_instance()
    said: list[str] = []
    agent = Agent(AgentConfig(target=server.address, interval_s=0.2, instance=instance,
                              write_timeout_s=3.0), report=said.append)
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    try:
        async with TelemetryClient(server.address, ChannelOptions(retry=False)) as tm:
            loads = await eventually(lambda: vector(tm, f'node_load1{{instance="{instance}"}}'),
                                     what="node_load1 arrives")
            assert loads == [{"__name__": "node_load1", "job": "node", "instance": instance}]
            cpu = await vector(tm, f'node_cpu_seconds_total{{instance="{instance}"}}')
            assert {s["mode"] for s in cpu} >= {"user", "system", "idle"}
            assert len({s["cpu"] for s in cpu}) >= 1

        await asyncio.to_thread(server.stop)
        down_ms = int(time.time() * 1000)
        await eventually(lambda: agent.state is State.UNREACHABLE, what="the agent notices")
        collected = agent.collections
        await eventually(lambda: agent.collections >= collected + 8,
                         what="the agent collects through the outage")
        buffered = agent.backlog.samples
        assert buffered >= 8 * 50
        await asyncio.to_thread(server.start)
        up_ms = int(time.time() * 1000)
        await eventually(lambda: agent.state is State.SENDING and agent.backlog.samples < 300,
                         timeout=60, what="the backlog is sent")
    finally:
        stop.set()
        await running
    b = agent.backlog
    assert b.samples == 0, "flushed at the stop"
    assert (b.dropped_total, b.rejected_total) == (0, 0)
    assert said[0].startswith(f"telemetry at {server.address} unreachable")
    assert said[1].startswith(f"telemetry at {server.address} back; sending the backlog of")
    assert len(said) == 2

    async with TelemetryClient(server.address, ChannelOptions(retry=False)) as tm:
        clock = await stored(tm, f'node_time_seconds{{instance="{instance}"}}')
        assert len(clock) == 1
        times = [t for t, _ in next(iter(clock.values()))]
        assert len(times) == agent.collections, "every collection arrived"
        assert times == sorted(set(times))
        assert all(abs(v * 1000 - t) < 2 for t, v in next(iter(clock.values())))
        assert len([t for t in times if down_ms < t < up_ms]) >= 8, "the outage's backlog"
        assert max(b - a for a, b in zip(times, times[1:])) < 2000, "no collection missing"
        everything = await stored(tm, f'{{instance="{instance}"}}')
        assert sum(len(v) for v in everything.values()) == b.sent_total, "each sample once"
        for samples in everything.values():
            assert [t for t, _ in samples] == sorted({t for t, _ in samples})
        sent = await vector(tm, f'geoplex_agent_sent_samples_total{{instance="{instance}"}}')
        assert len(sent) == 1


async def test_a_full_backlog_drops_the_oldest_and_telemetry_learns_how_many(
        server_factory: Callable[..., ServerProcess],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()  # telemetry starts there only once the agent's backlog overflowed
    instance = new_instance()
    said: list[str] = []
    agent = Agent(AgentConfig(target=f"127.0.0.1:{port}", interval_s=0.1, instance=instance,
                              buffer_samples=1000), report=said.append)
    stop = asyncio.Event()
    running = asyncio.create_task(agent.run(stop))
    try:
        # a whole collection gone, not just the first samples of the oldest one (a
        # collection is dropped sample by sample, its clock sample may still be there)
        await eventually(lambda: agent.backlog.dropped_total > 0
                         and agent.collections > agent.backlog.collections,
                         what="the oldest collection dropped")
        assert agent.backlog.samples <= 1000
        first_kept_ms = agent.backlog.oldest_ms
        assert first_kept_ms is not None
        server = server_factory("telemetry", {
            "GEOPLEX_TELEMETRY_PORT": str(port),
            "GEOPLEX_TELEMETRY_DATA_DIR": str(tmp_path_factory.mktemp("agent-late"))},
            "telemetry-agent-late")
        await eventually(lambda: agent.state is State.SENDING and agent.backlog.samples < 300,
                         timeout=60, what="the backlog is sent")
        async with TelemetryClient(server.address, ChannelOptions(retry=False)) as tm:
            dropped = await eventually(lambda: vector_values(
                tm, f'geoplex_agent_dropped_samples_total{{instance="{instance}"}}'),
                what="the dropped count arrives")
            assert dropped[0] > 0
            clock = await stored(tm, f'node_time_seconds{{instance="{instance}"}}')
            times = [t for t, _ in next(iter(clock.values()))]
            assert times == sorted(set(times))
            assert agent.collections > len(times), "the oldest collections were dropped"
    finally:
        stop.set()
        await running
    assert said[0].startswith(f"telemetry at 127.0.0.1:{port} unreachable")
    assert said[1] == "backlog full (1,000 samples): dropping the oldest"
    assert said[2].startswith(f"telemetry at 127.0.0.1:{port} back")


async def vector_values(tm: TelemetryClient, query: str) -> list[float]:
    return [s.sample.value for s in (await tm.query(query)).vector]


async def test_batches_telemetry_refuses_are_dropped_counted_and_logged_once(
        server_factory: Callable[..., ServerProcess],
        tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture) -> None:
    # a store whose out-of-order window is 1 s and whose newest sample is 2 minutes ahead:
    # everything the agent collects now is too old for it
    server = start_telemetry(server_factory, tmp_path_factory.mktemp("agent-refusing"),
                             "telemetry-agent-refusing",
                             GEOPLEX_TELEMETRY_OOO_WINDOW_SECONDS="1")
    async with TelemetryClient(server.address, ChannelOptions(retry=False)) as tm:
        ahead_ms = int(time.time() * 1000) + 120_000
        await tm.write([series({"__name__": "other_writer", "job": "x"}, [(ahead_ms, 1.0)])])
        instance = new_instance()
        said: list[str] = []
        agent = Agent(AgentConfig(target=server.address, interval_s=0.2, instance=instance),
                      report=said.append)
        stop = asyncio.Event()
        with caplog.at_level(logging.WARNING, logger="geoplex.tools.agent.run"):
            running = asyncio.create_task(agent.run(stop))
            try:
                await eventually(lambda: agent.collections >= 4 and agent.backlog.rejected_total
                                 >= 3 * 50, what="refused batches counted")
            finally:
                stop.set()
                await running
        assert agent.state is State.STARTING, "a refusal is not an outage"
        assert said == []
        assert agent.backlog.sent_total == 0 and agent.backlog.samples == 0
        refusals = [r for r in caplog.records if "refused a batch" in r.getMessage()]
        assert len(refusals) == 1 and "TOO_OLD" in refusals[0].getMessage()
        assert await vector(tm, f'node_load1{{instance="{instance}"}}') == []


async def test_once_prints_a_table_of_what_it_collected_and_writes_it(
        telemetry: ServerProcess, tm: TelemetryClient) -> None:
    instance = new_instance()
    done = await asyncio.to_thread(
        subprocess.run, [*CLI, "--once", "--target", telemetry.address, "--instance", instance],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"metric\s+samples", lines[0])
    table = dict(line.split() for line in lines[2:] if line and not line.startswith(("-", " "))
                 and len(line.split()) == 2)
    assert int(table["node_load1"]) == 1
    assert int(table["node_cpu_seconds_total"]) >= 3
    assert int(table["node_filesystem_size_bytes"]) >= 1
    assert "geoplex_agent_collect_duration_seconds" in table
    assert f"written to telemetry at {telemetry.address}" in done.stdout
    assert await vector(tm, f'node_load1{{instance="{instance}"}}') != []


async def test_once_without_telemetry_prints_the_table_and_exits_1() -> None:
    target = f"127.0.0.1:{free_port()}"
    done = await asyncio.to_thread(subprocess.run, [*CLI, "--once", "--target", target],
                                   capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "node_memory_MemTotal_bytes" in done.stdout
    assert f"not written to telemetry at {target}: UNAVAILABLE" in done.stderr


def agent_process(tmp_path: Path, target: str, instance: str) -> Process:
    return Process("agent", [*CLI, "--target", target, "--interval", "0.2", "--instance",
                             instance], tmp_path / "agent.log",
                   ready_line=re.compile(r"^geoplex agent: "), stop_grace=10.0)


async def test_sigterm_flushes_and_exits_0_and_the_agent_is_quiet_meanwhile(
        telemetry: ServerProcess, tm: TelemetryClient, tmp_path: Path) -> None:
    instance = new_instance()
    proc = agent_process(tmp_path, telemetry.address, instance)
    with proc:
        await proc.wait_ready_async(30)
        await eventually(lambda: vector(tm, f'node_load1{{instance="{instance}"}}'),
                         what="node_load1 arrives")
        started = time.monotonic()
        code = await asyncio.to_thread(proc.stop)
        assert code == 0
        assert time.monotonic() - started < 5
    said = (tmp_path / "agent.log").read_text().splitlines()
    assert len(said) == 1, said
    assert said[0].startswith(f"geoplex agent: {instance} (job node) ready on "
                              f"{telemetry.address}: pushing every 0.2 s")


async def test_sigterm_while_telemetry_is_unreachable_exits_0_within_the_flush_time(
        tmp_path: Path) -> None:
    target = f"127.0.0.1:{free_port()}"
    proc = agent_process(tmp_path, target, new_instance())
    log = tmp_path / "agent.log"
    with proc:
        await proc.wait_ready_async(30)
        await eventually(lambda: "unreachable" in log.read_text(), what="it says so")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait_async(), 10) == 0
        assert time.monotonic() - started < 2 + 2.5
    said = log.read_text().splitlines()
    assert said[1].startswith(f"telemetry at {target} unreachable (UNAVAILABLE")
    assert re.fullmatch(r"geoplex agent: stopped; [\d,]+ samples not sent", said[-1])

