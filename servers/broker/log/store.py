"""Every partition log on this broker's disk: ``<data_dir>/<topic>-<partition>/``."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..domain import TopicConfig, TopicSpec, UnknownPartition, UnknownTopic
from .partition import Clock, DiskPartitionLog, now_ms
from .policy import FsyncPolicy

logger = logging.getLogger(__name__)

_PARTITION_DIR = re.compile(r"(?P<topic>.+)-(?P<partition>0|[1-9][0-9]{0,5})")
_OPENING_AT_ONCE = 8  # partitions recovered in parallel threads at open


class DiskLogStore:
    """A :class:`~geoplex.servers.broker.ports.LogStore` on local disk.

    A topic's configuration (segment size and age, retention) comes from
    :meth:`configure` or :meth:`create`; a topic found on disk before either uses
    ``default_config`` until then (so the app passes the specs it read from the metadata
    store to :meth:`configure` before :meth:`open`, and again when they change).
    """

    def __init__(self, data_dir: Path | str, policy: FsyncPolicy | None = None,
                 default_config: TopicConfig | None = None, clock: Clock = now_ms) -> None:
        self.data_dir = Path(data_dir)
        self.policy = policy or FsyncPolicy()
        self.default_config = default_config or TopicConfig()
        self._clock = clock
        self._specs: dict[str, TopicSpec] = {}
        self._logs: dict[str, dict[int, DiskPartitionLog]] = {}
        self._lock = asyncio.Lock()

    def configure(self, spec: TopicSpec) -> None:
        """Use ``spec``'s configuration for its topic from now on (open logs included)."""
        self._specs[spec.name] = spec
        for log in self._logs.get(spec.name, {}).values():
            log.configure(spec.config)

    def _config(self, topic: str) -> TopicConfig:
        spec = self._specs.get(topic)
        return spec.config if spec is not None else self.default_config

    async def _open_log(self, topic: str, partition: int) -> DiskPartitionLog:
        return await DiskPartitionLog.open(self.data_dir / f"{topic}-{partition}", topic,
                                           partition, self._config(topic), self.policy,
                                           self._clock)

    async def open(self) -> None:
        """Open (and recover) every partition found on disk."""
        async with self._lock:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            found = []
            for entry in sorted(self.data_dir.iterdir()):
                match = _PARTITION_DIR.fullmatch(entry.name)
                if match and entry.is_dir():
                    found.append((match["topic"], int(match["partition"])))
            gate = asyncio.Semaphore(_OPENING_AT_ONCE)

            async def one(topic: str, partition: int) -> None:
                if partition in self._logs.get(topic, {}):
                    return
                async with gate:
                    log = await self._open_log(topic, partition)
                self._logs.setdefault(topic, {})[partition] = log

            await asyncio.gather(*(one(topic, partition) for topic, partition in found))
            opened = [log for logs in self._logs.values() for log in logs.values()]
            unclean = sum(not log.recovered_clean for log in opened)
            cut = sum(log.recovery_truncated for log in opened)
            logger.info("opened %d partitions of %d topics in %s (%d recovered after an "
                        "unclean shutdown, %d with a torn or corrupt batch)", len(found),
                        len(self._logs), self.data_dir, unclean, cut)

    async def close(self) -> None:
        async with self._lock:
            logs = [log for logs in self._logs.values() for log in logs.values()]
            self._logs.clear()
            await asyncio.gather(*(log.close() for log in logs))

    async def create(self, topic: TopicSpec) -> None:
        """Make the topic's missing partition logs (existing ones are kept, never fewer)."""
        async with self._lock:
            self.configure(topic)
            logs = self._logs.setdefault(topic.name, {})
            for partition in range(topic.partitions):
                if partition not in logs:
                    logs[partition] = await self._open_log(topic.name, partition)

    async def delete(self, topic: str) -> None:
        """Close and remove the topic's partition logs (a topic not on disk: nothing)."""
        async with self._lock:
            self._specs.pop(topic, None)
            logs = self._logs.pop(topic, {})
            await asyncio.gather(*(log.discard() for log in logs.values()))
            directories = [self.data_dir / f"{topic}-{partition}" for partition in logs]
            await asyncio.to_thread(_remove_trees, directories)

    def partition(self, topic: str, partition: int) -> DiskPartitionLog:
        """Raises domain.UnknownTopic / domain.UnknownPartition."""
        logs = self._logs.get(topic)
        if logs is None:
            raise UnknownTopic(topic)
        log = logs.get(partition)
        if log is None:
            spec = self._specs.get(topic)
            raise UnknownPartition(topic, partition,
                                   spec.partitions if spec is not None else max(logs, default=-1) + 1)
        return log

    def topics(self) -> Sequence[str]:
        return sorted(self._logs)

    async def enforce_retention(self, now_ms: int) -> int:
        """Delete whole segments past each topic's retention; returns how many."""
        deleted = 0
        for logs in list(self._logs.values()):
            for log in list(logs.values()):
                deleted += await log.enforce_retention(now_ms)
        return deleted


def _remove_trees(directories: list[Path]) -> None:
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
