"""`tcgraph import`: Taskcluster answers dumped as JSON or JSON Lines files, into the store.

A user dumps a real deployment with the `taskcluster` client and imports the
files as they are (ingest/documents.py lists the shapes accepted).

One file is one transaction: bad input raises `ImportFailed` naming the file, the place
and the problem (`ImportRefused` when it is PostgreSQL that refuses a row, a label over
its index row limit, say); an outage of the database raises `ImportInterrupted`; either
way nothing from that file is written. A transaction that PostgreSQL aborts to break a
deadlock with another writer is run again. Importing the same file twice changes
nothing, and an older status never replaces a newer one.
"""

from __future__ import annotations

import asyncio
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast
from collections.abc import Iterable, Iterator

import asyncpg

from tcgraph.ingest import batches, checkpoints, documents, jsontext, shapes
from tcgraph.ingest.progress import Progress
from tcgraph.store import failures, writes
from tcgraph.store.pool import CONNECTION_ERRORS

_JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
_UTF8_BOM = b"\xef\xbb\xbf"
_NOT_SPACE = re.compile(rb"\S")
# Rows read between two chances for a batch being written to send its next statement.
_YIELD_EVERY = 64


@dataclass(frozen=True)
class ImportSummary:
    """What one source held: its task definitions, statuses and index entries.

    Each occurrence counts, whether or not it changed a stored row.
    """

    source: str
    tasks: int
    statuses: int
    index_entries: int


class ImportFailed(Exception):
    """Bad input: nothing from `source` was written.

    `where` is a line (`line 3`) or an element path
    (`tasks[17].status.runs[0].state`), `problem` what was wrong there.
    """

    def __init__(self, source: str, where: str, problem: str) -> None:
        super().__init__(f"{source}: {where}: {problem}")
        self.source = source
        self.where = where
        self.problem = problem


class ImportInterrupted(ImportFailed):
    """The database failed (stopped, unreachable, refused a statement) during the
    import of `source`: nothing from it was written, and importing it again may work."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(source, "database", problem)


class ImportRefused(ImportFailed):
    """PostgreSQL refused a row of `source` for what it holds (store.failures.outage says
    it was no outage): nothing from it was written, and importing it again fails again.
    `where` is the row's element, or `store` when the row is not known."""


async def import_source(
    pool: asyncpg.Pool, source: str, *, progress: bool = False,
    batch_size: int = batches.BATCH_SIZE,
) -> ImportSummary:
    """Import one file (`-` for stdin) in one transaction.

    The file holds one JSON document (which may be a list of documents) or
    JSON Lines, one document a line: `.jsonl` and `.ndjson` files always, and
    any file whose whole text is not one JSON value but whose first line is.
    An empty (or blank) file is an ImportFailed, as it is more likely a failed
    dump than a deliberate one; an empty list or page imports nothing. With
    `progress`, a progress bar is drawn on stderr when it is a terminal and
    the file is large. OSError opening the file (a missing file, say)
    propagates as it is.

    JSON Lines are read a line at a time; a single JSON document is parsed
    whole, so dump large task groups as JSON Lines. Rows are written
    `batch_size` to a statement.
    """
    name = "<stdin>" if source == "-" else source
    lines = source != "-" and source.lower().endswith(_JSON_LINES_SUFFIXES)
    data: bytes | None = None
    if source == "-":
        data = sys.stdin.buffer.read()  # once: a retried transaction reads it again
    elif not lines:
        data = Path(source).read_bytes()
    else:
        open(source, "rb").close()  # a missing file is the caller's OSError, not the database's

    async def work(conn: asyncpg.Connection) -> ImportSummary:
        checkpoints.reached("transaction-open")
        summary = await _read_and_write(conn)
        checkpoints.reached("before-commit")
        return summary

    async def _read_and_write(conn: asyncpg.Connection) -> ImportSummary:
        if data is None:
            # Read as the import goes, so a large file is never all in memory.
            with open(source, "rb") as file:
                bar = Progress.open(name, _file_size(file)) if progress else None
                try:
                    return await _import(conn, _json_lines(file, name, bar, hint=True), name,
                                         batch_size)
                finally:
                    if bar:
                        bar.close()
        bar = Progress.open(name, len(data)) if progress else None
        try:
            parsed, whole = _json_or_json_lines(data, name, bar)
            return await _import(conn, parsed, name, batch_size, bar if whole else None)
        finally:
            if bar:
                bar.close()

    try:
        summary = await writes.in_transaction(pool, work)
    except ImportFailed:
        raise
    except batches.RowRefused as e:
        location, path = cast(tuple[str, shapes.Path], e.origin)
        raise ImportRefused(name, shapes.where(location, path),
                            f"PostgreSQL refused it: {failures.refusal(e)}") from e
    except asyncpg.PostgresError as e:
        if failures.outage(e):
            raise ImportInterrupted(name, _database_problem(e)) from e
        raise ImportRefused(name, "store", "PostgreSQL refused a row of this file: "
                            f"{failures.refusal(e)}") from e
    except (*CONNECTION_ERRORS, asyncpg.InternalClientError) as e:
        raise ImportInterrupted(name, _database_problem(e)) from e
    checkpoints.reached("committed")
    return summary


