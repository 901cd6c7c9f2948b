"""``geoplex broker ...`` commands: topics, producing from stdin, consuming to stdout,
consumer groups and their lag, dead letters (list and replay), and the cluster (brokers,
leaders, replicas and their lag).

``--target`` is one broker's host:port or several, comma-separated: the client asks them
for the cluster's metadata and sends each call where it belongs (a partition's leader, a
group's coordinator)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import IO

import grpc

from geoplex.broker.v1 import broker_pb2 as pb
from geoplex.clients.broker import (
    DEAD_LETTER_PREFIX,
    Acks,
    BrokerClient,
    ConsumedRecord,
    RecordFuture,
)
from geoplex.clients.channel import ChannelOptions
from geoplex.clients.errors import GeoplexError, GeoplexRpcError, NotFoundError

from .commands import Subcommands, call, command_group
from .output import print_error, print_next_page, print_table, printable

DEFAULT_TARGET = os.environ.get("GEOPLEX_BROKER_TARGET", "127.0.0.1:50053")
REPLAY_GROUP_PREFIX = "__replay."
# the headers the broker adds to a nacked record (origin, deliveries, due time, error):
# a replayed record goes back without them, as it was first written
OWN_HEADER_PREFIX = "geoplex-"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")
_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400, None: 1}
_SIZE = re.compile(r"(\d+)(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 1 << 10,
               "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def _connect(args: argparse.Namespace) -> Callable[[], BrokerClient]:
    """What opens a client at --target (with $GEOPLEX_TOKEN, if set)."""
    return partial(BrokerClient, args.target, ChannelOptions(token=os.environ.get("GEOPLEX_TOKEN")))


# -- argument types -------------------------------------------------------------------

def duration_s(text: str) -> float:
    """``14d``, ``12h``, ``30m``, ``45s``, ``500ms``, ``2w`` or plain seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a positive duration such as 14d, 12h, 30m, 45s or 500ms")
    return float(match.group(1)) * _UNITS_S[match.group(2)]


