"""TelemetryService on a real server process: writes stored once and durable across a
kill -9, series and labels by PromQL selectors, bad input refused with nothing stored."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from geoplex.clients import ChannelOptions
from geoplex.clients.errors import InvalidArgumentError
from geoplex.clients.telemetry import TelemetryClient, label_dict, series

if TYPE_CHECKING:
    from conftest import ServerProcess  # tests/conftest.py


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("telemetry-store")


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess], store_dir: Path) -> ServerProcess:
    return server_factory("telemetry", {"GEOPLEX_TELEMETRY_DATA_DIR": str(store_dir)},
                          "telemetry")


@pytest.fixture
async def tm(server: ServerProcess) -> AsyncIterator[TelemetryClient]:
    async with TelemetryClient(server.address, ChannelOptions(retry=False)) as client:
        yield client


def _now_ms() -> int:
    return int(time.time() * 1000)


async def test_written_series_are_listed_by_selector_and_a_repeat_is_dropped(
        tm: TelemetryClient) -> None:
    t = _now_ms() - 60_000
    batch = [series({"__name__": "http_requests_total", "job": "api", "code": "200"},
                    [(t, 10.0), (t + 15_000, 12.0)]),
             series({"__name__": "http_requests_total", "job": "api", "code": "500"},
                    [(t, 1.0)]),
             series({"__name__": "up", "job": "db"}, [(t, 1.0)])]
    first = await tm.write(batch)
    assert (first.samples_written, first.duplicates_dropped) == (4, 0)
    again = await tm.write(batch)                     # a retried batch
    assert (again.samples_written, again.duplicates_dropped) == (0, 4)

    found = await tm.list_series(['http_requests_total{code=~"5.."}', 'up'])
    assert sorted(label_dict(s)["__name__"] + ":" + label_dict(s)["job"]
                  for s in found.series) == ["http_requests_total:api", "up:db"]
    assert await tm.list_labels("code", match=["http_requests_total"]) == ["200", "500"]
    assert {"__name__", "code", "job"} <= set(await tm.list_labels())


async def test_nan_and_infinities_are_samples(tm: TelemetryClient) -> None:
    t = _now_ms() - 30_000
    answer = await tm.write([series({"__name__": "odd_values"},
                                    [(t, math.nan), (t + 1, math.inf), (t + 2, -math.inf)])])
    assert answer.samples_written == 3


@pytest.mark.parametrize(("labels", "field"), [
    ({"__name__": "ok", "bad-name": "x"}, "labels"),
    ({"job": "no_name"}, "labels"),
])
async def test_a_bad_series_is_refused_and_nothing_of_the_batch_stored(
        tm: TelemetryClient, labels: dict[str, str], field: str) -> None:
    t = _now_ms()
    good = series({"__name__": "refused_batch_marker"}, [(t, 1.0)])
    with pytest.raises(InvalidArgumentError) as caught:
        await tm.write([good, series(labels, [(t, 1.0)])])
    assert "sample 1" in caught.value.message or field in caught.value.message
    assert (await tm.list_series(["refused_batch_marker"])).series == []


async def test_future_samples_and_empty_requests_name_their_field(tm: TelemetryClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await tm.write([series({"__name__": "x"}, [(_now_ms() + 3_600_000, 1.0)])])
    assert caught.value.field == "series[0].samples[0].timestamp_ms"
    with pytest.raises(InvalidArgumentError) as caught:
        await tm.write([])
    assert caught.value.field == "series"
    with pytest.raises(InvalidArgumentError) as caught:
        await tm.list_series([])
    assert caught.value.field == "match"
    with pytest.raises(InvalidArgumentError) as caught:
        await tm.list_series(["up{job=~\"(\"}"])
    assert caught.value.field == "match[0]"


async def test_acknowledged_samples_survive_a_kill_9(server: ServerProcess) -> None:
    t = _now_ms() - 10_000
    async with TelemetryClient(server.address, ChannelOptions(retry=False)) as tm:
        written = await tm.write([series({"__name__": "durable_total", "n": str(i)},
                                         [(t, float(i))]) for i in range(50)])
        assert written.samples_written == 50
    server.stop(signal.SIGKILL)
    server.start()
    async with TelemetryClient(server.address, ChannelOptions(retry=False)) as tm:
        found = await tm.list_series(["durable_total"])
        assert len(found.series) == 50
        info = await tm.storage_info()
        assert info.head_samples >= 50
