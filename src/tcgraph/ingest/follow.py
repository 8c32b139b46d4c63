"""`tcgraph follow`: keep a database a live mirror of one Taskcluster deployment.

Loops run side by side until cancelled: the pulse consumer (messages ->
ingest.mirror, one transaction a batch, watched for gaps by ingest.gaps), a
fetcher for definitions that did not come with their batch (the upstream was
away), the backfill of task groups seen for the first time, reconciliation
(ingest.reconcile), the periodic verification (ingest.verify), expiry and a
heartbeat (mirror_followers). None of them ends on a transient error.

Several followers may consume one queue into one database (competing
consumers): every write is idempotent and ranked, gaps and heartbeats are per
follower (`name`), and one follower at a time reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, UTC
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from tcgraph import metrics
from tcgraph.config import Settings
from tcgraph.ingest import backfill, verify
from tcgraph.ingest.expire import expire
from tcgraph.ingest.gaps import Gaps, task_groups
from tcgraph.ingest.mirror import BatchResult, Delivery, Mirror
from tcgraph.ingest.pulse import Backoff, PulseOptions, consume
from tcgraph.ingest.reconcile import GROUP_HORIZON, ReconcileOptions, Reconciler
from tcgraph.ingest.upstream import Upstream
from tcgraph.store import mirror_writes
from tcgraph.store.pool import open_pool

log = logging.getLogger(__name__)

# The codes under which messages set aside are counted (tcgraph_follower_errors_total):
# not of their exchange's shape, or valid but refused by the store.
INVALID_MESSAGE = "INVALID_MESSAGE"
REFUSED_BY_STORE = "REFUSED_BY_STORE"
# How often statuses still waiting for their definition are tried again.
WAITING_EVERY_S = 2.0
# Progress is logged at most this often.
PROGRESS_EVERY_S = 10.0
# How often a follower records that it is alive (mirror_followers).
HEARTBEAT_S = 5.0
# The default pause between two verifications of a sample.
VERIFY_EVERY_S = 900.0
# The first verification comes this soon after the start: until one has found
# no difference, `mirror.verified` is false.
VERIFY_FIRST_S = 60.0


@dataclass(frozen=True, slots=True)
class FollowOptions:
    """What `tcgraph follow` was asked to do."""

    root_url: str
    pulse: PulseOptions
    backfill: bool = True
    backfill_max_tasks: int = 20_000  # per task group
    expire_every_s: float = 3600.0  # 0: never expire (tcgraph expire can still be run)
    keep_per_label: int | None = None
    name: str = field(default_factory=socket.gethostname)  # one per follower process
    reconcile: ReconcileOptions = ReconcileOptions()
    verify_every_s: float = VERIFY_EVERY_S  # 0: never verify
    verify_sample: int = verify.DEFAULT_SAMPLE


BatchHook = Callable[[Sequence[Delivery], BatchResult], Awaitable[None]]


@dataclass
class _Totals:
    """What this follower has written since it started (its heartbeat says it)."""

    messages: int = 0
    batches: int = 0


class _Progress:
    def __init__(self) -> None:
        self.messages = 0
        self.rejected = 0
        self.batches = 0
        self.last = time.monotonic()

    def count(self, result: BatchResult) -> None:
        self.messages += result.messages
        self.rejected += result.rejected
        self.batches += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            lag = ""
            if result.status_time is not None:
                lag = f", lag {(datetime.now(UTC) - result.status_time).total_seconds():.3f} s"
            log.info("follow: %d messages in %d batches (%d set aside) in %.0f s%s",
                     self.messages, self.batches, self.rejected, now - self.last, lag)
            self.messages = self.rejected = self.batches = 0
            self.last = now


async def follow(pool: asyncpg.Pool, options: FollowOptions, *,
                 on_batch: BatchHook | None = None) -> None:
    """Mirror the deployment into `pool`'s database until cancelled."""
    upstream = Upstream(options.root_url)
    started = datetime.now(UTC)
    mirror = Mirror(pool, upstream, queue_name=options.pulse.queue_name,
                    started=started, backfill=options.backfill)
    gaps = Gaps(pool, follower=options.name, queue_name=options.pulse.queue_name)
    reconciler = Reconciler(pool, options.root_url, name=options.name,
                            options=options.reconcile)
    groups: asyncio.Queue[str] = asyncio.Queue()
    progress = _Progress()
    totals = _Totals()

    async def handle(deliveries: Sequence[Delivery]) -> None:
        # Before the write: a group is walked by the next reconciliation pass that
        # begins once its messages have arrived.
        await mirror_writes.groups_active(pool, list(task_groups(deliveries)))
        reconciler.prioritize(await gaps.inconsistent(deliveries))
        result = await mirror.write(deliveries)
        gaps.committed()
        _report(deliveries, result)
        progress.count(result)
        totals.messages += result.messages
        totals.batches += 1
        for group in result.new_groups:
            groups.put_nowait(group)
        if on_batch is not None:
            await on_batch(deliveries, result)

    async def heartbeat() -> None:
        while True:
            if not gaps.first_session:  # not before the queue was checked for a gap
                try:
                    await mirror_writes.heartbeat(pool, mirror_writes.Heartbeat(
                        name=options.name, queue_name=options.pulse.queue_name,
                        started=started, consuming=gaps.consuming, messages=totals.messages,
                        batches=totals.batches))
                    await gaps.flush()
                    await mirror_writes.forget_groups(
                        pool, datetime.now(UTC) - 2 * GROUP_HORIZON)
                except Exception as e:  # the database is away: next time
                    log.warning("follow: heartbeat not recorded (%s: %s)", type(e).__name__, e)
            # Every few seconds, and at once when the consumer's state changes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gaps.changed.wait(), HEARTBEAT_S)
            gaps.changed.clear()

    try:
        async with asyncio.TaskGroup() as loops:
            loops.create_task(consume(options.pulse, handle, gaps.watch))
            loops.create_task(heartbeat())
            loops.create_task(_fetch_waiting(mirror))
            if options.backfill:
                loops.create_task(_backfill_groups(pool, upstream, groups, options))
            if options.expire_every_s > 0:
                loops.create_task(_expire(pool, options))
            if options.reconcile.rate > 0:
                loops.create_task(reconciler.run(gaps.wake))
            if options.verify_every_s > 0:
                loops.create_task(_verify(pool, upstream, reconciler, options))
    finally:
        await reconciler.close()
        await upstream.close()