def size_bytes(text: str) -> int:
    """``1073741824``, ``512MiB``, ``10GB``..."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a size in bytes such as 1048576, 512MiB or 10GB")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= 0")
    return value


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 0")
    return value


def positive(text: str) -> int:
    value = non_negative(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1")
    return value


def reset_target(text: str) -> tuple[str, int]:
    """earliest | latest | an offset | a time (ISO 8601; no zone means UTC) ->
    (the ResetOffsets kind, offset or milliseconds)."""
    if text in ("earliest", "latest"):
        return text, 0
    if text.isdigit():
        return "offset", int(text)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected earliest, latest, an offset (a whole number >= 0) or a "
            "time such as 2025-06-01T12:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return "time", int(when.timestamp() * 1000)


def header_pair(text: str) -> tuple[str, bytes]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return name, value.encode()


def _when(ms: int) -> str:
    if ms <= 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds")[:-6] + "Z"


def _human_duration(seconds: float) -> str:
    for unit, size in (("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# -- topics ---------------------------------------------------------------------------

def cmd_topics_create(args: argparse.Namespace) -> int:
    topic = call(_connect(args), lambda broker: broker.create_topic(
        args.name, args.partitions, retention=args.retention,
        retention_bytes=args.retention_bytes, max_message_bytes=args.max_message_bytes,
        segment_bytes=args.segment_bytes, replication_factor=args.replication_factor,
        min_insync_replicas=args.min_insync_replicas))
    copies = (f", {topic.replication_factor} replicas each" if topic.replication_factor
              else "")
    print(f"created topic {printable(topic.name)} with {topic.partitions} partitions{copies}")
    return 0


def cmd_topics_list(args: argparse.Namespace) -> int:
    page = call(_connect(args), lambda broker: broker.list_topics(
        args.limit, args.page_token, include_internal=args.internal))
    print_table(("topic", "partitions", "retention", "created"),
                [(t.name, t.partitions,
                  _human_duration(t.config.retention.ToTimedelta().total_seconds()),
                  _when(t.create_time.ToMilliseconds())) for t in page.topics])
    if not page.topics:
        print("no topics (geoplex broker topics create NAME --partitions N)")
    print_next_page(page.next_page_token)
    return 0


def cmd_topics_describe(args: argparse.Namespace) -> int:
    got = call(_connect(args), lambda broker: broker.get_topic(args.name))
    topic, config = got.topic, got.topic.config
    print_table(("field", "value"), [
        ("topic", topic.name), ("partitions", topic.partitions),
        ("retention", _human_duration(config.retention.ToTimedelta().total_seconds())),
        ("retention bytes", _human_bytes(config.retention_bytes) if config.retention_bytes
         else "no limit"),
        ("max message bytes", _human_bytes(config.max_message_bytes)),
        ("segment bytes", _human_bytes(config.segment_bytes)),
        ("segment age", _human_duration(config.segment_age.ToTimedelta().total_seconds())),
        ("replication factor", topic.replication_factor or "-"),
        ("min in-sync replicas", config.min_insync_replicas or "-"),
        ("created", _when(topic.create_time.ToMilliseconds()))])
    print()
    print_table(("partition", "log start", "log end", "records", "size", "segments"),
                [(p.partition, p.log_start_offset, p.log_end_offset,
                  p.log_end_offset - p.log_start_offset, _human_bytes(p.size_bytes), p.segments)
                 for p in got.partitions])
    return 0


def cmd_topics_delete(args: argparse.Namespace) -> int:
    call(_connect(args), lambda broker: broker.delete_topic(args.name))
    print(f"deleted topic {printable(args.name)}")
    return 0


# -- produce --------------------------------------------------------------------------

async def _lines(stream: IO[bytes]) -> AsyncIterator[bytes]:
    """The lines of a binary stream without their line ends, read off the event loop (what
    is there: a line typed on a terminal goes out at once)."""
    read: Callable[[int], bytes] = getattr(stream, "read1", stream.read)
    left = b""
    while True:
        chunk = await asyncio.to_thread(read, 1 << 16)
        if not chunk:
            break
        lines = (left + chunk).split(b"\n")
        left = lines.pop()
        for line in lines:
            yield line.removesuffix(b"\r")
    if left:
        yield left.removesuffix(b"\r")


def _split(line: bytes, args: argparse.Namespace) -> tuple[bytes | None, bytes]:
    """(key, value) of one input line, per --key / --key-sep / --key-field."""
    if args.key_sep:
        key, sep, value = line.partition(args.key_sep.encode())
        if not sep:
            raise ValueError(f"--key-sep: the line has no {args.key_sep!r} between key and "
                             "value")
        return key, value
    if args.key_field:
        try:
            document = json.loads(line)
        except ValueError:
            raise ValueError("--key-field: the line is not a JSON object") from None
        if not isinstance(document, dict) or args.key_field not in document:
            raise ValueError(f"--key-field: the line has no field {args.key_field!r}")
        field = document[args.key_field]
        return (field if isinstance(field, str) else json.dumps(field)).encode(), line
    return (args.key.encode() if args.key else None), line


async def _produce(args: argparse.Namespace, stdin: IO[bytes]) -> int:
    headers = list(args.header or [])
    sent = 0
    async with _connect(args)() as broker:
        async with broker.producer(acks=Acks[args.acks.upper()], linger_ms=args.linger_ms
                                   ) as producer:
            number = 0
            async for line in _lines(stdin):
                number += 1
                if not line:
                    continue
                try:
                    key, value = _split(line, args)
                except ValueError as exc:
                    return print_error(f"line {number}: {exc} (the {sent} lines before it "
                                       "were produced)", code=1)
                await producer.send(args.topic, value, key=key, headers=headers or None,
                                    partition=args.partition)
                sent += 1
        stats = producer.stats
    if stats.records_failed:
        return print_error(f"{stats.records_failed} of {sent} records were not written: "
                           f"{producer.last_error}", code=1)
    print(f"produced {stats.records_sent} records to {printable(args.topic)}", file=sys.stderr)
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    if sum(bool(x) for x in (args.key, args.key_sep, args.key_field)) > 1:
        return print_error("give one of --key, --key-sep and --key-field")
    try:
        return asyncio.run(_produce(args, sys.stdin.buffer))
    except GeoplexRpcError:
        raise  # one line from geoplex's main
    except GeoplexError as exc:  # e.g. the buffer stayed full: the broker is unreachable
        return print_error(exc, code=1)
    except ValueError as exc:  # e.g. --partition past the topic's partitions
        return print_error(f"--partition: {exc}")


# -- consume --------------------------------------------------------------------------

class _Writer:
    """Values (optionally with partition, offset and key) one per line on stdout: raw bytes
    into a pipe or file, escaped on a terminal (a value could hold terminal escapes)."""

    def __init__(self, show_key: bool, show_offset: bool) -> None:
        self.show_key = show_key
        self.show_offset = show_offset
        self.tty = sys.stdout.isatty()
        self.out = sys.stdout.buffer

    def write(self, record: ConsumedRecord) -> None:
        prefix = b""
        if self.show_offset:
            prefix += f"{record.topic}/{record.partition}@{record.offset}\t".encode()
        if self.show_key:
            prefix += (record.key or b"") + b"\t"
        line = prefix + record.value
        if self.tty:
            line = printable(line.decode("utf-8", "backslashreplace")).encode()
        self.out.write(line + b"\n")

    def flush(self) -> None:
        self.out.flush()


async def _merged(readers: Sequence[AsyncIterator[ConsumedRecord]]
                  ) -> AsyncIterator[ConsumedRecord]:
    """Records of several partition readers as they arrive, until every reader ends."""
    queue: asyncio.Queue[ConsumedRecord | BaseException | None] = asyncio.Queue(maxsize=10_000)

    async def pump(reader: AsyncIterator[ConsumedRecord]) -> None:
        try:
            async for record in reader:
                await queue.put(record)
        except Exception as exc:  # noqa: BLE001 - raised where the records are read
            await queue.put(exc)
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(reader)) for reader in readers]
    running = len(tasks)
    try:
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _idle_limited(records: AsyncIterator[ConsumedRecord], idle: float | None
                        ) -> AsyncIterator[ConsumedRecord]:
    """``records`` until none arrives for ``idle`` seconds (None: no limit)."""
    iterator = aiter(records)
    while True:
        try:
            record = await (anext(iterator) if idle is None
                            else asyncio.wait_for(anext(iterator), idle))
        except (StopAsyncIteration, TimeoutError):
            return
        yield record


async def _consume(args: argparse.Namespace) -> int:
    writer = _Writer(args.print_key, args.print_offset)
    count = 0
    async with _connect(args)() as broker:
        if args.group:
            consumer = broker.consumer(
                args.group, [args.topic], client_id=f"geoplex-cli pid {os.getpid()}",
                auto_offset_reset="earliest" if args.from_beginning else "latest")
            async with consumer:
                async for record in _idle_limited(consumer, args.idle_timeout):
                    writer.write(record)
                    count += 1
                    if args.max and count >= args.max:
                        break
                writer.flush()  # leaving the consumer commits what was written
        else:
            got = await broker.get_topic(args.topic)
            readers = []
            for info in got.partitions:
                if args.partition is not None and info.partition != args.partition:
                    continue
                if args.offset is not None:
                    start = args.offset
                else:
                    start = info.log_start_offset if args.from_beginning else info.log_end_offset
                readers.append(broker.read(args.topic, info.partition, start,
                                           until_end=args.until_end))
            if not readers:
                return print_error(f"--partition: topic {args.topic!r} has partitions "
                                   f"0..{got.topic.partitions - 1}")
            async for record in _idle_limited(_merged(readers), args.idle_timeout):
                writer.write(record)
                count += 1
                if args.max and count >= args.max:
                    break
            writer.flush()
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    if args.group and (args.partition is not None or args.offset is not None):
        return print_error("--group reads the partitions the group assigns: it does not go "
                           "with --partition / --offset")
    if args.offset is not None and args.partition is None:
        return print_error("--offset needs --partition")
    if args.group and args.until_end:
        return print_error("--until-end is for reading without a group; with --group use "
                           "--max or --idle-timeout")
    return asyncio.run(_consume(args))


# -- groups ---------------------------------------------------------------------------

def cmd_groups_list(args: argparse.Namespace) -> int:
    page = call(_connect(args), lambda broker: broker.list_groups(args.limit, args.page_token))
    for name in page.groups:
        print(printable(name))
    if not page.groups:
        print("no consumer groups yet")
    print_next_page(page.next_page_token)
    return 0


def _assignment(tps: Sequence[pb.TopicPartitions]) -> str:
    return " ".join(f"{t.topic}:{','.join(str(p) for p in t.partitions)}" for t in tps) or "-"


def cmd_groups_describe(args: argparse.Namespace) -> int:
    group = call(_connect(args), lambda broker: broker.describe_group(args.group))
    print_table(("field", "value"), [
        ("group", group.group), ("state", group.state), ("generation", group.generation),
        ("dead-letter topic", group.dead_letter_topic or "-"),
        ("total lag", sum(max(0, p.lag) for p in group.lag))])
    print()
    print_table(("member", "client", "assignment", "last heartbeat"),
                [(m.member_id, m.client_id or "-", _assignment(m.assignment),
                  _when(m.last_heartbeat_time.ToMilliseconds())) for m in group.members])
    if not group.members:
        print("no members")
    print()
    print_table(("topic", "partition", "committed", "log end", "lag", "member"),
                [(p.topic, p.partition, p.committed_offset if p.committed_offset >= 0 else "-",
                  p.log_end_offset, p.lag, p.member_id or "-") for p in group.lag])
    return 0


def cmd_groups_reset(args: argparse.Namespace) -> int:
    to, value = args.to
    offsets = call(_connect(args), lambda broker: broker.reset_offsets(
        args.group, args.topic, to, partitions=args.partition or (),
        time_ms=value if to == "time" else 0, offset=value if to == "offset" else 0))
    print_table(("topic", "partition", "committed"),
                [(t, p, o) for (t, p), o in sorted(offsets.items())])
    return 0


# -- dead letters ---------------------------------------------------------------------

async def _dead_letters(broker: BrokerClient, group: str, starts: dict[int, int] | None,
                        limit: int) -> list[ConsumedRecord]:
    """Dead letters of ``group`` from ``starts`` (partition -> offset; None: the log
    start) to the log end, at most ``limit`` (0: all)."""
    topic = DEAD_LETTER_PREFIX + group
    try:
        got = await broker.get_topic(topic)
    except NotFoundError:
        return []
    found: list[ConsumedRecord] = []
    for info in got.partitions:
        start = max(info.log_start_offset, (starts or {}).get(info.partition, 0))
        if start >= info.log_end_offset:
            continue
        async for record in broker.read(topic, info.partition, start, until_end=True):
            found.append(record)
            if limit and len(found) >= limit:
                return found
    return found


async def _dlq_list(args: argparse.Namespace) -> int:
    async with _connect(args)() as broker:
        found = await _dead_letters(broker, args.group, None, args.max)
    print_table(("partition", "offset", "origin", "deliveries", "error", "key", "value"),
                [(r.partition, r.offset, f"{r.origin.topic}/{r.origin.partition}@"
                  f"{r.origin_offset}", _made(r), r.error or "-",
                  (r.key or b"").decode("utf-8", "backslashreplace") or "-",
                  _preview(r.value)) for r in found])
    if not found:
        print(f"no dead letters for group {printable(args.group)}")
    return 0


def _made(record: ConsumedRecord) -> str:
    """How many deliveries a dead letter had (its geoplex-deliveries header)."""
    made = record.header("geoplex-deliveries")
    return "-" if made is None else made.decode("ascii", "backslashreplace")


def _preview(value: bytes, width: int = 60) -> str:
    text = value.decode("utf-8", "backslashreplace")
    return text if len(text) <= width else text[:width - 1] + "…"


def cmd_dlq_list(args: argparse.Namespace) -> int:
    return asyncio.run(_dlq_list(args))


async def _dlq_replay(args: argparse.Namespace) -> int:
    replay_group = REPLAY_GROUP_PREFIX + args.group
    dlq = DEAD_LETTER_PREFIX + args.group
    async with _connect(args)() as broker:
        committed = await broker.get_committed_offsets(replay_group, [dlq])
        starts = {p: o for (t, p), o in committed.items() if t == dlq}
        found = await _dead_letters(broker, args.group, starts, args.max)
        if not found:
            print(f"nothing to replay for group {printable(args.group)}")
            return 0
        sent: list[tuple[ConsumedRecord, RecordFuture]] = []
        async with broker.producer() as producer:
            for record in found:
                origin = record.origin
                headers = [(k, v) for k, v in record.headers
                           if not k.startswith(OWN_HEADER_PREFIX)]
                sent.append((record, await producer.send(
                    origin.topic, record.value, key=record.key, headers=headers,
                    partition=origin.partition if origin.partition >= 0 else None,
                    timestamp_ms=record.timestamp_ms)))
        # per DLQ partition, commit past what was written, up to the first failure
        done: dict[int, int] = {}
        stopped: set[int] = set()
        failures = 0
        for record, future in sent:
            if record.partition in stopped:
                continue
            if future.exception() is None:
                done[record.partition] = record.offset + 1
            else:
                stopped.add(record.partition)
                failures += 1
        if done:
            await broker.commit_offsets(replay_group, {(dlq, p): o for p, o in done.items()})
    replayed = sum(1 for _, future in sent if future.exception() is None)
    print(f"replayed {replayed} dead letters of group {printable(args.group)}; "
          f"progress kept under group {printable(replay_group)}")
    if failures:
        return print_error(f"{len(sent) - replayed} dead letters could not be replayed "
                           f"({producer.last_error}); run the replay again", code=1)
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    return asyncio.run(_dlq_replay(args))


# -- the cluster ----------------------------------------------------------------------

async def _cluster_view(args: argparse.Namespace) -> dict[str, object]:
    """GetMetadata of one broker, and DescribeReplicas of every broker (each tells the
    replication of the partitions it leads), as one document."""
    topics = args.topic or ()
    async with _connect(args)() as broker:
        meta = await broker.get_metadata(topics)
        answers = await asyncio.gather(*(
            broker.describe_replicas(topics, broker=node.address) for node in meta.brokers),
            return_exceptions=True)
    replication: dict[tuple[str, int], pb.PartitionReplicas] = {}
    unreachable = []
    for node, answer in zip(meta.brokers, answers):
        if isinstance(answer, BaseException):
            if not isinstance(answer, GeoplexError):
                raise answer
            unreachable.append({"id": node.id, "address": node.address,
                                "error": str(answer)})
            continue
        for led in answer.partitions:
            replication[(led.topic, led.partition)] = led
    shown = [t for t in meta.topics
             if args.internal or topics or not t.name.startswith("__")]
    return {
        "brokers": [{"id": b.id, "address": b.address,
                     "controller": b.id == meta.controller_id} for b in meta.brokers],
        "controller": {"id": meta.controller_id, "epoch": meta.controller_epoch},
        "topics": [{
            "name": t.name, "replication_factor": t.replication_factor,
            "min_insync_replicas": t.min_insync_replicas,
            "partitions": [_partition_view(t.name, p, replication.get((t.name, p.partition)))
                           for p in sorted(t.partitions, key=lambda p: p.partition)],
        } for t in shown],
        "unreachable": unreachable,
    }


def _partition_view(topic: str, part: pb.PartitionMetadata,
                    led: pb.PartitionReplicas | None) -> dict[str, object]:
    view: dict[str, object] = {
        "partition": part.partition, "leader": part.leader_id,
        "leader_epoch": part.leader_epoch, "replicas": list(part.replicas),
        "isr": list(part.isr)}
    if led is not None:
        view["high_watermark"] = led.high_watermark
        view["log_end_offset"] = led.log_end_offset
        view["replica_states"] = [{
            "broker": r.broker_id, "log_end_offset": r.log_end_offset, "lag": r.lag,
            "in_sync": r.in_sync,
            "caught_up": _when(r.caught_up_time.ToMilliseconds())
            if r.HasField("caught_up_time") else "-"} for r in led.replicas]
    return view


def _ids(ids: object) -> str:
    return ",".join(str(i) for i in ids) if isinstance(ids, list) and ids else "-"


def _print_cluster(view: dict[str, object]) -> None:
    brokers = view["brokers"]
    topics = view["topics"]
    assert isinstance(brokers, list) and isinstance(topics, list)
    controller = view["controller"]
    assert isinstance(controller, dict)
    print_table(("broker", "address", "controller"),
                [(b["id"], b["address"], f"yes (epoch {controller['epoch']})"
                  if b["controller"] else "") for b in brokers])
    if not brokers:
        print("no broker is registered")
    print()
    partitions = [(t["name"], p) for t in topics for p in t["partitions"]]
    print_table(("topic", "partition", "leader", "epoch", "replicas", "isr",
                 "high watermark", "log end"),
                [(name, p["partition"], p["leader"] if p["leader"] >= 0 else "none",
                  p["leader_epoch"], _ids(p["replicas"]), _ids(p["isr"]),
                  p.get("high_watermark", "?"), p.get("log_end_offset", "?"))
                 for name, p in partitions])
    if not partitions:
        print("no topics (geoplex broker topics create NAME --partitions N)")
    states = [(name, p, r) for name, p in partitions for r in p.get("replica_states", [])]
    if states:
        print()
        print_table(("topic", "partition", "replica", "role", "log end", "lag", "in sync",
                     "caught up"),
                    [(name, p["partition"], r["broker"],
                      "leader" if r["broker"] == p["leader"] else "follower",
                      r["log_end_offset"], r["lag"], "yes" if r["in_sync"] else "NO",
                      r["caught_up"]) for name, p, r in states])
    unreachable = view["unreachable"]
    assert isinstance(unreachable, list)
    for gone in unreachable:
        print(f"\nbroker {gone['id']} at {printable(gone['address'])} did not answer "
              f"DescribeReplicas: {printable(gone['error'])}", file=sys.stderr)


def cmd_cluster(args: argparse.Namespace) -> int:
    try:
        view = asyncio.run(_cluster_view(args))
    except GeoplexRpcError as exc:
        if exc.code is grpc.StatusCode.UNIMPLEMENTED:
            return print_error("the broker does not answer GetMetadata (a version from "
                               "before clusters): it is a single broker", code=1)
        raise
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        _print_cluster(view)
    return 1 if view["unreachable"] else 0


# -- the parser -----------------------------------------------------------------------

def add_commands(sub: Subcommands) -> None:
    broker_sub = command_group(
        sub, "broker", help="topics, producing, consuming, consumer groups, dead letters, "
        "the cluster",
        description="Call BrokerService: manage topics, produce lines from stdin, consume "
        "to stdout (from an offset or as a group), show group lag, reset offsets, list "
        "or replay dead letters, and show the cluster's brokers, leaders and replicas.")

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--target", default=DEFAULT_TARGET,
                       help="host:port of a broker, or several comma-separated (any of a "
                       "cluster's will do; default: %(default)s, or $GEOPLEX_BROKER_TARGET)")
        return p

    # topics
    topics = command_group(broker_sub, "topics", help="create, list, describe, delete topics",
                           description="Manage topics and see their partitions.")
    c = common(topics.add_parser(
        "create", help="create a topic",
        description="Create a topic with its partitions. Records with the same key always "
        "land on the same partition: crc32c(key) mod partitions."))
    c.add_argument("name", help="1..200 characters of A-Z a-z 0-9 . _ -")
    c.add_argument("--partitions", type=positive, required=True, help="1..1024")
    c.add_argument("--retention", type=duration_s, default=None,
                   help="how long records are kept, e.g. 14d, 12h (default: 14d)")
    c.add_argument("--retention-bytes", type=size_bytes, default=0,
                   help="bytes kept per partition, e.g. 10GiB (default: no limit)")
    c.add_argument("--max-message-bytes", type=size_bytes, default=0,
                   help="largest record accepted (default: 1MiB)")
    c.add_argument("--segment-bytes", type=size_bytes, default=0,
                   help="a segment file rolls at this size (default: 64MiB)")
    c.add_argument("--replication-factor", type=non_negative, default=0,
                   help="copies of each partition, on different brokers (default: "
                   "min(3, brokers alive); more than are alive is refused)")
    c.add_argument("--min-insync-replicas", type=non_negative, default=0,
                   help="replicas that must be in sync for a produce with acks=all to "
                   "succeed (default: min(2, replication factor))")
    c.set_defaults(func=cmd_topics_create)

    ls = common(topics.add_parser("list", help="list topics",
                                  description="List topics in name order."))
    ls.add_argument("--internal", action="store_true",
                    help="include internal topics (retry, delay and dead-letter)")
    ls.add_argument("--limit", type=positive, default=100, help="topics per page, 1..1000")
    ls.add_argument("--page-token", default="", help="from a previous page")
    ls.set_defaults(func=cmd_topics_list)

    d = common(topics.add_parser(
        "describe", help="a topic's configuration and partitions",
        description="Show a topic's configuration and, per partition, its log start and end "
        "offsets, record count, size on disk and segments."))
    d.add_argument("name", help="the topic")
    d.set_defaults(func=cmd_topics_describe)

    rm = common(topics.add_parser("delete", help="delete a topic and its logs",
                                  description="Delete a topic and its partition logs."))
    rm.add_argument("name", help="the topic")
    rm.set_defaults(func=cmd_topics_delete)

    # produce
    p = common(broker_sub.add_parser(
        "produce", help="produce lines from stdin, one record each",
        description="Read lines from stdin and produce each as one record (the line, "
        "without its line end, is the value; empty lines are skipped). The key: --key for "
        "every record, --key-sep to split each line into KEY SEP VALUE, or --key-field to "
        "take it from a field of each line's JSON object; none: keyless (spread)."))
    p.add_argument("topic", help="the topic to write to")
    p.add_argument("--key", help="the same key for every record")
    p.add_argument("--key-sep", help="split each line at the first SEP into key and value")
    p.add_argument("--key-field", help="each line is a JSON object: its FIELD is the key")
    p.add_argument("--partition", type=non_negative, help="write every record here")
    p.add_argument("--header", type=header_pair, action="append",
                   help="NAME=VALUE header on every record (repeatable)")
    p.add_argument("--acks", choices=("none", "leader", "all"), default="leader",
                   help="when the broker answers (default: %(default)s)")
    p.add_argument("--linger-ms", type=non_negative_float, default=5.0,
                   help="how long a batch waits to fill (default: %(default)s)")
    p.set_defaults(func=cmd_produce)

    # consume
    cons = common(broker_sub.add_parser(
        "consume", help="consume records to stdout",
        description="Write record values to stdout, one per line. Without --group: read "
        "every partition (or --partition P, from --offset O) from the end, or from the "
        "beginning with --from-beginning. With --group G: read as a member of the consumer "
        "group G (its committed offsets, committed as it goes). Ctrl-C, --max, "
        "--idle-timeout or --until-end stop it."))
    cons.add_argument("topic", help="the topic to read")
    cons.add_argument("--partition", type=non_negative, help="only this partition")
    cons.add_argument("--offset", type=non_negative, help="start here (needs --partition)")
    cons.add_argument("--group", help="read as a member of this consumer group")
    cons.add_argument("--from-beginning", action="store_true",
                      help="start at the log start (a group: where it has no commit)")
    cons.add_argument("--max", type=positive, help="stop after this many records")
    cons.add_argument("--idle-timeout", type=duration_s,
                      help="stop when nothing arrives for this long, e.g. 5s")
    cons.add_argument("--until-end", action="store_true",
                      help="stop at the end of the log (without --group)")
    cons.add_argument("--print-key", action="store_true", help="KEY<TAB> before each value")
    cons.add_argument("--print-offset", action="store_true",
                      help="TOPIC/PARTITION@OFFSET<TAB> before each value")
    cons.set_defaults(func=cmd_consume)

    # groups
    groups = command_group(broker_sub, "groups", help="consumer groups: list, lag, reset",
                           description="See consumer groups, their members and lag, and "
                           "move their offsets.")
    gl = common(groups.add_parser("list", help="list consumer groups",
                                  description="List consumer groups in name order."))
    gl.add_argument("--limit", type=positive, default=100, help="groups per page")
    gl.add_argument("--page-token", default="", help="from a previous page")
    gl.set_defaults(func=cmd_groups_list)

    gd = common(groups.add_parser(
        "describe", help="a group's members and lag",
        description="Show a group's state and generation, its members with their "
        "partitions, and per partition the committed offset, log end and lag."))
    gd.add_argument("group", help="the consumer group")
    gd.set_defaults(func=cmd_groups_describe)

    gr = common(groups.add_parser(
        "reset", help="move a group's offsets (the group must have no members)",
        description="Set a group's committed offsets for a topic (also backwards): to the "
        "log start (earliest), the log end (latest), an offset, or the first record at or "
        "after a time. Only while the group has no members."))
    gr.add_argument("group", help="the consumer group (stop its consumers first)")
    gr.add_argument("--topic", required=True, help="the topic whose offsets move")
    gr.add_argument("--to", type=reset_target, required=True,
                    help="earliest | latest | OFFSET | TIME (ISO 8601, e.g. "
                    "2025-06-01T12:00:00Z)")
    gr.add_argument("--partition", type=non_negative, action="append",
                    help="only this partition (repeatable; default: all)")
    gr.set_defaults(func=cmd_groups_reset)

    # the cluster
    cl = common(broker_sub.add_parser(
        "cluster", help="brokers, controller, leaders, replicas and replication lag",
        description="Show the cluster: the brokers alive and which is the controller; per "
        "partition its leader, leader epoch, replicas and in-sync replicas (ISR); and, "
        "asked of every broker about the partitions it leads, each replica's log end and "
        "lag behind its leader. Exits 1 if a broker did not answer."))
    cl.add_argument("--topic", action="append",
                    help="only this topic (repeatable; default: every topic)")
    cl.add_argument("--internal", action="store_true",
                    help="include internal topics (retry, delay and dead-letter)")
    cl.add_argument("--json", action="store_true", help="one JSON document instead of tables")
    cl.set_defaults(func=cmd_cluster)

    # dead letters
    dlq = command_group(broker_sub, "dlq", help="a group's dead letters: list, replay",
                        description="Records a group gave up on after max deliveries are "
                        "kept in its dead-letter topic __dlq.GROUP, with the error and their "
                        "origin in headers.")
    dl = common(dlq.add_parser("list", help="list a group's dead letters",
                               description="List the dead letters of a group: origin, "
                               "deliveries, error, key and the start of the value."))
    dl.add_argument("group", help="the consumer group")
    dl.add_argument("--max", type=positive, default=0, help="at most this many")
    dl.set_defaults(func=cmd_dlq_list)

    dr = common(dlq.add_parser(
        "replay", help="produce dead letters again to where they came from",
        description="Produce a group's dead letters again to their origin topic and "
        "partition (without the broker's geoplex-* headers), then record how far the replay "
        "got under the group __replay.GROUP, so a record is not replayed twice."))
    dr.add_argument("group", help="the consumer group")
    dr.add_argument("--max", type=positive, default=0, help="at most this many")
    dr.set_defaults(func=cmd_dlq_replay)
