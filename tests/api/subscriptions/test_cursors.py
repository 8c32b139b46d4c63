"""Subscription cursors (api/subscriptions/cursors.py): round trips, and every way a
cursor can be wrong."""

from __future__ import annotations

import base64

import pytest

from tcgraph.api.subscriptions.cursors import CursorExpired, Snapshot, check, decode, encode
from tcgraph.errors import BadCursor
from tcgraph.store.queries.task_changes import Bounds, Position


@pytest.mark.parametrize("cursor", [
    Position(0, 0), Position(2**63, 12345), Snapshot(10, 20, frozenset()),
    Snapshot(10, 20, frozenset({10, 15, 19})), Snapshot(7, 7, frozenset()),
])
def test_cursors_round_trip(cursor: Position | Snapshot) -> None:
    text = encode(cursor)
    assert "=" not in text and decode(text) == cursor


def test_a_snapshot_sees_what_committed_before_it() -> None:
    snapshot = Snapshot.parse("10:20:12,15")
    assert snapshot == Snapshot(10, 20, frozenset({12, 15}))
    assert [x for x in range(8, 22) if snapshot.sees(x)] == [8, 9, 10, 11, 13, 14, 16, 17, 18, 19]


def raw(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("text", [
    "", "!!!", "not a cursor", raw(b"\x01" + b"\x00" * 15), raw(b"\x03" + b"\x00" * 16),
    raw(b"\x02" + b"\x00" * 17), raw(b"\x02" + (20).to_bytes(8, "big") + (10).to_bytes(8, "big")),
    raw(b"\x02" + (10).to_bytes(8, "big") + (20).to_bytes(8, "big") + (25).to_bytes(8, "big")),
])
def test_cursors_not_made_here_are_refused(text: str) -> None:
    with pytest.raises(BadCursor) as refused:
        decode(text)
    assert refused.value.extensions == {"code": "BAD_CURSOR", "argument": "after"}


def test_future_and_expired_cursors_are_refused() -> None:
    bounds = Bounds(expired=Position(100, 5), next_xid=200)
    check(Position(100, 5), bounds)
    check(Snapshot(101, 150, frozenset()), bounds)
    check(Position(200, 0), bounds)  # every change below the next transaction
    for future in (Position(200, 1), Position(201, 0), Snapshot(150, 201, frozenset())):
        with pytest.raises(BadCursor):
            check(future, bounds)
    for old in (Position(100, 4), Position(50, 9), Snapshot(100, 150, frozenset())):
        with pytest.raises(CursorExpired) as refused:
            check(old, bounds)
        assert refused.value.extensions["code"] == "CURSOR_EXPIRED"