def _database_problem(error: BaseException) -> str:
    """What went wrong with the database, in words an operator can act on.

    A lost connection fails the statement, then the rollback, with asyncpg's
    own client errors on top: the server's error in the chain, if any, says
    what happened (a shutdown, say); otherwise the connection was lost.
    """
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__context__
    for cause in seen:
        if isinstance(cause, asyncpg.PostgresError):
            return f"{type(cause).__name__} ({cause.sqlstate}): {cause}"
    for cause in seen:
        if isinstance(cause, (OSError, TimeoutError)):
            return f"{type(cause).__name__}: {cause or 'no answer'}"
    return "the connection to PostgreSQL was lost"


async def import_documents(
    conn: asyncpg.Connection, documents: Iterable[tuple[str, object]], source: str,
    batch_size: int = batches.BATCH_SIZE,
) -> ImportSummary:
    """Import parsed documents, given as (location, JSON value) pairs.

    The caller owns the transaction and must roll it back on ImportFailed.
    `location` says where a document came from (`line 3`; `""` for a whole
    file) and prefixes the element path in error messages; `source` names the
    file (its name is the taskId of a bare definition, as with `queue.task`
    dumped to `<taskId>.json`).
    """
    return await _import(conn, documents, source, batch_size)


# --- reading -------------------------------------------------------------


def _file_size(file: IO[bytes]) -> int:
    try:
        return file.seek(0, io.SEEK_END)
    finally:
        file.seek(0)


def _not_utf8(data: bytes, line: int | None = None, offset: int = 0) -> str | None:
    """Where `data` stops being UTF-8, as `line L, column C (byte B): ...`, or None.

    `data` is line `line` of a file and starts at byte `offset` of it, or (no
    `line`) the whole file. B counts from 1, as C does.
    """
    try:
        data.decode()
    except UnicodeDecodeError as e:
        start = data.rfind(b"\n", 0, e.start) + 1
        number = line if line is not None else data.count(b"\n", 0, e.start) + 1
        column = len(data[start:e.start].decode()) + 1
        byte = data[e.start:e.start + 1].hex()
        return (f"line {number}, column {column} (byte {offset + e.start + 1}): not UTF-8 "
                f"(byte 0x{byte}: {e.reason})")
    return None


