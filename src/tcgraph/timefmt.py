"""Timestamps exactly as Taskcluster writes them: `2026-11-23T12:00:00.000Z`."""

from __future__ import annotations

from datetime import datetime, UTC

# What format_time writes, as a regular expression (unanchored).
PATTERN = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def format_time(value: datetime | str) -> str:
    """Milliseconds and `Z`, whatever the datetime's zone; strings pass through.

    Strings are run timestamps that the importer already normalised.
    """
    if isinstance(value, str):
        return value
    # isoformat pads the year to four digits (strftime's %Y does not) and is
    # about twice as fast; in UTC it always ends in "+00:00".
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def format_naive_utc(value: datetime) -> str:
    """format_time of a naive datetime that is already in UTC: no zone conversion, for bulk
    generation, where it is about twice as fast."""
    return value.isoformat(timespec="milliseconds") + "Z"


def sql_format_time(expression: str) -> str:
    """SQL that writes the timestamptz `expression` as format_time does."""
    return f"""to_char({expression} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


def parse_time(value: object) -> datetime:
    """An ISO 8601 timestamp with a zone; ValueError names what was wrong."""
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 timestamp string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: end it in Z or an offset like +00:00")
    return parsed
