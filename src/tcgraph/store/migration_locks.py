"""A migration's statements, and the locks each takes, read off its SQL.

`split_statements` cuts a migration at its top-level semicolons (not those in
strings, quoted names, comments or dollar-quoted bodies), so that a
no-transaction migration can run one statement at a time. `Statement.locks`
names the table locks PostgreSQL takes for the statement's kind, for
`tcgraph migrate --dry-run`; tests/test_migrate_locks.py checks what each
migration really does on a populated database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOLLAR = re.compile(r"\$[A-Za-z_]*\$")
_NAME = r"(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(?P<name>[\w.\"]+)"
_TABLE = r"(?:ONLY\s+)?(?P<table>[\w.\"]+)"
# (pattern, lock description); the first match describes the statement.
_KINDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE | re.DOTALL), lock) for pattern, lock in (
        (rf"CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+{_NAME}\s+ON\s+{_TABLE}",
         "SHARE UPDATE EXCLUSIVE on {table}: reads and writes go on during the build; it "
         "waits for transactions already running, and blocks only other DDL and VACUUM"),
        (rf"CREATE\s+(?:UNIQUE\s+)?INDEX\s+{_NAME}\s+ON\s+{_TABLE}",
         "SHARE on {table}: BLOCKS WRITES for the whole build (only for a table this "
         "migration creates; an existing table's index is built CONCURRENTLY)"),
        (rf"DROP\s+INDEX\s+CONCURRENTLY\s+{_NAME}",
         "SHARE UPDATE EXCLUSIVE on {name}'s table: reads and writes go on"),
        (rf"DROP\s+INDEX\s+{_NAME}",
         "ACCESS EXCLUSIVE on {name}'s table: BLOCKS READS AND WRITES until commit"),
        (rf"CREATE\s+(?:UNLOGGED\s+)?TABLE\s+{_NAME}",
         "ACCESS EXCLUSIVE on the new table {name} only: blocks nothing that exists"),
        (rf"ALTER\s+TABLE\s+{_NAME}\s+(?:RE)?SET\s*\(",
         "SHARE UPDATE EXCLUSIVE on {name} (storage parameters): reads and writes go on"),
        (rf"ALTER\s+TABLE\s+{_NAME}\s+ADD\s+COLUMN\b(?!.*\bDEFAULT\s+\w+\s*\()",
         "ACCESS EXCLUSIVE on {name}, for a catalog change (no rewrite): readers and "
         "writers wait behind it at most the lock timeout"),
        (rf"ALTER\s+TABLE\s+{_NAME}",
         "ACCESS EXCLUSIVE on {name}: may rewrite or scan it; BLOCKS READS AND WRITES "
         "until commit"),
        (r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE|TYPE|SCHEMA|EXTENSION|VIEW|"
         r"SEQUENCE|DOMAIN)\b", "catalog only: no lock on any table"),
        (rf"(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+{_TABLE}",
         "ROW EXCLUSIVE on {table}, and a row lock on every row it writes: one statement "
         "over a big table holds them all until it ends (backfill in batches instead)"),
        (r"DO\b|CALL\b", "the locks of the statements it runs; a batched backfill commits "
                         "after each batch, releasing its row locks"),
        (rf"(?:ANALYZE|VACUUM)\b\s*(?:\([^)]*\)\s*)?{_TABLE}?",
         "SHARE UPDATE EXCLUSIVE: reads and writes go on"),
        (r"COMMENT\s+ON\b", "catalog only: a brief lock on the object commented"),
    ))


@dataclass(frozen=True)
class Statement:
    """One top-level statement of a migration."""

    sql: str

    @property
    def text(self) -> str:
        """The statement without its comment lines."""
        return _without_comments(self.sql).strip()

    def summary(self) -> str:
        """The statement on one line, shortened."""
        text = " ".join(_without_comments(self.sql).split())
        return text if len(text) <= 110 else text[:107] + "..."

    def locks(self) -> list[str]:
        """The table locks it takes (an unknown kind of statement says so)."""
        text = _without_comments(self.sql).strip()
        for pattern, lock in _KINDS:
            found = pattern.match(text)
            if found is not None:
                names = {k: (v or "").strip('"') for k, v in found.groupdict().items()}
                return [lock.format(**names)]
        return ["UNKNOWN: not a kind of statement this reads; check its locks by hand"]


def _without_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def split_statements(sql: str) -> list[Statement]:
    """The top-level statements of `sql`, in order (comments kept with the statement
    they precede; empty ones dropped)."""
    statements: list[str] = []
    start = i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "/" and sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c in ("'", '"'):
            i = _closing_quote(sql, i, c)
        elif c == "$" and (dollar := _DOLLAR.match(sql, i)) is not None:
            end = sql.find(dollar.group(0), dollar.end())
            i = n if end < 0 else end + len(dollar.group(0))
        elif c == ";":
            statements.append(sql[start:i])
            start = i = i + 1
        else:
            i += 1
    statements.append(sql[start:])
    return [Statement(s.strip()) for s in statements if _without_comments(s).strip()]


def _closing_quote(sql: str, i: int, quote: str) -> int:
    """The index after the quote that closes the one at `i` (a doubled quote escapes)."""
    j = i + 1
    while j < len(sql):
        if sql[j] == quote:
            if sql.startswith(quote * 2, j):
                j += 2
                continue
            return j + 1
        j += 1
    return len(sql)
