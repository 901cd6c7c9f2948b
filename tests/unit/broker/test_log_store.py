"""The log store: a directory per partition, topics created, found again, configured and
deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoplex.servers.broker.domain import TopicConfig, TopicSpec, UnknownPartition, UnknownTopic
from geoplex.servers.broker.log import DiskLogStore, FsyncPolicy


async def test_create_makes_a_directory_per_partition_and_open_finds_them(
        tmp_path: Path) -> None:
    store = DiskLogStore(tmp_path, FsyncPolicy.never())
    await store.open()
    await store.create(TopicSpec("orders.v1-eu", 3))
    await store.create(TopicSpec("__delay.g", 1))
    await store.create(TopicSpec("orders.v1-eu", 3))  # idempotent
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "__delay.g-0", "orders.v1-eu-0", "orders.v1-eu-1", "orders.v1-eu-2"]
    await store.partition("orders.v1-eu", 2).append(b"", 4, 0)
    await store.close()

    again = DiskLogStore(tmp_path, FsyncPolicy.never())
    await again.open()
    assert again.topics() == ["__delay.g", "orders.v1-eu"]
    assert again.partition("orders.v1-eu", 2).log_end_offset == 4
    assert again.partition("orders.v1-eu", 0).log_end_offset == 0
    await again.close()


async def test_unknown_topics_and_partitions_are_refused(tmp_path: Path) -> None:
    store = DiskLogStore(tmp_path, FsyncPolicy.never())
    await store.open()
    await store.create(TopicSpec("t", 2))
    with pytest.raises(UnknownTopic):
        store.partition("nope", 0)
    with pytest.raises(UnknownPartition) as error:
        store.partition("t", 2)
    assert "0..1" in error.value.message
    await store.close()


async def test_growing_a_topic_adds_partitions_and_keeps_the_others(tmp_path: Path) -> None:
    store = DiskLogStore(tmp_path, FsyncPolicy.never())
    await store.open()
    await store.create(TopicSpec("t", 1))
    await store.partition("t", 0).append(b"", 1, 0)
    await store.create(TopicSpec("t", 3))
    assert store.partition("t", 0).log_end_offset == 1
    assert store.partition("t", 2).log_end_offset == 0
    await store.close()


async def test_delete_closes_and_removes_a_topic(tmp_path: Path) -> None:
    store = DiskLogStore(tmp_path, FsyncPolicy.never())
    await store.open()
    await store.create(TopicSpec("gone", 2))
    await store.create(TopicSpec("stays", 1))
    log = store.partition("gone", 1)
    await log.append(b"x", 1, 0)
    await store.delete("gone")
    assert log.closed and store.topics() == ["stays"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stays-0"]
    with pytest.raises(UnknownTopic):
        store.partition("gone", 0)
    await store.create(TopicSpec("gone", 1))  # a new topic of the same name starts empty
    assert store.partition("gone", 0).log_end_offset == 0
    await store.close()


async def test_configure_gives_found_topics_their_settings_for_retention(tmp_path: Path) -> None:
    store = DiskLogStore(tmp_path, FsyncPolicy.never())
    await store.open()
    await store.create(TopicSpec("t", 1, TopicConfig(segment_bytes=1_000)))
    for _ in range(20):
        await store.partition("t", 0).append(b"x" * 300, 1, 0)
    await store.close()

    again = DiskLogStore(tmp_path, FsyncPolicy.never())
    again.configure(TopicSpec("t", 1, TopicConfig(segment_bytes=1_000, retention_bytes=1_000)))
    await again.open()
    log = again.partition("t", 0)
    assert log.config.retention_bytes == 1_000
    assert await again.enforce_retention(0) > 0
    assert log.log_start_offset > 0 and log.size_bytes <= 1_000 + 400
    await again.close()
