"""The agent's loop: collect every interval, write batches to telemetry, buffer meanwhile.

Two tasks share one :class:`~.buffer.Backlog`. The collector reads the host every
``interval_s`` (on a fixed schedule; a late collection does not shift the next ones) and
queues the collection, its samples stamped with the collection's time and the agent's
own metrics added. The sender writes batches from the front of the backlog, one at a
time, so a series' samples arrive in time order.

What a failed write does:

- UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED (telemetry down, slow, or over a
  limit) and CANCELLED: the batch waits again; the agent says once that telemetry is
  unreachable and retries with backoff (0.1 s doubling up to :data:`MAX_BACKOFF_S`),
  each retry a small batch of the oldest samples (:data:`PROBE_SAMPLES`), collecting
  into the backlog meanwhile; once a write goes through it says telemetry
  is back and how large the backlog is, and sends it oldest first. A full backlog
  drops its oldest samples (``geoplex_agent_dropped_samples_total``).
- Any other code (INVALID_ARGUMENT above all: telemetry refuses a sample more than its
  out-of-order window, 10 minutes by default, behind the newest sample it holds, or in a
  range already cut into a block): the batch is dropped and counted in
  ``geoplex_agent_rejected_samples_total``, and the reason logged the first time it is
  seen. A backlog older than that window is therefore lost when other writers have kept
  telemetry's newest sample current; the agent does not retry it.

The agent's own metrics, in every collection: ``geoplex_agent_collect_duration_seconds``
(the reading's), ``geoplex_agent_buffered_samples`` (before this collection),
``geoplex_agent_sent_samples_total``, ``geoplex_agent_dropped_samples_total``,
``geoplex_agent_rejected_samples_total``, ``geoplex_agent_process_cpu_seconds_total``
and ``geoplex_agent_process_resident_memory_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import grpc.aio

from geoplex.clients.channel import ChannelOptions, keepalive_arguments
from geoplex.clients.errors import GeoplexRpcError
from geoplex.clients.telemetry import TelemetryClient
from geoplex.telemetry.v1 import telemetry_pb2 as pb

from .buffer import Backlog, Batch, SeriesKey
from .collect import Collection, Collector, Sample

logger = logging.getLogger(__name__)

# telemetry's defaults for GEOPLEX_TELEMETRY_WRITE_MAX_SERIES / _WRITE_MAX_SAMPLES
WRITE_MAX_SERIES = 10_000
WRITE_MAX_SAMPLES = 100_000
# a batch's samples lie within this of each other (well inside telemetry's default
# out-of-order window of 10 minutes, which a write's own newest sample also sets)
BATCH_SPAN_MS = 60_000
MAX_BACKOFF_S = 5.0
# while telemetry is unreachable each retry sends at most this many samples (the oldest):
# a probe, not the backlog's largest batch built again and again
PROBE_SAMPLES = 1_000
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED})


@dataclass(frozen=True, slots=True)
class AgentConfig:
    target: str
    interval_s: float = 10.0
    job: str = "node"
    instance: str = field(default_factory=socket.gethostname)
    processes: tuple[str, ...] = ()
    buffer_samples: int = 1_000_000
    flush_s: float = 2.0          # what a stop waits for the backlog to go out
    write_timeout_s: float = 10.0
    max_series: int = WRITE_MAX_SERIES
    max_samples: int = WRITE_MAX_SAMPLES

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"interval must be more than 0 s, not {self.interval_s}")
        if self.buffer_samples < 1:
            raise ValueError(f"buffer must hold at least 1 sample, not {self.buffer_samples}")
        if not self.job or not self.instance:
            raise ValueError("job and instance must not be empty")


class State(enum.Enum):
    STARTING = "starting"        # nothing written yet
    SENDING = "sending"          # the last write went through
    UNREACHABLE = "unreachable"  # the last write failed with a retryable code


class Outcome(enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    REFUSED = "refused"


def telemetry_channel(target: str) -> grpc.aio.Channel:
    """A channel that reconnects within a few seconds of telemetry coming back (gRPC's
    reconnect backoff grows to 2 minutes by default) and does not retry on its own (the
    agent does, keeping its batches in order)."""
    return grpc.aio.insecure_channel(target, options=[
        ("grpc.enable_retries", 0), *keepalive_arguments(ChannelOptions()),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF_S * 1000))])


def _print(line: str) -> None:
    print(line, flush=True)


class Agent:
    """Collects into a backlog and writes it to telemetry until :meth:`run`'s stop."""

    def __init__(self, config: AgentConfig, *, collector: Collector | None = None,
                 report: Callable[[str], None] = _print) -> None:
        self.config = config
        self.collector = collector or Collector(config.processes)
        self.backlog = Backlog(config.buffer_samples)
        self.report = report
        self.state = State.STARTING
        self.collections = 0
        self._wake = asyncio.Event()
        self._labels: dict[SeriesKey, list[pb.Label]] = {}
        self._refusals_seen: set[tuple[str, str]] = set()
        self._dropping = False
        self._collect_errors_seen: set[type[BaseException]] = set()

    # -- collecting --------------------------------------------------------------

    def agent_samples(self, collection: Collection) -> list[Sample]:
        b = self.backlog
        return [Sample("geoplex_agent_collect_duration_seconds", (), collection.duration_s),
                Sample("geoplex_agent_buffered_samples", (), float(b.samples)),
                Sample("geoplex_agent_sent_samples_total", (), float(b.sent_total)),
                Sample("geoplex_agent_dropped_samples_total", (), float(b.dropped_total)),
                Sample("geoplex_agent_rejected_samples_total", (), float(b.rejected_total))]

    async def collect_once(self) -> Collection:
        """One collection, the agent's metrics added, queued in the backlog."""
        collection = await asyncio.to_thread(self.collector.collect)
        samples = collection.samples + self.agent_samples(collection)
        time_ms = collection.time_ms
        if self.backlog.last_ms is not None and time_ms <= self.backlog.last_ms:
            time_ms = self.backlog.last_ms + 1  # the clock stepped back: keep order
        dropped = self.backlog.push(time_ms, samples)
        self.collections += 1
        if dropped and not self._dropping:
            self._dropping = True
            self.report(f"backlog full ({self.config.buffer_samples:,} samples): dropping "
                        "the oldest")
        self._wake.set()
        return Collection(time_ms, collection.duration_s, samples)

    async def _collect_forever(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            try:
                await self.collect_once()
            except Exception as error:  # noqa: BLE001 - one bad reading must not end it
                if type(error) not in self._collect_errors_seen:
                    self._collect_errors_seen.add(type(error))
                    logger.exception("a collection failed (logged once per error type)")
            next_at += self.config.interval_s
            now = loop.time()
            if next_at < now:  # late (a slow reading, a suspended host): skip, not bunch up
                next_at = now + self.config.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), next_at - now)

    # -- sending ------------------------------------------------------------------

    def to_pb(self, batch: Batch) -> list[pb.TimeSeries]:
        out = []
        for key, points in batch.series.items():
            labels = self._labels.get(key)
            if labels is None:
                if len(self._labels) > 100_000:  # series come and go: start over
                    self._labels.clear()
                name, own = key
                labels = self._labels[key] = [
                    pb.Label(name="__name__", value=name),
                    pb.Label(name="job", value=self.config.job),
                    pb.Label(name="instance", value=self.config.instance),
                    *(pb.Label(name=k, value=v) for k, v in own)]
            out.append(pb.TimeSeries(labels=labels, samples=[
                pb.Sample(timestamp_ms=t, value=v) for t, v in points]))
        return out

    async def write(self, client: TelemetryClient, batch: Batch,
                    timeout: float) -> tuple[Outcome, GeoplexRpcError | None]:
        """Write one batch and settle it in the backlog."""
        try:
            await client.write(self.to_pb(batch), timeout=timeout)
        except asyncio.CancelledError:
            self.backlog.retry(batch)
            raise
        except GeoplexRpcError as error:
            if error.code in RETRYABLE:
                self.backlog.retry(batch)
                return Outcome.RETRY, error
            self.backlog.refused(batch)
            self._log_refusal(batch, error)
            return Outcome.REFUSED, error
        self.backlog.sent(batch)
        return Outcome.SENT, None

    def _log_refusal(self, batch: Batch, error: GeoplexRpcError) -> None:
        kind = (error.code.name, error.reason)
        if kind in self._refusals_seen:
            return
        self._refusals_seen.add(kind)
        logger.warning("telemetry refused a batch of %d samples (%s); dropped, counted in "
                       "geoplex_agent_rejected_samples_total (logged once per reason): %s",
                       batch.samples, error.reason or error.code.name, error.message)

    def _went(self, state: State, error: GeoplexRpcError | None = None,
              written: int = 0) -> None:
        if state is self.state:
            return
        before, self.state = self.state, state
        b = self.backlog
        if state is State.UNREACHABLE:
            why = f"{error.code.name}: {error.message}" if error else "no answer"
            self.report(f"telemetry at {self.config.target} unreachable ({why}); "
                        f"buffering, backlog {b.samples:,} samples")
        elif before is State.UNREACHABLE:
            self._dropping = False
            self.report(f"telemetry at {self.config.target} back; sending the backlog of "
                        f"{b.samples + written:,} samples")

    def _take(self) -> Batch | None:
        c = self.config
        limit = c.max_samples if self.state is not State.UNREACHABLE else min(
            c.max_samples, PROBE_SAMPLES)
        return self.backlog.take(c.max_series, limit, BATCH_SPAN_MS)

    async def _send_forever(self, client: TelemetryClient) -> None:
        backoff = 0.1
        c = self.config
        while True:
            batch = self._take()
            if batch is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            outcome, error = await self.write(client, batch, c.write_timeout_s)
            if outcome is Outcome.RETRY:
                self._went(State.UNREACHABLE, error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = 0.1
            if outcome is Outcome.SENT:
                self._went(State.SENDING, written=batch.samples)

    async def _flush(self, client: TelemetryClient) -> None:
        """Write what waits, for up to ``flush_s`` (a write that fails to get through is
        tried again every 0.1 s until then)."""
        c = self.config
        deadline = time.monotonic() + c.flush_s
        while (left := deadline - time.monotonic()) > 0:
            batch = self._take()
            if batch is None:
                return
            outcome, error = await self.write(client, batch, max(0.05, min(
                left, c.write_timeout_s)))
            if outcome is Outcome.SENT:
                self._went(State.SENDING, written=batch.samples)
            elif outcome is Outcome.RETRY:
                self._went(State.UNREACHABLE, error)
                await asyncio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    async def run(self, stop: asyncio.Event) -> None:
        """Collect and send until ``stop`` is set; then flush for up to ``flush_s``."""
        channel = telemetry_channel(self.config.target)
        client = TelemetryClient(channel, ChannelOptions(retry=False))
        sender = asyncio.create_task(self._send_forever(client), name="agent-sender")
        try:
            await self._collect_forever(stop)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            if self.backlog.out is not None:
                self.backlog.retry(self.backlog.out)
            try:
                await self._flush(client)
            finally:
                await channel.close()


async def run_once(config: AgentConfig) -> tuple[Collection, GeoplexRpcError | None]:
    """One collection, written to telemetry (one attempt per batch, ``write_timeout_s``
    each); the collection and the error that kept it from telemetry, if one did."""
    agent = Agent(config, report=lambda _line: None)
    collection = await agent.collect_once()
    channel = telemetry_channel(config.target)
    try:
        client = TelemetryClient(channel, ChannelOptions(retry=False))
        while batch := agent.backlog.take(config.max_series, config.max_samples,
                                          BATCH_SPAN_MS):
            outcome, error = await agent.write(client, batch, config.write_timeout_s)
            if outcome is not Outcome.SENT:
                return collection, error
    finally:
        await channel.close()
    return collection, None


def family_counts(samples: Sequence[Sample]) -> list[tuple[str, int]]:
    """(metric name, samples) for each family, by name."""
    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample.name] = counts.get(sample.name, 0) + 1
    return sorted(counts.items())
