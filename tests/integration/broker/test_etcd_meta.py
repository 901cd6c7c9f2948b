"""The broker's metadata on a real etcd: topics, their watch, committed offsets, cursors.

Each test works under its own key prefix on the session's etcd and removes it afterwards.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import pytest
from etcd3aio import prefix_range_end

from geoplex.infra.local import BackendUrls, LocalInfra, free_port
from geoplex.servers.broker.adapters.etcd_meta import EtcdMeta
from geoplex.servers.broker.domain import (
    MetadataUnavailable,
    TopicConfig,
    TopicExists,
    TopicSpec,
    UnknownTopic,
)
from geoplex.servers.broker.ports import CursorStore, OffsetStore, TopicStore

HANG_GUARD_S = 30  # a bound on a wait that must end, far above any expected duration


def ports_of(meta: EtcdMeta) -> tuple[TopicStore, OffsetStore, CursorStore]:
    """The adapter implements the ports (checked by mypy)."""
    return meta.topics, meta.offsets, meta.cursors


@pytest.fixture
async def meta(backends: BackendUrls) -> AsyncIterator[EtcdMeta]:
    assert backends.etcd_endpoints
    prefix = f"/test-broker-{uuid.uuid4().hex[:12]}"
    store = EtcdMeta(backends.etcd_endpoints, prefix=prefix)
    await store.connect()
    yield store
    assert store.client.kv is not None
    await store.client.kv.delete(prefix + "/", range_end=prefix_range_end(prefix + "/"))
    await store.aclose()


def spec(name: str, partitions: int = 3, retention_ms: int = 86_400_000) -> TopicSpec:
    return TopicSpec(name, partitions, TopicConfig(retention_ms=retention_ms))


async def next_events(watch: AsyncGenerator[tuple[str, TopicSpec | None], None],
                      count: int) -> list[tuple[str, int | None]]:
    """The next ``count`` events as (name, partitions or None)."""
    out: list[tuple[str, int | None]] = []
    async with asyncio.timeout(HANG_GUARD_S):
        while len(out) < count:
            name, found = await anext(watch)
            out.append((name, None if found is None else found.partitions))
    return out


# ---- topics ---------------------------------------------------------------------------

async def test_created_topics_are_listed_by_name_with_their_config(meta: EtcdMeta) -> None:
    created = await meta.topics.create(spec("payments", 6, retention_ms=3_600_000))
    await meta.topics.create(spec("audit", 1))

    listed = await meta.topics.list()

    assert [t.name for t in listed] == ["audit", "payments"]
    assert listed[1] == created
    assert (created.partitions, created.config.retention_ms) == (6, 3_600_000)
    assert created.create_time_ms > 0


async def test_creating_a_topic_that_exists_is_topic_exists(meta: EtcdMeta) -> None:
    await meta.topics.create(spec("orders", 3))

    with pytest.raises(TopicExists):
        await meta.topics.create(spec("orders", 5))
    assert [t.partitions for t in await meta.topics.list()] == [3]


async def test_a_create_retried_after_a_lost_answer_finds_its_own_topic(meta: EtcdMeta) -> None:
    first = await meta.topics.create(spec("orders", 3))

    assert await meta.topics.create(first) == first


async def test_a_deleted_topic_is_gone_and_deleting_it_again_is_unknown_topic(
        meta: EtcdMeta) -> None:
    await meta.topics.create(spec("orders"))

    await meta.topics.delete("orders")

    assert await meta.topics.list() == []
    with pytest.raises(UnknownTopic):
        await meta.topics.delete("orders")


async def test_the_watch_sees_topics_created_and_deleted_after_the_list(meta: EtcdMeta) -> None:
    await meta.topics.create(spec("before", 1))
    assert [t.name for t in await meta.topics.list()] == ["before"]
    watch = meta.topics.watch()
    waiting = asyncio.ensure_future(next_events(watch, 3))

    await meta.topics.create(spec("orders", 4))
    await meta.topics.delete("orders")
    await meta.topics.delete("before")

    assert await waiting == [("orders", 4), ("orders", None), ("before", None)]
    await watch.aclose()


async def test_a_watch_without_a_list_first_yields_every_topic_that_exists(
        meta: EtcdMeta) -> None:
    await meta.topics.create(spec("a", 1))
    await meta.topics.create(spec("b", 2))
    watch = meta.topics.watch()

    assert await next_events(watch, 2) == [("a", 1), ("b", 2)]
    await meta.topics.create(spec("c", 3))
    assert await next_events(watch, 1) == [("c", 3)]
    await watch.aclose()


async def test_a_watch_from_a_compacted_revision_lists_again(meta: EtcdMeta) -> None:
    assert meta.client.kv is not None
    await meta.topics.create(spec("gone", 1))
    await meta.topics.list()  # the watch will start from this revision
    await meta.topics.create(spec("new", 2))
    await meta.topics.delete("gone")
    head = (await meta.client.kv.get(meta.prefix)).header.revision
    await meta.client.kv.compact(head)

    watch = meta.topics.watch()

    assert sorted(await next_events(watch, 2), key=str) == [("gone", None), ("new", 2)]
    await watch.aclose()


async def test_the_watch_and_commits_carry_on_after_etcd_restarts(infra: LocalInfra,
                                                                  meta: EtcdMeta) -> None:
    if "etcd" not in infra.procs:
        pytest.skip("GEOPLEX_ETCD_ENDPOINTS points at an external etcd; nothing to restart")
    await meta.topics.list()
    watch = meta.topics.watch()
    await meta.topics.create(spec("before", 1))
    assert await next_events(watch, 1) == [("before", 1)]
    await meta.offsets.commit("g", {("before", 0): 5})

    await asyncio.to_thread(infra.restart, "etcd")
    after = TopicSpec("after", 2, create_time_ms=1)  # the same bytes: a repeat is no error
    async with asyncio.timeout(HANG_GUARD_S):
        while True:  # the client reconnects by itself; until then, MetadataUnavailable
            try:
                await meta.topics.create(after)
                break
            except MetadataUnavailable:
                await asyncio.sleep(0.2)  # a poll interval, not a stand-in for the condition

    assert await next_events(watch, 1) == [("after", 2)]
    assert await meta.offsets.commit("g", {("before", 0): 4}) == {("before", 0): 5}
    await watch.aclose()


# ---- committed offsets ------------------------------------------------------------------

async def test_a_commit_stores_offsets_and_a_lower_one_leaves_them(meta: EtcdMeta) -> None:
    assert await meta.offsets.commit("g", {("orders", 0): 10, ("orders", 1): 4}) == {
        ("orders", 0): 10, ("orders", 1): 4}

    after = await meta.offsets.commit("g", {("orders", 0): 7, ("orders", 1): 9})

    assert after == {("orders", 0): 10, ("orders", 1): 9}
    assert await meta.offsets.committed("g") == after


async def test_concurrent_commits_keep_the_highest_offset(meta: EtcdMeta) -> None:
    partitions = [("orders", p) for p in range(3)] + [("audit", 0)]
    rng = random.Random(7)
    commits = [{tp: rng.randrange(1000) for tp in rng.sample(partitions, rng.randint(1, 4))}
               for _ in range(40)]

    results = await asyncio.gather(*(meta.offsets.commit("g", c) for c in commits))

    for asked, got in zip(commits, results):
        assert all(got[tp] >= offset for tp, offset in asked.items())
    highest = {tp: max(c[tp] for c in commits if tp in c) for tp in partitions
               if any(tp in c for c in commits)}
    assert await meta.offsets.committed("g") == highest


async def test_allow_backwards_moves_an_offset_back(meta: EtcdMeta) -> None:
    await meta.offsets.commit("g", {("orders", 0): 50, ("orders", 1): 50})

    after = await meta.offsets.commit("g", {("orders", 0): 5}, allow_backwards=True)

    assert after == {("orders", 0): 5}
    assert await meta.offsets.committed("g") == {("orders", 0): 5, ("orders", 1): 50}


async def test_committed_offsets_filter_by_topic_and_groups_are_listed(meta: EtcdMeta) -> None:
    await meta.offsets.commit("g1", {("orders", 0): 1, ("orders", 1): 2, ("audit", 0): 3})
    await meta.offsets.commit("g2", {("orders", 0): 4})
    await meta.cursors.set_cursor("g3", 9)  # a cursor is not a committed offset

    assert await meta.offsets.committed("g1", ["orders"]) == {("orders", 0): 1, ("orders", 1): 2}
    assert await meta.offsets.committed("g1", ["audit", "nothing"]) == {("audit", 0): 3}
    assert await meta.offsets.committed("nobody") == {}
    assert await meta.offsets.groups() == ["g1", "g2"]


async def test_deleting_a_topic_forgets_its_offsets_in_every_group(meta: EtcdMeta) -> None:
    await meta.offsets.commit("g1", {("orders", 0): 1, ("audit", 0): 3})
    await meta.offsets.commit("g2", {("orders", 2): 4})

    await meta.offsets.delete_topic("orders")

    assert await meta.offsets.committed("g1") == {("audit", 0): 3}
    assert await meta.offsets.committed("g2") == {}


async def test_commits_past_etcds_transaction_limits_are_nested_or_split(
        backends: BackendUrls, meta: EtcdMeta) -> None:
    """etcd allows 128 operations per transaction level (counted with the levels above)
    and 1.5 MiB per request: bigger commits nest their conditional puts, and the biggest
    are split, each partition's offset still only moving forward."""
    assert backends.etcd_endpoints
    small = EtcdMeta(backends.etcd_endpoints, prefix=meta.prefix, max_txn_ops=16)
    await small.connect()
    try:
        offsets = {(topic, p): p + 1 for topic in ("a", "b", "c") for p in range(7)}
        racing = {("a", p): 100 for p in range(7)}

        first, second = await asyncio.gather(small.offsets.commit("g", offsets),
                                             small.offsets.commit("g", racing))

        assert all(first[tp] >= o for tp, o in offsets.items()) and second == racing
        assert await small.offsets.committed("g") == {
            tp: 100 if tp[0] == "a" else o for tp, o in offsets.items()}
        assert await small.offsets.commit("g", {tp: 50 for tp in offsets}) == {
            tp: max(50, 100 if tp[0] == "a" else o) for tp, o in offsets.items()}
    finally:
        await small.aclose()
    for n in (300, 5000):  # nested two levels deep; split into three transactions
        many = {("big", p): n for p in range(n)}
        assert await meta.offsets.commit("g", many) == many
        assert await meta.offsets.committed("g", ["big"]) == many
        lower = {("big", p): 7 for p in range(n)}
        assert await meta.offsets.commit("g", lower) == many


# ---- cursors ------------------------------------------------------------------------------

async def test_a_cursor_is_none_until_set_then_the_last_value(meta: EtcdMeta) -> None:
    assert await meta.cursors.get_cursor("g") is None

    await meta.cursors.set_cursor("g", 10)
    await meta.cursors.set_cursor("g", 12)

    assert await meta.cursors.get_cursor("g") == 12


# ---- etcd unreachable -----------------------------------------------------------------------

async def test_an_unreachable_etcd_is_metadata_unavailable_for_every_call() -> None:
    meta = EtcdMeta([f"127.0.0.1:{free_port()}"], timeout=1.0)
    await meta.connect()
    calls = [meta.topics.create(spec("orders")), meta.topics.delete("orders"),
             meta.topics.list(), meta.offsets.commit("g", {("orders", 0): 1}),
             meta.offsets.committed("g"), meta.offsets.groups(),
             meta.offsets.delete_topic("orders"), meta.cursors.get_cursor("g"),
             meta.cursors.set_cursor("g", 1), meta.ping()]
    try:
        for call in calls:
            with pytest.raises(MetadataUnavailable, match="etcd"):
                async with asyncio.timeout(HANG_GUARD_S):
                    await call
    finally:
        await meta.aclose()
