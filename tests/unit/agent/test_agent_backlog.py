"""The agent's backlog: bounded in samples with the oldest dropped first and counted,
batches within telemetry's limits, and never a series' samples out of order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoplex.tools.agent.buffer import Backlog, Batch
from geoplex.tools.agent.collect import Sample

BIG = 1_000_000


def collection(n: int, value: float = 0.0, prefix: str = "m") -> list[Sample]:
    return [Sample(f"{prefix}{i}", (("k", "v"),), value) for i in range(n)]


def points(batch: Batch) -> list[tuple[str, int, float]]:
    return sorted((key[0], t, v) for key, pts in batch.series.items() for t, v in pts)


def test_batches_go_out_oldest_first_and_each_series_in_time_order() -> None:
    backlog = Backlog(BIG)
    for i in range(5):
        backlog.push(1000 * (i + 1), collection(3, value=float(i)))
    assert (backlog.samples, backlog.collections, backlog.oldest_ms) == (15, 5, 1000)
    last_t: dict[str, int] = {}
    sent: list[tuple[str, int, float]] = []
    while batch := backlog.take(max_series=10, max_samples=4, max_span_ms=BIG):
        assert batch.samples <= 4
        for key, pts in batch.series.items():
            times = [t for t, _ in pts]
            assert times == sorted(times)
            assert times[0] > last_t.get(key[0], 0)
            last_t[key[0]] = times[-1]
        sent += points(batch)
        backlog.sent(batch)
    assert sorted(sent) == sorted((f"m{j}", 1000 * (i + 1), float(i))
                                  for i in range(5) for j in range(3))
    assert (backlog.samples, backlog.collections, backlog.sent_total) == (0, 0, 15)


def test_a_batch_holds_at_most_max_series_and_may_split_a_collection() -> None:
    backlog = Backlog(BIG)
    backlog.push(1000, collection(5))
    backlog.push(2000, collection(5))
    batch = backlog.take(max_series=3, max_samples=100, max_span_ms=BIG)
    assert batch is not None and len(batch.series) == 3 and batch.samples == 3
    backlog.sent(batch)
    batch = backlog.take(max_series=3, max_samples=100, max_span_ms=BIG)
    # the rest of the first collection, then m0 of the second is a new series: 3 at most
    assert batch is not None
    assert [k[0] for k in batch.series] == ["m3", "m4", "m0"]
    assert batch.series[("m0", (("k", "v"),))] == [(2000, 0.0)]


def test_a_batch_spans_at_most_max_span_ms() -> None:
    backlog = Backlog(BIG)
    for t in (0, 30_000, 60_000, 90_000):
        backlog.push(t + 1, collection(2))
    batch = backlog.take(max_series=100, max_samples=100, max_span_ms=60_000)
    assert batch is not None
    assert (batch.first_ms, batch.last_ms, batch.samples) == (1, 60_001, 6)


def test_past_its_bound_the_oldest_samples_are_dropped_and_counted() -> None:
    backlog = Backlog(10)
    assert backlog.push(1000, collection(4, prefix="a")) == 0
    assert backlog.push(2000, collection(4, prefix="b")) == 0
    assert backlog.push(3000, collection(4, prefix="c")) == 2
    assert (backlog.samples, backlog.dropped_total) == (10, 2)
    batch = backlog.take(max_series=100, max_samples=100, max_span_ms=BIG)
    assert batch is not None
    assert [k[0] for k in batch.series][:3] == ["a2", "a3", "b0"]
    backlog.push(4000, collection(20, prefix="d"))  # more than the bound in one
    assert backlog.samples == 10 and backlog.dropped_total == 2 + 10
    backlog.retry(batch)  # what was dropped of the batch while out counts now
    assert backlog.dropped_total == 22
    batch = backlog.take(max_series=100, max_samples=100, max_span_ms=BIG)
    assert batch is not None and [k[0] for k in batch.series] == [f"d{i}" for i in
                                                                   range(10, 20)]


def test_a_batch_written_while_its_samples_were_dropped_counts_as_sent() -> None:
    backlog = Backlog(6)
    backlog.push(1000, collection(3, prefix="a"))
    batch = backlog.take(max_series=100, max_samples=100, max_span_ms=BIG)
    assert batch is not None
    backlog.push(2000, collection(3, prefix="b"))
    backlog.push(3000, collection(3, prefix="c"))  # drops the batch's three, out
    assert backlog.samples == 6
    backlog.sent(batch)
    assert (backlog.sent_total, backlog.dropped_total, backlog.samples) == (3, 0, 6)
    batch = backlog.take(max_series=100, max_samples=100, max_span_ms=BIG)
    assert batch is not None and batch.first_ms == 2000


def test_a_refused_batch_leaves_counted_as_rejected() -> None:
    backlog = Backlog(BIG)
    backlog.push(1000, collection(3))
    backlog.push(2000, collection(3))
    batch = backlog.take(max_series=100, max_samples=4, max_span_ms=BIG)
    assert batch is not None
    backlog.refused(batch)
    assert (backlog.rejected_total, backlog.samples, backlog.sent_total) == (4, 2, 0)


def test_a_retried_batch_is_taken_again_the_same() -> None:
    backlog = Backlog(BIG)
    backlog.push(1000, collection(3))
    first = backlog.take(max_series=100, max_samples=100, max_span_ms=BIG)
    assert first is not None
    with pytest.raises(RuntimeError):
        backlog.take(max_series=100, max_samples=100, max_span_ms=BIG)
    backlog.retry(first)
    again = backlog.take(max_series=100, max_samples=100, max_span_ms=BIG)
    assert again is not None and points(again) == points(first)


def test_a_collection_not_after_the_last_is_refused_and_a_repeated_series_kept_once() -> None:
    backlog = Backlog(BIG)
    backlog.push(1000, [Sample("m", (), 1.0), Sample("m", (), 2.0)])
    assert backlog.samples == 1
    with pytest.raises(ValueError):
        backlog.push(1000, collection(1))
    with pytest.raises(ValueError):
        Backlog(0)


OPS = st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(1, 6)),
    st.tuples(st.just("take"), st.integers(1, 5)),
    st.tuples(st.sampled_from(["sent", "retry", "refused"]), st.just(0))), max_size=60)


@settings(max_examples=300, deadline=None)
@given(bound=st.integers(1, 12), ops=OPS)
def test_every_sample_is_sent_rejected_dropped_or_waiting_and_sent_in_order(
        bound: int, ops: list[tuple[str, int]]) -> None:
    backlog = Backlog(bound)
    pushed = 0
    t = 0
    out: Batch | None = None
    stored: dict[str, list[int]] = {}  # what a telemetry that keeps every sent sample holds
    for op, n in ops:
        if op == "push":
            t += 1000
            backlog.push(t, collection(n))
            pushed += n
        elif op == "take" and out is None:
            out = backlog.take(max_series=n, max_samples=n + 1, max_span_ms=2000)
            if out is not None:
                assert len(out.series) <= n and out.samples <= n + 1
                assert out.last_ms - out.first_ms <= 2000
        elif out is not None and op in ("sent", "retry", "refused"):
            if op == "sent":
                for key, pts in out.series.items():
                    times = stored.setdefault(key[0], [])
                    for ts, _ in pts:
                        assert not times or ts > times[-1], "a series out of order"
                        times.append(ts)
            getattr(backlog, op)(out)
            out = None
        assert backlog.samples <= bound
    if out is not None:
        backlog.retry(out)
    assert (backlog.sent_total + backlog.rejected_total + backlog.dropped_total
            + backlog.samples) == pushed
    assert backlog.sent_total == sum(len(v) for v in stored.values())
