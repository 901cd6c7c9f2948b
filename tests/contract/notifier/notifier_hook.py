"""A webhook receiver for the notifier's tests: a real aiohttp server on a free loopback
port, in a thread of its own (so session fixtures, which are not async, can start it
before the notifier processes that post to it).

It records every POST (path, JSON body, headers, arrival time) and answers each path
with the status the test set for it (200 unless told otherwise)::

    hook = HookServer().start()
    url = hook.url("/hook")
    ...
    hook.received("/hook")      # every request to /hook so far
    hook.stop()
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float  # time.monotonic() when it arrived

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return list(self.body.get("alerts", []))

    def labels(self, name: str) -> list[str]:
        """The values of label ``name`` in the request's alerts, in order."""
        return [alert["labels"].get(name, "") for alert in self.alerts]


class HookServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._status: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.port = 0

    def start(self) -> HookServer:
        self._thread = threading.Thread(target=self._serve, name="webhook receiver",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0):
            raise RuntimeError("the webhook receiver did not start")
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, status: int) -> None:
        with self._lock:
            self._status[path] = status

    def received(self, path: str | None = None, *, label: tuple[str, str] | None = None
                 ) -> list[Received]:
        """The requests so far (to ``path``; whose alerts carry ``label`` = (name, value))."""
        with self._lock:
            found = list(self._received)
        if path is not None:
            found = [r for r in found if r.path == path]
        if label is not None:
            name, value = label
            found = [r for r in found if value in r.labels(name)]
        return found

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.run_until_complete(self._open())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._close())
        loop.close()

    async def _open(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        with self._lock:
            self._received.append(Received(request.path, body, dict(request.headers),
                                           time.monotonic()))
            status = self._status.get(request.path, 200)
        return web.Response(status=status, text="ok" if status < 300 else "no")

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10.0)
