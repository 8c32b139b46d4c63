"""The index service's rules: a completed task's `index.` routes -> index entries and namespaces.

Taskcluster's index service listens to task-completed messages; for each route
`index.<path>` of the task it inserts an entry at `<path>` from the task's
`extra.index` (defaults: rank 0, the task's own expiry, empty data). It skips
a route whose rank is not a number or whose data is not an object. An entry
replaces a stored one of a lower or equal rank (tcgraph.precedence.entry_replaces
says how ties go: the later completion wins). Every namespace above the entry is
created, or its expiry extended, rounded up to midnight: see `namespaces`.

These are pure functions: the follower, backfill and file import call them and
write what they return through store.writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from collections.abc import Iterable, Mapping

from tcgraph.ingest import shapes
from tcgraph.keys import INDEX_PATH
from tcgraph.model import IndexEntryRow, NamespaceRow

ROUTE_PREFIX = "index."
# The index service's pattern for a path (and its length limit).
_MAX_PATH = 255
_DAY = timedelta(days=1)
_LAST_MIDNIGHT = datetime(9999, 12, 31, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A route the index service would not index, and why."""

    route: str
    reason: str


@dataclass(frozen=True, slots=True)
class Indexing:
    """What indexing one completed task gives: its entries, and the routes skipped."""

    entries: tuple[IndexEntryRow, ...]
    skipped: tuple[Skipped, ...]


def is_index_path(path: str) -> bool:
    """Whether the index service accepts `path` (its pattern, at most 255 characters)."""
    return len(path) <= _MAX_PATH and INDEX_PATH.fullmatch(path) is not None


def index_paths(routes: Iterable[object]) -> list[str]:
    """The index paths among a task's routes (`index.a.b` -> `a.b`), in order, once each."""
    found = [r[len(ROUTE_PREFIX):] for r in routes
             if isinstance(r, str) and r.startswith(ROUTE_PREFIX)]
    return list(dict.fromkeys(found))


def task_entries(task_id: str, definition: Mapping[str, object],
                 resolved: datetime) -> Indexing:
    """The entries the index service makes when run `resolved` of `task_id` completes.

    `definition` is the task's definition (a `queue.task` answer), `resolved`
    the completing run's resolved time, which breaks rank ties.
    """
    routes = definition.get("routes")
    paths = index_paths(routes) if isinstance(routes, list) else []
    if not paths:
        return Indexing((), ())
    extra = definition.get("extra")
    options = extra.get("index") if isinstance(extra, dict) else None
    if not isinstance(options, dict):
        options = {}
    rank = options.get("rank", 0)
    data = options.get("data", {})
    problem = None
    if not isinstance(rank, (int, float)) or isinstance(rank, bool):
        problem = f"extra.index.rank is {shapes.describe(rank)}, not a number"
    elif not isinstance(data, dict):
        problem = f"extra.index.data is {shapes.describe(data)}, not an object"
    expires = None
    data_text = ""
    entry_rank = 0.0
    if problem is None:
        try:
            entry_rank = shapes.rank(rank)
            data_text = shapes.json_text(data)
            stamp = (shapes.time(options, "expires", None)
                     or shapes.time(definition, "expires", None))
            if stamp is None:
                problem = "the task has no expires"
            else:
                expires = stamp[0]
        except shapes.Invalid as e:
            problem = f"extra.index: {shapes.where('', e.path)}: {e.problem}"
    if problem is not None or expires is None:
        reason = problem or "no expiry"
        return Indexing((), tuple(Skipped(ROUTE_PREFIX + p, reason) for p in paths))
    entries: list[IndexEntryRow] = []
    skipped: list[Skipped] = []
    for path in paths:
        if not is_index_path(path):
            skipped.append(Skipped(ROUTE_PREFIX + path, f"{path!r} is not an index path"))
            continue
        namespace, name = shapes.index_path(path)
        entries.append(IndexEntryRow(namespace=namespace, name=name, task_id=task_id,
                                     rank=entry_rank, data=data_text, expires=expires,
                                     resolved=resolved))
    return Indexing(tuple(entries), tuple(skipped))


def next_midnight(value: datetime) -> datetime:
    """Midnight (UTC) after `value`: a day on when `value` is midnight already,
    as the index service rounds a namespace's expiry (capped at the last
    midnight a timestamp here can hold)."""
    day = value.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if day >= _LAST_MIDNIGHT:
        return _LAST_MIDNIGHT
    return day + _DAY


def namespaces(entries: Iterable[IndexEntryRow]) -> list[NamespaceRow]:
    """The namespaces above `entries`, with the expiry the index service gives them.

    The namespace holding an entry expires at the midnight after the entry;
    each namespace above it at the midnight after its child's (a day later per
    level). A namespace reached from several entries takes the latest; the
    store only ever extends a stored expiry.
    """
    found: dict[tuple[str, str], datetime] = {}
    # Only each namespace's latest entry matters: the rounding keeps the order.
    for namespace, last in _latest_per_namespace(entries).items():
        parts = namespace.split(".") if namespace else []
        expires = last
        for depth in range(len(parts), 0, -1):
            expires = next_midnight(expires)
            key = (".".join(parts[:depth - 1]), parts[depth - 1])
            if key not in found or found[key] < expires:
                found[key] = expires
    return [NamespaceRow(parent=parent, name=name, expires=expires)
            for (parent, name), expires in sorted(found.items())]


def _latest_per_namespace(entries: Iterable[IndexEntryRow]) -> dict[str, datetime]:
    """Each namespace's latest entry expiry: the others cannot extend anything above it."""
    latest: dict[str, datetime] = {}
    for entry in entries:
        held = latest.get(entry.namespace)
        if held is None or held < entry.expires:
            latest[entry.namespace] = entry.expires
    return latest
