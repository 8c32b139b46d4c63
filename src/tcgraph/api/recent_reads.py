"""The labels and index paths decision tasks ask about, noted for reconciliation.

`tcgraph follow`'s reconciliation (ingest/reconcile.py) re-reads first what was
read lately: the unresolved tasks of recently read labels, and the entries at
recently read index paths. A request only notes its keys in memory; one flush
per event loop writes them, at most every FLUSH_S seconds, in one statement
(mirror_recent_reads, where rows an hour old are forgotten). What does not fit
in the bounded buffer is dropped, and a database that refuses the write (a
read-only replica) gets one warning: noting reads never slows or fails a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import asyncpg

from tcgraph.store import mirror_writes
from tcgraph.store.mirror_writes import INDEX_PATH, LABEL

__all__ = ["INDEX_PATH", "LABEL", "note"]

log = logging.getLogger(__name__)

# Keys held between two flushes, at most.
MAX_PENDING = 10_000
FLUSH_S = 2.0
# Reads older than this are forgotten.
KEEP_S = 3600.0

_pending: dict[tuple[str, str], None] = {}
_flushers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
_warned = False


def note(pool: asyncpg.Pool, kind: str, keys: Iterable[str]) -> None:
    """Note that `keys` of `kind` were read; they are written by the next flush."""
    for key in keys:
        if len(_pending) >= MAX_PENDING:
            break
        if "\x00" in key:  # PostgreSQL's text cannot hold it, and no task has such a key
            continue
        _pending[(kind, key)] = None
    loop = asyncio.get_running_loop()
    flusher = _flushers.get(loop)
    if flusher is None or flusher.done():
        _flushers.clear()  # a flusher of a loop that has ended is gone with it
        _flushers[loop] = loop.create_task(_flush(pool))


async def _flush(pool: asyncpg.Pool) -> None:
    global _warned
    await asyncio.sleep(FLUSH_S)
    noted = sorted(_pending)
    _pending.clear()
    if not noted:
        return
    try:
        await mirror_writes.note_reads(pool, [k for k, _ in noted], [v for _, v in noted],
                                       KEEP_S)
    except Exception as e:  # a replica, an outage, a pool closing: the reads are dropped
        if not _warned:
            _warned = True
            log.warning("recent reads not recorded (%s: %s); reconciliation does not favour "
                        "them", type(e).__name__, e)
