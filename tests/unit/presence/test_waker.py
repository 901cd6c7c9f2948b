"""The Waker a presence stream waits on: no wake-up is lost, none is counted twice."""

from __future__ import annotations

import asyncio

from geoplex.servers.presence.sessions import Waker


async def test_a_set_before_the_wait_returns_at_once_and_only_once() -> None:
    waker = Waker()
    waker.set()
    waker.set()
    await asyncio.wait_for(waker.wait(), 1.0)
    waiting = asyncio.ensure_future(waker.wait())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # the two sets were one wake-up
    waker.set()
    await asyncio.wait_for(waiting, 1.0)


async def test_a_set_while_waiting_wakes_the_waiter() -> None:
    waker = Waker()
    waiting = asyncio.ensure_future(waker.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    asyncio.get_running_loop().call_later(0.02, waker.set)
    await asyncio.wait_for(waiting, 1.0)


async def test_a_cancelled_wait_leaves_the_waker_usable() -> None:
    waker = Waker()
    waiting = asyncio.ensure_future(waker.wait())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    waker.set()
    await asyncio.wait_for(waker.wait(), 1.0)
