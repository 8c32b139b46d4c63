"""Relay connections: one page of a list, its edges and its page information."""

from __future__ import annotations

from typing import Any, Generic, Optional, TypeVar
from collections.abc import Sequence

import strawberry

from tcgraph import model

N = TypeVar("N")


@strawberry.type(description="Relay page information.")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: Optional[str]
    end_cursor: Optional[str]


@strawberry.type
class Edge(Generic[N]):
    cursor: str
    node: N


@strawberry.type(description="A page of a list, in the Relay connection shape.")
class Connection(Generic[N]):
    edges: list[Edge[N]]
    page_info: PageInfo

    @strawberry.field
    def nodes(self) -> list[N]:
        return [edge.node for edge in self.edges]


def connection(nodes: Sequence[Any], cursors: Sequence[str], page: model.Page,
               after: str | None) -> Connection[Any]:
    """A Connection over one page; a cursor given as `after` implies rows before.

    `nodes` are the page's objects, or their JSON built in PostgreSQL.
    """
    edges = [Edge(cursor=c, node=n) for c, n in zip(cursors, nodes, strict=False)]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=after is not None,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else None,
        ),
    )