def _json_or_json_lines(
    data: bytes, source: str, bar: Progress | None
) -> tuple[Iterator[tuple[str, object]], bool]:
    """The documents of a file of unknown kind, and whether it was one JSON value."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    if not data or data.isspace():
        raise ImportFailed(source, "line 1", "empty file: there is nothing to import")
    try:
        return iter([("", jsontext.loads(data))]), True
    except ValueError as whole:
        if (where := _not_utf8(data)) is not None:
            where, _, problem = where.partition(": ")
            raise ImportFailed(source, where, problem) from None
        # Searches, not split() or slices: the file may be large.
        start = _NOT_SPACE.search(data).start()  # type: ignore[union-attr]
        end = data.find(b"\n", start)
        if end != -1 and _NOT_SPACE.search(data, end) and _is_json(data[start:end]):
            return _json_lines(io.BytesIO(data), source, bar, hint=False), False
        raise ImportFailed(source, _json_error_place(whole),
                           f"not valid JSON: {_json_error_message(whole)}") from None


def _json_error_place(error: ValueError) -> str:
    lineno, colno = getattr(error, "lineno", None), getattr(error, "colno", None)
    return f"line {lineno}, column {colno}" if lineno is not None else "top level"


def _json_error_message(error: ValueError) -> str:
    return str(getattr(error, "msg", error))


def _is_json(text: bytes) -> bool:
    try:
        jsontext.loads(text)
    except ValueError:
        return False
    return True


def _json_lines(
    lines: IO[bytes], source: str, bar: Progress | None, hint: bool
) -> Iterator[tuple[str, object]]:
    """One document a non-blank line, read as the import goes rather than all at once."""
    done = 0
    found = False
    for number, line in enumerate(lines, 1):
        offset = done
        done += len(line)
        if bar:
            bar.update(done)
        if number == 1 and line.startswith(_UTF8_BOM):
            line = line[len(_UTF8_BOM):]
            offset += len(_UTF8_BOM)
        if not line.strip():
            continue
        try:
            document = jsontext.loads(line)
        except ValueError as e:
            if (where := _not_utf8(line, number, offset)) is not None:
                where, _, problem = where.partition(": ")
                raise ImportFailed(source, where, problem) from None
            # A pretty-printed document in a .jsonl file fails on its first line.
            why = " (JSON Lines files hold one document a line)" if hint and number == 1 else ""
            raise ImportFailed(source, f"line {number}",
                               f"not valid JSON: {_json_error_message(e)}{why}") from None
        found = True
        yield f"line {number}", document
    if bar:
        bar.update(done, force=True)
    if not found:
        raise ImportFailed(source, "line 1", "empty file: there is nothing to import")


# --- rows -> database ----------------------------------------------------


async def _import(
    conn: asyncpg.Connection,
    parsed: Iterable[tuple[str, object]],
    source: str,
    batch_size: int,
    bar: Progress | None = None,
) -> ImportSummary:
    """Write every row of `parsed`; `bar`, if any, counts rows of one parsed document."""
    if bar:
        # A single JSON document is parsed before its rows are counted, so the
        # bar switches from bytes read to rows written.
        parsed = list(parsed)
        bar.count(sum(documents.row_estimate(document) for _, document in parsed), "rows")
    reader = documents.Reader(source)
    writer = batches.BatchWriter(conn, batch_size)
    try:
        for location, document in parsed:
            try:
                for group in reader.items(document):
                    due = False
                    for item in group:
                        due = writer.add(item.row, (location, item.path)) or due
                    # Only between groups, so that a definition and its status
                    # are written together.
                    if due:
                        await writer.flush()
                        if bar:
                            bar.update(writer.added)
                    elif writer.added % _YIELD_EVERY < len(group):
                        await asyncio.sleep(0)
            except shapes.Invalid as e:
                raise ImportFailed(source, shapes.where(location, e.path), e.problem) from None
        missing = await writer.finish()
    except BaseException:
        await writer.abandon()
        raise
    if missing:
        location, path = cast(tuple[str, shapes.Path], missing[0].origin)
        ids = [held.status.task_id for held in missing]
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        raise ImportFailed(
            source, shapes.where(location, path),
            f"no task definition for the status of {', '.join(ids[:5])}{more}: import "
            "the definitions first (queue.task or queue.tasks responses), or "
            "queue.listTaskGroup pages, which carry both")
    if bar:
        bar.update(writer.added, force=True)
    counts = writer.counts
    return ImportSummary(source=source, tasks=counts.tasks, statuses=counts.statuses,
                         index_entries=counts.index_entries)
