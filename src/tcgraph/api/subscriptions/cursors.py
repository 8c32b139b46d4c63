"""Subscription cursors: opaque to clients, a place in the change log to the server.

A live change's cursor is its log position (xid, seq). The changes of a
stream's opening snapshot carry the snapshot itself (PostgreSQL's
`xmin:xmax:xip` of the transaction that read it): resuming after it delivers
exactly the changes that snapshot did not see. Both are a version byte and
big-endian integers, base64url without padding.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from tcgraph.errors import BadCursor, ClientError
from tcgraph.store.queries.task_changes import Bounds, Position

_POSITION = 1
_SNAPSHOT = 2
_U64 = struct.Struct(">Q")
_PAIR = struct.Struct(">QQ")
# PostgreSQL's snapshots list at most one xid per connection; a cursor listing
# more than this was not made here.
_MAX_XIP = 65_536


class CursorExpired(ClientError):
    """A cursor older than the retained change log: changes after it may be gone."""

    code = "CURSOR_EXPIRED"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one transaction saw: ids below `xmin`, and those below `xmax` not in `running`."""

    xmin: int
    xmax: int
    running: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Snapshot:
        """PostgreSQL's text form of a pg_snapshot: `xmin:xmax:xip,xip,...`."""
        xmin, xmax, running = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in running.split(",") if x))

    def sees(self, xid: int) -> bool:
        """Whether the changes of transaction `xid` were visible to this snapshot."""
        return xid < self.xmin or (xid < self.xmax and xid not in self.running)


Cursor = Position | Snapshot


def encode(cursor: Cursor) -> str:
    """The cursor as the client sees it."""
    if isinstance(cursor, Position):
        raw = bytes([_POSITION]) + _PAIR.pack(cursor.xid, cursor.seq)
    else:
        running = sorted(cursor.running)
        raw = (bytes([_SNAPSHOT]) + _PAIR.pack(cursor.xmin, cursor.xmax)
               + b"".join(_U64.pack(x) for x in running))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str) -> Cursor:
    """The cursor a client sent as `after`; BadCursor if it was not made by `encode`."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadCursor("`after` is not a cursor of this stream (not base64url)",
                        argument="after") from None
    if raw[:1] == bytes([_POSITION]) and len(raw) == 1 + _PAIR.size:
        xid, seq = _PAIR.unpack_from(raw, 1)
        return Position(xid, seq)
    count, extra = divmod(len(raw) - 1 - _PAIR.size, _U64.size)
    if raw[:1] == bytes([_SNAPSHOT]) and count >= 0 and not extra and count <= _MAX_XIP:
        xmin, xmax = _PAIR.unpack_from(raw, 1)
        running = frozenset(_U64.unpack_from(raw, 1 + _PAIR.size + i * _U64.size)[0]
                            for i in range(count))
        if xmin <= xmax and all(xmin <= x < xmax for x in running):
            return Snapshot(xmin, xmax, running)
    raise BadCursor("`after` is not a cursor of this stream", argument="after")


def check(cursor: Cursor, bounds: Bounds) -> None:
    """Refuse a cursor from the future (BadCursor) or from before the retained log
    (CursorExpired: the client must start over without `after`)."""
    # A position (x, 0) covers only transactions below x (no change has seq 0):
    # a horizon position equal to the next transaction id is not from the future.
    if isinstance(cursor, Position):
        newest_xid = cursor.xid if cursor.seq else cursor.xid - 1
    else:
        newest_xid = cursor.xmax - 1
    if newest_xid >= bounds.next_xid:
        raise BadCursor("`after` is a cursor from the future: no change has been logged "
                        "at that position yet", argument="after")
    expired = bounds.expired
    # After a snapshot, every change the snapshot did not see must still be in the log.
    gone = cursor < expired if isinstance(cursor, Position) else expired.xid >= cursor.xmin
    if gone:
        raise CursorExpired(
            "`after` is older than the retained change log (change_retention_hours): "
            "changes after it may be gone; subscribe again without `after`",
            argument="after")
