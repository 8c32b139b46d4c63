"""Timestamps exactly as Taskcluster writes them: `2026-11-23T12:00:00.000Z`."""

from __future__ import annotations

from datetime import datetime, timezone


def format_time(value: datetime | str) -> str:
    """Milliseconds and `Z`, whatever the datetime's zone; strings pass through.

    Strings are run timestamps that the importer already normalised.
    """
    if isinstance(value, str):
        return value
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_time(value: object) -> datetime:
    """An ISO 8601 timestamp with a zone; ValueError names what was wrong."""
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 timestamp string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone (use Z or an offset)")
    return parsed
