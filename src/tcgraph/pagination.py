"""Keyset cursors: opaque to clients, stable while rows are added.

A cursor is the sort key of the last row a client saw, tagged with the
connection it came from, as URL-safe base64 of a small JSON array. The next
page is "rows after this key" (`WHERE key > $after ORDER BY key`), so rows
inserted elsewhere never shift a page the way OFFSET would.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, UTC

import orjson

from tcgraph.config import Settings
from tcgraph.errors import BadCursor, BadInput, LimitExceeded

# Connection kinds: a cursor from one is refused by another.
TASK_GROUP = "g"
DEPENDENTS = "d"
LABEL_HISTORY = "l"
NAMESPACES = "n"
NAMESPACE_TASKS = "e"

_NAMES = {
    TASK_GROUP: "TaskGroup.tasks",
    DEPENDENTS: "Task.dependents",
    LABEL_HISTORY: "LabelHistory.history",
    NAMESPACES: "Namespace.namespaces",
    NAMESPACE_TASKS: "Namespace.tasks",
}


def encode(kind: str, *key: str) -> str:
    """The cursor for a row whose sort key is `key` in connection `kind`."""
    return base64.urlsafe_b64encode(orjson.dumps([kind, *key])).decode().rstrip("=")


def decode(kind: str, cursor: str) -> tuple[str, ...]:
    """The sort key in `cursor`; BadCursor unless `kind` handed it out."""
    where = _NAMES[kind]
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise BadCursor(f"{where}: the cursor {cursor!r} is malformed", cursor=cursor) from None
    # A key must be one the store can compare: PostgreSQL text holds no NUL.
    if not (isinstance(value, list) and value
            and all(isinstance(v, str) and "\x00" not in v for v in value)):
        raise BadCursor(f"{where}: the cursor {cursor!r} is malformed", cursor=cursor)
    if value[0] != kind:
        raise BadCursor(
            f"{where}: the cursor {cursor!r} belongs to another connection "
            f"({_NAMES.get(value[0], 'unknown')})", cursor=cursor)
    return tuple(value[1:])


def decode_key(kind: str, cursor: str | None) -> str | None:
    """A single-column sort key (task id, name), or None for the first page."""
    if cursor is None:
        return None
    key = decode(kind, cursor)
    if len(key) != 1:
        raise BadCursor(f"{_NAMES[kind]}: the cursor {cursor!r} is malformed", cursor=cursor)
    return key[0]


def decode_time_key(kind: str, cursor: str | None) -> tuple[datetime, str] | None:
    """A (timestamp, id) sort key, or None for the first page."""
    if cursor is None:
        return None
    key = decode(kind, cursor)
    try:
        if len(key) != 2:
            raise ValueError
        stamp = datetime.fromisoformat(key[0])
        if stamp.tzinfo is None:
            raise ValueError
        # Normalised here, where a forged offset can still be refused: year 1
        # at +14:00 or year 9999 at -10:00 falls outside what datetime (and
        # the store) can hold in UTC.
        return stamp.astimezone(UTC), key[1]
    except (ValueError, OverflowError):
        raise BadCursor(f"{_NAMES[kind]}: the cursor {cursor!r} is malformed",
                        cursor=cursor) from None


def page_size(first: int | None, settings: Settings) -> int:
    """`first`, defaulted and checked against the page-size limit."""
    if first is None:
        return settings.default_page_size
    if first < 0:
        raise BadInput(f"`first` must not be negative, got {first}", argument="first")
    if first > settings.max_page_size:
        raise LimitExceeded("max_page_size", first, settings.max_page_size, "`first` is too large")
    return first
