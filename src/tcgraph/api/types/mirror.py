"""The state of a mirror, as `tcgraph follow` records it: freshness, gaps, verification."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Optional

import strawberry
from strawberry.types import Info

from tcgraph import model
from tcgraph.store.queries import mirror_health as queries

# Gaps listed at most in one answer.
MAX_GAPS = 100


@strawberry.type(description="A period in which the mirror may have missed messages.")
class MirrorGap:
    _gap: strawberry.Private[queries.Gap]

    @strawberry.field(description="When messages may have started to be lost.")
    def started(self) -> datetime:
        return self._gap.started

    @strawberry.field(description="When the follower consumed again.")
    def ended(self) -> datetime:
        return self._gap.ended

    @strawberry.field(description="Why: consumer-cancelled, queue-declared-anew, not-consuming, "
                                  "broker-unreachable, database-unavailable or runs-skipped.")
    def reason(self) -> str:
        return self._gap.reason

    @strawberry.field(description="The follower that noticed it.")
    def follower(self) -> str:
        return self._gap.follower

    @strawberry.field(description="What was seen.")
    def detail(self) -> str:
        return self._gap.detail

    @strawberry.field(description="When a reconciliation pass had re-read everything that "
                                  "could have changed in it; null while it is not repaired.")
    def repaired_at(self) -> Optional[datetime]:
        return self._gap.repaired_at

    @strawberry.field(description="Tasks the repairing pass corrected.")
    def tasks_repaired(self) -> int:
        return self._gap.tasks_repaired


@strawberry.type(description="One `tcgraph follow` process, as its heartbeat says.")
class MirrorFollower:
    _follower: strawberry.Private[queries.Follower]

    @strawberry.field(description="Its name (--follower-name).")
    def name(self) -> str:
        return self._follower.name

    @strawberry.field(description="The queue it reads.")
    def queue_name(self) -> str:
        return self._follower.queue_name

    @strawberry.field(description="When it started.")
    def started(self) -> datetime:
        return self._follower.started

    @strawberry.field(description="Its last heartbeat (every few seconds while it runs).")
    def last_seen(self) -> datetime:
        return self._follower.last_seen

    @strawberry.field(description="Whether it was consuming at its last heartbeat.")
    def consuming(self) -> bool:
        return self._follower.consuming

    @strawberry.field(description="Messages it has written since it started.")
    def messages(self) -> float:
        return float(self._follower.messages)


@strawberry.type(description="How fresh a mirror is: the state `tcgraph follow` records.")
class Mirror:
    _state: strawberry.Private[model.MirrorState]
    # Read once, by the first field that needs it.
    _completeness: strawberry.Private[Optional[asyncio.Future[queries.Completeness]]] = None

    async def _complete(self, info: Info[Any, Any]) -> queries.Completeness:
        if self._completeness is None:
            self._completeness = asyncio.ensure_future(queries.completeness(info.context.db))
        return await self._completeness

    @strawberry.field(description="The pulse queue the follower reads.")
    def queue_name(self) -> str:
        return self._state.queue_name

    @strawberry.field(description="When the current follower started.")
    def started(self) -> datetime:
        return self._state.started

    @strawberry.field(description="When the newest batch of messages was committed.")
    def last_message(self) -> Optional[datetime]:
        return self._state.last_message

    @strawberry.field(description="The exchange of the newest message.")
    def last_exchange(self) -> Optional[str]:
        return self._state.last_exchange

    @strawberry.field(description="The routing key of the newest message.")
    def last_routing_key(self) -> Optional[str]:
        return self._state.last_routing_key

    @strawberry.field(description="The newest status change written (a run scheduled, "
                                  "started or resolved).")
    def last_status_time(self) -> Optional[datetime]:
        return self._state.last_status_time

    @strawberry.field(description="Milliseconds from that status change to its commit, for "
                                  "the newest batch.")
    def lag_ms(self) -> Optional[float]:
        return self._state.lag_ms

    @strawberry.field(description="Messages written, counted across restarts.")
    def messages(self) -> float:
        return float(self._state.messages)

    @strawberry.field(description="Messages set aside because they did not match their schema.")
    def errors(self) -> float:
        return float(self._state.errors)

    @strawberry.field(description="Tasks whose status is held until their definition is fetched.")
    def waiting_definitions(self) -> int:
        return self._state.waiting

    @strawberry.field(description="Whether this mirror can be trusted as complete: the last "
                                  "verification found no difference and every gap since has "
                                  "been repaired. A decision task can refuse a mirror that is not.")
    async def verified(self, info: Info[Any, Any]) -> bool:
        return (await self._complete(info)).verified

    @strawberry.field(description="When a sample was last compared with the upstream "
                                  "(tcgraph verify, or the follower's periodic check).")
    async def last_verified(self, info: Info[Any, Any]) -> Optional[datetime]:
        return (await self._complete(info)).last_verified

    @strawberry.field(description="Differences the last verification found (null: never "
                                  "verified).")
    async def drift(self, info: Info[Any, Any]) -> Optional[int]:
        return (await self._complete(info)).drift

    @strawberry.field(description="The first differences the last verification found.")
    async def differences(self, info: Info[Any, Any]) -> list[str]:
        return (await self._complete(info)).differences

    @strawberry.field(description="Gaps recorded (periods in which messages may have been lost).")
    async def gap_count(self, info: Info[Any, Any]) -> int:
        return (await self._complete(info)).gaps

    @strawberry.field(description="Gaps not repaired yet: until 0, answers may be stale.")
    async def unrepaired_gaps(self, info: Info[Any, Any]) -> int:
        return (await self._complete(info)).unrepaired_gaps

    @strawberry.field(description="When the newest complete reconciliation pass started.")
    async def last_reconciled(self, info: Info[Any, Any]) -> Optional[datetime]:
        return (await self._complete(info)).last_reconciled

    @strawberry.field(description="Reconciliation passes completed.")
    async def reconcile_passes(self, info: Info[Any, Any]) -> float:
        return float((await self._complete(info)).reconcile_passes)

    @strawberry.field(description="Upstream calls reconciliation has made.")
    async def reconcile_calls(self, info: Info[Any, Any]) -> float:
        return float((await self._complete(info)).reconcile_calls)

    @strawberry.field(description="Tasks reconciliation has corrected.")
    async def tasks_repaired(self, info: Info[Any, Any]) -> float:
        return float((await self._complete(info)).tasks_repaired)

    @strawberry.field(description="Unexpired tasks the upstream no longer knows.")
    async def tasks_unknown(self, info: Info[Any, Any]) -> float:
        return float((await self._complete(info)).tasks_unknown)

    @strawberry.field(description="The newest gaps, newest first.")
    async def gaps(self, info: Info[Any, Any], first: int = 20) -> list[MirrorGap]:
        found = await queries.gaps(info.context.db, max(0, min(first, MAX_GAPS)))
        return [MirrorGap(_gap=g) for g in found]

    @strawberry.field(description="The follower processes writing this mirror.")
    async def followers(self, info: Info[Any, Any]) -> list[MirrorFollower]:
        return [MirrorFollower(_follower=f) for f in await queries.followers(info.context.db)]
