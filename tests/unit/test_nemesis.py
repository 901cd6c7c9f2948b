"""tests/nemesis.py without a cluster: the history checker on made-up histories, the TCP
proxy on real loopback sockets, the fault schedule and the segment damage; and the
report of bench/broker_chaos.py from a made-up run."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench import broker_chaos
from geoplex.broker.v1.broker_pb2 import ACKS_ALL

import nemesis  # tests/nemesis.py
import polling
from nemesis import History, Outcome, ProxyLoop, TcpProxy, schedule, socket_owner

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------- the checker

def acked(history: History, producer: str, partition: int, values: list[str],
          offset: int) -> None:
    history.ok(history.invoke(producer, partition, values), offset, acked_by=1)


def test_a_history_read_back_whole_and_in_order_is_valid() -> None:
    history = History()
    acked(history, "a", 0, ["a1", "a2"], 0)
    acked(history, "a", 0, ["a3"], 2)
    acked(history, "b", 1, ["b1"], 0)
    result = history.check({0: [(0, "a1"), (1, "a2"), (2, "a3")], 1: [(0, "b1")]})
    assert result.valid
    assert result.total.acked == result.total.produced == 4
    assert (result.total.lost, result.total.duplicated, result.unexpected,
            result.total.order, result.total.moved) == (0, 0, 0, 0, 0)


def test_an_acknowledged_value_missing_from_the_log_is_lost() -> None:
    history = History()
    acked(history, "a", 0, ["a1", "a2"], 0)
    result = history.check({0: [(0, "a1")]})
    assert not result.valid
    assert result.total.lost == 1
    assert "a2" in result.examples["lost"][0]


def test_a_value_read_twice_is_a_duplicate_and_one_never_produced_is_unexpected() -> None:
    history = History()
    acked(history, "a", 0, ["a1"], 0)
    result = history.check({0: [(0, "a1"), (1, "a1"), (2, "ghost")]})
    assert result.total.duplicated == 1
    assert result.unexpected == 1
    assert result.examples["unexpected"] == ["ghost"]
    assert not result.valid  # because of the unexpected one; a duplicate alone is reported


def test_a_value_read_at_another_offset_than_acknowledged_has_moved() -> None:
    history = History()
    acked(history, "a", 0, ["a1"], 5)
    result = history.check({0: [(0, "a1")]})
    assert result.total.moved == 1 and result.total.lost == 0
    assert not result.valid


def test_a_later_acknowledgement_at_a_lower_offset_breaks_the_order() -> None:
    history = History()
    acked(history, "a", 0, ["a1"], 3)
    acked(history, "a", 0, ["a2"], 1)
    acked(history, "b", 0, ["b1"], 0)  # another producer: not compared with a's
    result = history.check({0: [(0, "b1"), (1, "a2"), (3, "a1")]})
    assert result.total.order == 1
    assert "op 1" in result.examples["order"][0]
    assert not result.valid


def test_values_read_back_out_of_ack_order_break_the_order_even_at_the_acked_offsets() -> None:
    history = History()
    acked(history, "a", 0, ["a1"], 0)
    acked(history, "a", 0, ["a2"], 1)
    # the log has them swapped: both moved, and the second was read before the first
    result = history.check({0: [(0, "a2"), (1, "a1")]})
    assert result.total.order == 1 and result.total.moved == 2


def test_unknown_and_failed_outcomes_are_counted_apart_whether_or_not_read_back() -> None:
    history = History()
    history.phase = "kill-leader"
    kept, gone = history.invoke("a", 0, ["u1"]), history.invoke("a", 0, ["u2"])
    history.unknown(kept, "DEADLINE_EXCEEDED")
    history.unknown(gone)
    refused = history.invoke("b", 0, ["f1"])
    history.fail(refused, "NOT_LEADER")
    history.invoke("c", 0, ["p1"])  # never finished: counted as unknown
    result = history.check({0: [(0, "u1"), (1, "f1")]})
    counts = result.by_phase["kill-leader"]
    assert (counts.unknown, counts.unknown_present, counts.failed, counts.failed_present) == (
        3, 1, 1, 1)
    assert result.valid  # none of them was promised
    assert "f1 (NOT_LEADER)" in result.examples["failed kept"][0]


def test_counts_are_kept_per_fault_kind_and_the_table_shows_each_and_the_total() -> None:
    history = History()
    history.phase = "kill-leader"
    acked(history, "a", 0, ["a1"], 0)
    history.phase = "restart-etcd"
    acked(history, "a", 0, ["a2"], 1)
    result = history.check({0: [(0, "a1")]})
    assert result.by_phase["kill-leader"].lost == 0
    assert result.by_phase["restart-etcd"].lost == 1
    table = result.table().splitlines()
    assert table[0].split()[:4] == ["fault", "ops", "records", "acked"]
    assert [line.split()[0] for line in table[1:4]] == ["kill-leader", "restart-etcd", "all"]


def test_an_operation_finishes_once() -> None:
    history = History()
    op = history.invoke("a", 0, ["a1"])
    history.ok(op, 0)
    with pytest.raises(ValueError, match="already finished as ok"):
        history.fail(op)
    assert op.outcome is Outcome.OK


def test_the_first_ack_after_a_fault_skips_the_killed_broker() -> None:
    history = History()
    before = history.invoke("a", 0, ["a1"])
    history.ok(before, 0, acked_by=1)
    fault = before.completed
    late = history.invoke("a", 0, ["a2"])
    history.ok(late, 1, acked_by=1)  # the old leader's answer, already on its way
    new = history.invoke("a", 0, ["a3"])
    history.ok(new, 2, acked_by=2)
    assert history.first_ack_after(0, fault, not_by=1) == new.completed
    assert history.first_ack_after(0, fault) == late.completed
    assert history.first_ack_after(1, fault) is None


# --------------------------------------------------------------------------- the proxy

@pytest.fixture
async def echo() -> AsyncIterator[int]:
    """An echo server on a free loopback port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def roundtrip(port: int, data: bytes = b"ping", timeout: float = 5.0
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(len(data)), timeout) == data
    return reader, writer


