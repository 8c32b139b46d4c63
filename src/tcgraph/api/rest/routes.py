"""Every REST route tcgraph serves: the queue's, the index's and its own."""

from __future__ import annotations

from starlette.routing import Route

from tcgraph.api.rest import index, labels, mirror, queue

ROUTES: list[Route] = [*queue.ROUTES, *index.ROUTES, *labels.ROUTES, *mirror.ROUTES]
