"""``geoplex broker ...`` run as a user runs it (a subprocess) against a real broker."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from geoplex.clients.broker import BrokerClient
from geoplex.tools.cli import build_parser
from broker_calls import unique

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


def geoplex(address: str, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    target = ["--target", address] if address else []
    return subprocess.run([sys.executable, "-m", "geoplex.tools.cli", "broker", *argv, *target],
                          input=stdin, capture_output=True, timeout=60, check=False)


def ok(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def broker_parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser under ``geoplex broker``, with its command line."""
    def walk(prefix: str, parser: argparse.ArgumentParser
             ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield prefix, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(f"{prefix} {name}", child)

    root = build_parser()
    (sub,) = [a for a in root._actions if isinstance(a, argparse._SubParsersAction)]
    yield from walk("broker", sub.choices["broker"])


def test_every_broker_command_says_what_it_does_in_its_help():
    commands = dict(broker_parsers())
    assert {"broker topics create", "broker topics list", "broker topics describe",
            "broker topics delete", "broker produce", "broker consume", "broker groups list",
            "broker groups describe", "broker groups reset", "broker dlq list",
            "broker dlq replay"} <= set(commands)
    for line, parser in commands.items():
        assert parser.description and len(parser.description) > 20, line


def test_topics_create_list_describe_delete(broker_address):
    name = unique("cli")
    out = ok(geoplex(broker_address, "topics", "create", name, "--partitions", "3",
                     "--retention", "2d", "--retention-bytes", "1GiB"))
    assert f"created topic {name} with 3 partitions" in out
    assert name in ok(geoplex(broker_address, "topics", "list"))
    described = ok(geoplex(broker_address, "topics", "describe", name))
    assert "2d" in described and "1.0 GiB" in described
    rows = [line.split() for line in described.splitlines() if line[:1].isdigit()]
    assert [row[:3] for row in rows] == [["0", "0", "0"], ["1", "0", "0"], ["2", "0", "0"]]
    assert f"deleted topic {name}" in ok(geoplex(broker_address, "topics", "delete", name))
    gone = geoplex(broker_address, "topics", "describe", name)
    assert gone.returncode == 1 and b"NOT_FOUND" in gone.stderr
    assert len(gone.stderr.decode().strip().splitlines()) == 1  # one line


def test_bad_input_names_the_field_and_what_is_allowed(broker_address):
    zero = geoplex(broker_address, "topics", "create", unique("bad"), "--partitions", "0")
    assert zero.returncode == 2 and b"expected a whole number >= 1" in zero.stderr
    retention = geoplex(broker_address, "topics", "create", unique("bad"), "--partitions", "1",
                        "--retention", "soon")
    assert retention.returncode == 2 and b"14d" in retention.stderr
    reset = geoplex(broker_address, "groups", "reset", "g", "--topic", "t", "--to", "never")
    assert reset.returncode == 2 and b"earliest, latest" in reset.stderr
    server_side = geoplex(broker_address, "topics", "create", "bad name!", "--partitions", "1")
    assert server_side.returncode == 1 and b"INVALID_ARGUMENT" in server_side.stderr


def test_produce_lines_then_consume_them_from_an_offset_and_from_the_beginning(
        broker_address):
    name = unique("lines")
    ok(geoplex(broker_address, "topics", "create", name, "--partitions", "2"))
    lines = b"".join(b"rider-%d\tride %d\n" % (i % 3, i) for i in range(30))
    produced = geoplex(broker_address, "produce", name, "--key-sep", "\t", stdin=lines)
    assert b"produced 30 records" in ok_stderr(produced)
    everything = ok(geoplex(broker_address, "consume", name, "--from-beginning",
                            "--until-end", "--print-key"))
    got = sorted(everything.splitlines())
    assert got == sorted(f"rider-{i % 3}\tride {i}" for i in range(30))
    # within a partition, the order of the lines
    with_offsets = ok(geoplex(broker_address, "consume", name, "--partition", "1",
                              "--offset", "0", "--until-end", "--print-offset"))
    values = [line.split("\t")[1] for line in with_offsets.splitlines()]
    assert values == sorted(values, key=lambda v: int(v.split()[1]))
    one = ok(geoplex(broker_address, "consume", name, "--partition", "1", "--offset", "1",
                     "--max", "1"))
    assert one.splitlines() == values[1:2]


def ok_stderr(done: subprocess.CompletedProcess[bytes]) -> bytes:
    assert done.returncode == 0, done.stderr.decode()
    return done.stderr


def test_consume_as_a_group_commits_shows_lag_and_resets(broker_address):
    name, group = unique("grp"), unique("cli-group")
    ok(geoplex(broker_address, "topics", "create", name, "--partitions", "1"))
    ok_stderr(geoplex(broker_address, "produce", name,
                      stdin=b"".join(b"v%d\n" % i for i in range(10))))
    first = ok(geoplex(broker_address, "consume", name, "--group", group, "--from-beginning",
                       "--max", "4"))
    assert first.splitlines() == ["v0", "v1", "v2", "v3"]
    described = ok(geoplex(broker_address, "groups", "describe", group))
    lag_rows = [line.split() for line in described.splitlines() if line.startswith(name)]
    assert lag_rows == [[name, "0", "4", "10", "6", "-"]]  # committed 4 of 10, no members
    assert group in ok(geoplex(broker_address, "groups", "list"))
    rest = ok(geoplex(broker_address, "consume", name, "--group", group, "--max", "6"))
    assert rest.splitlines() == [f"v{i}" for i in range(4, 10)]
    reset = ok(geoplex(broker_address, "groups", "reset", group, "--topic", name,
                       "--to", "2"))
    assert [line.split() for line in reset.splitlines()][-1] == [name, "0", "2"]
    again = ok(geoplex(broker_address, "consume", name, "--group", group, "--max", "1"))
    assert again.splitlines() == ["v2"]


def test_dead_letters_are_listed_and_replayed_once(broker_address):
    name, group = unique("dl"), unique("dl-group")

    async def dead_letter() -> None:
        async with BrokerClient(broker_address) as client:
            await client.create_topic(name, 2)
            async with client.producer() as producer:
                await producer.send(name, b"poison", key=b"k", partition=1,
                                    headers=[("trace", b"abc")])
            async with client.consumer(group, [name], auto_offset_reset="earliest",
                                       max_deliveries=1) as consumer:
                record = await asyncio.wait_for(anext(consumer), 30)
                answer = await consumer.nack(record, error="cannot parse")
                assert answer.dead_lettered

    asyncio.run(dead_letter())
    listed = ok(geoplex(broker_address, "dlq", "list", group))
    assert f"{name}/1@0" in listed and "cannot parse" in listed and "poison" in listed
    replayed = ok(geoplex(broker_address, "dlq", "replay", group))
    assert "replayed 1 dead letters" in replayed
    assert "nothing to replay" in ok(geoplex(broker_address, "dlq", "replay", group))
    back = ok(geoplex(broker_address, "consume", name, "--partition", "1", "--offset", "0",
                      "--until-end", "--print-key"))
    assert back.splitlines() == ["k\tpoison", "k\tpoison"]  # the original, and the replay

    async def replayed_headers() -> list[tuple[str, bytes]]:
        async with BrokerClient(broker_address) as client:
            records = [r async for r in client.read(name, 1, 1, until_end=True)]
        return list(records[0].headers)

    assert asyncio.run(replayed_headers()) == [("trace", b"abc")]  # no geoplex-* headers
