"""tcgraph's own REST method: how fresh and how complete this mirror is (what `tcgraph
follow` recorded: its state, gaps, reconciliation, verification and followers)."""

from __future__ import annotations

from datetime import datetime

from starlette.routing import Route

from tcgraph.api.rest.endpoint import Call, Method, routes
from tcgraph.api.rest.errors import ApiError
from tcgraph.store.queries import mirror as queries
from tcgraph.store.queries import mirror_health
from tcgraph.timefmt import format_time

PREFIX = "/api/tcgraph/v1"


# Gaps shown, newest first.
GAPS_SHOWN = 20


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


async def mirror(call: Call) -> object:
    """The follower's state; 404 when this database has never been a mirror."""
    db = call.context.db
    state = await queries.mirror_state(db)
    if state is None:
        raise ApiError("ResourceNotFound", "this database is not a mirror: "
                       "`tcgraph follow` has never written to it")
    times = {"started": state.started, "lastMessage": state.last_message,
             "lastStatusTime": state.last_status_time}
    return {
        "queueName": state.queue_name,
        **{name: format_time(value) if value is not None else None
           for name, value in times.items()},
        "lastExchange": state.last_exchange, "lastRoutingKey": state.last_routing_key,
        "lagMs": state.lag_ms, "messages": state.messages, "errors": state.errors,
        "batches": state.batches, "waitingDefinitions": state.waiting,
        **_completeness(await mirror_health.completeness(db)),
        "gaps": [{"started": _time(g.started), "ended": _time(g.ended), "reason": g.reason,
                  "follower": g.follower, "detail": g.detail,
                  "repairedAt": _time(g.repaired_at), "tasksRepaired": g.tasks_repaired}
                 for g in await mirror_health.gaps(db, GAPS_SHOWN)],
        "followers": [{"name": f.name, "queueName": f.queue_name, "started": _time(f.started),
                       "lastSeen": _time(f.last_seen), "consuming": f.consuming,
                       "messages": f.messages} for f in await mirror_health.followers(db)],
    }


def _completeness(c: mirror_health.Completeness) -> dict[str, object]:
    return {
        "verified": c.verified,
        "lastVerified": _time(c.last_verified), "drift": c.drift,
        "differences": c.differences, "gapCount": c.gaps, "unrepairedGaps": c.unrepaired_gaps,
        "lastReconciled": _time(c.last_reconciled), "reconcilePasses": c.reconcile_passes,
        "reconcileCalls": c.reconcile_calls, "tasksRepaired": c.tasks_repaired,
        "tasksUnknown": c.tasks_unknown,
    }


METHODS = (Method("mirror", "GET", "/mirror", mirror),)

ROUTES: list[Route] = routes(PREFIX, METHODS)
