"""The state of a mirror, as `tcgraph follow` records it."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import strawberry

from tcgraph import model


@strawberry.type(description="How fresh a mirror is: the state `tcgraph follow` records.")
class Mirror:
    _state: strawberry.Private[model.MirrorState]

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
