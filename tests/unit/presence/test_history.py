"""The write-behind location history: bounded, batched, and a failed batch is not lost."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from geoplex.servers.presence.domain import Fix, HistoryRow, HubConfig
from geoplex.servers.presence.history import HistoryWriter


class FakeStore:
    def __init__(self) -> None:
        self.batches: list[list[HistoryRow]] = []
        self.fail = False

    async def append_history(self, rows: Sequence[HistoryRow]) -> None:
        if self.fail:
            raise ConnectionError("store down")
        self.batches.append(list(rows))


def writer(store: FakeStore, batch: int = 2, buffer_max: int = 3) -> HistoryWriter:
    config = HubConfig(history_batch=batch, history_buffer_max=buffer_max)
    return HistoryWriter(store, config)


def fix(n: int) -> Fix:
    return Fix(10.0 + n, 20.0 + n, 1000.0 + n)


async def test_rows_are_written_in_batches_oldest_first() -> None:
    store = FakeStore()
    history = writer(store, batch=2, buffer_max=10)
    for n in range(5):
        history.append("alice", fix(n))
    await history.flush()
    assert [[r.fix.t for r in batch] for batch in store.batches] == [
        [1000.0, 1001.0], [1002.0, 1003.0], [1004.0]]


async def test_a_full_buffer_drops_the_oldest_rows_and_counts_them(
        caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    history = writer(store, batch=10, buffer_max=3)
    for n in range(5):
        history.append("alice", fix(n))
    assert history.dropped == 2
    with caplog.at_level(logging.WARNING):
        await history.flush()
    assert [r.fix.t for r in store.batches[0]] == [1002.0, 1003.0, 1004.0]
    logged = caplog.text
    assert "2 oldest rows dropped" in logged
    assert "alice" not in logged and "12.0" not in logged  # never whose or where


async def test_a_batch_that_failed_is_written_first_next_time() -> None:
    store = FakeStore()
    history = writer(store, batch=2, buffer_max=10)
    for n in range(3):
        history.append("alice", fix(n))
    store.fail = True
    await history.flush()
    assert store.batches == []
    history.append("alice", fix(3))
    store.fail = False
    await history.flush()
    assert [[r.fix.t for r in batch] for batch in store.batches] == [
        [1000.0, 1001.0], [1002.0, 1003.0]]


async def test_every_update_has_its_own_id_and_a_retried_batch_keeps_its_ids() -> None:
    store = FakeStore()
    history = writer(store, batch=2, buffer_max=10)
    elsewhere = FakeStore()
    other = writer(elsewhere)
    for n in range(3):
        history.append("alice", fix(n))
        other.append("alice", fix(n))
    store.fail = True
    await history.flush()                      # the first batch fails: kept, ids and all
    assert history.buffered == 3 and history.written == 0
    store.fail = False
    await history.flush()
    ids = [r.id for batch in store.batches for r in batch]
    assert len(set(ids)) == 3 and history.written == 3 and history.buffered == 0
    # the same updates taken by another process (the client's Hello after a reconnect
    # repeats its latest location and its time): the same rows, stored once
    await other.flush()
    assert [r.id for batch in elsewhere.batches for r in batch] == ids


async def test_an_update_differing_in_user_time_or_place_is_another_row() -> None:
    store = FakeStore()
    history = writer(store, batch=10, buffer_max=10)
    base = Fix(57.7, 11.97, 1000.0)
    for user, f in [("alice", base), ("bob", base), ("alice", Fix(57.7, 11.97, 1000.001)),
                    ("alice", Fix(57.7000001, 11.97, 1000.0)),
                    ("alice", Fix(57.7, 11.9700001, 1000.0))]:
        history.append(user, f)
    await history.flush()
    assert len({r.id for r in store.batches[0]}) == 5


async def test_each_sender_of_the_same_update_is_told_once_it_is_written() -> None:
    store = FakeStore()
    history = writer(store, batch=10, buffer_max=10)
    told: list[str] = []
    history.append("alice", fix(1), on_written=lambda: told.append("update"))
    history.append("alice", fix(1), on_written=lambda: told.append("sent again"))
    store.fail = True
    await history.flush()
    assert told == []                          # not written: nobody told
    store.fail = False
    await history.flush()
    assert sorted(told) == ["sent again", "update"]
