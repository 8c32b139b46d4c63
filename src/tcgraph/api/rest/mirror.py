"""tcgraph's own REST method: how fresh this mirror is (what `tcgraph follow` recorded)."""

from __future__ import annotations

from starlette.routing import Route

from tcgraph.api.rest.endpoint import Call, Method, routes
from tcgraph.api.rest.errors import ApiError
from tcgraph.store.queries import mirror as queries
from tcgraph.timefmt import format_time

PREFIX = "/api/tcgraph/v1"


async def mirror(call: Call) -> object:
    """The follower's state; 404 when this database has never been a mirror."""
    state = await queries.mirror_state(call.context.db)
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
    }


METHODS = (Method("mirror", "GET", "/mirror", mirror),)

ROUTES: list[Route] = routes(PREFIX, METHODS)
