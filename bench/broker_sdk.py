"""``bench.broker``'s driver for our broker through the typed SDK (``clients/broker.py``).

Its own module so that the benchmark runs the other systems while the SDK cannot be
imported. The producer is the SDK's: idempotent, one batch in flight per partition (the
next one fills meanwhile), ``batch_records`` set to the cell's batch size, the default
linger; the end-to-end latency run sends with ``linger_ms=0`` (a batch goes out as soon as
the partition has none in flight). The consumer is the group consumer (``async for``),
committing every second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from geoplex.clients.broker import BrokerClient, Producer
from geoplex.clients.errors import SessionClosedError

from .broker_systems import Driver, ValueCallback

RECORD_OVERHEAD = 64  # bytes the SDK counts per record, and some


class OursSdk(Driver):
    key = "ours-sdk"
    label = "ours (SDK)"

    def __init__(self, address: str, fsync: str, pids: Sequence[int],
                 record_bytes: int = 1024) -> None:
        super().__init__(fsync, pids)
        self.address = address
        self.record_bytes = record_bytes
        self.topic = ""
        self._client: BrokerClient | None = None
        self._producer: Producer | None = None
        self._group = 0

    @property
    def client(self) -> BrokerClient:
        assert self._client is not None, "open() first"
        return self._client

    async def open(self) -> None:
        self._client = BrokerClient(self.address)
        await self.client.list_topics(timeout=30)

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._drop()
            await self._client.aclose()
            self._client = None

    async def _drop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.close()
        if self.topic:
            topic, self.topic = self.topic, ""
            await self.client.delete_topic(topic, timeout=30)

    async def fresh(self, name: str) -> None:
        await self._drop()
        await self.client.create_topic(name, 1, timeout=30)
        self.topic = name

    async def prepare(self, batch: int | None) -> None:
        if self._producer is not None:
            await self._producer.close()
        if batch is None:  # the latency run: no linger
            self._producer = self.client.producer(linger_ms=0)
        else:
            self._producer = self.client.producer(
                batch_records=batch, batch_bytes=batch * (self.record_bytes + RECORD_OVERHEAD),
                buffer_bytes=max(32 << 20, 8 * batch * (self.record_bytes + RECORD_OVERHEAD)))

    @property
    def produce_note(self) -> str:
        return ("Producer.send per record (batch_records = the batch, linger 5 ms), await "
                "the batch's futures; idempotent, one batch in flight per partition")

    async def send(self, values: Sequence[bytes]) -> None:
        if self._producer is None:
            await self.prepare(len(values))
        producer = self._producer
        assert producer is not None
        futures = [await producer.send(self.topic, v, partition=0) for v in values]
        for future in futures:
            await future

    async def consume(self, count: int, batch: int) -> int:
        self._group += 1
        consumer = self.client.consumer(
            f"bench-sdk-{self._group}", [self.topic], auto_offset_reset="earliest",
            auto_commit_interval=1.0,
            fetch_max_bytes=max(batch * (self.record_bytes + 16), 1))
        read = 0
        async with consumer:
            async for _record in consumer:
                read += 1
                if read >= count:
                    break
        return read

    async def receive(self, on_value: ValueCallback, started: asyncio.Event,
                      stop: asyncio.Event) -> None:
        self._group += 1
        consumer = self.client.consumer(f"bench-sdk-{self._group}", [self.topic],
                                        auto_offset_reset="latest",
                                        auto_commit_interval=1.0)
        await consumer.start()
        started.set()

        async def closer() -> None:
            await stop.wait()
            await consumer.close()

        closing = asyncio.create_task(closer())
        try:
            async for record in consumer:
                on_value(record.value)
        except SessionClosedError:
            pass  # closed at the end of the measurement
        finally:
            if not stop.is_set():  # ended by an error: close it here
                closing.cancel()
                await consumer.close()
            else:
                await closing
