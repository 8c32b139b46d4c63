"""Gaps: the periods in which the mirror may have missed messages, noticed and recorded.

A gap is opened by what the consumer reports (ingest.pulse's Watcher): the
broker cancelling the consumer (its queue was deleted, and the messages in it
with it), the connection lost, the database refusing writes; and, when the
consumer has its queue again, by what it finds: a queue declared anew (it did
not exist, so whatever was published meanwhile is lost), or nobody having
consumed the queue for a while (the followers' heartbeats say since when).
A gap ends when the follower consumes again. Messages that disagree with the
stored history (a run id beyond the stored runs + 1: the runs between were
announced in messages that never came) are recorded as a gap of no length.

Every gap is written to mirror_gaps (with the follower's name) and counted in
/metrics; `wake` tells the reconciler, which repairs them (ingest.reconcile).
A gap is written once it has ended (its end is the database's time of the
write), so a database that is away when it opens does not lose it: it waits
in memory until a write succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from collections.abc import Sequence

import asyncpg

from tcgraph import metrics
from tcgraph.ingest import pulse
from tcgraph.ingest.mirror import Delivery
from tcgraph.store import mirror_writes
from tcgraph.store.queries import mirror as queries
from tcgraph.store.queries import mirror_health

log = logging.getLogger(__name__)

# Reasons, as mirror_gaps.reason and the `reason` label of tcgraph_mirror_gaps_total.
CONSUMER_CANCELLED = "consumer-cancelled"
QUEUE_DECLARED_ANEW = "queue-declared-anew"
NOT_CONSUMING = "not-consuming"
BROKER_UNREACHABLE = "broker-unreachable"
DATABASE_UNAVAILABLE = "database-unavailable"
RUNS_SKIPPED = "runs-skipped"

# A queue nobody consumed for longer than this is a gap: a durable queue keeps
# the messages, but pulse deletes a queue that grows too long, and a restart
# within this time is routine.
NOT_CONSUMING_GRACE_S = 30.0
# Task ids named in a runs-skipped gap's detail, at most.
_DETAIL_IDS = 5


@dataclass(frozen=True, slots=True)
class OpenGap:
    """A gap not recorded yet."""

    started: datetime
    reason: str
    detail: str


def _now() -> datetime:
    return datetime.now(UTC)


def task_runs(deliveries: Sequence[Delivery]) -> dict[str, int]:
    """The highest run id each task's messages name, from their routing keys
    (`primary.<taskId>.<runId>...`, `_` for a task-defined message's absent run)."""
    found: dict[str, int] = {}
    for d in deliveries:
        parts = d.routing_key.split(".")
        if len(parts) >= 9 and parts[0] == "primary" and parts[2].isdigit():
            run = int(parts[2])
            if run > found.get(parts[1], -1):
                found[parts[1]] = run
    return found


def task_groups(deliveries: Sequence[Delivery]) -> set[str]:
    """The task groups the messages are about, from their routing keys."""
    found: set[str] = set()
    for d in deliveries:
        parts = d.routing_key.split(".")
        if parts[0] != "primary":
            continue
        if len(parts) >= 9:  # a task message: primary.<taskId>.<runId>....<taskGroupId>.<r>
            found.add(parts[8])
        elif len(parts) >= 2:  # task-group-resolved: primary.<taskGroupId>.<schedulerId>.<r>
            found.add(parts[1])
    return found


class Gaps:
    """One follower's gap detector; its `watch` is the consumer's Watcher."""

    def __init__(self, pool: asyncpg.Pool, *, follower: str, queue_name: str) -> None:
        self.pool = pool
        self.follower = follower
        self.queue_name = queue_name
        self.wake = asyncio.Event()  # set when a gap has been recorded
        self.changed = asyncio.Event()  # set when the consumer's state changed (a heartbeat is due)
        self.open: OpenGap | None = None
        self.unwritten: list[OpenGap] = []
        self.last_commit: datetime | None = None
        self.first_session = True
        self.consuming = False

    def committed(self) -> None:
        """A batch was committed: a gap opened from now on starts here at the earliest."""
        self.last_commit = _now()

    async def watch(self, event: pulse.PulseEvent) -> None:
        """What the consumer reports (ingest.pulse.Watcher)."""
        try:
            await self._watch(event)
        finally:
            self.changed.set()

    async def _watch(self, event: pulse.PulseEvent) -> None:
        if event.kind == pulse.DECLARED:
            await self._declared(event.queue_existed)
            self.consuming = True
            return
        if event.kind == pulse.WRITE_OK:
            if self.open is not None and self.open.reason == DATABASE_UNAVAILABLE:
                await self._close()
            return
        reason = {pulse.CANCELLED: CONSUMER_CANCELLED, pulse.DISCONNECTED: BROKER_UNREACHABLE,
                  pulse.WRITE_FAILING: DATABASE_UNAVAILABLE}[event.kind]
        if event.kind != pulse.WRITE_FAILING:
            self.consuming = False
        if self.open is None:
            self.open = OpenGap(started=self.last_commit or _now(), reason=reason,
                                detail=event.detail)
            log.warning("gap: %s (%s)", reason, event.detail)

    async def _declared(self, queue_existed: bool) -> None:
        """The consumer has its queue: find what was missed since it last had it."""
        seen = await self._last_seen()
        if not queue_existed and seen.followed_before:
            started = self.open.started if self.open else (seen.last_seen or seen.now)
            reasons = [QUEUE_DECLARED_ANEW] + ([self.open.reason] if self.open else [])
            self.open = OpenGap(started=started, reason=QUEUE_DECLARED_ANEW,
                                detail="the queue did not exist: " + ", ".join(reasons))
        elif (self.open is None and self.first_session and seen.last_seen is not None
              and seen.now - seen.last_seen > timedelta(seconds=NOT_CONSUMING_GRACE_S)):
            self.open = OpenGap(started=seen.last_seen, reason=NOT_CONSUMING,
                                detail=f"no follower consumed {self.queue_name} for "
                                       f"{(seen.now - seen.last_seen).total_seconds():.0f} s")
        self.first_session = False
        if self.open is not None:
            await self._close()

    async def _close(self) -> None:
        assert self.open is not None
        gap, self.open = self.open, None
        log.warning("gap %s since %s: %s", gap.reason, gap.started, gap.detail)
        self.unwritten.append(gap)
        await self.flush()

    async def inconsistent(self, deliveries: Sequence[Delivery]) -> list[str]:
        """Record a gap if messages name runs beyond a stored task's runs + 1 (the
        messages of the runs between never came); returns those tasks' ids."""
        runs = task_runs(deliveries)
        if not runs:
            return []
        stored = await queries.run_counts(self.pool, list(runs))
        skipped = sorted(t for t, run in runs.items() if t in stored and run > stored[t])
        if skipped:
            now = _now()
            shown = ", ".join(skipped[:_DETAIL_IDS]) + (" ..." if len(skipped) > _DETAIL_IDS
                                                         else "")
            self.unwritten.append(OpenGap(started=now, reason=RUNS_SKIPPED,
                                          detail=f"{len(skipped)} tasks: {shown}"))
            await self.flush()
        return skipped

    async def flush(self) -> None:
        """Write the gaps that ended and are not written yet (kept if the database is away)."""
        while self.unwritten:
            gap = self.unwritten[0]
            try:
                await mirror_writes.record_gap(self.pool, started=gap.started,
                                               reason=gap.reason, follower=self.follower,
                                               detail=gap.detail)
            except Exception as e:  # the database is away: the heartbeat tries again
                log.warning("gap not recorded yet (%s: %s)", type(e).__name__, e)
                return
            self.unwritten.pop(0)
            metrics.mirror_gap(gap.reason)
            self.wake.set()

    async def _last_seen(self) -> mirror_health.LastSeen:
        backoff = pulse.Backoff()
        while True:
            try:
                return await mirror_health.last_seen(self.pool, self.queue_name)
            except Exception as e:  # the database is away: the consumer waits for it
                log.warning("gap check waits for the database (%s: %s)", type(e).__name__, e)
                await backoff.pause()