async def test_the_proxy_forwards_both_ways_and_passes_a_half_close(echo: int) -> None:
    proxy = await TcpProxy(("127.0.0.1", echo)).start()
    try:
        reader, writer = await roundtrip(proxy.port, b"x" * 200_000)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the echo server's EOF
        writer.close()
    finally:
        await proxy.aclose()


async def test_a_block_cuts_open_connections_and_holds_new_ones_until_unblocked(
        echo: int) -> None:
    proxy = await TcpProxy(("127.0.0.1", echo)).start()
    try:
        reader, writer = await roundtrip(proxy.port)
        proxy.block()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            writer.write(b"again")
            await writer.drain()
            got = await asyncio.wait_for(reader.read(10), 5)
            if not got:
                raise asyncio.IncompleteReadError(got, 5)  # closed, with no answer
        assert proxy.cut_count == 1

        held_reader, held_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        held_writer.write(b"held")  # accepted, but nothing comes back while blocked
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(held_reader.read(4), 0.3)
        assert proxy.held == 1
        proxy.unblock()
        # what was sent during the block goes through now, on the same connection
        assert await asyncio.wait_for(held_reader.readexactly(4), 5) == b"held"
        held_writer.close()
        _, fresh = await roundtrip(proxy.port)  # and new ones are forwarded at once
        fresh.close()
    finally:
        await proxy.aclose()


async def test_a_proxy_in_front_of_nothing_closes_the_connection(echo: int) -> None:
    dead = await TcpProxy(("127.0.0.1", echo)).start()
    port = dead.port
    await dead.aclose()
    proxy = await TcpProxy(("127.0.0.1", port)).start()  # nothing listens at port now
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await proxy.aclose()


