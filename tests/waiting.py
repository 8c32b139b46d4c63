"""Waiting for a condition in tests: one helper, polled, with a message naming what never came.

A test decides by events (a row written, a backend waiting on a lock, a port answering);
the timeout only bounds how long a broken run hangs before it fails, so it is generous
and is never what a test measures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# Generous: the machine is shared, and a condition met early ends the wait at once.
TIMEOUT_S = 120.0
INTERVAL_S = 0.02


class NotYet(Exception):
    """Raised by a check to say "not yet, and here is why" (kept for the failure message)."""


def _failure(what: str, timeout: float, last: object) -> AssertionError:
    detail = f" (last seen: {last})" if last is not None else ""
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")


def eventually(check: Callable[[], T | None], *, what: str, timeout: float = TIMEOUT_S,
               interval: float = INTERVAL_S,
               ignoring: tuple[type[BaseException], ...] = ()) -> T:
    """Call `check()` until it returns something truthy, and return that.

    `check` may raise `NotYet` (or one of `ignoring`) to be called again; anything else
    it raises ends the wait at once (e.g. "the process exited"). After `timeout` seconds
    the wait fails with an AssertionError naming `what` and the last value or error seen.
    """
    deadline = time.monotonic() + timeout
    retried: tuple[type[BaseException], ...] = (NotYet, *ignoring)
    last: object = None
    while True:
        try:
            found = check()
            if found:
                return found
            last = found
        except retried as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() > deadline:
            raise _failure(what, timeout, last)
        time.sleep(interval)


async def eventually_async(check: Callable[[], Awaitable[T | None]], *, what: str,
                           timeout: float = TIMEOUT_S, interval: float = INTERVAL_S,
                           ignoring: tuple[type[BaseException], ...] = ()) -> T:
    """`eventually` for an async `check`, sleeping in the event loop between calls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    retried: tuple[type[BaseException], ...] = (NotYet, *ignoring)
    last: object = None
    while True:
        try:
            found = await check()
            if found:
                return found
            last = found
        except retried as e:
            last = f"{type(e).__name__}: {e}"
        if loop.time() > deadline:
            raise _failure(what, timeout, last)
        await asyncio.sleep(interval)