def _report(deliveries: Sequence[Delivery], result: BatchResult) -> None:
    """A committed batch's figures for /metrics: messages by exchange, those set aside, lag."""
    for d in deliveries:
        metrics.follower_message(d.exchange)
    for _ in range(result.rejected - result.refused):
        metrics.follower_error(INVALID_MESSAGE)
    for _ in range(result.refused):
        metrics.follower_error(REFUSED_BY_STORE)
    if result.status_time is not None:
        metrics.follower_lag((datetime.now(UTC) - result.status_time).total_seconds())


async def _fetch_waiting(mirror: Mirror) -> None:
    backoff = Backoff()
    while True:
        try:
            fetched = await mirror.fetch_waiting()
            backoff.reset()
            if fetched:
                log.info("follow: %d definitions fetched for statuses that waited", fetched)
                continue
        except Exception as e:  # the database is away: the statuses keep waiting
            log.warning("follow: waiting statuses not handled (%s: %s)", type(e).__name__, e)
            await backoff.pause()
            continue
        await asyncio.sleep(WAITING_EVERY_S)


async def _verify(pool: asyncpg.Pool, upstream: Upstream, reconciler: Reconciler,
                  options: FollowOptions) -> None:
    """Verify a sample soon after the start, then every `verify_every_s`; what differs
    is re-read first."""
    pause = min(VERIFY_FIRST_S, options.verify_every_s)
    while True:
        await asyncio.sleep(pause)
        pause = options.verify_every_s
        try:
            done = await verify.verify(pool, upstream, sample=options.verify_sample)
        except Exception as e:  # the upstream or the database is away: next time
            log.warning("follow: verification failed (%s: %s)", type(e).__name__, e)
            continue
        if done.differences:
            log.warning("follow: verification of %d tasks and %d index entries found %d "
                        "differences, e.g. %s", done.tasks, done.index_entries,
                        len(done.differences), done.differences[0])
            reconciler.prioritize({d.task_id for d in done.differences if d.task_id})


# Batches per table in one periodic pass: the follower's writes are never held up
# for long, and what is left goes in the next pass.
_EXPIRE_MAX_BATCHES = 20


async def _expire(pool: asyncpg.Pool, options: FollowOptions) -> None:
    """Delete what expired, as Taskcluster does, once every `expire_every_s`."""
    while True:
        try:
            done = await expire(pool, keep_per_label=options.keep_per_label,
                                max_batches=_EXPIRE_MAX_BATCHES)
            if done.tasks or done.index_entries or done.namespaces or done.trimmed \
                    or done.waiting:
                log.info("follow: expired %d tasks, %d index entries, %d namespaces, "
                         "%d waiting statuses; trimmed %d", done.tasks, done.index_entries,
                         done.namespaces, done.waiting, done.trimmed)
        except Exception as e:  # the database is away: next time
            log.warning("follow: expiry failed (%s: %s)", type(e).__name__, e)
        await asyncio.sleep(options.expire_every_s)


async def _backfill_groups(pool: asyncpg.Pool, upstream: Upstream, groups: asyncio.Queue[str],
                           options: FollowOptions) -> None:
    """Walk each newly seen group (also those queued before a restart); one that fails
    is tried again later (ingest.backfill.queued_groups) without holding up the others."""
    backoff = Backoff()
    while True:
        try:
            pause = await backfill.queued_groups(pool, upstream,
                                                 max_tasks=options.backfill_max_tasks)
            backoff.reset()
        except Exception as e:  # the database is away
            log.warning("follow: queued backfills not handled (%s: %s)", type(e).__name__, e)
            await backoff.pause()
            continue
        with contextlib.suppress(TimeoutError):  # a group queued, or the next one due
            await asyncio.wait_for(groups.get(), pause)


async def run(database_url: str, settings: Settings, options: FollowOptions) -> None:
    """`tcgraph follow`: follow into `database_url` (migrated) until cancelled.

    The database may be away at the start or at any time: the follower waits for it.
    """
    pool = await open_pool(database_url, settings.with_(pool_min_size=1, pool_max_size=4),
                           tolerate_outage=True)
    try:
        await follow(pool, options)
    finally:
        await pool.close()
