"""tests/waiting.py: the one polling helper fails loudly and returns what it waited for."""

from __future__ import annotations

import itertools

import pytest

from waiting import NotYet, eventually, eventually_async


def test_returns_the_first_truthy_value() -> None:
    calls = itertools.count()
    assert eventually(lambda: max(0, next(calls) - 2), what="the third call") == 1


def test_names_what_never_came_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the moon \(last seen: 0\)"):
        eventually(lambda: 0, what="the moon", timeout=0.05)


def test_not_yet_is_retried_and_reported_other_errors_end_the_wait() -> None:
    def not_yet() -> bool:
        raise NotYet("still starting")

    with pytest.raises(AssertionError, match="NotYet: still starting"):
        eventually(not_yet, what="a start", timeout=0.05)

    calls = itertools.count()

    def broken() -> bool:
        next(calls)
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        eventually(broken, what="a start")
    assert next(calls) == 1  # not called again


async def test_the_async_form() -> None:
    calls = itertools.count()

    async def check() -> int:
        n = next(calls)
        if n < 2:
            raise ConnectionRefusedError("not listening")
        return n

    assert await eventually_async(check, what="a port", ignoring=(OSError,)) == 2
    with pytest.raises(AssertionError, match="waiting for nothing"):
        await eventually_async(_false, what="nothing", timeout=0.05)


async def _false() -> bool:
    return False
