"""Waiting for a condition in a test: poll it against a deadline (never a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast, overload

T = TypeVar("T")


@overload
async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 30.0, *,
                     ignore: tuple[type[BaseException], ...] = (), what: str = "the condition",
                     every: float = 0.1) -> T: ...


@overload
async def eventually(check: Callable[[], T], timeout: float = 30.0, *,
                     ignore: tuple[type[BaseException], ...] = (), what: str = "the condition",
                     every: float = 0.1) -> T: ...


async def eventually(check: Callable[[], Awaitable[T] | T], timeout: float = 30.0, *,
                     ignore: tuple[type[BaseException], ...] = (), what: str = "the condition",
                     every: float = 0.1) -> T:
    """``check()``'s first truthy answer (``check`` may be sync or async), looking every
    ``every`` seconds; an exception in ``ignore`` counts as not yet. AssertionError naming
    ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = check()
            result = cast(T, await answer if inspect.isawaitable(answer) else answer)
            if result:
                return result
        except ignore:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not so within {timeout:g} s")
        await asyncio.sleep(every)  # the next look