async def test_socket_owner_finds_the_process_that_dialled(tmp_path: Path) -> None:
    accepted: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer.get_extra_info("peername")[:2])
        await reader.read()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    child = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys; s = socket.create_connection(("
         f"'127.0.0.1', {port})); sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        _, mine = await asyncio.open_connection("127.0.0.1", port)
        peers = [await asyncio.wait_for(accepted.get(), 10) for _ in range(2)]
        owners = {socket_owner(peer_port, port, [os.getpid(), child.pid])
                  for _, peer_port in peers}
        assert owners == {os.getpid(), child.pid}
        assert socket_owner(peers[0][1], port, [12345678]) is None  # not among the pids
        mine.close()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
        server.close()
        await server.wait_closed()


async def test_a_block_on_one_source_leaves_the_others_through(echo: int) -> None:
    labels = {os.getpid(): "me"}

    def resolve(peer: tuple[str, int]) -> str | None:
        owner = socket_owner(peer[1], proxy.port, labels)
        return None if owner is None else labels[owner]

    proxy = await TcpProxy(("127.0.0.1", echo), resolve=resolve).start()
    try:
        _, writer = await roundtrip(proxy.port)
        proxy.block({"someone-else"})
        _, other = await roundtrip(proxy.port)  # not blocked: forwarded
        assert proxy.cut_count == 0
        proxy.block({"me"})
        assert proxy.cut_count == 2  # both of mine
        held_reader, held_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        held_writer.write(b"x")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(held_reader.read(1), 0.3)
        proxy.unblock({"someone-else"})  # not mine: still held
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(held_reader.read(1), 0.3)
        proxy.unblock({"me"})
        assert await asyncio.wait_for(held_reader.readexactly(1), 5) == b"x"
        for w in (writer, other, held_writer):
            w.close()
    finally:
        await proxy.aclose()


async def test_proxies_on_their_own_loop_are_driven_from_this_one(echo: int) -> None:
    net = ProxyLoop("test proxies")
    try:
        proxy = await net.run(TcpProxy(("127.0.0.1", echo)).start())
        _, writer = await roundtrip(proxy.port)
        net.call(proxy.block)
        await polling.eventually(lambda: proxy.cut_count == 1, 5, what="the link cut")
        net.call(proxy.unblock)
        _, again = await roundtrip(proxy.port)
        for w in (writer, again):
            w.close()
        await net.run(proxy.aclose())
    finally:
        net.close()


# --------------------------------------------------------------------------- the nemesis

def test_the_schedule_cycles_every_kind_or_kills_a_leader_every_nth_round() -> None:
    kinds = schedule(10)
    assert set(kinds) == set(nemesis.FAULT_KINDS) and len(kinds) == 10
    long = schedule(200, leader_kill_every=2)
    assert long.count("kill-leader") == 100
    assert set(long) == set(nemesis.FAULT_KINDS)
    with pytest.raises(ValueError, match="unknown fault kinds"):
        schedule(3, ["kill-leader", "flood"])


def test_damage_tail_truncates_or_flips_only_the_active_segment(tmp_path: Path) -> None:
    topic = "t"
    for partition in (0, 1):
        directory = tmp_path / f"{topic}-{partition}"
        directory.mkdir()
        (directory / f"{0:020d}.log").write_bytes(b"a" * 10_000)
        (directory / f"{100:020d}.log").write_bytes(b"b" * 10_000)
    (tmp_path / "tx-0").mkdir()  # another topic's partition: left alone
    (tmp_path / "tx-0" / f"{0:020d}.log").write_bytes(b"c" * 100)
    done = nemesis.damage_tail(tmp_path, topic, random.Random(7))
    assert len(done) == 2
    for partition in (0, 1):
        directory = tmp_path / f"{topic}-{partition}"
        assert (directory / f"{0:020d}.log").read_bytes() == b"a" * 10_000
        active = (directory / f"{100:020d}.log").read_bytes()
        assert active != b"b" * 10_000
        assert active[:10_000 - 4096] == b"b" * (10_000 - 4096)  # only the last 4 KiB
    assert (tmp_path / "tx-0" / f"{0:020d}.log").read_bytes() == b"c" * 100
    kinds: set[str] = set()
    for seed in range(20):
        (tmp_path / f"{topic}-0" / f"{100:020d}.log").write_bytes(b"b" * 10_000)
        kinds.update(line.split()[1] for line in
                     nemesis.damage_tail(tmp_path, topic, random.Random(seed)))
    assert kinds == {"cut", "bits"}  # both ways of damaging it come up


def test_the_chaos_benchmark_reports_each_run_per_fault_kind_with_failover_times() -> None:
    history = History()
    history.phase = "kill-leader"
    acked(history, "a", 0, ["a1", "a2"], 0)
    result = history.check({0: [(0, "a1")]})
    reports = [nemesis.FaultReport("kill-leader", (2,), failover_s=[1.5, 2.5], healthy_s=4.0),
               nemesis.FaultReport("restart-etcd", healthy_s=5.0)]
    run = broker_chaos.summarize("all-batch", "acks=ALL, fsync per batch", ACKS_ALL,
                                 "batch", 7, ["kill-leader", "restart-etcd"], reports, result,
                                 None, "", 12.0)
    assert run["leader_kills"] == 1 and run["total"]["lost"] == 1 and run["valid"] is False
    assert run["failover"]["p50_ms"] == pytest.approx(2000)
    args = broker_chaos.parse_args(["--rounds", "2", "--runs", "all-batch"])
    markdown = broker_chaos.report({
        "machine": {"cpu_model": "cpu", "nproc": 2, "python": "3.11", "date": "today"},
        "elapsed_s": 60.0, "runs": [run],
        "settings": {"rounds": args.rounds, "leader_kill_every": args.leader_kill_every,
                     "partitions": 3, "producers": 2, "batch": 5, "pace_ms": 50.0,
                     "hold_s": 4.0, "calm_s": 1.0, "lease_s": 2.0, "replica_lag_ms": 2000}})
    assert "| acks=ALL, fsync per batch | 2 | 1 | 2 | 1 |" in markdown  # rounds, kills, acked, lost
    assert "| kill-leader | 2 | 2 | 0 | 0 | 1 |" in markdown  # records, acked, failed, ...
    with pytest.raises(SystemExit):
        broker_chaos.parse_args(["--runs", "all-batch,nope"])
