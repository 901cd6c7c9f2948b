"""GET /api/v1/silences over the notifier nodes' gRPC ListSilences: every page, one entry
per id across nodes, a node that does not answer as a warning, none answering as 503, and
an empty list when no notifier is configured; the page's file routes serve only its own
files. The dashboard's routes in an in-process aiohttp server, the notifier a real gRPC
server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dashboard_mesh import Notifier
from geoplex.infra.local import free_port
from geoplex.servers.telemetry import dashboard
from geoplex.servers.telemetry.dashboard import Dashboard

Serve = Callable[[Sequence[str]], AbstractAsyncContextManager[TestClient[Any, Any]]]


@pytest.fixture
def serve() -> Serve:
    @asynccontextmanager
    async def start(notifiers: Sequence[str]) -> AsyncIterator[TestClient[Any, Any]]:
        app = web.Application()
        Dashboard(notifiers).add_routes(app)
        async with TestClient(TestServer(app)) as client:
            yield client
    return start


async def test_no_notifier_configured_is_an_empty_list(serve: Serve) -> None:
    async with serve(()) as client:
        response = await client.get("/api/v1/silences")
        assert response.status == 200
        assert await response.json() == {"status": "success",
                                         "data": {"silences": [], "notifiers": 0}}


async def test_nodes_sharing_silences_list_each_once(serve: Serve,
                                                     fake_notifier: Notifier) -> None:
    before = len(fake_notifier.servicer.calls)
    async with serve((fake_notifier.address, fake_notifier.address)) as client:
        answer = await (await client.get("/api/v1/silences?expired=true")).json()
    assert [s["id"] for s in answer["data"]["silences"]] == ["s-1", "s-2"]
    assert answer["data"]["notifiers"] == 2 and "warnings" not in answer
    calls = fake_notifier.servicer.calls[before:]
    assert len(calls) == 4 and all(c.include_expired and c.page_size == 1000 for c in calls)
    assert sorted(c.page_token for c in calls) == ["", "", "page-2", "page-2"]


async def test_a_node_that_does_not_answer_is_a_warning_and_all_of_them_503(
        serve: Serve, fake_notifier: Notifier) -> None:
    down = f"127.0.0.1:{free_port()}"
    async with serve((down, fake_notifier.address)) as client:
        answer = await (await client.get("/api/v1/silences")).json()
    assert len(answer["data"]["silences"]) == 2
    assert answer["warnings"][0].startswith(f"notifier {down}: UNAVAILABLE")

    async with serve((down,)) as client:
        response = await client.get("/api/v1/silences")
        body = await response.json()
    assert response.status == 503 and body["status"] == "error"
    assert body["errorType"] == "unavailable" and down in body["error"]


async def test_only_the_pages_own_files_are_served(serve: Serve) -> None:
    async with serve(()) as client:
        for path in ("/", "/dashboard", "/dashboard/static/app.js",
                     "/dashboard/static/style.css"):
            assert (await client.get(path)).status == 200, path
        for path in ("/dashboard/static/__init__.py", "/dashboard/static/index.html",
                     "/dashboard/static/..%2F__init__.py", "/dashboard/vendor/package.json",
                     "/dashboard/vendor/..%2F..%2F__init__.py"):
            assert (await client.get(path)).status == 404, path


async def test_without_the_chart_library_the_page_is_told_how_to_install_it(
        serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard, "VENDOR_DIR", tmp_path / "absent")
    async with serve(()) as client:
        config = await (await client.get("/dashboard/config.json")).json()
        assert config["chartLibrary"] is False and "make browser-deps" in config["install"]
        assert (await client.get("/dashboard/vendor/uPlot.iife.min.js")).status == 404
